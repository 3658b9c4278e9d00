// SPDX-License-Identifier: Apache-2.0
//
// hold.h: a time-limited override that makes /livez pass, to stop a restart
// loop while someone debugs. Set and cleared on the admin port, bounded by
// max_hold, expires by itself (Active() compares the time). Thread-safe;
// Active() is lock-free, so a probe never waits for the admin port.
#ifndef LOOPWATCH_SIDECAR_HOLD_H_
#define LOOPWATCH_SIDECAR_HOLD_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

namespace loopwatch {

class Hold {
 public:
  struct State {
    int64_t until_ns = 0;  // CLOCK_MONOTONIC; 0: never set or cleared
    int64_t set_ns = 0;    // when it was set
    std::string reason;
    uint64_t count = 0;    // holds set over the sidecar's life
  };

  // Holds /livez until `until_ns`, replacing any previous hold.
  void Set(int64_t now_ns, int64_t until_ns, std::string reason);
  void Clear();
  bool Active(int64_t now_ns) const {
    return now_ns < until_ns_.load(std::memory_order_acquire);
  }
  // until, reason and count as one consistent copy.
  State Snapshot() const;

 private:
  std::atomic<int64_t> until_ns_{0};
  std::atomic<uint64_t> count_{0};
  mutable std::mutex mu_;  // guards reason_ and set_ns_ (admin-only path)
  std::string reason_;
  int64_t set_ns_ = 0;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HOLD_H_

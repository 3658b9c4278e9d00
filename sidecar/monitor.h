// SPDX-License-Identifier: Apache-2.0
//
// monitor.h: the poll thread. Every poll_interval it snapshots the segment,
// feeds Health, hands the events to the log and publishes the new View. It
// is the only thread that touches the segment; HTTP threads only copy the
// published pointer, so nothing the app does can block a probe.
#ifndef LOOPWATCH_SIDECAR_MONITOR_H_
#define LOOPWATCH_SIDECAR_MONITOR_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "clock.h"
#include "config.h"
#include "health.h"
#include "reader.h"

namespace loopwatch {

class Monitor {
 public:
  using EventSink = std::function<void(const std::vector<Event>&)>;

  Monitor(const Config& config, EventSink sink);
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  // Polls once right away (so the first probe has an answer), then starts
  // the poll thread.
  void Start();
  // Wakes and joins the poll thread; returns within one poll.
  void Stop();

  // The latest View; never null after construction.
  std::shared_ptr<const View> view() const;

  // One poll at a given time. The poll thread calls it with the real clock;
  // tests may call it directly instead of Start().
  void PollAt(int64_t now_ns, int64_t lateness_ns);

 private:
  void Run();

  Config config_;
  EventSink sink_;
  SegmentReader reader_;
  Health health_;
  std::vector<SlotSnapshot> slots_;
  std::vector<Event> events_;

  mutable std::mutex view_mu_;
  std::shared_ptr<const View> view_;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_MONITOR_H_

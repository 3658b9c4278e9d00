// SPDX-License-Identifier: Apache-2.0
//
// probes.h: the answers of the HTTP endpoints, as pure functions of a View,
// the Config, the Hold and the time. No I/O, no clock, no locks held while
// formatting: the HTTP layer copies the View pointer and calls these, and
// tests call them with hand-made Views and times.
//
// Probe semantics (the status code is the verdict):
//   - enforce mode: 200 when the verdict passes, 503 when it fails;
//   - observe mode: always 200, the body says what would have failed;
//   - a hold (admin port) makes /livez answer 200 until it expires; the body
//     says so and what would have failed. /readyz and /startupz ignore holds.
// A view older than 3 poll intervals + 1 s (the poll thread stopped) is still
// answered from, with "(view is Ns old)" in the body; /healthz is the probe
// for the sidecar itself and fails then.
#ifndef LOOPWATCH_SIDECAR_PROBES_H_
#define LOOPWATCH_SIDECAR_PROBES_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "config.h"
#include "health.h"

namespace loopwatch {

// A time-limited override that makes /livez pass, to stop a restart loop
// while someone debugs. Set and cleared on the admin port; expires by itself
// (Active() compares the time). Thread-safe; Active() is lock-free.
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
  int64_t until_ns() const { return until_ns_.load(std::memory_order_acquire); }
  std::string reason() const;
  // Holds set over the sidecar's life (exported as loopwatch_holds_total).
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  // until, reason and count as one consistent copy.
  State Snapshot() const;

 private:
  std::atomic<int64_t> until_ns_{0};
  std::atomic<uint64_t> count_{0};
  mutable std::mutex mu_;  // guards reason_ and set_ns_ (admin-only path)
  std::string reason_;
  int64_t set_ns_ = 0;
};

struct ProbeResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

enum class Probe { kLive, kReady, kStartup };
// "livez", "readyz", "startupz".
const char* ProbeName(Probe p);

// The answer to /livez, /readyz or /startupz. `detail_json`: the JSON form
// (Accept: application/json or ?format=json); `verbose`: text with one line
// per loop after the verdict line.
ProbeResponse AnswerProbe(Probe probe, const View& view, const Config& config,
                          const Hold& hold, int64_t now_ns, bool detail_json,
                          bool verbose);

// /healthz: the sidecar itself. 200 while the poll thread publishes views
// (the view is younger than 3 poll intervals + 1 s), else 503.
ProbeResponse HealthzResponse(const View& view, int64_t now_ns,
                              const Config& config);

// /debug/loops: everything known per loop (activity, stalls by class, the
// current stall, the lag histogram), as JSON.
std::string LoopsJson(const View& view, int64_t now_ns);

// /debug/stalls: the recent stall reports, newest first, with class,
// syscall, wait channel, CPU time, activity, duration and the full text
// (stack, requests in flight), as JSON.
std::string StallsJson(const View& view, int64_t now_ns);

// The hold as JSON (GET/POST/DELETE /hold on the admin port).
std::string HoldJson(const Hold& hold, const Config& config, int64_t now_ns);

// True when the view is older than the poll thread's deadline.
bool ViewIsStale(const View& view, int64_t now_ns, const Config& config);

// Text safe for a one-line plain body: control characters become '?'.
std::string OneLine(const std::string& s);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_PROBES_H_

// SPDX-License-Identifier: Apache-2.0
//
// health.h: per-loop state machine and the probe verdicts.
//
// Health is fed one segment snapshot per poll, with the sidecar's own
// CLOCK_MONOTONIC time and how late the poll itself woke. It never reads a
// clock or the segment itself, so tests drive it with made-up snapshots and
// times. It produces a View: an immutable picture of every loop and the three
// verdicts, which the HTTP threads serve without ever waiting on the poller.
#ifndef LOOPWATCH_SIDECAR_HEALTH_H_
#define LOOPWATCH_SIDECAR_HEALTH_H_

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "reader.h"

namespace loopwatch {

enum class LoopState { kStarting, kLive, kLagging, kStalled, kDead, kGone };
const char* LoopStateName(LoopState s);

// Stall classes as the sidecar reports them: the library's cpu/blocked/
// unknown, plus host (the whole pod was paused: not the app's fault).
enum class StallClass { kUnknown = 0, kCpu = 1, kBlocked = 2, kHost = 3 };
constexpr int kStallClasses = 4;
const char* StallClassName(StallClass c);

// A stall report as the sidecar keeps it (for logs and /debug/stalls).
struct StallRecord {
  uint64_t id = 0;            // sidecar-wide sequence number
  std::string loop;
  uint32_t slot = 0;
  uint32_t pid = 0;
  StallClass stall_class = StallClass::kUnknown;
  int64_t started_ns = 0;     // CLOCK_MONOTONIC: last beat before the stall
  int64_t ended_ns = 0;       // 0 while it lasts
  int64_t duration_ns = 0;    // so far, or final
  int64_t loop_cpu_ns = 0;
  std::string syscall;
  std::string wchan;
  std::string activity;
  std::string text;           // stack and requests from the app's binding
  bool has_report = false;    // the app's watchdog wrote a report
};

// Stall durations in seconds, by class, for a Prometheus histogram.
inline constexpr std::array<double, 10> kStallDurationBounds = {
    0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
struct StallDurationHistogram {
  std::array<uint64_t, kStallDurationBounds.size() + 1> bucket{};  // last: +Inf
  double sum_seconds = 0;
  uint64_t count = 0;
};

// How a stall is told in one phrase: "blocked in clock_nanosleep",
// "cpu-bound", "host paused", "no report yet".
std::string DescribeStall(const StallRecord& s);

struct LoopView {
  uint32_t slot = 0;
  uint32_t generation = 0;
  std::string name;
  std::string kind;
  uint32_t pid = 0;
  LoopState state = LoopState::kStarting;
  bool ready = true;          // the app's own flag
  bool failing_liveness = false;
  int64_t interval_ns = 0;
  int64_t heartbeat_age_ns = 0;  // silence: now - last beat
  int64_t lag_ns = 0;            // current lag estimate
  int64_t lag_p99_ns = -1;       // recent p99 from the histogram, -1 unknown
  uint64_t beats = 0;
  // Straight from the segment, for the metrics.
  uint64_t lag_bucket[LW_LAG_BUCKETS] = {};
  uint64_t lag_sum_ns = 0;
  uint64_t lag_count = 0;
  uint64_t lag_max_ns = 0;
  std::string activity;
  // Current stall, if state is kStalled (or a shorter one still open).
  bool stall_open = false;
  StallRecord stall;
  std::array<uint64_t, kStallClasses> stalls{};  // by StallClass
  int64_t dead_since_ns = 0;
};

struct Verdict {
  bool ok = true;
  std::string reason;  // one line, e.g. "loop uvicorn-7 stalled 6.2s (...)"
};

struct View {
  int64_t taken_ns = 0;          // sidecar clock at the poll
  uint64_t poll = 0;             // poll sequence number
  SegmentStatus segment = SegmentStatus::kMissing;
  std::string segment_error;
  uint32_t slot_count = 0;
  std::vector<LoopView> loops;   // live, stalled, dead and recently gone
  Verdict live;                  // before observe mode and hold
  Verdict ready;
  Verdict startup;
  bool started = false;          // expect_loops have beaten at least once
  // Sidecar-wide totals, monotonic over the sidecar's life.
  std::array<uint64_t, kStallClasses> stalls_total{};
  uint64_t deaths_total = 0;
  uint64_t reports_suppressed_total = 0;
  uint64_t segment_errors_total = 0;
  int64_t last_poll_lateness_ns = 0;
  std::vector<StallRecord> recent_stalls;  // newest last, bounded
  std::array<StallDurationHistogram, kStallClasses> stall_duration{};
};

// What happened at one poll, for the log.
struct Event {
  enum class Kind {
    kLoopAppeared,
    kStallStarted,
    kStallReport,     // the report became available (logged once)
    kStallReportSuppressed,
    kStallEnded,
    kLoopDied,
    kLoopGone,
    kSegmentProblem,  // status changed to something other than ok
    kSegmentOk,
  };
  Kind kind;
  LoopView loop;       // as of this poll (empty for segment events)
  StallRecord stall;   // for the stall events
  std::string message; // for segment events
};

class Health {
 public:
  explicit Health(const Config& config);
  ~Health();

  // Feeds one poll. `now_ns` is the sidecar's CLOCK_MONOTONIC time, and
  // `lateness_ns` how much later than planned the poll woke (a paused host
  // makes it large). Appends what happened to *events.
  std::shared_ptr<const View> Update(SegmentStatus status,
                                     const std::string& segment_error,
                                     const std::vector<SlotSnapshot>& slots,
                                     int64_t now_ns, int64_t lateness_ns,
                                     std::vector<Event>* events);

 private:
  struct Track;
  void Judge(View* v, int64_t now_ns) const;
  void ObserveStallDuration(StallClass c, int64_t duration_ns);
  void EndStall(Track* t, int64_t end_ns, std::vector<Event>* events);
  // Adds or updates a stall in the bounded history for /debug/stalls.
  void RememberStall(const StallRecord& s);

  Config config_;
  std::map<uint32_t, std::unique_ptr<Track>> tracks_;  // by slot
  std::vector<std::unique_ptr<Track>> departed_;       // gone, kept a while
  View totals_;  // carries the sidecar-wide totals and recent stalls
  uint64_t polls_ = 0;
  uint64_t next_stall_id_ = 1;
  bool started_ = false;
  SegmentStatus last_status_ = SegmentStatus::kOk;
  bool first_status_ = true;
  int64_t prev_poll_ns_ = -1;
  // The last pause of the sidecar itself (a late poll): [end - len, end].
  int64_t pause_end_ns_ = 0;
  int64_t pause_len_ns_ = 0;
  std::array<StallDurationHistogram, kStallClasses> stall_duration_{};
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HEALTH_H_

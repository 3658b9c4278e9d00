// SPDX-License-Identifier: Apache-2.0
//
// model.h: what the sidecar knows about the loops, as every part of it reads
// it. Health (the state machine) produces a View per poll; the probes, the
// metrics, the log and `loopwatch status` only read Views and Events, so
// they depend on this header and not on how the verdicts are reached.
//
// Times are CLOCK_MONOTONIC nanoseconds (the clock the library stamps beats
// with), durations nanoseconds, unless a name says otherwise.
#ifndef LOOPWATCH_SIDECAR_MODEL_H_
#define LOOPWATCH_SIDECAR_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "reader.h"
#include "segment_layout.h"

namespace loopwatch {

enum class LoopState { kStarting, kLive, kLagging, kStalled, kDead, kGone };
// "starting", "live", ...
const char* LoopStateName(LoopState s);

// Stall classes as the sidecar reports them: the library's cpu/blocked/gil/
// unknown, plus host (the whole pod was paused: not the app's fault).
enum class StallClass { kUnknown = 0, kCpu = 1, kBlocked = 2, kHost = 3, kGil = 4 };
constexpr int kStallClasses = 5;
const char* StallClassName(StallClass c);

// A stall as the sidecar keeps it (for logs and /debug/stalls).
struct StallRecord {
  uint64_t id = 0;            // sidecar-wide sequence number
  std::string loop;
  uint32_t slot = 0;
  uint32_t pid = 0;
  StallClass stall_class = StallClass::kUnknown;
  int64_t started_ns = 0;     // the last beat before the stall
  int64_t ended_ns = 0;       // 0 while it lasts
  int64_t duration_ns = 0;    // so far, or final
  int64_t loop_cpu_ns = 0;
  std::string syscall;
  std::string wchan;
  std::string activity;
  std::string text;           // stack and requests from the app's binding
  bool has_report = false;    // the app's watchdog wrote a report
};

// What a segment status means, in words that carry nothing read from the
// file (for the public port; the log has the reader's detailed error):
// "segment missing (the app has not created it yet)".
std::string SegmentSummary(SegmentStatus s);

// How a stall is told in one phrase: "blocked in clock_nanosleep",
// "cpu-bound", "host paused", "no report yet".
std::string DescribeStall(const StallRecord& s);

// Upper bound of lag bucket b (LW_LAG_BUCKETS of them, see
// segment_layout.h) in ns; -1 for the last, unbounded one.
int64_t LagBucketUpperNs(unsigned b);
// Lower bound of lag bucket b in ns (0 for the first).
int64_t LagBucketLowerNs(unsigned b);
// The 99th percentile of the lags counted in `bucket`: the upper bound of
// the bucket it falls in, `max_ns` if that is the last one; -1 if empty.
int64_t LagP99Ns(const uint64_t (&bucket)[LW_LAG_BUCKETS], uint64_t max_ns);

// Durations of ended stalls in seconds, by class, for a Prometheus histogram.
inline constexpr std::array<double, 10> kStallDurationBounds = {
    0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
struct StallDurationHistogram {
  std::array<uint64_t, kStallDurationBounds.size() + 1> bucket{};  // last: +Inf
  double sum_seconds = 0;
  uint64_t count = 0;
};

// Stalls for /debug/stalls, newest last.
using StallHistory = std::vector<std::shared_ptr<const StallRecord>>;
// The empty history, shared.
const std::shared_ptr<const StallHistory>& NoStalls();

struct LoopView {
  uint32_t slot = 0;
  uint32_t generation = 0;
  std::string name;
  std::string kind;
  std::string container;      // the pod container it runs in ("" unknown)
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

// The verdicts on one container's loops (a probe with ?container=NAME, as
// `loopwatch inject` writes them when it watches several containers).
struct ContainerVerdicts {
  std::string name;
  // A loop of this container has beaten since the sidecar started: until
  // then its probes are answered by the container's own (forwarded).
  bool beaten = false;
  Verdict live;
  Verdict ready;
  Verdict startup;
};

// An immutable picture of every loop and the three verdicts, published once
// per poll; the HTTP threads answer from the latest one.
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
  // Per container, by name, for every container a loop has named.
  std::vector<ContainerVerdicts> containers;
  // Sidecar-wide totals, monotonic over the sidecar's life.
  std::array<uint64_t, kStallClasses> stalls_total{};
  uint64_t deaths_total = 0;
  uint64_t reports_suppressed_total = 0;
  uint64_t segment_errors_total = 0;
  // Since when the segment has been unreadable (0: readable), and how many
  // loops were live when it was last read: loops the sidecar can no longer
  // see. Past stall_after, that fails liveness (Health::Judge).
  int64_t unreadable_since_ns = 0;
  uint32_t loops_lost = 0;
  int64_t last_poll_lateness_ns = 0;
  // Newest last, bounded; never null. Views share it until a stall
  // changes it, so a poll copies no report text.
  std::shared_ptr<const StallHistory> recent_stalls = NoStalls();
  std::array<StallDurationHistogram, kStallClasses> stall_duration{};
};

// Age of the view at `now_ns` (0 if taken later).
inline int64_t ViewAge(const View& v, int64_t now_ns) {
  return now_ns > v.taken_ns ? now_ns - v.taken_ns : 0;
}

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
    kSegmentLost,     // unreadable for stall_after after loops were live
  };
  Kind kind;
  LoopView loop;       // as of this poll (empty for segment events)
  StallRecord stall;   // for the stall events
  std::string message; // for segment events, and why a loop is gone
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_MODEL_H_

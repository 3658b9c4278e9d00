// SPDX-License-Identifier: Apache-2.0
//
// Unit tests of the sidecar's per-loop state machine and verdicts
// (sidecar/health.h). Time is injected: "now" is a number the fixture
// advances by poll_interval, beats are simulated by bumping beat_count and
// last_beat_ns in hand-built snapshots. Nothing here sleeps.
#include "health.h"
#include "probes.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace loopwatch {

// Readable gtest failure messages.
void PrintTo(LoopState s, std::ostream* os) { *os << LoopStateName(s); }
void PrintTo(StallClass c, std::ostream* os) { *os << StallClassName(c); }

namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

constexpr int64_t kMs = 1000000;
constexpr int64_t kSec = 1000 * kMs;
constexpr uint64_t kLagBounds[LW_LAG_FINITE_BOUNDS] = LW_LAG_BOUNDS_NS_INIT;

// The library's bucketing (lib/src/loopwatch.c, lag_bucket()).
unsigned BucketOf(uint64_t lag) {
  unsigned b = 0;
  while (b < LW_LAG_FINITE_BOUNDS && lag > kLagBounds[b]) b++;
  return b;
}

const char* KindName(Event::Kind k) {
  switch (k) {
    case Event::Kind::kLoopAppeared: return "appeared";
    case Event::Kind::kStallStarted: return "stall_started";
    case Event::Kind::kStallReport: return "stall_report";
    case Event::Kind::kStallReportSuppressed: return "stall_report_suppressed";
    case Event::Kind::kStallEnded: return "stall_ended";
    case Event::Kind::kLoopDied: return "died";
    case Event::Kind::kLoopGone: return "gone";
    case Event::Kind::kSegmentProblem: return "segment_problem";
    case Event::Kind::kSegmentOk: return "segment_ok";
    case Event::Kind::kSegmentLost: return "segment_lost";
  }
  return "?";
}

// How the simulated app behaves in one slot.
struct Sim {
  bool beating = true;        // the loop beats once per poll
  bool watchdog = true;       // the app's watchdog writes stall reports
  int64_t report_after = 1 * kSec;
  uint32_t cls = LW_CLASS_BLOCKED;
  std::string syscall = "clock_nanosleep";
  std::string text = "Traceback:\n  File \"app.py\", line 12, in handler\n";
  int64_t extra_lag = 0;      // added to the lag of every beat
};

class HealthTest : public ::testing::Test {
 protected:
  static constexpr size_t kSlots = 8;

  HealthTest() : slots(kSlots), sims(kSlots) {
    for (size_t i = 0; i < kSlots; i++) {
      slots[i].index = uint32_t(i);
      slots[i].valid = true;
      slots[i].state = LW_SLOT_FREE;
      slots[i].generation = 2;
    }
  }

  int64_t poll() const { return cfg.poll_interval.count(); }

  void Start() { health = std::make_unique<Health>(cfg); }

  // A loop claims slot `i`; it opened 10 ms ago and has not beaten yet.
  SlotSnapshot& Open(uint32_t i, const std::string& name, uint32_t pid = 0) {
    SlotSnapshot& s = slots[i];
    uint32_t gen = s.generation + 2;
    s = SlotSnapshot{};
    s.index = i;
    s.valid = true;
    s.state = LW_SLOT_ACTIVE;
    s.generation = gen;
    s.claim_token = 0x1000 + gen * 64 + i;
    s.owner_alive = 1;
    s.pid = pid ? pid : 100 + i;
    s.tid = s.pid;
    snprintf(s.name, sizeof s.name, "%s", name.c_str());
    snprintf(s.kind, sizeof s.kind, "%s", "asio");
    s.interval_ns = uint64_t(100 * kMs);
    s.report_after_ns = uint64_t(1 * kSec);
    s.opened_ns = uint64_t(now - 10 * kMs);
    s.ready = true;
    sims[i] = Sim{};
    return s;
  }

  // One beat of slot i at `at` (default: 20 ms before now), with the lag the
  // library would record (how late against last beat + interval) plus extra.
  void Beat(uint32_t i, int64_t at = -1, int64_t extra_lag = 0) {
    SlotSnapshot& s = slots[i];
    if (at < 0) at = now - 20 * kMs;
    if (s.beat_count > 0) {
      // Unsigned: the fuzz test feeds garbage through here too.
      uint64_t expected = s.last_beat_ns + s.interval_ns;
      uint64_t lag = (uint64_t(at) > expected ? uint64_t(at) - expected : 0) +
                     uint64_t(extra_lag);
      s.lag_bucket[BucketOf(lag)]++;
      s.lag_sum_ns += lag;
      s.lag_count++;
      s.lag_max_ns = std::max(s.lag_max_ns, lag);
    }
    s.beat_count++;
    s.last_beat_ns = uint64_t(at);
    if (s.report.state == LW_REPORT_OPEN) {
      s.report.state = LW_REPORT_CLOSED;
      s.report.stall_end_ns = uint64_t(at);
    }
  }

  void OpenReport(uint32_t i) {
    SlotSnapshot& s = slots[i];
    const Sim& sim = sims[i];
    s.report.seq += 2;
    s.report.stall_count++;
    s.report.state = LW_REPORT_OPEN;
    s.report.stall_class = sim.cls;
    s.report.stall_start_ns = s.beat_count ? s.last_beat_ns : s.opened_ns;
    s.report.stall_end_ns = 0;
    s.report.updated_ns = uint64_t(now);
    memset(s.report.syscall_name, 0, sizeof s.report.syscall_name);
    snprintf(s.report.syscall_name, sizeof s.report.syscall_name, "%s",
             sim.syscall.c_str());
    s.report.text = sim.text;
  }

  // The app's side of one poll interval: beating loops beat, silent ones get
  // a stall report from the watchdog once silent for report_after.
  void AppActs() {
    for (uint32_t i = 0; i < kSlots; i++) {
      SlotSnapshot& s = slots[i];
      if (s.state != LW_SLOT_ACTIVE || s.owner_alive == 0) continue;
      const Sim& sim = sims[i];
      if (sim.beating) {
        Beat(i, -1, sim.extra_lag);
      } else if (sim.watchdog && s.report.state != LW_REPORT_OPEN) {
        int64_t since = int64_t(s.beat_count ? s.last_beat_ns : s.opened_ns);
        if (now - since > sim.report_after) OpenReport(i);
      }
    }
  }

  // The sidecar's side: one Update() with the snapshots as they are now.
  const View& Poll(int64_t lateness = 0) {
    if (!health) Start();
    events.clear();
    view = health->Update(status, segment_error, slots, now, lateness, &events);
    all_events.insert(all_events.end(), events.begin(), events.end());
    EXPECT_TRUE(view != nullptr);
    return *view;
  }

  // Advance by one poll interval, let the app act, poll.
  const View& Step() {
    now += poll();
    AppActs();
    return Poll();
  }
  void Steps(int n) {
    for (int k = 0; k < n; k++) Step();
  }

  const LoopView* Loop(const std::string& name) const {
    if (!view) return nullptr;
    for (const LoopView& l : view->loops) {
      if (l.name == name) return &l;
    }
    return nullptr;
  }
  LoopState StateOf(const std::string& name) const {
    const LoopView* l = Loop(name);
    EXPECT_NE(l, nullptr) << "no loop " << name << " in the view";
    return l ? l->state : LoopState::kGone;
  }
  std::string StateName(const std::string& name) const {
    return LoopStateName(StateOf(name));
  }

  int Count(Event::Kind k, const std::string& loop = "") const {
    int n = 0;
    for (const Event& e : all_events) {
      if (e.kind == k && (loop.empty() || e.loop.name == loop)) n++;
    }
    return n;
  }
  int CountNow(Event::Kind k) const {
    int n = 0;
    for (const Event& e : events) n += e.kind == k;
    return n;
  }
  // The latest event of kind k; a failure (and an empty event) if none.
  const Event& Last(Event::Kind k) const {
    for (auto it = all_events.rbegin(); it != all_events.rend(); ++it) {
      if (it->kind == k) return *it;
    }
    ADD_FAILURE() << "no " << KindName(k) << " event; events: " << EventLog();
    static const Event none{Event::Kind::kSegmentOk, {}, {}, ""};
    return none;
  }
  std::string EventLog() const {
    std::string s;
    for (const Event& e : all_events) {
      s += KindName(e.kind);
      if (!e.loop.name.empty()) s += "(" + e.loop.name + ")";
      s += " ";
    }
    return s;
  }
  uint64_t StallsTotal() const {
    return std::accumulate(view->stalls_total.begin(), view->stalls_total.end(),
                           uint64_t{0});
  }

  // Healthy polls for a while, every active loop beating.
  void Warm(int polls = 10) { Steps(polls); }

  Config cfg;
  std::unique_ptr<Health> health;
  int64_t now = 1000 * kSec;  // an arbitrary CLOCK_MONOTONIC reading
  SegmentStatus status = SegmentStatus::kOk;
  std::string segment_error;
  std::vector<SlotSnapshot> slots;
  std::vector<Sim> sims;
  std::vector<Event> events;      // of the last poll
  std::vector<Event> all_events;  // of every poll
  std::shared_ptr<const View> view;
};

// ---------------------------------------------------------------------------
// Beating loops: starting, live, lagging.

TEST_F(HealthTest, BeatingLoopIsStartingThenLive) {
  Open(0, "w0");
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kStarting);
  EXPECT_EQ(Count(Event::Kind::kLoopAppeared, "w0"), 1);
  EXPECT_FALSE(view->startup.ok);
  EXPECT_TRUE(view->live.ok) << view->live.reason;

  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
  EXPECT_TRUE(view->startup.ok) << view->startup.reason;
  EXPECT_TRUE(view->started);
  Steps(20);
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Count(Event::Kind::kLoopAppeared), 1) << EventLog();
  EXPECT_EQ(Loop("w0")->beats, 21u);
  EXPECT_LE(Loop("w0")->heartbeat_age_ns, poll());
  EXPECT_GE(Loop("w0")->heartbeat_age_ns, 0);
  EXPECT_EQ(Loop("w0")->lag_ns, 0);
  EXPECT_FALSE(Loop("w0")->failing_liveness);
  EXPECT_EQ(Loop("w0")->pid, 100u);
  EXPECT_EQ(Loop("w0")->kind, "asio");
  EXPECT_EQ(view->poll, 22u);
  EXPECT_EQ(view->taken_ns, now);
  EXPECT_EQ(view->slot_count, kSlots);
  EXPECT_EQ(StallsTotal(), 0u);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 0);
}

TEST_F(HealthTest, PerBeatLagAboveThresholdIsLaggingThenLiveAgain) {
  Open(0, "w0");
  Warm();
  ASSERT_EQ(StateOf("w0"), LoopState::kLive);

  sims[0].extra_lag = 1200 * kMs;  // every beat 1.2 s late (lag_above 1 s)
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kLagging);
  EXPECT_GE(Loop("w0")->lag_ns, 1200 * kMs);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  // "0 live" alone would read as if nothing were there.
  EXPECT_EQ(view->live.reason, "ok: 1 loops, 0 live, 1 lagging");
  EXPECT_FALSE(view->ready.ok);
  EXPECT_THAT(view->ready.reason, StartsWith("loop w0 lagging 1.2s"));
  EXPECT_THAT(view->ready.reason, HasSubstr("lag_above"));

  sims[0].extra_lag = 10 * kMs;
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
  EXPECT_LT(Loop("w0")->lag_ns, 100 * kMs);
}

TEST_F(HealthTest, LagFromBucketDeltasCountsEvenWhenTheMeanIsLow) {
  cfg.lag_above = 500ms;
  Open(0, "w0");
  Warm();
  // Within one poll: nine punctual beats and one 1.5 s late. Mean 150 ms,
  // but the bucket (1 s, 2.5 s] was hit: at least 1 s of lag.
  SlotSnapshot& s = slots[0];
  now += poll();
  for (int k = 0; k < 9; k++) {
    s.lag_bucket[0]++;
    s.lag_count++;
    s.beat_count++;
  }
  s.lag_bucket[BucketOf(1500 * kMs)]++;
  s.lag_sum_ns += 1500 * kMs;
  s.lag_count++;
  s.lag_max_ns = 1500 * kMs;
  s.beat_count++;
  s.last_beat_ns = uint64_t(now - 5 * kMs);
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLagging);
  EXPECT_GE(Loop("w0")->lag_ns, 1000 * kMs);
  EXPECT_FALSE(view->ready.ok);
  EXPECT_TRUE(view->live.ok);
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
}

TEST_F(HealthTest, SilentLoopIsLaggingBeforeItIsStalled) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  sims[0].watchdog = false;
  // Last beat 20 ms before the previous poll; interval 100 ms, lag_above 1 s:
  // after k polls the silence is k*100+20 ms and the implied lag k*100-80 ms.
  for (int k = 1; k <= 50; k++) {
    Step();
    const LoopView* l = Loop("w0");
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(l->heartbeat_age_ns, k * 100 * kMs + 20 * kMs) << "k=" << k;
    if (k <= 10) {
      EXPECT_EQ(l->state, LoopState::kLive) << "k=" << k;
      EXPECT_TRUE(view->ready.ok) << "k=" << k << " " << view->ready.reason;
    } else if (k < 50) {
      EXPECT_EQ(l->state, LoopState::kLagging) << "k=" << k;
      EXPECT_GE(l->lag_ns, 1000 * kMs);
      EXPECT_FALSE(view->ready.ok) << "k=" << k;
      EXPECT_THAT(view->ready.reason, StartsWith("loop w0 lagging"));
      EXPECT_TRUE(view->live.ok) << "k=" << k << " " << view->live.reason;
    } else {
      EXPECT_EQ(l->state, LoopState::kStalled) << "k=" << k;
      EXPECT_FALSE(view->live.ok);
      EXPECT_FALSE(view->ready.ok);
    }
  }
}

TEST_F(HealthTest, AppNotReadyFailsReadinessOnly) {
  Open(0, "w0");
  Warm();
  slots[0].ready = false;
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_FALSE(Loop("w0")->ready);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_TRUE(view->startup.ok);
  EXPECT_FALSE(view->ready.ok);
  EXPECT_EQ(view->ready.reason, "loop w0 not ready (set by the app)");
  slots[0].ready = true;
  Step();
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
}

// ---------------------------------------------------------------------------
// Stalls.

TEST_F(HealthTest, StallIsDetectedReportedAndEnded) {
  Open(0, "uvicorn-7", 4242);
  Warm();
  const int64_t last_beat = now - 20 * kMs;
  ASSERT_EQ(int64_t(slots[0].last_beat_ns), last_beat);
  sims[0].beating = false;

  // Silence after k polls: k*100 + 20 ms. The first poll with more than
  // stall_after (5 s) of silence is k = 50.
  for (int k = 1; k < 50; k++) {
    Step();
    ASSERT_NE(StateOf("uvicorn-7"), LoopState::kStalled) << "k=" << k;
    ASSERT_TRUE(view->live.ok) << "k=" << k << " " << view->live.reason;
  }
  EXPECT_EQ(slots[0].report.state, LW_REPORT_OPEN);  // the watchdog wrote it
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 0);
  Step();
  EXPECT_EQ(StateOf("uvicorn-7"), LoopState::kStalled);
  EXPECT_LE(now - last_beat, cfg.stall_after.count() + poll());
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(view->live.reason,
            "loop uvicorn-7 stalled 5.0s (blocked in clock_nanosleep)");
  EXPECT_FALSE(view->ready.ok);
  EXPECT_TRUE(view->startup.ok);
  const LoopView* l = Loop("uvicorn-7");
  EXPECT_TRUE(l->failing_liveness);
  EXPECT_TRUE(l->stall_open);
  EXPECT_TRUE(l->stall.has_report);
  EXPECT_EQ(l->stall.stall_class, StallClass::kBlocked);
  EXPECT_EQ(l->stall.syscall, "clock_nanosleep");
  EXPECT_EQ(l->stall.started_ns, last_beat);
  EXPECT_EQ(l->stall.pid, 4242u);
  EXPECT_EQ(l->stall.slot, 0u);
  EXPECT_EQ(l->stall.loop, "uvicorn-7");
  EXPECT_THAT(l->stall.text, HasSubstr("app.py"));
  EXPECT_EQ(CountNow(Event::Kind::kStallStarted), 1);
  EXPECT_EQ(CountNow(Event::Kind::kStallReport), 1);
  EXPECT_EQ(view->stalls_total[int(StallClass::kBlocked)], 1u);
  EXPECT_EQ(l->stalls[int(StallClass::kBlocked)], 1u);
  ASSERT_EQ(view->recent_stalls->size(), 1u);
  EXPECT_EQ((*view->recent_stalls)[0]->loop, "uvicorn-7");

  Steps(12);  // silence 6.22 s
  EXPECT_EQ(view->live.reason,
            "loop uvicorn-7 stalled 6.2s (blocked in clock_nanosleep)");
  EXPECT_EQ(Loop("uvicorn-7")->heartbeat_age_ns, 6220 * kMs);
  EXPECT_EQ(Loop("uvicorn-7")->stall.duration_ns, 6220 * kMs);

  // The loop beats again: the stall ends at that beat.
  sims[0].beating = true;
  Step();
  const int64_t silence = int64_t(slots[0].last_beat_ns) - last_beat;
  EXPECT_EQ(silence, 6300 * kMs);
  EXPECT_NE(StateOf("uvicorn-7"), LoopState::kStalled);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_FALSE(Loop("uvicorn-7")->stall_open);
  EXPECT_FALSE(Loop("uvicorn-7")->failing_liveness);
  ASSERT_EQ(CountNow(Event::Kind::kStallEnded), 1);
  const Event* ended = &Last(Event::Kind::kStallEnded);
  EXPECT_EQ(ended->stall.duration_ns, silence);
  EXPECT_EQ(ended->stall.ended_ns, int64_t(slots[0].last_beat_ns));
  EXPECT_EQ(ended->stall.stall_class, StallClass::kBlocked);
  ASSERT_EQ(view->recent_stalls->size(), 1u);
  EXPECT_EQ((*view->recent_stalls)[0]->duration_ns, silence);
  EXPECT_EQ((*view->recent_stalls)[0]->ended_ns, ended->stall.ended_ns);
  const StallDurationHistogram& h =
      view->stall_duration[int(StallClass::kBlocked)];
  EXPECT_EQ(h.count, 1u);
  EXPECT_NEAR(h.sum_seconds, 6.3, 1e-9);
  EXPECT_EQ(h.bucket[4], 1u);  // (5 s, 10 s]

  Steps(30);
  EXPECT_EQ(StateOf("uvicorn-7"), LoopState::kLive);
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1) << EventLog();
  EXPECT_EQ(Count(Event::Kind::kStallReport), 1) << EventLog();
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1) << EventLog();
  EXPECT_EQ(Count(Event::Kind::kStallReportSuppressed), 0) << EventLog();
  EXPECT_EQ(view->stalls_total[int(StallClass::kBlocked)], 1u);
  EXPECT_EQ(StallsTotal(), 1u);
  EXPECT_EQ(Loop("uvicorn-7")->stalls[int(StallClass::kBlocked)], 1u);
}

// Query string values from the app's memory (the activity label, the
// report's activity and text) are redacted as the sidecar takes them in,
// before any log line, endpoint or `loopwatch status` sees them.
TEST_F(HealthTest, QueryValuesAreRedactedAsTheyComeIn) {
  for (bool redact : {true, false}) {
    cfg.redact_query = redact;
    health.reset();
    Open(0, "uvicorn-7");
    snprintf(slots[0].activity, sizeof slots[0].activity, "GET /orders?api_key=CANARY1");
    sims[0].text = "requests in flight: 1\n  POST /pay?card=CANARY2&x=1 (0.5 s)\n";
    Warm();
    EXPECT_EQ(Loop("uvicorn-7")->activity,
              redact ? "GET /orders?api_key=REDACTED" : "GET /orders?api_key=CANARY1");
    sims[0].beating = false;
    snprintf(slots[0].report.activity, sizeof slots[0].report.activity, "GET /x?t=CANARY3");
    Steps(55);
    const LoopView* l = Loop("uvicorn-7");
    ASSERT_TRUE(l->stall.has_report);
    if (redact) {
      EXPECT_EQ(l->stall.text, "requests in flight: 1\n  POST /pay?card=REDACTED&x=REDACTED (0.5 s)\n");
      for (const Event& e : all_events) {
        for (const std::string* t : {&e.stall.text, &e.stall.activity, &e.loop.activity}) {
          EXPECT_EQ(t->find("CANARY"), std::string::npos) << *t;
        }
      }
    } else {
      EXPECT_THAT(l->stall.text, HasSubstr("card=CANARY2"));
    }
    sims[0].beating = true;
    Steps(2);
    slots[0].state = LW_SLOT_CLOSED;
    Step();
  }
}

TEST_F(HealthTest, CpuStallSaysCpuBound) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  sims[0].cls = LW_CLASS_CPU;
  sims[0].syscall = "";
  Steps(60);  // silence 6.02 s
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(view->live.reason, "loop w0 stalled 6.0s (cpu-bound)");
  EXPECT_EQ(view->stalls_total[int(StallClass::kCpu)], 1u);
  EXPECT_EQ(Loop("w0")->stall.stall_class, StallClass::kCpu);
}

TEST_F(HealthTest, StallWithoutWatchdogFailsLivenessAndIsCountedUnknown) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  sims[0].watchdog = false;
  Steps(50);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(view->live.reason, "loop w0 stalled 5.0s (no report yet)");
  Steps(20);
  EXPECT_EQ(view->stalls_total[int(StallClass::kUnknown)], 1u);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1);
  EXPECT_EQ(Count(Event::Kind::kStallReport), 0);
  sims[0].beating = true;
  Step();
  EXPECT_TRUE(view->live.ok);
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1);
  EXPECT_EQ(StallsTotal(), 1u);
  EXPECT_EQ(view->stall_duration[int(StallClass::kUnknown)].count, 1u);
}

TEST_F(HealthTest, ReportArrivingAfterTheStallWasCountedKeepsTheCountedClass) {
  // No report by stall_after + 5 polls: counted as unknown. The report
  // (blocked) comes later; the duration must still go under unknown, so
  // stalls_total and the duration histogram agree class by class.
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  sims[0].watchdog = false;
  sims[0].cls = LW_CLASS_BLOCKED;
  Steps(70);
  ASSERT_EQ(view->stalls_total[int(StallClass::kUnknown)], 1u);
  sims[0].watchdog = true;
  Steps(3);
  EXPECT_EQ(Last(Event::Kind::kStallReport).stall.stall_class, StallClass::kBlocked);
  sims[0].beating = true;
  Step();
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1);
  for (int c = 0; c < kStallClasses; c++) {
    EXPECT_EQ(view->stalls_total[c], view->stall_duration[c].count)
        << "class " << StallClassName(StallClass(c));
  }
  EXPECT_EQ(view->stall_duration[int(StallClass::kUnknown)].count, 1u);
}

TEST_F(HealthTest, ShortStallEndingBeforeTheReportIsCountedOnce) {
  // Silent past stall_after, beats again before any report came.
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  sims[0].watchdog = false;
  Steps(51);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 0);  // class not known yet
  sims[0].beating = true;
  Step();
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1);
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1);
  EXPECT_EQ(StallsTotal(), 1u);
}

TEST_F(HealthTest, ReportWithoutTextIsLoggedAtTheNextPoll) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  sims[0].text = "";
  Steps(50);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1);
  EXPECT_EQ(Count(Event::Kind::kStallReport), 0);
  Step();
  EXPECT_EQ(Count(Event::Kind::kStallReport), 1);
  Steps(10);
  EXPECT_EQ(Count(Event::Kind::kStallReport), 1);
}

// Detection happens at the first poll where the silence exceeds stall_after,
// so never later than stall_after + poll_interval after the last beat.
TEST(HealthDetection, FirstPollPastStallAfterForVariousIntervals) {
  const int64_t polls_ms[] = {10, 50, 100, 250, 1000};
  const int64_t stall_ms[] = {1000, 2500, 5000};
  const int64_t beat_offsets_ms[] = {0, 3, 7};
  for (int64_t p : polls_ms) {
    for (int64_t sa : stall_ms) {
      for (int64_t off : beat_offsets_ms) {
        Config c;
        c.poll_interval = std::chrono::milliseconds(p);
        c.stall_after = std::chrono::milliseconds(sa);
        c.lag_above = std::chrono::milliseconds(sa);
        Health h(c);
        SlotSnapshot s;
        s.index = 0;
        s.valid = true;
        s.state = LW_SLOT_ACTIVE;
        s.generation = 2;
        s.claim_token = 7;
        s.owner_alive = 1;
        s.pid = 1;
        snprintf(s.name, sizeof s.name, "x");
        s.interval_ns = uint64_t(std::min<int64_t>(p, 100) * kMs);
        int64_t now = 5000 * kSec;
        s.opened_ns = uint64_t(now - kSec);
        std::vector<Event> ev;
        std::shared_ptr<const View> v;
        for (int k = 0; k < 5; k++) {  // beating
          now += p * kMs;
          s.beat_count++;
          s.last_beat_ns = uint64_t(now - off * kMs);
          v = h.Update(SegmentStatus::kOk, "", {s}, now, 0, &ev);
        }
        ASSERT_EQ(v->loops.at(0).state, LoopState::kLive);
        const int64_t last_beat = int64_t(s.last_beat_ns);
        // Expected: the smallest k with k*p + off > sa.
        int64_t expect_k = (sa - off) / p + 1;
        int detected_at = -1;
        for (int k = 1; k <= expect_k + 3 && detected_at < 0; k++) {
          now += p * kMs;
          v = h.Update(SegmentStatus::kOk, "", {s}, now, 0, &ev);
          if (!v->live.ok) detected_at = k;
        }
        EXPECT_EQ(detected_at, expect_k)
            << "poll " << p << "ms stall_after " << sa << "ms offset " << off;
        EXPECT_LE(now - last_beat, (sa + p) * kMs);
        EXPECT_GT(now - last_beat, sa * kMs);
      }
    }
  }
}

TEST_F(HealthTest, ReportsAreRateLimitedPerLoop) {
  cfg.report_limit = 2;
  cfg.report_window = 10min;
  Open(0, "w0");
  Open(1, "w1");
  Warm();
  auto stall = [&](uint32_t i) {
    sims[i].beating = false;
    Steps(60);
    EXPECT_EQ(slots[i].report.state, LW_REPORT_OPEN);
    sims[i].beating = true;
    Steps(10);
  };
  stall(0);
  stall(0);
  EXPECT_EQ(Count(Event::Kind::kStallReport, "w0"), 2);
  EXPECT_EQ(view->reports_suppressed_total, 0u);
  stall(0);  // third within the window
  EXPECT_EQ(Count(Event::Kind::kStallReport, "w0"), 2) << EventLog();
  EXPECT_EQ(Count(Event::Kind::kStallReportSuppressed, "w0"), 1) << EventLog();
  EXPECT_EQ(view->reports_suppressed_total, 1u);
  // Still counted and ended as a stall.
  EXPECT_EQ(Count(Event::Kind::kStallStarted, "w0"), 3);
  EXPECT_EQ(Count(Event::Kind::kStallEnded, "w0"), 3);
  EXPECT_EQ(view->stalls_total[int(StallClass::kBlocked)], 3u);

  // The limit is per loop: w1 still gets its reports logged.
  stall(1);
  EXPECT_EQ(Count(Event::Kind::kStallReport, "w1"), 1);
  EXPECT_EQ(view->reports_suppressed_total, 1u);

  // Once the window has passed, w0's reports are logged again.
  for (int k = 0; k < 10 * 60 * 10; k++) Step();
  stall(0);
  EXPECT_EQ(Count(Event::Kind::kStallReport, "w0"), 3) << EventLog();
  EXPECT_EQ(Count(Event::Kind::kStallReportSuppressed, "w0"), 1);
  EXPECT_EQ(view->reports_suppressed_total, 1u);
  EXPECT_EQ(view->stalls_total[int(StallClass::kBlocked)], 5u);
}

TEST_F(HealthTest, RecentStallsAreBoundedByStallHistory) {
  cfg.stall_history = 3;
  Open(0, "w0");
  Warm();
  for (int n = 0; n < 5; n++) {
    sims[0].beating = false;
    Steps(55);
    sims[0].beating = true;
    Steps(5);
  }
  EXPECT_EQ(StallsTotal(), 5u);
  ASSERT_EQ(view->recent_stalls->size(), 3u);
  for (size_t i = 1; i < view->recent_stalls->size(); i++) {
    EXPECT_LT((*view->recent_stalls)[i - 1]->id, (*view->recent_stalls)[i]->id);
  }
  for (const auto& r : *view->recent_stalls) EXPECT_GT(r->ended_ns, 0);
}

// The history is shared by the Views published until a stall changes it (a
// poll copies no report text), and a View already handed to an HTTP thread
// keeps the history it was published with.
TEST_F(HealthTest, StallHistoryIsSharedUntilAStallChangesIt) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  Steps(55);
  sims[0].beating = true;
  Steps(5);
  const std::shared_ptr<const View> before = view;
  ASSERT_EQ(before->recent_stalls->size(), 1u);
  Steps(3);
  EXPECT_EQ(view->recent_stalls.get(), before->recent_stalls.get());
  sims[0].beating = false;
  Steps(55);
  ASSERT_EQ(view->recent_stalls->size(), 2u);
  EXPECT_NE(view->recent_stalls.get(), before->recent_stalls.get());
  EXPECT_EQ(before->recent_stalls->size(), 1u);
  EXPECT_GT((*before->recent_stalls)[0]->ended_ns, 0);
}

// ---------------------------------------------------------------------------
// Death and departure.

TEST_F(HealthTest, DeadLoopFailsLivenessOnlyAfterStallAfterWithoutReplacement) {
  Open(0, "w0", 777);
  Warm();
  slots[0].owner_alive = 0;  // SIGKILL: the kernel dropped its lock
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kDead);
  EXPECT_EQ(view->deaths_total, 1u);
  EXPECT_EQ(Count(Event::Kind::kLoopDied, "w0"), 1);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  const int64_t died = now;
  EXPECT_EQ(Loop("w0")->dead_since_ns, died);

  while (now + poll() - died < cfg.stall_after.count()) {
    Step();
    ASSERT_TRUE(view->live.ok) << view->live.reason;
    ASSERT_EQ(StateOf("w0"), LoopState::kDead);
  }
  Steps(2);
  EXPECT_FALSE(view->live.ok);
  EXPECT_THAT(view->live.reason, StartsWith("loop w0 dead: pid 777"));
  EXPECT_TRUE(Loop("w0")->failing_liveness);
  EXPECT_FALSE(view->ready.ok);
  EXPECT_EQ(Count(Event::Kind::kLoopDied), 1) << EventLog();
  EXPECT_EQ(view->deaths_total, 1u);
  EXPECT_EQ(StallsTotal(), 0u);  // dead is not stalled
  EXPECT_GE(Loop("w0")->heartbeat_age_ns, 5 * kSec);

  // A late replacement (the app container restarted) clears it.
  Open(1, "w0-again");
  Step();
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_FALSE(Loop("w0")->failing_liveness);
}

TEST_F(HealthTest, SidecarRestartedWithALeftoverDeadSlotAndLiveLoops) {
  // gunicorn replaced a killed worker long ago (in another slot); the dead
  // slot is still there when a fresh sidecar starts. Its first poll sees the
  // dead slot and the live workers together: they are its replacements.
  Open(0, "w0");
  Open(1, "w1");
  Open(2, "w2");
  for (uint32_t i = 0; i < 3; i++) {
    slots[i].beat_count = 1000;
    slots[i].last_beat_ns = uint64_t(now - 30 * kMs);
  }
  slots[0].owner_alive = 0;
  slots[0].last_beat_ns = uint64_t(now - 120 * kSec);
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kDead);
  Steps(100);
  EXPECT_EQ(StateOf("w1"), LoopState::kLive);
  EXPECT_FALSE(Loop("w0")->failing_liveness);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
}

TEST_F(HealthTest, DeadLoopReplacedByANewLoopKeepsLivenessOk) {
  Open(0, "w0");
  Open(1, "w1");
  Warm();
  slots[0].owner_alive = 0;
  Step();
  Steps(10);
  Open(2, "w2");  // gunicorn respawned the worker, in another slot
  Steps(100);
  EXPECT_EQ(StateOf("w0"), LoopState::kDead);
  EXPECT_FALSE(Loop("w0")->failing_liveness);
  EXPECT_EQ(StateOf("w2"), LoopState::kLive);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
}

TEST_F(HealthTest, ReplacementFirstSeenInTheSamePollAsTheDeathCounts) {
  // gunicorn respawns a killed worker within milliseconds: the death and the
  // new worker's loop can show up in the same poll.
  Open(0, "w0");
  Warm();
  slots[0].owner_alive = 0;
  Open(1, "w1");
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kDead);
  Steps(100);
  EXPECT_EQ(StateOf("w1"), LoopState::kLive);
  EXPECT_FALSE(Loop("w0")->failing_liveness);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
}

TEST_F(HealthTest, LoopsThatWereAlreadyThereAreNoReplacement) {
  Open(0, "w0");
  Open(1, "w1");
  Warm();
  slots[0].owner_alive = 0;
  Steps(60);
  EXPECT_FALSE(view->live.ok);
  EXPECT_THAT(view->live.reason, StartsWith("loop w0 dead"));
}

TEST_F(HealthTest, DeadLoopIsDroppedFromTheViewAfterForgetAfter) {
  cfg.forget_after = 30s;
  Open(0, "w0");
  Open(1, "w1");
  Warm();
  slots[0].owner_alive = 0;
  Step();
  const int64_t died = now;
  while (now + poll() - died <= cfg.forget_after.count()) {
    Step();
    ASSERT_NE(Loop("w0"), nullptr);
  }
  Step();
  EXPECT_EQ(Loop("w0"), nullptr);
  EXPECT_EQ(view->loops.size(), 1u);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
  EXPECT_EQ(view->deaths_total, 1u);
  EXPECT_EQ(Count(Event::Kind::kLoopDied), 1);
}

TEST_F(HealthTest, DeathDuringAStallEndsTheStall) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  Steps(60);
  ASSERT_EQ(StateOf("w0"), LoopState::kStalled);
  slots[0].owner_alive = 0;  // the arbiter killed the stuck worker
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kDead);
  EXPECT_FALSE(Loop("w0")->stall_open);
  EXPECT_EQ(view->deaths_total, 1u);
  EXPECT_EQ(StallsTotal(), 1u);
  Steps(100);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1);
  EXPECT_EQ(Count(Event::Kind::kLoopDied), 1);
  // The stall is over: logged as ended once, in the duration histogram, and
  // /debug/stalls' copy no longer shows it open.
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1) << EventLog();
  EXPECT_EQ(view->stall_duration[int(StallClass::kBlocked)].count, 1u);
  ASSERT_EQ(view->recent_stalls->size(), 1u);
  EXPECT_GT((*view->recent_stalls)[0]->ended_ns, 0);
  EXPECT_GE((*view->recent_stalls)[0]->duration_ns, 6 * kSec);
}

TEST_F(HealthTest, ClosedSlotIsGoneAndKeptUntilForgetAfter) {
  cfg.forget_after = 20s;
  Open(0, "w0");
  Open(1, "w1");
  Warm();
  slots[0].state = LW_SLOT_CLOSED;
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kGone);
  EXPECT_EQ(Count(Event::Kind::kLoopGone, "w0"), 1);
  EXPECT_EQ(Last(Event::Kind::kLoopGone).message, "closed");
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
  const int64_t gone = now;
  while (now + poll() - gone <= cfg.forget_after.count()) {
    Step();
    ASSERT_NE(Loop("w0"), nullptr);
    ASSERT_EQ(StateOf("w0"), LoopState::kGone);
  }
  Step();
  EXPECT_EQ(Loop("w0"), nullptr);
  EXPECT_EQ(Count(Event::Kind::kLoopGone), 1);
  EXPECT_EQ(view->deaths_total, 0u);
}

TEST_F(HealthTest, ClosedWhileStalledIsNotALivenessFailure) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  Steps(60);
  ASSERT_FALSE(view->live.ok);
  slots[0].state = LW_SLOT_CLOSED;
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kGone);
  EXPECT_FALSE(Loop("w0")->stall_open);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1) << EventLog();
  EXPECT_EQ(view->stall_duration[int(StallClass::kBlocked)].count, 1u);
  ASSERT_EQ(view->recent_stalls->size(), 1u);
  EXPECT_GT((*view->recent_stalls)[0]->ended_ns, 0);
}

TEST_F(HealthTest, ReclaimedSlotIsANewLoop) {
  Open(0, "old");
  Warm();
  // The old owner died; a new process reclaimed the slot before we noticed.
  Open(0, "new");
  Step();
  EXPECT_EQ(StateOf("old"), LoopState::kGone);
  EXPECT_EQ(StateOf("new"), LoopState::kLive);
  EXPECT_EQ(Count(Event::Kind::kLoopGone, "old"), 1);
  EXPECT_EQ(Last(Event::Kind::kLoopGone).message, "slot reclaimed");
  EXPECT_EQ(Count(Event::Kind::kLoopAppeared, "new"), 1);
  EXPECT_EQ(Loop("new")->slot, 0u);
  EXPECT_EQ(Loop("new")->generation, slots[0].generation);
  EXPECT_EQ(Loop("new")->beats, 1u);
  EXPECT_TRUE(view->live.ok);

  // Same generation, new claim token: also a new loop.
  Steps(3);
  slots[0].claim_token++;
  snprintf(slots[0].name, sizeof slots[0].name, "newer");
  Step();
  EXPECT_EQ(StateOf("new"), LoopState::kGone);
  EXPECT_EQ(Count(Event::Kind::kLoopAppeared, "newer"), 1);
}

TEST_F(HealthTest, FreedSlotWithANewGenerationIsGone) {
  Open(0, "w0");
  Warm();
  slots[0].state = LW_SLOT_FREE;
  slots[0].generation += 2;
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kGone);
  EXPECT_EQ(Count(Event::Kind::kLoopGone), 1);
  Steps(3);
  EXPECT_EQ(Count(Event::Kind::kLoopGone), 1);
}

// ---------------------------------------------------------------------------
// Liveness policy.

class PolicyTest : public HealthTest {
 protected:
  void ThreeLoopsOneStalled() {
    Open(0, "a");
    Open(1, "b");
    Open(2, "c");
    Warm();
    sims[1].beating = false;
    Steps(55);
    ASSERT_EQ(StateOf("b"), LoopState::kStalled);
    ASSERT_EQ(StateOf("a"), LoopState::kLive);
  }
};

TEST_F(PolicyTest, AnyFailsWhenOneOfThreeIsStalled) {
  cfg.liveness_policy = LivenessPolicy::kAny;
  ThreeLoopsOneStalled();
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(view->live.reason, "loop b stalled 5.5s (blocked in clock_nanosleep)");
}

TEST_F(PolicyTest, AllPassesWhenTwoOfThreeAreHealthy) {
  cfg.liveness_policy = LivenessPolicy::kAll;
  ThreeLoopsOneStalled();
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_THAT(view->live.reason, HasSubstr("2 of 3"));
  EXPECT_THAT(view->live.reason, HasSubstr("loop b stalled"));
  EXPECT_FALSE(view->ready.ok);  // readiness is always per loop
}

TEST_F(PolicyTest, BothFailWhenAllAreStalled) {
  for (LivenessPolicy p : {LivenessPolicy::kAny, LivenessPolicy::kAll}) {
    SCOPED_TRACE(p == LivenessPolicy::kAny ? "any" : "all");
    cfg.liveness_policy = p;
    health.reset();
    all_events.clear();
    Open(0, "a");
    Open(1, "b");
    Open(2, "c");
    Warm();
    for (uint32_t i = 0; i < 3; i++) sims[i].beating = false;
    Steps(55);
    EXPECT_FALSE(view->live.ok);
    EXPECT_THAT(view->live.reason, HasSubstr("stalled"));
    EXPECT_THAT(view->live.reason, HasSubstr("(+2 more)"));
  }
}

TEST_F(PolicyTest, AllWithADeadUnreplacedLoopAndTwoHealthy) {
  cfg.liveness_policy = LivenessPolicy::kAll;
  Open(0, "a");
  Open(1, "b");
  Open(2, "c");
  Warm();
  slots[0].owner_alive = 0;
  Steps(60);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_THAT(view->live.reason, HasSubstr("2 of 3"));
}

// ---------------------------------------------------------------------------
// Host pauses.

class HostPauseTest : public HealthTest {
 protected:
  // The whole pod is frozen for `len`: neither the app nor the sidecar runs;
  // the sidecar's next poll is late by `len`.
  void PodPause(int64_t len) {
    now += len + poll();
    Poll(len);
  }
};

TEST_F(HostPauseTest, PauseExplainingTheSilenceIsClassedHostAndPassesLiveness) {
  Open(0, "w0");
  Warm();
  PodPause(8 * kSec);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_GE(Loop("w0")->heartbeat_age_ns, 8 * kSec);
  EXPECT_EQ(Loop("w0")->stall.stall_class, StallClass::kHost);
  EXPECT_FALSE(Loop("w0")->failing_liveness);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_EQ(view->last_poll_lateness_ns, 8 * kSec);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1);  // logged at once
  EXPECT_EQ(Last(Event::Kind::kStallStarted).stall.stall_class,
            StallClass::kHost);
  // Both resume: the next beat ends it.
  Step();
  EXPECT_TRUE(view->live.ok);
  EXPECT_NE(StateOf("w0"), LoopState::kStalled);
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1);
  EXPECT_EQ(Last(Event::Kind::kStallEnded).stall.stall_class, StallClass::kHost);
  EXPECT_EQ(view->stall_duration[int(StallClass::kHost)].count, 1u);
  EXPECT_EQ(view->stalls_total[int(StallClass::kHost)], 1u);
  EXPECT_EQ(StallsTotal(), 1u);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1);
  EXPECT_EQ(view->last_poll_lateness_ns, 0);
}

// /debug/stalls lists every counted stall, not only those whose report was
// logged: a host pause has no report, yet the on-call engineer must see it.
TEST_F(HostPauseTest, HostStallWithoutReportIsInTheStallHistory) {
  Open(0, "w0");
  Warm();
  PodPause(8 * kSec);
  ASSERT_EQ(view->recent_stalls->size(), 1u);
  EXPECT_EQ((*view->recent_stalls)[0]->stall_class, StallClass::kHost);
  EXPECT_FALSE((*view->recent_stalls)[0]->has_report);
  EXPECT_EQ((*view->recent_stalls)[0]->ended_ns, 0);
  Step();
  ASSERT_EQ(view->recent_stalls->size(), 1u);  // updated in place, not added
  EXPECT_GT((*view->recent_stalls)[0]->ended_ns, 0);
}

TEST_F(HostPauseTest, HostStallFailsLivenessWhenConfigured) {
  cfg.host_stall_fails_liveness = true;
  Open(0, "w0");
  Warm();
  PodPause(8 * kSec);
  EXPECT_EQ(Loop("w0")->stall.stall_class, StallClass::kHost);
  EXPECT_FALSE(view->live.ok);
  EXPECT_THAT(view->live.reason, StartsWith("loop w0 stalled 8."));
  EXPECT_THAT(view->live.reason, HasSubstr("(host paused)"));
}

TEST_F(HostPauseTest, SilenceLongAfterThePauseIsAGenuineStall) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;  // the loop does not come back after the pause
  PodPause(8 * kSec);
  const int64_t pause_end = now;
  EXPECT_EQ(Loop("w0")->stall.stall_class, StallClass::kHost);
  EXPECT_TRUE(view->live.ok);
  // The silence of its own (beyond the pause) reaches stall_after 5 s after
  // the pause ended (the loop's last beat was 20 ms before the pause, plus
  // the 100 ms the poll was planned after it).
  while (now + poll() - pause_end < 4900 * kMs) {
    Step();
    ASSERT_TRUE(view->live.ok) << (now - pause_end) << " " << view->live.reason;
  }
  Steps(3);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_FALSE(view->live.ok);
  EXPECT_NE(Loop("w0")->stall.stall_class, StallClass::kHost);
  EXPECT_EQ(Loop("w0")->stall.stall_class, StallClass::kBlocked);
  EXPECT_THAT(view->live.reason, HasSubstr("(blocked in clock_nanosleep)"));
  sims[0].beating = true;
  Step();
  EXPECT_TRUE(view->live.ok);
  // One stall, counted once, under one class, the same in the counters and
  // in the duration histogram.
  EXPECT_EQ(StallsTotal(), 1u);
  EXPECT_EQ(Count(Event::Kind::kStallEnded), 1);
  const StallClass final_class = Last(Event::Kind::kStallEnded).stall.stall_class;
  EXPECT_EQ(final_class, StallClass::kBlocked);
  for (int c = 0; c < kStallClasses; c++) {
    EXPECT_EQ(view->stalls_total[c], view->stall_duration[c].count)
        << "class " << StallClassName(StallClass(c));
  }
  EXPECT_EQ(view->stalls_total[int(StallClass::kBlocked)], 1u);
}

TEST_F(HostPauseTest, ShortLatenessIsNotAPause) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  sims[0].watchdog = false;
  // Polls a little late each time (40 ms, under the 50 ms floor): a stall
  // is still the app's.
  for (int k = 0; k < 50; k++) {
    now += poll() + 40 * kMs;
    Poll(40 * kMs);
  }
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_NE(Loop("w0")->stall.stall_class, StallClass::kHost);
  EXPECT_FALSE(view->live.ok);
}

TEST_F(HostPauseTest, StallThatBeganLongBeforeAShortPauseIsTheApps) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  Steps(40);  // 4 s of silence of its own
  PodPause(2 * kSec);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  // 6.1 s of silence, 2 s explained by the pause: 4.1 s its own: host...
  Steps(15);  // ... until its own silence passes 5 s
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_EQ(Loop("w0")->stall.stall_class, StallClass::kBlocked);
  EXPECT_FALSE(view->live.ok);
}

// ---------------------------------------------------------------------------
// App timestamps: the sidecar restarted mid-stall, implausible values.

TEST_F(HealthTest, SidecarRestartedMidStallReportsTheTrueAge) {
  Open(0, "uvicorn-7");
  slots[0].beat_count = 500;
  slots[0].opened_ns = uint64_t(now - 60 * kSec);
  slots[0].last_beat_ns = uint64_t(now - 6 * kSec);
  OpenReport(0);
  Poll();  // the first poll of a fresh sidecar
  EXPECT_EQ(StateOf("uvicorn-7"), LoopState::kStalled);
  EXPECT_EQ(Loop("uvicorn-7")->heartbeat_age_ns, 6 * kSec);
  EXPECT_EQ(Loop("uvicorn-7")->stall.started_ns, now - 6 * kSec);
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(view->live.reason,
            "loop uvicorn-7 stalled 6.0s (blocked in clock_nanosleep)");
  EXPECT_EQ(view->stalls_total[int(StallClass::kBlocked)], 1u);
  // Its age keeps growing from the app's timestamp.
  sims[0].beating = false;
  Steps(5);
  EXPECT_EQ(Loop("uvicorn-7")->heartbeat_age_ns, 6500 * kMs);
  sims[0].beating = true;
  Step();
  ASSERT_EQ(Count(Event::Kind::kStallEnded), 1);
  EXPECT_EQ(Last(Event::Kind::kStallEnded).stall.duration_ns, 6580 * kMs);
}

TEST_F(HealthTest, SidecarRestartedWhileHealthyIsLive) {
  Open(0, "w0");
  slots[0].beat_count = 500;
  slots[0].last_beat_ns = uint64_t(now - 30 * kMs);
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 30 * kMs);
  EXPECT_TRUE(view->live.ok);
  EXPECT_TRUE(view->startup.ok);
}

TEST_F(HealthTest, FutureAppTimestampFallsBackToTheSidecarClock) {
  Open(0, "w0");
  slots[0].beat_count = 500;
  slots[0].last_beat_ns = uint64_t(now + 10 * kSec);
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 0);
  EXPECT_TRUE(view->live.ok);
  // Silent from here on: measured on the sidecar's clock.
  sims[0].beating = false;
  Steps(50);
  EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 5 * kSec);
  EXPECT_TRUE(view->live.ok);
  Step();
  EXPECT_FALSE(view->live.ok);
}

TEST_F(HealthTest, YearsOldAppTimestampFallsBackToTheSidecarClock) {
  now = int64_t(400) * 24 * 3600 * kSec;  // 400 days of uptime
  Open(0, "w0");
  slots[0].beat_count = 500;
  slots[0].last_beat_ns = uint64_t(1 * kSec);
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 0);
  EXPECT_TRUE(view->live.ok);
}

TEST_F(HealthTest, BeatWithImplausibleTimestampIsTimedBySidecar) {
  Open(0, "w0");
  Warm();
  // A beat whose timestamp is far in the past: the counter moved, so the
  // loop beat since the last poll; its age is at most one poll.
  now += poll();
  slots[0].beat_count++;
  slots[0].last_beat_ns = uint64_t(now - 3600 * kSec);
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 0);
}

// ---------------------------------------------------------------------------
// Startup.

TEST_F(HealthTest, StartupWaitsForExpectLoopsThenStaysOk) {
  cfg.expect_loops = 2;
  Open(0, "w0");
  Open(1, "w1");
  sims[1].beating = false;
  sims[1].watchdog = false;
  Poll();
  EXPECT_FALSE(view->startup.ok);
  EXPECT_EQ(view->startup.reason, "waiting for 2 loops to beat (0 so far)");
  EXPECT_FALSE(view->ready.ok);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  Steps(5);
  EXPECT_FALSE(view->startup.ok);
  EXPECT_EQ(view->startup.reason, "waiting for 2 loops to beat (1 so far)");
  EXPECT_FALSE(view->started);
  EXPECT_EQ(StateOf("w1"), LoopState::kStarting);
  sims[1].beating = true;
  Step();
  EXPECT_TRUE(view->startup.ok) << view->startup.reason;
  EXPECT_TRUE(view->started);
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
  // Stays ok whatever happens next.
  sims[0].beating = false;
  sims[1].beating = false;
  Steps(60);
  EXPECT_FALSE(view->live.ok);
  EXPECT_TRUE(view->startup.ok);
  slots[0].state = LW_SLOT_CLOSED;
  slots[1].state = LW_SLOT_CLOSED;
  Steps(3);
  EXPECT_TRUE(view->startup.ok);
}

TEST_F(HealthTest, LoopThatNeverBeatIsStartingWithinGraceThenStalled) {
  cfg.startup_grace = 20s;
  Open(0, "w0");
  sims[0].beating = false;
  sims[0].watchdog = false;
  const int64_t opened = int64_t(slots[0].opened_ns);
  Poll();
  while (now + poll() - opened < cfg.startup_grace.count()) {
    Step();
    ASSERT_EQ(StateOf("w0"), LoopState::kStarting) << (now - opened);
    ASSERT_TRUE(view->live.ok) << view->live.reason;
  }
  Steps(2);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_FALSE(view->live.ok);
  EXPECT_THAT(view->live.reason, StartsWith("loop w0 stalled 20."));
  EXPECT_FALSE(view->startup.ok);
}

TEST_F(HealthTest, NeverBeatReportMatchesOpenedNs) {
  cfg.startup_grace = 2s;
  Open(0, "w0");
  sims[0].beating = false;
  Poll();
  Steps(60);
  EXPECT_EQ(StateOf("w0"), LoopState::kStalled);
  EXPECT_TRUE(Loop("w0")->stall.has_report);
  EXPECT_THAT(view->live.reason, HasSubstr("(blocked in clock_nanosleep)"));
}

// ---------------------------------------------------------------------------
// Segment problems.

TEST_F(HealthTest, SegmentProblemsAreAClearStateOnEveryVerdict) {
  status = SegmentStatus::kMissing;
  segment_error = "segment /run/loopwatch/segment: No such file or directory";
  Poll();
  EXPECT_TRUE(view->live.ok);
  EXPECT_EQ(view->live.reason,
            "ok: liveness not judged: segment missing (the app has not created it yet)");
  EXPECT_FALSE(view->ready.ok);
  EXPECT_EQ(view->ready.reason, "segment missing (the app has not created it yet)");
  EXPECT_FALSE(view->startup.ok);
  EXPECT_EQ(view->startup.reason, view->ready.reason);
  EXPECT_EQ(view->segment, SegmentStatus::kMissing);
  EXPECT_EQ(view->segment_error, segment_error);
  EXPECT_TRUE(view->loops.empty());
  EXPECT_EQ(CountNow(Event::Kind::kSegmentProblem), 1);
  EXPECT_EQ(Last(Event::Kind::kSegmentProblem).message, segment_error);
  EXPECT_EQ(view->segment_errors_total, 1u);

  for (int k = 0; k < 10; k++) Poll();
  EXPECT_EQ(Count(Event::Kind::kSegmentProblem), 1);
  EXPECT_EQ(view->segment_errors_total, 1u);

  status = SegmentStatus::kVersionMismatch;
  segment_error = "segment format version 2.0, this sidecar reads 1.x";
  Poll();
  EXPECT_EQ(Count(Event::Kind::kSegmentProblem), 2);
  EXPECT_EQ(Last(Event::Kind::kSegmentProblem).message, segment_error);  // the log's
  EXPECT_EQ(view->segment_errors_total, 2u);
  EXPECT_EQ(view->ready.reason, "segment version_mismatch (another major format version)");
  EXPECT_EQ(view->startup.reason, view->ready.reason);
  EXPECT_TRUE(view->live.ok);
  EXPECT_THAT(view->live.reason, HasSubstr("liveness not judged"));

  // The reader's error may quote the file; the verdicts (the public port's
  // bodies) never do.
  status = SegmentStatus::kBadMagic;
  segment_error = "segment /x is not a loopwatch segment (magic 0x5445524345532121)";
  Poll();
  for (const Verdict* v : {&view->live, &view->ready, &view->startup}) {
    EXPECT_EQ(v->reason.find("0x"), std::string::npos) << v->reason;
  }
  EXPECT_EQ(view->segment_error, segment_error);

  status = SegmentStatus::kOk;
  segment_error.clear();
  Open(0, "w0");
  Poll();
  EXPECT_EQ(Count(Event::Kind::kSegmentOk), 1);
  Steps(3);
  EXPECT_TRUE(view->live.ok);
  EXPECT_TRUE(view->ready.ok) << view->ready.reason;
  EXPECT_TRUE(view->startup.ok);
  EXPECT_EQ(Count(Event::Kind::kSegmentOk), 1);

  status = SegmentStatus::kCorrupt;
  segment_error = "";  // no text: the status name is the reason
  Poll();
  EXPECT_EQ(Count(Event::Kind::kSegmentProblem), 4);
  EXPECT_EQ(view->segment_errors_total, 4u);
  EXPECT_THAT(view->ready.reason, HasSubstr("corrupt"));
  EXPECT_TRUE(view->live.ok);
  EXPECT_TRUE(view->loops.empty());
}

// Loops were live, then the segment became unreadable (deleted, replaced by
// something that is not a segment, truncated): their stalls would pass
// unseen. Past stall_after, liveness fails, once logged; readable again,
// all is as before.
TEST_F(HealthTest, SegmentUnreadableAfterLoopsWereLiveFailsLivenessAfterStallAfter) {
  Open(0, "w0");
  Open(1, "w1");
  Warm();
  ASSERT_TRUE(view->live.ok);
  status = SegmentStatus::kMissing;
  segment_error = "segment /run/loopwatch/segment: No such file or directory";
  Poll();
  EXPECT_TRUE(view->live.ok);
  EXPECT_THAT(view->live.reason, HasSubstr("liveness not judged"));
  EXPECT_EQ(view->loops_lost, 2u);
  EXPECT_EQ(view->unreadable_since_ns, now);
  const int64_t since = now;

  now += cfg.stall_after.count() - poll();
  Poll();
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_EQ(CountNow(Event::Kind::kSegmentLost), 0);
  now += poll();
  Poll();
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(view->live.reason,
            "segment missing (the app has not created it yet) for 5.0s after 2 loops were "
            "live: they cannot be watched");
  EXPECT_EQ(CountNow(Event::Kind::kSegmentLost), 1);
  EXPECT_EQ(Last(Event::Kind::kSegmentLost).message, view->live.reason);
  EXPECT_FALSE(view->ready.ok);
  EXPECT_EQ(view->unreadable_since_ns, since);
  for (int k = 0; k < 20; k++) {
    now += poll();
    Poll();
  }
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(Count(Event::Kind::kSegmentLost), 1);  // logged once

  // Another kind of unreadable keeps the clock running.
  status = SegmentStatus::kCorrupt;
  now += poll();
  Poll();
  EXPECT_FALSE(view->live.ok);
  EXPECT_THAT(view->live.reason, HasSubstr("segment corrupt (corrupt) for 7.1s after 2 loops"));

  // The app created the segment again and its loops came back.
  status = SegmentStatus::kOk;
  segment_error.clear();
  Open(0, "w0");
  Open(1, "w1");
  Steps(3);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_EQ(view->loops_lost, 0u);
  EXPECT_EQ(view->unreadable_since_ns, 0);

  // Lost again: failing again after stall_after, and logged again.
  status = SegmentStatus::kMissing;
  for (int k = 0; k <= int(cfg.stall_after.count() / poll()); k++) {
    now += poll();
    Poll();
  }
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(Count(Event::Kind::kSegmentLost), 2);
}

TEST_F(HealthTest, SegmentNeverReadWithLiveLoopsIsNeverALivenessFailure) {
  status = SegmentStatus::kMissing;
  for (int k = 0; k < 20 * int(cfg.stall_after.count() / poll()); k++) {
    now += poll();
    Poll();
  }
  EXPECT_TRUE(view->live.ok);
  EXPECT_EQ(view->loops_lost, 0u);
  // Loops that never beat were not live either.
  status = SegmentStatus::kOk;
  Open(0, "w0");
  sims[0].beating = false;
  Poll();
  status = SegmentStatus::kMissing;
  for (int k = 0; k < 3 * int(cfg.stall_after.count() / poll()); k++) {
    now += poll();
    Poll();
  }
  EXPECT_TRUE(view->live.ok) << view->live.reason;
  EXPECT_EQ(Count(Event::Kind::kSegmentLost), 0);
}

TEST_F(HealthTest, HealthySegmentAtStartIsNoEvent) {
  Open(0, "w0");
  Poll();
  EXPECT_EQ(Count(Event::Kind::kSegmentOk), 0);
  EXPECT_EQ(Count(Event::Kind::kSegmentProblem), 0);
  EXPECT_EQ(view->segment_errors_total, 0u);
}

TEST_F(HealthTest, SegmentProblemDuringAStallDoesNotFailLiveness) {
  Open(0, "w0");
  Warm();
  sims[0].beating = false;
  Steps(60);
  ASSERT_FALSE(view->live.ok);
  status = SegmentStatus::kCorrupt;
  segment_error = "slot_count 0";
  Poll();
  EXPECT_TRUE(view->live.ok);
  EXPECT_FALSE(view->ready.ok);
  // Back: the stall is still there, with its age.
  status = SegmentStatus::kOk;
  segment_error.clear();
  Step();
  EXPECT_FALSE(view->live.ok);
  EXPECT_EQ(Count(Event::Kind::kStallStarted), 1);
}

// ---------------------------------------------------------------------------
// Garbage in the segment.

TEST_F(HealthTest, InvalidSnapshotsAreIgnored) {
  SlotSnapshot& s = slots[3];
  s.valid = false;
  s.state = LW_SLOT_ACTIVE;
  s.beat_count = ~uint64_t{0};
  s.last_beat_ns = ~uint64_t{0};
  s.owner_alive = 0;
  Poll();
  EXPECT_TRUE(view->loops.empty());
  EXPECT_TRUE(all_events.empty()) << EventLog();

  Open(0, "w0");
  Warm();
  slots[0].valid = false;
  slots[0].owner_alive = 0;
  slots[0].state = LW_SLOT_CLOSED;
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Count(Event::Kind::kLoopDied), 0);
  EXPECT_EQ(Count(Event::Kind::kLoopGone), 0);
  EXPECT_EQ(view->deaths_total, 0u);
}

TEST_F(HealthTest, BeatCountGoingBackwardsIsABeat) {
  Open(0, "w0");
  Warm();
  now += poll();
  slots[0].beat_count = 3;
  slots[0].last_beat_ns = uint64_t(now - 10 * kMs);
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 10 * kMs);
  EXPECT_GE(Loop("w0")->lag_ns, 0);
}

TEST_F(HealthTest, LagCountersGoingBackwardsGiveNoNegativeLag) {
  Open(0, "w0");
  Warm();
  now += poll();
  slots[0].beat_count++;
  slots[0].last_beat_ns = uint64_t(now - 10 * kMs);
  slots[0].lag_sum_ns = 0;
  slots[0].lag_count = 1;
  for (auto& b : slots[0].lag_bucket) b = 0;
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_GE(Loop("w0")->lag_ns, 0);
  Step();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_GE(Loop("w0")->lag_ns, 0);
}

TEST_F(HealthTest, HugeLagSumGivesNoNegativeLag) {
  Open(0, "w0");
  Warm();
  now += poll();
  slots[0].beat_count++;
  slots[0].last_beat_ns = uint64_t(now - 10 * kMs);
  slots[0].lag_sum_ns = ~uint64_t{0};
  slots[0].lag_count++;
  Poll();
  EXPECT_GE(Loop("w0")->lag_ns, 0);
}

TEST_F(HealthTest, IntervalZeroAndMaxLastBeatDoNotBreakAges) {
  Open(0, "w0");
  slots[0].interval_ns = 0;
  Warm();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Loop("w0")->interval_ns, 0);
  // A beat whose timestamp is all ones.
  now += poll();
  slots[0].beat_count++;
  slots[0].last_beat_ns = ~uint64_t{0};
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_GE(Loop("w0")->heartbeat_age_ns, 0);
  EXPECT_LE(Loop("w0")->heartbeat_age_ns, poll());
  EXPECT_GE(Loop("w0")->lag_ns, 0);
}

TEST_F(HealthTest, FirstSightWithAllOnesTimestampsIsNotAStall) {
  // A loop first seen with last_beat_ns and opened_ns all ones: nothing can
  // be trusted, so its age starts on the sidecar's clock.
  Open(0, "w0");
  slots[0].beat_count = 10;
  slots[0].last_beat_ns = ~uint64_t{0};
  slots[0].opened_ns = ~uint64_t{0};
  Poll();
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);
  EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 0);
  EXPECT_TRUE(view->live.ok) << view->live.reason;
}

TEST_F(HealthTest, OpenedInTheFutureGetsTheFullStartupGrace) {
  cfg.startup_grace = 20s;
  for (uint64_t opened : {uint64_t(now + 3600 * kSec), ~uint64_t{0},
                          uint64_t{1} << 63}) {
    SCOPED_TRACE(opened);
    health.reset();
    Open(0, "w0");
    sims[0].beating = false;
    sims[0].watchdog = false;
    slots[0].opened_ns = opened;
    Poll();
    EXPECT_EQ(StateOf("w0"), LoopState::kStarting);
    EXPECT_EQ(Loop("w0")->heartbeat_age_ns, 0);
    EXPECT_TRUE(view->live.ok) << view->live.reason;
    Steps(100);  // 10 s: within the grace, counted from first sight
    EXPECT_EQ(StateOf("w0"), LoopState::kStarting);
    EXPECT_TRUE(view->live.ok) << view->live.reason;
  }
}

TEST_F(HealthTest, FuzzedSnapshotsNeverCrashAndAgesStaySane) {
  std::mt19937_64 rng(12345);
  auto pick = [&](uint64_t around) -> uint64_t {
    switch (rng() % 10) {
      case 0: return 0;
      case 1: return ~uint64_t{0};
      case 2: return uint64_t{1} << 63;
      case 3: return (uint64_t{1} << 63) - 1;
      case 4: return around + rng() % (10 * kSec);
      case 5: return around - rng() % (10 * kSec);
      case 6: return rng();
      case 7: return around;
      default: return around - rng() % kSec;
    }
  };
  for (uint32_t i = 0; i < kSlots; i++) Open(i, "f" + std::to_string(i));
  std::set<std::string> reported;
  for (int round = 0; round < 10000; round++) {
    now += int64_t(rng() % (2 * poll())) + 1;
    for (uint32_t i = 0; i < kSlots; i++) {
      SlotSnapshot& s = slots[i];
      uint64_t r = rng() % 100;
      if (r < 60) {
        // A plausible beat.
        Beat(i, -1, int64_t(rng() % (2 * kSec)));
      } else if (r < 75) {
        s.beat_count = pick(s.beat_count);
        s.last_beat_ns = pick(uint64_t(now));
        s.lag_sum_ns = pick(s.lag_sum_ns);
        s.lag_count = pick(s.lag_count);
        s.lag_max_ns = pick(s.lag_max_ns);
        for (auto& b : s.lag_bucket) b = pick(b);
        s.interval_ns = pick(s.interval_ns);
        s.opened_ns = pick(uint64_t(now));
      } else if (r < 80) {
        s.report.state = uint32_t(rng() % 4);
        s.report.stall_class = uint32_t(rng() % 5);
        s.report.stall_start_ns = rng() % 2 ? s.last_beat_ns : pick(uint64_t(now));
        s.report.loop_cpu_ns = pick(0);
      } else if (r < 83) {
        s.owner_alive = int(rng() % 3) - 1;
      } else if (r < 85) {
        s.state = uint32_t(rng() % 4);
      } else if (r < 87) {
        s.generation = uint32_t(rng());
        s.claim_token = rng();
      } else if (r < 89) {
        s.valid = !s.valid;
      } else if (r < 90) {
        s.ready = !s.ready;
      }
    }
    int64_t lateness = rng() % 20 == 0 ? int64_t(rng() % (10 * kSec)) : 0;
    status = rng() % 50 == 0 ? SegmentStatus::kCorrupt : SegmentStatus::kOk;
    Poll(lateness);
    // Each invariant is reported once (the first round that breaks it), so
    // that one run shows every kind of violation.
    auto check = [&](bool ok, const char* what, const std::string& detail) {
      if (ok || reported.count(what)) return;
      reported.insert(what);
      ADD_FAILURE() << what << " broken at round " << round << ": " << detail;
    };
    check(!view->live.reason.empty(), "live reason set", "");
    check(!view->ready.reason.empty(), "ready reason set", "");
    check(!view->startup.reason.empty(), "startup reason set", "");
    for (const LoopView& l : view->loops) {
      const std::string who = l.name + " state " + LoopStateName(l.state);
      check(l.heartbeat_age_ns >= 0, "heartbeat_age_ns >= 0",
            who + " " + std::to_string(l.heartbeat_age_ns));
      check(l.lag_ns >= 0, "lag_ns >= 0", who + " " + std::to_string(l.lag_ns));
      check(l.stall.duration_ns >= 0, "stall.duration_ns >= 0",
            who + " " + std::to_string(l.stall.duration_ns));
      check(l.lag_p99_ns >= -1, "lag_p99_ns >= -1",
            who + " " + std::to_string(l.lag_p99_ns));
    }
    for (const auto& r : *view->recent_stalls) {
      check(r->duration_ns >= 0, "recent_stalls duration_ns >= 0",
            r->loop + " " + std::to_string(r->duration_ns));
    }
    if (round % 1000 == 999) all_events.clear();
  }
}

// ---------------------------------------------------------------------------
// Lag p99 over the recent window.

TEST_F(HealthTest, LagP99ComesFromTheRecentHistogramWindow) {
  Open(0, "w0");
  Poll();
  EXPECT_EQ(Loop("w0")->lag_p99_ns, -1);  // nothing yet
  sims[0].extra_lag = 3 * kMs;            // bucket (2.5 ms, 5 ms]
  Steps(150);                             // 15 s
  EXPECT_EQ(Loop("w0")->lag_p99_ns, 5 * kMs);

  // Three slow beats among ~100 in the window: more than 1%, they set the
  // p99 (one would not: 1 in 100 is exactly the 1% above the p99).
  sims[0].extra_lag = 40 * kMs;  // (25 ms, 50 ms]
  Steps(3);
  sims[0].extra_lag = 3 * kMs;
  Step();
  EXPECT_EQ(Loop("w0")->lag_p99_ns, 50 * kMs);
  EXPECT_EQ(StateOf("w0"), LoopState::kLive);

  // Ten seconds later it has left the window.
  Steps(120);
  EXPECT_EQ(Loop("w0")->lag_p99_ns, 5 * kMs);

  // Beyond the last finite bucket: the p99 is the max lag.
  sims[0].extra_lag = 40 * kSec;
  Steps(20);
  sims[0].extra_lag = 0;
  EXPECT_EQ(Loop("w0")->lag_p99_ns, int64_t(slots[0].lag_max_ns));
  EXPECT_GE(Loop("w0")->lag_p99_ns, 40 * kSec);

  // The segment's own histogram is passed through for the metrics.
  for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
    EXPECT_EQ(Loop("w0")->lag_bucket[b], slots[0].lag_bucket[b]);
  }
  EXPECT_EQ(Loop("w0")->lag_sum_ns, slots[0].lag_sum_ns);
  EXPECT_EQ(Loop("w0")->lag_count, slots[0].lag_count);
  EXPECT_EQ(Loop("w0")->lag_max_ns, slots[0].lag_max_ns);
}

TEST_F(HealthTest, LagP99IgnoresAFewSlowBeatsAmongMany) {
  Open(0, "w0");
  Poll();
  sims[0].extra_lag = 3 * kMs;
  Steps(50);
  // Many beats per poll: 1000 quick ones and one slow, within the window.
  SlotSnapshot& s = slots[0];
  now += poll();
  s.lag_bucket[BucketOf(3 * kMs)] += 1000;
  s.lag_count += 1000;
  s.lag_sum_ns += 3000 * kMs;
  s.lag_bucket[BucketOf(700 * kMs)] += 1;
  s.lag_count += 1;
  s.lag_sum_ns += 700 * kMs;
  s.beat_count += 1001;
  s.last_beat_ns = uint64_t(now - 1 * kMs);
  Poll();
  EXPECT_EQ(Loop("w0")->lag_p99_ns, 5 * kMs);
}

// `loopwatch inject` watching two containers: each one's verdict is judged
// on its own loops only, and a container none of whose loops has beaten is
// not judged yet (its probes pass, or ask its own probe).
TEST_F(HealthTest, EachContainerIsJudgedOnItsOwnLoops) {
  snprintf(Open(0, "web-0").container, LW_SLOT_CONTAINER_SIZE, "%s", "web");
  snprintf(Open(1, "worker-0").container, LW_SLOT_CONTAINER_SIZE, "%s", "worker");
  sims[1].beating = false;  // worker has opened its loop, not beaten yet
  Warm();
  ASSERT_EQ(view->containers.size(), 2u);
  const ContainerVerdicts* web = FindContainer(*view, "web");
  const ContainerVerdicts* worker = FindContainer(*view, "worker");
  ASSERT_NE(web, nullptr);
  ASSERT_NE(worker, nullptr);
  EXPECT_TRUE(web->beaten);
  EXPECT_TRUE(web->live.ok && web->ready.ok && web->startup.ok) << web->ready.reason;
  EXPECT_FALSE(worker->beaten);
  EXPECT_TRUE(ContainerAwaitsLoops(*view, "worker"));
  EXPECT_TRUE(ContainerAwaitsLoops(*view, "nobody"));
  EXPECT_FALSE(ContainerAwaitsLoops(*view, "web"));

  // The worker beats, then its loop stalls: only its own liveness fails.
  sims[1].beating = true;
  Steps(3);
  ASSERT_FALSE(ContainerAwaitsLoops(*view, "worker"));
  sims[1].beating = false;
  sims[1].watchdog = false;
  Steps(60);
  web = FindContainer(*view, "web");
  worker = FindContainer(*view, "worker");
  EXPECT_FALSE(worker->live.ok);
  EXPECT_THAT(worker->live.reason, StartsWith("loop worker-0 stalled"));
  EXPECT_TRUE(web->live.ok) << web->live.reason;
  EXPECT_TRUE(web->ready.ok) << web->ready.reason;
  EXPECT_FALSE(view->live.ok);  // the pod as a whole: any loop fails it
  // A loop with no container (a 1.0 writer, or run by hand) counts for
  // the pod only.
  Open(2, "plain");
  Steps(3);
  EXPECT_EQ(view->containers.size(), 2u);
}

}  // namespace
}  // namespace loopwatch

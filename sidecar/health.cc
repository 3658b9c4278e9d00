// SPDX-License-Identifier: Apache-2.0
#include "health.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace loopwatch {
namespace {

constexpr int64_t kNsPerSec = 1000000000;
constexpr uint64_t kLagBoundsNs[LW_LAG_FINITE_BOUNDS] = LW_LAG_BOUNDS_NS_INIT;
// Lag history kept for the recent p99: one sample a second, ten seconds.
constexpr int64_t kLagSampleEveryNs = kNsPerSec;
constexpr size_t kLagSamples = 11;
// App timestamps further off than this are not trusted (another clock).
constexpr int64_t kMaxPlausibleAgeNs = int64_t{7} * 24 * 3600 * kNsPerSec;

struct LagSample {
  int64_t at_ns;
  uint64_t bucket[LW_LAG_BUCKETS];
  uint64_t sum_ns;
  uint64_t count;
};

// ts (app clock, any bytes) is at most max_age before now, and not after it.
bool PlausibleAge(uint64_t ts, int64_t now_ns, int64_t max_age) {
  return ts <= uint64_t(now_ns) && uint64_t(now_ns) - ts < uint64_t(max_age);
}
int64_t Clamp64(uint64_t v) { return v > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(v); }

int64_t BucketLower(unsigned b) { return b == 0 ? 0 : int64_t(kLagBoundsNs[b - 1]); }
int64_t BucketUpper(unsigned b) {
  return b < LW_LAG_FINITE_BOUNDS ? int64_t(kLagBoundsNs[b]) : -1;
}

std::string Seconds(int64_t ns) {
  char buf[32];
  if (ns < kNsPerSec) {
    snprintf(buf, sizeof buf, "%" PRId64 "ms", ns / 1000000);
  } else {
    snprintf(buf, sizeof buf, "%.1fs", double(ns) / kNsPerSec);
  }
  return buf;
}

StallClass FromLibClass(uint32_t c) {
  switch (c) {
    case LW_CLASS_CPU: return StallClass::kCpu;
    case LW_CLASS_BLOCKED: return StallClass::kBlocked;
    default: return StallClass::kUnknown;
  }
}


}  // namespace

const char* LoopStateName(LoopState s) {
  switch (s) {
    case LoopState::kStarting: return "starting";
    case LoopState::kLive: return "live";
    case LoopState::kLagging: return "lagging";
    case LoopState::kStalled: return "stalled";
    case LoopState::kDead: return "dead";
    case LoopState::kGone: return "gone";
  }
  return "unknown";
}

std::string DescribeStall(const StallRecord& s) {
  switch (s.stall_class) {
    case StallClass::kCpu: return "cpu-bound";
    case StallClass::kBlocked:
      return s.syscall.empty() ? "blocked" : "blocked in " + s.syscall;
    case StallClass::kHost: return "host paused";
    default: return s.has_report ? "class unknown" : "no report yet";
  }
}

const char* StallClassName(StallClass c) {
  switch (c) {
    case StallClass::kCpu: return "cpu";
    case StallClass::kBlocked: return "blocked";
    case StallClass::kHost: return "host";
    default: return "unknown";
  }
}

struct Health::Track {
  LoopView view;
  uint64_t claim_token = 0;
  int64_t first_seen_ns = 0;
  int64_t opened_ns = 0;         // on the sidecar clock
  uint64_t last_count = 0;
  int64_t last_beat_ns = -1;     // best estimate, sidecar clock; -1 none
  bool seen_change = false;      // a beat happened while we watched
  uint64_t prev_sum = 0, prev_count = 0;
  uint64_t prev_bucket[LW_LAG_BUCKETS] = {};
  std::deque<LagSample> samples;
  bool stall_counted = false;    // this stall is in the totals
  bool host_uncounted = false;   // logged as host, totals wait for its end
  StallClass counted_class = StallClass::kUnknown;  // class it is counted as
  bool report_logged = false;
  bool report_seen_open = false; // the report was open at the last poll
  std::deque<int64_t> logged_at; // report log times, for the rate limit
  int64_t gone_at_ns = 0;
};

Health::Health(const Config& config) : config_(config) {}
Health::~Health() = default;

std::shared_ptr<const View> Health::Update(
    SegmentStatus status, const std::string& segment_error,
    const std::vector<SlotSnapshot>& slots, int64_t now_ns,
    int64_t lateness_ns, std::vector<Event>* events) {
  polls_++;
  const int64_t stall_after = config_.stall_after.count();
  const int64_t lag_above = config_.lag_above.count();

  // A poll much later than planned means this whole pod (or VM) was paused;
  // remember the pause so that silence inside it is not blamed on the app.
  if (lateness_ns > std::max<int64_t>(config_.poll_interval.count(),
                                      50 * 1000000)) {
    pause_end_ns_ = now_ns;
    pause_len_ns_ = lateness_ns;
  }
  totals_.last_poll_lateness_ns = lateness_ns;

  if (status != last_status_ || first_status_) {
    if (status != SegmentStatus::kOk) {
      totals_.segment_errors_total++;
      events->push_back({Event::Kind::kSegmentProblem, {}, {}, segment_error});
    } else if (!first_status_) {
      events->push_back({Event::Kind::kSegmentOk, {}, {}, "segment readable"});
    }
    last_status_ = status;
    first_status_ = false;
  }

  auto depart = [&](std::unique_ptr<Track> t, const char* why) {
    t->view.state = LoopState::kGone;
    t->view.failing_liveness = false;
    t->gone_at_ns = now_ns;
    if (t->view.stall_open) EndStall(t.get(), now_ns, events);
    events->push_back({Event::Kind::kLoopGone, t->view, {}, why});
    departed_.push_back(std::move(t));
  };

  if (status == SegmentStatus::kOk) {
    for (const SlotSnapshot& s : slots) {
      if (!s.valid) continue;
      auto it = tracks_.find(s.index);
      Track* t = it == tracks_.end() ? nullptr : it->second.get();
      if (s.state != LW_SLOT_ACTIVE) {
        if (t && t->view.generation == s.generation) {
          depart(std::move(it->second), "closed");
          tracks_.erase(it);
        } else if (t) {
          depart(std::move(it->second), "slot reclaimed");
          tracks_.erase(it);
        }
        continue;
      }
      if (t && (t->view.generation != s.generation ||
                t->claim_token != s.claim_token)) {
        depart(std::move(it->second), "slot reclaimed");
        tracks_.erase(it);
        t = nullptr;
      }
      if (!t) {
        auto fresh = std::make_unique<Track>();
        t = fresh.get();
        tracks_[s.index] = std::move(fresh);
        t->claim_token = s.claim_token;
        t->first_seen_ns = now_ns;
        t->view.slot = s.index;
        t->view.generation = s.generation;
        t->view.name = s.name;
        t->view.kind = s.kind;
        t->view.pid = s.pid;
        t->view.interval_ns = int64_t(s.interval_ns);
        t->opened_ns = PlausibleAge(s.opened_ns, now_ns, kMaxPlausibleAgeNs)
                           ? int64_t(s.opened_ns)
                           : now_ns;
        t->last_count = s.beat_count;
        if (s.beat_count > 0) {
          // Seen for the first time (perhaps the sidecar restarted in the
          // middle of a stall): the app's own timestamp gives the true age.
          t->last_beat_ns =
              PlausibleAge(s.last_beat_ns, now_ns, kMaxPlausibleAgeNs)
                  ? int64_t(s.last_beat_ns)
                  : now_ns;
        }
        t->prev_sum = s.lag_sum_ns;
        t->prev_count = s.lag_count;
        std::copy(std::begin(s.lag_bucket), std::end(s.lag_bucket),
                  t->prev_bucket);
        events->push_back({Event::Kind::kLoopAppeared, t->view, {}, ""});
      }
      LoopView& v = t->view;
      v.ready = s.ready;
      v.activity = s.activity;
      v.beats = s.beat_count;
      std::copy(std::begin(s.lag_bucket), std::end(s.lag_bucket), v.lag_bucket);
      v.lag_sum_ns = s.lag_sum_ns;
      v.lag_count = s.lag_count;
      v.lag_max_ns = s.lag_max_ns;

      // Age: from the sidecar's own observation of the counter, unless the
      // app's timestamp agrees with it (then it is exact: same kernel clock).
      if (s.beat_count != t->last_count) {
        // The beat happened between the previous poll and now; the app's
        // timestamp is trusted only if it says so too.
        int64_t window = prev_poll_ns_ >= 0 ? now_ns - prev_poll_ns_
                                            : config_.poll_interval.count();
        bool plausible = PlausibleAge(s.last_beat_ns, now_ns, window + 1000001);
        t->last_beat_ns = plausible ? int64_t(s.last_beat_ns) : now_ns;
        t->last_count = s.beat_count;
        t->seen_change = true;
      }
      int64_t since = t->last_beat_ns >= 0 ? t->last_beat_ns : t->opened_ns;
      v.heartbeat_age_ns = std::max<int64_t>(0, now_ns - since);

      // Lag: this poll's beats, and the silence itself (a loop silent for
      // 800 ms with a 100 ms timer is at least 700 ms late).
      int64_t lag = 0;
      uint64_t dcount = s.lag_count - t->prev_count;
      if (s.lag_count > t->prev_count && s.lag_sum_ns >= t->prev_sum) {
        lag = Clamp64((s.lag_sum_ns - t->prev_sum) / dcount);
        for (int b = LW_LAG_BUCKETS - 1; b >= 0; b--) {
          if (s.lag_bucket[b] > t->prev_bucket[b]) {
            lag = std::max(lag, BucketLower(unsigned(b)));
            break;
          }
        }
      }
      if (v.interval_ns > 0 && v.heartbeat_age_ns > v.interval_ns) {
        lag = std::max(lag, v.heartbeat_age_ns - v.interval_ns);
      }
      v.lag_ns = lag;
      t->prev_sum = s.lag_sum_ns;
      t->prev_count = s.lag_count;
      std::copy(std::begin(s.lag_bucket), std::end(s.lag_bucket),
                t->prev_bucket);
      if (t->samples.empty() ||
          now_ns - t->samples.back().at_ns >= kLagSampleEveryNs) {
        LagSample ls{now_ns, {}, s.lag_sum_ns, s.lag_count};
        std::copy(std::begin(s.lag_bucket), std::end(s.lag_bucket), ls.bucket);
        t->samples.push_back(ls);
        while (t->samples.size() > kLagSamples) t->samples.pop_front();
      }
      {
        const LagSample& old = t->samples.front();
        uint64_t total = 0, d[LW_LAG_BUCKETS];
        for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
          d[b] = s.lag_bucket[b] >= old.bucket[b] ? s.lag_bucket[b] - old.bucket[b] : 0;
          total += d[b];
        }
        v.lag_p99_ns = -1;
        if (total > 0) {
          uint64_t need = (total * 99 + 99) / 100, run = 0;
          for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
            run += d[b];
            if (run >= need) {
              int64_t up = BucketUpper(b);
              v.lag_p99_ns = up >= 0 ? up : Clamp64(s.lag_max_ns);
              break;
            }
          }
        }
      }

      // Death: the owner's file lock is gone.
      if (s.owner_alive == 0) {
        if (v.state != LoopState::kDead) {
          v.dead_since_ns = now_ns;
          totals_.deaths_total++;
          if (v.stall_open) EndStall(t, now_ns, events);
          v.state = LoopState::kDead;
          events->push_back({Event::Kind::kLoopDied, v, {}, ""});
        }
        continue;
      }

      // Silence beyond what a host pause explains.
      int64_t overlap = 0;
      if (pause_end_ns_ > 0) {
        int64_t p0 = pause_end_ns_ - pause_len_ns_;
        int64_t lo = std::max(p0, since), hi = std::min(pause_end_ns_, now_ns);
        overlap = std::max<int64_t>(0, hi - lo);
      }
      int64_t own_silence = v.heartbeat_age_ns - overlap;

      bool never_beat = s.beat_count == 0;
      bool silent = v.heartbeat_age_ns > stall_after &&
                    !(never_beat &&
                      now_ns - t->opened_ns < config_.startup_grace.count());

      if (silent) {
        bool host = own_silence <= stall_after;
        if (!v.stall_open) {
          v.stall_open = true;
          v.stall = StallRecord{};
          v.stall.id = next_stall_id_++;
          v.stall.loop = v.name;
          v.stall.slot = v.slot;
          v.stall.pid = v.pid;
          v.stall.started_ns = since;
          v.stall.stall_class = host ? StallClass::kHost : StallClass::kUnknown;
          t->stall_counted = false;
          t->host_uncounted = false;
          t->report_logged = false;
          t->report_seen_open = false;
        } else if (v.stall.stall_class == StallClass::kHost && !host) {
          // Silent well past the pause: the app's own stall after all.
          v.stall.stall_class = StallClass::kUnknown;
          if (t->host_uncounted) {  // count (and log) it again as the app's
            t->host_uncounted = false;
            t->stall_counted = false;
          }
        }
        StallRecord& st = v.stall;
        st.duration_ns = v.heartbeat_age_ns;
        const ReportSnapshot& r = s.report;
        bool report_matches =
            r.state != LW_REPORT_NONE && int64_t(r.stall_start_ns) <= now_ns &&
            (r.stall_start_ns == s.last_beat_ns ||
             (s.beat_count == 0 && r.stall_start_ns == s.opened_ns));
        if (report_matches) {
          st.has_report = true;
          if (st.stall_class != StallClass::kHost) {
            st.stall_class = FromLibClass(r.stall_class);
          }
          st.loop_cpu_ns = int64_t(r.loop_cpu_ns);
          st.syscall = r.syscall_name;
          st.wchan = r.wchan;
          st.activity = r.activity;
          st.text = r.text;
        }
        if (!t->stall_counted &&
            (st.has_report || st.stall_class == StallClass::kHost ||
             v.heartbeat_age_ns > stall_after + config_.poll_interval.count() * 5)) {
          // Counted once the class is known (or it is clear none will come).
          t->stall_counted = true;
          if (st.stall_class == StallClass::kHost) {
            t->host_uncounted = true;  // counted when it ends, if still host
          } else {
            totals_.stalls_total[int(st.stall_class)]++;
            v.stalls[int(st.stall_class)]++;
            t->counted_class = st.stall_class;
          }
          events->push_back({Event::Kind::kStallStarted, v, st, ""});
        }
        // Log the report once its text had a poll to arrive.
        if (t->stall_counted && st.has_report && !t->report_logged &&
            (!st.text.empty() || t->report_seen_open)) {
          t->report_logged = true;
          while (!t->logged_at.empty() &&
                 now_ns - t->logged_at.front() > config_.report_window.count()) {
            t->logged_at.pop_front();
          }
          if (t->logged_at.size() < config_.report_limit) {
            t->logged_at.push_back(now_ns);
            events->push_back({Event::Kind::kStallReport, v, st, ""});
          } else {
            totals_.reports_suppressed_total++;
            events->push_back({Event::Kind::kStallReportSuppressed, v, st, ""});
          }
        }
        // Every counted stall is in /debug/stalls, whether or not its report
        // was logged (host pauses, rate-limited reports, no report at all).
        if (t->stall_counted) RememberStall(st);
        t->report_seen_open = st.has_report;
        v.state = LoopState::kStalled;
        v.failing_liveness = st.stall_class != StallClass::kHost ||
                             config_.host_stall_fails_liveness;
      } else {
        if (v.stall_open) EndStall(t, t->last_beat_ns, events);
        v.failing_liveness = false;
        if (never_beat) {
          v.state = LoopState::kStarting;
        } else if (lag > lag_above) {
          v.state = LoopState::kLagging;
        } else {
          v.state = LoopState::kLive;
        }
      }
    }
    while (totals_.recent_stalls.size() > config_.stall_history) {
      totals_.recent_stalls.erase(totals_.recent_stalls.begin());
    }
  }

  // Forget departed loops, and dead ones nobody reclaimed, after a while.
  departed_.erase(
      std::remove_if(departed_.begin(), departed_.end(),
                     [&](const std::unique_ptr<Track>& t) {
                       return now_ns - t->gone_at_ns > config_.forget_after.count();
                     }),
      departed_.end());

  prev_poll_ns_ = now_ns;
  auto view = std::make_shared<View>();
  view->taken_ns = now_ns;
  view->poll = polls_;
  view->segment = status;
  view->segment_error = segment_error;
  view->stalls_total = totals_.stalls_total;
  view->deaths_total = totals_.deaths_total;
  view->reports_suppressed_total = totals_.reports_suppressed_total;
  view->segment_errors_total = totals_.segment_errors_total;
  view->last_poll_lateness_ns = totals_.last_poll_lateness_ns;
  view->recent_stalls = totals_.recent_stalls;
  view->stall_duration = stall_duration_;
  if (status == SegmentStatus::kOk) {
    view->slot_count = uint32_t(slots.size());
    view->loops.reserve(tracks_.size() + departed_.size());
    for (auto& [slot, t] : tracks_) {
      LoopView& v = t->view;
      if (v.state == LoopState::kDead) {
        if (now_ns - v.dead_since_ns > config_.forget_after.count()) continue;
        // A dead loop fails liveness only if nothing took its place within
        // stall_after (gunicorn respawns a worker; kubelet restarts an app).
        bool replaced = false;
        for (auto& [slot2, t2] : tracks_) {
          if (t2.get() != t.get() && t2->first_seen_ns >= v.dead_since_ns &&
              t2->view.state != LoopState::kDead) {
            replaced = true;
          }
        }
        v.failing_liveness =
            !replaced && now_ns - v.dead_since_ns >= stall_after;
        v.heartbeat_age_ns =
            std::max<int64_t>(0, now_ns - (t->last_beat_ns >= 0
                                               ? t->last_beat_ns
                                               : t->opened_ns));
      }
      view->loops.push_back(v);
    }
    for (auto& t : departed_) view->loops.push_back(t->view);
    uint32_t beaten = 0;
    for (auto& [slot, t] : tracks_) {
      if (t->view.beats > 0 && t->view.state != LoopState::kDead) beaten++;
    }
    if (beaten >= config_.expect_loops) started_ = true;
  }
  view->started = started_;
  Judge(view.get(), now_ns);
  return view;
}

void Health::EndStall(Track* t, int64_t end_ns, std::vector<Event>* events) {
  LoopView& v = t->view;
  v.stall.ended_ns = end_ns;
  v.stall.duration_ns = std::max<int64_t>(0, end_ns - v.stall.started_ns);
  v.stall_open = false;
  if (!t->stall_counted) {
    t->stall_counted = true;
    totals_.stalls_total[int(v.stall.stall_class)]++;
    v.stalls[int(v.stall.stall_class)]++;
    t->counted_class = v.stall.stall_class;
    events->push_back({Event::Kind::kStallStarted, v, v.stall, ""});
  } else if (t->host_uncounted) {
    t->host_uncounted = false;
    totals_.stalls_total[int(v.stall.stall_class)]++;
    v.stalls[int(v.stall.stall_class)]++;
    t->counted_class = v.stall.stall_class;
  }
  // The duration goes under the class the stall was counted as, even if a
  // late report changed it since: per class, the histogram's count then
  // matches loopwatch_stalls_total (a counter cannot move a stall over).
  ObserveStallDuration(t->counted_class, v.stall.duration_ns);
  events->push_back({Event::Kind::kStallEnded, v, v.stall, ""});
  RememberStall(v.stall);
}

void Health::RememberStall(const StallRecord& s) {
  for (auto it = totals_.recent_stalls.rbegin();
       it != totals_.recent_stalls.rend(); ++it) {
    if (it->id == s.id) {
      *it = s;
      return;
    }
  }
  totals_.recent_stalls.push_back(s);
}

void Health::ObserveStallDuration(StallClass c, int64_t duration_ns) {
  double secs = double(duration_ns) / kNsPerSec;
  StallDurationHistogram& h = stall_duration_[int(c)];
  for (size_t i = 0; i < kStallDurationBounds.size(); i++) {
    if (secs <= kStallDurationBounds[i]) {
      h.bucket[i]++;
      break;
    }
    if (i + 1 == kStallDurationBounds.size()) h.bucket[i + 1]++;
  }
  h.sum_seconds += secs;
  h.count++;
}

void Health::Judge(View* v, int64_t now_ns) const {
  (void)now_ns;
  if (v->segment != SegmentStatus::kOk) {
    std::string why = v->segment_error.empty()
                          ? std::string(SegmentStatusName(v->segment))
                          : v->segment_error;
    v->live = {true, "ok: liveness not judged: " + why};
    v->ready = {false, why};
    v->startup = v->started ? Verdict{true, "ok: started"}
                            : Verdict{false, why};
    return;
  }
  size_t present = 0, failing = 0;
  const LoopView* first_fail = nullptr;
  const LoopView* first_unready = nullptr;
  std::string unready_why;
  size_t live_count = 0;
  // Loops present but not live, by state, for the "ok" body: "1 lagging".
  size_t by_state[static_cast<size_t>(LoopState::kGone) + 1] = {};
  for (const LoopView& l : v->loops) {
    if (l.state == LoopState::kGone) continue;
    if (l.state == LoopState::kDead && !l.failing_liveness) continue;
    present++;
    if (l.failing_liveness) {
      failing++;
      if (!first_fail) first_fail = &l;
    }
    by_state[static_cast<size_t>(l.state)]++;
    if (l.state == LoopState::kLive) live_count++;
    if (!first_unready) {
      if (l.state == LoopState::kStalled) {
        first_unready = &l;
        unready_why = "loop " + l.name + " stalled " + Seconds(l.heartbeat_age_ns);
      } else if (l.state == LoopState::kDead) {
        first_unready = &l;
        unready_why = "loop " + l.name + " dead";
      } else if (l.state == LoopState::kLagging) {
        first_unready = &l;
        unready_why = "loop " + l.name + " lagging " + Seconds(l.lag_ns) +
                      " (lag_above " + FormatDuration(config_.lag_above) + ")";
      } else if (!l.ready) {
        first_unready = &l;
        unready_why = "loop " + l.name + " not ready (set by the app)";
      }
    }
  }
  auto fail_reason = [&](const LoopView& l) {
    std::string r;
    if (l.state == LoopState::kDead) {
      r = "loop " + l.name + " dead: pid " + std::to_string(l.pid) +
          " gone without closing, not replaced for " +
          Seconds(v->taken_ns - l.dead_since_ns);
    } else {
      r = "loop " + l.name + " stalled " + Seconds(l.heartbeat_age_ns) + " (" +
          DescribeStall(l.stall) + ")";
    }
    if (failing > 1) r += " (+" + std::to_string(failing - 1) + " more)";
    return r;
  };
  bool live_fails = config_.liveness_policy == LivenessPolicy::kAny
                        ? failing > 0
                        : (present > 0 && failing == present);
  if (live_fails) {
    v->live = {false, fail_reason(*first_fail)};
  } else if (failing > 0) {
    v->live = {true, "ok: " + std::to_string(present - failing) + " of " +
                         std::to_string(present) +
                         " loops healthy (policy all); " +
                         fail_reason(*first_fail)};
  } else {
    std::string body = "ok: " + std::to_string(present) + " loops, " +
                       std::to_string(live_count) + " live";
    for (LoopState st : {LoopState::kStarting, LoopState::kLagging, LoopState::kStalled}) {
      size_t n = by_state[static_cast<size_t>(st)];
      if (n) body += ", " + std::to_string(n) + " " + LoopStateName(st);
    }
    v->live = {true, body};
  }
  if (!v->started) {
    uint32_t beaten = 0;
    for (const LoopView& l : v->loops) {
      if (l.beats > 0 && l.state != LoopState::kDead && l.state != LoopState::kGone) beaten++;
    }
    std::string why = "waiting for " + std::to_string(config_.expect_loops) +
                      " loops to beat (" + std::to_string(beaten) + " so far)";
    v->startup = {false, why};
    v->ready = {false, why};
    return;
  }
  v->startup = {true, "ok: started"};
  if (first_unready) {
    v->ready = {false, unready_why};
  } else if (present == 0) {
    v->ready = {false, "no loops"};
  } else {
    v->ready = {true, "ok: " + std::to_string(present) + " loops ready"};
  }
}

}  // namespace loopwatch

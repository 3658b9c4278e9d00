// SPDX-License-Identifier: Apache-2.0
//
// One poll, in phases (Update):
//   1. the pause: a late poll means the whole pod was paused;
//   2. the segment's status, logged when it changes;
//   3. per slot: track (appeared, departed, reclaimed), beat (age), lag,
//      death (the owner's lock is gone), stall (open, classify, count, log,
//      end) and the loop's state;
//   4. publish: forget old departures, judge dead loops, build the View and
//      its three verdicts.
#include "health.h"

#include <algorithm>
#include <cstring>
#include <deque>

#include "format.h"

namespace loopwatch {
namespace {

constexpr int64_t kNsPerSec = 1000000000;
// Lag history kept for the recent p99: one sample a second, ten seconds.
constexpr int64_t kLagSampleEveryNs = kNsPerSec;
constexpr size_t kLagSamples = 11;
// App timestamps further off than this are not trusted (another clock).
constexpr int64_t kMaxPlausibleAgeNs = int64_t{7} * 24 * 3600 * kNsPerSec;
// A poll later than this (or than one poll interval) was a pause.
constexpr int64_t kMinPauseNs = 50 * 1000000;

struct LagSample {
  int64_t at_ns;
  uint64_t bucket[LW_LAG_BUCKETS];
};

// ts (app clock, any bytes) is at most max_age before now, and not after it.
bool PlausibleAge(uint64_t ts, int64_t now_ns, int64_t max_age) {
  return ts <= uint64_t(now_ns) && uint64_t(now_ns) - ts < uint64_t(max_age);
}
int64_t Clamp64(uint64_t v) { return v > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(v); }

StallClass FromLibClass(uint32_t c) {
  switch (c) {
    case LW_CLASS_CPU: return StallClass::kCpu;
    case LW_CLASS_BLOCKED: return StallClass::kBlocked;
    case LW_CLASS_GIL: return StallClass::kGil;
    default: return StallClass::kUnknown;
  }
}

void CopyBuckets(const uint64_t (&from)[LW_LAG_BUCKETS], uint64_t (&to)[LW_LAG_BUCKETS]) {
  std::copy(std::begin(from), std::end(from), std::begin(to));
}

}  // namespace

struct Health::Track {
  LoopView view;
  uint64_t claim_token = 0;
  int64_t first_seen_ns = 0;
  int64_t opened_ns = 0;         // on the sidecar clock
  uint64_t last_count = 0;
  int64_t last_beat_ns = -1;     // best estimate, sidecar clock; -1 none
  uint64_t prev_sum = 0, prev_count = 0;
  uint64_t prev_bucket[LW_LAG_BUCKETS] = {};
  // The histogram once a second, the last kLagSamples of them: a ring,
  // oldest at samples[first].
  std::array<LagSample, kLagSamples> samples;
  size_t first = 0, count = 0;
  bool stall_counted = false;    // this stall is in the totals
  bool host_uncounted = false;   // logged as host, totals wait for its end
  StallClass counted_class = StallClass::kUnknown;  // class it is counted as
  bool report_logged = false;
  bool report_seen_open = false; // the report was open at the last poll
  std::deque<int64_t> logged_at; // report log times, for the rate limit
  uint64_t report_seq = ~uint64_t{0};  // of the report last taken into `stall`
  uint64_t remembered_id = 0;    // the stall last put in the history
  char raw_activity[LW_ACTIVITY_SIZE] = {};  // as the app wrote it
  int64_t gone_at_ns = 0;

  // The last beat, or the opening if none: where silence is counted from.
  int64_t silent_since() const { return last_beat_ns >= 0 ? last_beat_ns : opened_ns; }
};

Health::Health(const Config& config) : config_(config) {}
Health::~Health() = default;

std::shared_ptr<const View> Health::Update(
    SegmentStatus status, const std::string& segment_error,
    const std::vector<SlotSnapshot>& slots, int64_t now_ns,
    int64_t lateness_ns, std::vector<Event>* events) {
  polls_++;
  NotePause(now_ns, lateness_ns);
  NoteSegmentStatus(status, segment_error, now_ns, events);
  if (status == SegmentStatus::kOk) {
    for (const SlotSnapshot& s : slots) {
      if (!s.valid) continue;
      Track* t = TrackSlot(s, now_ns, events);
      if (!t) continue;
      ObserveBeat(t, s, now_ns);
      MeasureLag(t, s, now_ns);
      if (NoteDeath(t, s, now_ns, events)) continue;
      AdvanceStall(t, s, now_ns, events);
    }
  }
  prev_poll_ns_ = now_ns;
  auto view = Publish(status, segment_error, uint32_t(slots.size()), now_ns);
  if (view->loops_lost > 0 && !view->live.ok && !lost_logged_) {
    lost_logged_ = true;
    events->push_back({Event::Kind::kSegmentLost, {}, {}, view->live.reason});
  }
  return view;
}

std::string Health::AppText(std::string_view text) const {
  return config_.redact_query ? RedactQuery(text) : std::string(text);
}

// ---- 1, 2: the pause and the segment

void Health::NotePause(int64_t now_ns, int64_t lateness_ns) {
  // A poll much later than planned means this whole pod (or VM) was paused;
  // remember the pause so that silence inside it is not blamed on the app.
  if (lateness_ns > std::max<int64_t>(config_.poll_interval.count(), kMinPauseNs)) {
    pause_end_ns_ = now_ns;
    pause_len_ns_ = lateness_ns;
  }
  totals_.last_poll_lateness_ns = lateness_ns;
}

int64_t Health::PauseOverlap(int64_t from_ns, int64_t to_ns) const {
  if (pause_end_ns_ <= 0) return 0;
  const int64_t lo = std::max(pause_end_ns_ - pause_len_ns_, from_ns);
  const int64_t hi = std::min(pause_end_ns_, to_ns);
  return std::max<int64_t>(0, hi - lo);
}

void Health::NoteSegmentStatus(SegmentStatus status, const std::string& error,
                               int64_t now_ns, std::vector<Event>* events) {
  if (status == SegmentStatus::kOk) {
    unreadable_since_ns_ = 0;
    lost_logged_ = false;
  } else if (unreadable_since_ns_ == 0) {
    unreadable_since_ns_ = now_ns;
  }
  if (status == last_status_ && !first_status_) return;
  if (status != SegmentStatus::kOk) {
    totals_.segment_errors_total++;
    events->push_back({Event::Kind::kSegmentProblem, {}, {}, error});
  } else if (!first_status_) {
    events->push_back({Event::Kind::kSegmentOk, {}, {}, "segment readable"});
  }
  last_status_ = status;
  first_status_ = false;
}

// ---- 3: per slot

Health::Track* Health::TrackSlot(const SlotSnapshot& s, int64_t now_ns,
                                 std::vector<Event>* events) {
  if (s.index >= tracks_.size()) {
    if (s.state != LW_SLOT_ACTIVE) return nullptr;
    tracks_.resize(size_t(s.index) + 1);
  }
  std::unique_ptr<Track>& slot = tracks_[s.index];
  Track* t = slot.get();
  if (t && (s.state != LW_SLOT_ACTIVE || t->view.generation != s.generation ||
            t->claim_token != s.claim_token)) {
    const bool closed = s.state != LW_SLOT_ACTIVE && t->view.generation == s.generation;
    Depart(std::move(slot), closed ? "closed" : "slot reclaimed", now_ns, events);
    tracked_--;
    t = nullptr;
  }
  if (s.state != LW_SLOT_ACTIVE) return nullptr;
  if (t) return t;

  slot = std::make_unique<Track>();
  tracked_++;
  t = slot.get();
  t->claim_token = s.claim_token;
  t->first_seen_ns = now_ns;
  LoopView& v = t->view;
  v.slot = s.index;
  v.generation = s.generation;
  v.name = s.name;
  v.kind = s.kind;
  v.container = s.container;
  v.pid = s.pid;
  v.interval_ns = int64_t(s.interval_ns);
  t->opened_ns = PlausibleAge(s.opened_ns, now_ns, kMaxPlausibleAgeNs)
                     ? int64_t(s.opened_ns)
                     : now_ns;
  t->last_count = s.beat_count;
  if (s.beat_count > 0) {
    // Seen for the first time (perhaps the sidecar restarted in the middle
    // of a stall): the app's own timestamp gives the true age.
    t->last_beat_ns = PlausibleAge(s.last_beat_ns, now_ns, kMaxPlausibleAgeNs)
                          ? int64_t(s.last_beat_ns)
                          : now_ns;
  }
  t->prev_sum = s.lag_sum_ns;
  t->prev_count = s.lag_count;
  CopyBuckets(s.lag_bucket, t->prev_bucket);
  events->push_back({Event::Kind::kLoopAppeared, v, {}, ""});
  return t;
}

void Health::Depart(std::unique_ptr<Track> t, const char* why, int64_t now_ns,
                    std::vector<Event>* events) {
  t->view.state = LoopState::kGone;
  t->view.failing_liveness = false;
  t->gone_at_ns = now_ns;
  if (t->view.stall_open) EndStall(t.get(), now_ns, events);
  events->push_back({Event::Kind::kLoopGone, t->view, {}, why});
  departed_.push_back(std::move(t));
}

void Health::ObserveBeat(Track* t, const SlotSnapshot& s, int64_t now_ns) {
  LoopView& v = t->view;
  v.ready = s.ready;
  if (std::strncmp(t->raw_activity, s.activity, sizeof t->raw_activity) != 0) {
    // Redacted again only when the app changed it.
    std::memcpy(t->raw_activity, s.activity, sizeof t->raw_activity);
    v.activity = AppText(s.activity);
  }
  v.beats = s.beat_count;
  CopyBuckets(s.lag_bucket, v.lag_bucket);
  v.lag_sum_ns = s.lag_sum_ns;
  v.lag_count = s.lag_count;
  v.lag_max_ns = s.lag_max_ns;
  // Age: from the sidecar's own observation of the counter, unless the
  // app's timestamp agrees with it (then it is exact: same kernel clock).
  if (s.beat_count != t->last_count) {
    // The beat happened between the previous poll and now; the app's
    // timestamp is trusted only if it says so too.
    const int64_t window = prev_poll_ns_ >= 0 ? now_ns - prev_poll_ns_
                                              : config_.poll_interval.count();
    const bool plausible = PlausibleAge(s.last_beat_ns, now_ns, window + 1000001);
    t->last_beat_ns = plausible ? int64_t(s.last_beat_ns) : now_ns;
    t->last_count = s.beat_count;
  }
  v.heartbeat_age_ns = std::max<int64_t>(0, now_ns - t->silent_since());
}

void Health::MeasureLag(Track* t, const SlotSnapshot& s, int64_t now_ns) {
  LoopView& v = t->view;
  // This poll's beats, and the silence itself (a loop silent for 800 ms
  // with a 100 ms timer is at least 700 ms late).
  int64_t lag = 0;
  if (s.lag_count > t->prev_count && s.lag_sum_ns >= t->prev_sum) {
    lag = Clamp64((s.lag_sum_ns - t->prev_sum) / (s.lag_count - t->prev_count));
    for (int b = LW_LAG_BUCKETS - 1; b >= 0; b--) {
      if (s.lag_bucket[b] > t->prev_bucket[b]) {
        lag = std::max(lag, LagBucketLowerNs(unsigned(b)));
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
  CopyBuckets(s.lag_bucket, t->prev_bucket);

  // The recent p99: the histogram's growth over the last ten seconds.
  const LagSample* newest =
      t->count ? &t->samples[(t->first + t->count - 1) % kLagSamples] : nullptr;
  if (!newest || now_ns - newest->at_ns >= kLagSampleEveryNs) {
    LagSample* ls;
    if (t->count < kLagSamples) {
      ls = &t->samples[(t->first + t->count++) % kLagSamples];
    } else {
      ls = &t->samples[t->first];
      t->first = (t->first + 1) % kLagSamples;
    }
    ls->at_ns = now_ns;
    CopyBuckets(s.lag_bucket, ls->bucket);
  }
  const LagSample& old = t->samples[t->first];
  uint64_t recent[LW_LAG_BUCKETS];
  for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
    recent[b] = s.lag_bucket[b] >= old.bucket[b] ? s.lag_bucket[b] - old.bucket[b] : 0;
  }
  v.lag_p99_ns = LagP99Ns(recent, s.lag_max_ns);
}

bool Health::NoteDeath(Track* t, const SlotSnapshot& s, int64_t now_ns,
                       std::vector<Event>* events) {
  if (s.owner_alive != 0) return false;  // the owner still holds its lock
  LoopView& v = t->view;
  if (v.state != LoopState::kDead) {
    v.dead_since_ns = now_ns;
    totals_.deaths_total++;
    if (v.stall_open) EndStall(t, now_ns, events);
    v.state = LoopState::kDead;
    events->push_back({Event::Kind::kLoopDied, v, {}, ""});
  }
  return true;
}

void Health::AdvanceStall(Track* t, const SlotSnapshot& s, int64_t now_ns,
                          std::vector<Event>* events) {
  LoopView& v = t->view;
  const int64_t stall_after = config_.stall_after.count();
  const bool never_beat = s.beat_count == 0;
  const bool silent = v.heartbeat_age_ns > stall_after &&
                      !(never_beat && now_ns - t->opened_ns < config_.startup_grace.count());
  if (!silent) {
    if (v.stall_open) EndStall(t, t->last_beat_ns, events);
    v.failing_liveness = false;
    v.state = never_beat                               ? LoopState::kStarting
              : v.lag_ns > config_.lag_above.count() ? LoopState::kLagging
                                                       : LoopState::kLive;
    return;
  }

  // Silence beyond what a pause of the whole pod explains is the app's.
  const int64_t since = t->silent_since();
  const bool host = v.heartbeat_age_ns - PauseOverlap(since, now_ns) <= stall_after;
  StallRecord& st = v.stall;
  if (!v.stall_open) {
    v.stall_open = true;
    st = StallRecord{};
    st.id = next_stall_id_++;
    st.loop = v.name;
    st.slot = v.slot;
    st.pid = v.pid;
    st.started_ns = since;
    st.stall_class = host ? StallClass::kHost : StallClass::kUnknown;
    t->stall_counted = false;
    t->host_uncounted = false;
    t->report_logged = false;
    t->report_seen_open = false;
    t->report_seq = ~uint64_t{0};
  } else if (st.stall_class == StallClass::kHost && !host) {
    // Silent well past the pause: the app's own stall after all.
    st.stall_class = StallClass::kUnknown;
    if (t->host_uncounted) {  // count (and log) it again as the app's
      t->host_uncounted = false;
      t->stall_counted = false;
    }
  }
  st.duration_ns = v.heartbeat_age_ns;
  TakeReport(t, s, now_ns);

  if (!t->stall_counted &&
      (st.has_report || st.stall_class == StallClass::kHost ||
       v.heartbeat_age_ns > stall_after + config_.poll_interval.count() * 5)) {
    // Counted once the class is known (or it is clear none will come).
    t->stall_counted = true;
    if (st.stall_class == StallClass::kHost) {
      t->host_uncounted = true;  // counted when it ends, if still host
    } else {
      CountStall(t);
    }
    events->push_back({Event::Kind::kStallStarted, v, st, ""});
  }
  // Log the report once its text had a poll to arrive.
  if (t->stall_counted && st.has_report && !t->report_logged &&
      (!st.text.empty() || t->report_seen_open)) {
    t->report_logged = true;
    LogReport(t, now_ns, events);
  }
  // Every counted stall is in /debug/stalls, whether or not its report was
  // logged (host pauses, rate-limited reports, no report at all). While it
  // lasts, readers take the loop's own copy; EndStall stores the last one.
  if (t->stall_counted && t->remembered_id != st.id) {
    RememberStall(st);
    t->remembered_id = st.id;
  }
  t->report_seen_open = st.has_report;
  v.state = LoopState::kStalled;
  v.failing_liveness = st.stall_class != StallClass::kHost ||
                       config_.host_stall_fails_liveness;
}

void Health::TakeReport(Track* t, const SlotSnapshot& s, int64_t now_ns) {
  // The report belongs to this stall if it starts at this loop's last beat
  // (or at its opening, for a loop that never beat).
  const ReportSnapshot& r = s.report;
  const bool matches =
      r.state != LW_REPORT_NONE && int64_t(r.stall_start_ns) <= now_ns &&
      (r.stall_start_ns == s.last_beat_ns ||
       (s.beat_count == 0 && r.stall_start_ns == s.opened_ns));
  if (!matches) return;
  StallRecord& st = t->view.stall;
  st.has_report = true;
  if (st.stall_class != StallClass::kHost) st.stall_class = FromLibClass(r.stall_class);
  st.loop_cpu_ns = int64_t(r.loop_cpu_ns);
  st.syscall = r.syscall_name;
  st.wchan = r.wchan;
  if (r.seq != t->report_seq) {  // the texts only when they changed
    t->report_seq = r.seq;
    st.activity = AppText(r.activity);
    st.text = AppText(r.text);
  }
}

void Health::CountStall(Track* t) {
  const StallClass c = t->view.stall.stall_class;
  totals_.stalls_total[size_t(c)]++;
  t->view.stalls[size_t(c)]++;
  t->counted_class = c;
}

void Health::LogReport(Track* t, int64_t now_ns, std::vector<Event>* events) {
  // At most report_limit reports per loop per report_window; the rest are
  // counted.
  while (!t->logged_at.empty() &&
         now_ns - t->logged_at.front() > config_.report_window.count()) {
    t->logged_at.pop_front();
  }
  if (t->logged_at.size() < config_.report_limit) {
    t->logged_at.push_back(now_ns);
    events->push_back({Event::Kind::kStallReport, t->view, t->view.stall, ""});
  } else {
    totals_.reports_suppressed_total++;
    events->push_back({Event::Kind::kStallReportSuppressed, t->view, t->view.stall, ""});
  }
}

void Health::EndStall(Track* t, int64_t end_ns, std::vector<Event>* events) {
  LoopView& v = t->view;
  v.stall.ended_ns = end_ns;
  v.stall.duration_ns = std::max<int64_t>(0, end_ns - v.stall.started_ns);
  v.stall_open = false;
  if (!t->stall_counted) {
    t->stall_counted = true;
    CountStall(t);
    events->push_back({Event::Kind::kStallStarted, v, v.stall, ""});
  } else if (t->host_uncounted) {
    t->host_uncounted = false;
    CountStall(t);
  }
  // The duration goes under the class the stall was counted as, even if a
  // late report changed it since: per class, the histogram's count then
  // matches loopwatch_stalls_total (a counter cannot move a stall over).
  ObserveStallDuration(t->counted_class, v.stall.duration_ns);
  events->push_back({Event::Kind::kStallEnded, v, v.stall, ""});
  RememberStall(v.stall);
}

void Health::RememberStall(const StallRecord& s) {
  // A new history: Views already published keep theirs.
  auto h = std::make_shared<StallHistory>(*totals_.recent_stalls);
  auto record = std::make_shared<const StallRecord>(s);
  auto it = std::find_if(h->rbegin(), h->rend(), [&](const auto& r) { return r->id == s.id; });
  if (it != h->rend()) {
    *it = std::move(record);
  } else {
    h->push_back(std::move(record));
    if (h->size() > config_.stall_history) h->erase(h->begin(), h->end() - config_.stall_history);
  }
  totals_.recent_stalls = std::move(h);
}

void Health::ObserveStallDuration(StallClass c, int64_t duration_ns) {
  const double secs = Seconds(duration_ns);
  StallDurationHistogram& h = stall_duration_[size_t(c)];
  size_t b = 0;
  while (b < kStallDurationBounds.size() && secs > kStallDurationBounds[b]) b++;
  h.bucket[b]++;  // the last bucket is +Inf
  h.sum_seconds += secs;
  h.count++;
}

// ---- 4: publish

std::shared_ptr<const View> Health::Publish(SegmentStatus status,
                                            const std::string& segment_error,
                                            uint32_t slot_count, int64_t now_ns) {
  // Forget departed loops, and dead ones nobody reclaimed, after a while.
  const int64_t forget_after = config_.forget_after.count();
  departed_.erase(std::remove_if(departed_.begin(), departed_.end(),
                                 [&](const std::unique_ptr<Track>& t) {
                                   return now_ns - t->gone_at_ns > forget_after;
                                 }),
                  departed_.end());

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
    view->slot_count = slot_count;
    view->loops.reserve(tracked_ + departed_.size());
    uint32_t beaten = 0;
    for (auto& t : tracks_) {
      if (!t) continue;
      LoopView& v = t->view;
      if (v.state == LoopState::kDead) {
        if (now_ns - v.dead_since_ns > forget_after) continue;
        JudgeDead(t.get(), now_ns);
      } else if (v.beats > 0) {
        beaten++;
      }
      if (!v.container.empty()) {
        containers_seen_.insert(v.container);
        if (v.beats > 0) containers_beaten_.insert(v.container);
      }
      view->loops.push_back(v);
    }
    for (auto& t : departed_) view->loops.push_back(t->view);
    if (beaten >= config_.expect_loops) started_ = true;
    live_at_last_read_ = 0;
    for (const LoopView& l : view->loops) {
      if (l.beats > 0 && l.state != LoopState::kDead && l.state != LoopState::kGone) {
        live_at_last_read_++;
      }
    }
  } else {
    view->unreadable_since_ns = unreadable_since_ns_;
    view->loops_lost = live_at_last_read_;
  }
  view->started = started_;
  Judge(view.get());
  return view;
}

void Health::JudgeDead(Track* t, int64_t now_ns) {
  // A dead loop fails liveness only if nothing took its place within
  // stall_after (gunicorn respawns a worker; the kubelet restarts an app).
  LoopView& v = t->view;
  bool replaced = false;
  for (auto& other : tracks_) {
    if (other && other.get() != t && other->first_seen_ns >= v.dead_since_ns &&
        other->view.state != LoopState::kDead) {
      replaced = true;
    }
  }
  v.failing_liveness = !replaced && now_ns - v.dead_since_ns >= config_.stall_after.count();
  v.heartbeat_age_ns = std::max<int64_t>(0, now_ns - t->silent_since());
}

void Health::Judge(View* v) const {
  const std::string waiting = "waiting for " + std::to_string(config_.expect_loops) + " loops to beat";
  Verdicts pod = JudgeLoops(*v, v->started, waiting, [](const LoopView&) { return true; });
  v->live = pod.live;
  v->ready = pod.ready;
  v->startup = pod.startup;
  for (const std::string& name : containers_seen_) {
    ContainerVerdicts c;
    c.name = name;
    c.beaten = containers_beaten_.count(name) > 0;
    Verdicts cv = JudgeLoops(*v, c.beaten, "waiting for a loop of container " + name + " to beat",
                             [&](const LoopView& l) { return l.container == name; });
    c.live = std::move(cv.live);
    c.ready = std::move(cv.ready);
    c.startup = std::move(cv.startup);
    v->containers.push_back(std::move(c));
  }
}

Health::Verdicts Health::JudgeLoops(const View& vw, bool started, const std::string& waiting,
                                    const std::function<bool(const LoopView&)>& keep) const {
  Verdicts out;
  const View* v = &vw;
  if (v->segment != SegmentStatus::kOk) {
    // The reader's error quotes the file (its magic, its versions): the
    // verdicts, which the public port serves, say only what the status is.
    const std::string why = SegmentSummary(v->segment);
    const int64_t unreadable = v->taken_ns - v->unreadable_since_ns;
    if (v->loops_lost > 0 && unreadable >= config_.stall_after.count()) {
      // Loops were live and can no longer be seen: a stall of theirs would
      // pass unseen. Failing makes the kubelet restart the app, which
      // creates the segment again (docs/kubernetes.md, LoopwatchSegmentLost).
      out.live = {false, why + " for " + HumanDuration(unreadable) + " after " +
                             std::to_string(v->loops_lost) +
                             (v->loops_lost == 1 ? " loop was" : " loops were") +
                             " live: they cannot be watched"};
    } else {
      out.live = {true, "ok: liveness not judged: " + why};
    }
    out.ready = {false, why};
    out.startup = started ? Verdict{true, "ok: started"} : Verdict{false, why};
    return out;
  }
  size_t present = 0, failing = 0, live_count = 0;
  const LoopView* first_fail = nullptr;
  std::string unready_why;
  // Loops present but not live, by state, for the "ok" body: "1 lagging".
  size_t by_state[static_cast<size_t>(LoopState::kGone) + 1] = {};
  for (const LoopView& l : v->loops) {
    if (!keep(l)) continue;
    if (l.state == LoopState::kGone) continue;
    if (l.state == LoopState::kDead && !l.failing_liveness) continue;
    present++;
    if (l.failing_liveness) {
      failing++;
      if (!first_fail) first_fail = &l;
    }
    by_state[static_cast<size_t>(l.state)]++;
    if (l.state == LoopState::kLive) live_count++;
    if (unready_why.empty()) unready_why = NotReadyReason(l);
  }
  auto fail_reason = [&](const LoopView& l) {
    std::string r;
    if (l.state == LoopState::kDead) {
      r = "loop " + l.name + " dead: pid " + std::to_string(l.pid) +
          " gone without closing, not replaced for " +
          HumanDuration(v->taken_ns - l.dead_since_ns);
    } else {
      r = "loop " + l.name + " stalled " + HumanDuration(l.heartbeat_age_ns) + " (" +
          DescribeStall(l.stall) + ")";
    }
    if (failing > 1) r += " (+" + std::to_string(failing - 1) + " more)";
    return r;
  };
  const bool live_fails = config_.liveness_policy == LivenessPolicy::kAny
                              ? failing > 0
                              : (present > 0 && failing == present);
  if (live_fails) {
    out.live = {false, fail_reason(*first_fail)};
  } else if (failing > 0) {
    out.live = {true, "ok: " + std::to_string(present - failing) + " of " +
                          std::to_string(present) + " loops healthy (policy all); " +
                          fail_reason(*first_fail)};
  } else {
    std::string body = "ok: " + std::to_string(present) + " loops, " +
                       std::to_string(live_count) + " live";
    for (LoopState st : {LoopState::kStarting, LoopState::kLagging, LoopState::kStalled}) {
      const size_t n = by_state[static_cast<size_t>(st)];
      if (n) body += ", " + std::to_string(n) + " " + LoopStateName(st);
    }
    out.live = {true, body};
  }
  if (!started) {
    uint32_t beaten = 0;
    for (const LoopView& l : v->loops) {
      if (keep(l) && l.beats > 0 && l.state != LoopState::kDead && l.state != LoopState::kGone)
        beaten++;
    }
    const std::string why = waiting + " (" + std::to_string(beaten) + " so far)";
    out.startup = {false, why};
    out.ready = {false, why};
    return out;
  }
  out.startup = {true, "ok: started"};
  if (!unready_why.empty()) {
    out.ready = {false, unready_why};
  } else if (present == 0) {
    out.ready = {false, "no loops"};
  } else {
    out.ready = {true, "ok: " + std::to_string(present) + " loops ready"};
  }
  return out;
}

std::string Health::NotReadyReason(const LoopView& l) const {
  switch (l.state) {
    case LoopState::kStalled:
      return "loop " + l.name + " stalled " + HumanDuration(l.heartbeat_age_ns);
    case LoopState::kDead: return "loop " + l.name + " dead";
    case LoopState::kLagging:
      return "loop " + l.name + " lagging " + HumanDuration(l.lag_ns) + " (lag_above " +
             FormatDuration(config_.lag_above) + ")";
    default: break;
  }
  return l.ready ? "" : "loop " + l.name + " not ready (set by the app)";
}

}  // namespace loopwatch

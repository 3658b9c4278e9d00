// SPDX-License-Identifier: Apache-2.0
#include "probes.h"

#include <algorithm>

#include "format.h"
#include "json.h"

namespace loopwatch {
namespace {

constexpr int64_t kNsPerSec = 1000000000;
constexpr const char* kTextType = "text/plain; charset=utf-8";
constexpr const char* kJsonType = "application/json";

// Seconds with millisecond precision, for per-loop detail lines.
std::string Fixed(int64_t ns) { return DecimalSeconds(ns) + "s"; }

const Verdict& VerdictOf(Probe p, const View& v) {
  switch (p) {
    case Probe::kReady: return v.ready;
    case Probe::kStartup: return v.startup;
    case Probe::kLive: break;
  }
  return v.live;
}

const Verdict& VerdictOf(Probe p, const ContainerVerdicts& c) {
  switch (p) {
    case Probe::kReady: return c.ready;
    case Probe::kStartup: return c.startup;
    case Probe::kLive: break;
  }
  return c.live;
}

const char* ModeName(Mode m) { return m == Mode::kObserve ? "observe" : "enforce"; }


// The segment's status; with `error`, the reader's error too, which may
// quote the file (the admin port only).
void SegmentJson(const View& v, bool error, JsonWriter* w) {
  w->Key("segment").BeginObject();
  w->Field("status", SegmentStatusName(v.segment));
  if (!error) {
    w->Field("summary", SegmentSummary(v.segment));
  } else if (v.segment_error.empty()) {
    w->Key("error").Null();
  } else {
    w->Field("error", v.segment_error);
  }
  w->Field("slot_count", v.slot_count);
  w->EndObject();
}

void StallJson(const StallRecord& s, bool open, JsonWriter* w) {
  w->BeginObject();
  w->Field("id", s.id);
  w->Field("class", StallClassName(s.stall_class));
  w->Field("seconds", Seconds(s.duration_ns));
  w->Field("open", open);
  w->Field("has_report", s.has_report);
  w->Field("syscall", s.syscall);
  w->Field("wchan", s.wchan);
  w->Field("cpu_seconds", Seconds(s.loop_cpu_ns));
  w->Field("activity", s.activity);
  w->EndObject();
}

void LagP99(const LoopView& l, JsonWriter* w) {
  w->Key("lag_p99_seconds");
  if (l.lag_p99_ns < 0) {
    w->Null();
  } else {
    w->Double(Seconds(l.lag_p99_ns));
  }
}

// The per-loop entry of a probe's JSON detail.
void ProbeLoopJson(const LoopView& l, JsonWriter* w) {
  w->BeginObject();
  LoopIdentityJson(l, w);
  w->Field("heartbeat_age_seconds", Seconds(l.heartbeat_age_ns));
  w->Field("lag_seconds", Seconds(l.lag_ns));
  LagP99(l, w);
  w->Field("ready", l.ready);
  w->Field("failing_liveness", l.failing_liveness);
  w->Key("stall");
  if (l.stall_open) {
    w->BeginObject();
    w->Field("class", StallClassName(l.stall.stall_class));
    w->Field("seconds", Seconds(l.stall.duration_ns));
    w->Field("syscall", l.stall.syscall);
    w->EndObject();
  } else {
    w->Null();
  }
  w->EndObject();
}

// One line of ?verbose text per loop.
std::string LoopLine(const LoopView& l) {
  std::string s = "loop " + OneLine(l.name) + " slot=" + std::to_string(l.slot) +
                  " pid=" + std::to_string(l.pid) + " kind=" + OneLine(l.kind) +
                  (l.container.empty() ? "" : " container=" + OneLine(l.container)) +
                  " state=" + LoopStateName(l.state) +
                  " age=" + Fixed(l.heartbeat_age_ns) + " lag=" + Fixed(l.lag_ns) +
                  " p99=" + (l.lag_p99_ns < 0 ? std::string("-") : Fixed(l.lag_p99_ns)) +
                  " ready=" + (l.ready ? "yes" : "no");
  if (l.failing_liveness) s += " failing_liveness";
  if (l.stall_open) {
    s += " stall=" + std::string(StallClassName(l.stall.stall_class)) + "/" +
         Fixed(l.stall.duration_ns);
    if (!l.stall.syscall.empty()) s += " syscall=" + OneLine(l.stall.syscall);
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------- helpers

const char* ProbeName(Probe p) {
  switch (p) {
    case Probe::kLive: return "livez";
    case Probe::kReady: return "readyz";
    case Probe::kStartup: return "startupz";
  }
  return "livez";
}

void LoopIdentityJson(const LoopView& l, JsonWriter* w) {
  w->Field("slot", l.slot);
  w->Field("name", l.name);
  w->Field("kind", l.kind);
  if (!l.container.empty()) w->Field("container", l.container);  // since format 1.1
  w->Field("pid", l.pid);
  w->Field("state", LoopStateName(l.state));
}

bool ViewIsStale(const View& view, int64_t now_ns, const Config& config) {
  return ViewAge(view, now_ns) > 3 * config.poll_interval.count() + kNsPerSec;
}

// ---------------------------------------------------------------- probes

const ContainerVerdicts* FindContainer(const View& view, std::string_view name) {
  for (const ContainerVerdicts& c : view.containers)
    if (c.name == name) return &c;
  return nullptr;
}

bool ContainerAwaitsLoops(const View& view, std::string_view name) {
  const ContainerVerdicts* c = FindContainer(view, name);
  return !c || !c->beaten;
}

bool ValidContainerName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (char ch : name)
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) return false;
  return name.front() != '-' && name.back() != '-';
}

ProbeResponse AnswerProbe(Probe probe, const View& view, const Config& config,
                          const Hold& hold, int64_t now_ns, bool detail_json,
                          bool verbose, std::string_view container) {
  Verdict awaiting;
  const Verdict* chosen = &VerdictOf(probe, view);
  if (!container.empty()) {
    const ContainerVerdicts* c = FindContainer(view, container);
    if (!c || !c->beaten) {
      awaiting = {true, "ok: no loop of container " + std::string(container) +
                            " has beaten yet, and it has no probe of its own"};
      chosen = &awaiting;
    } else {
      chosen = &VerdictOf(probe, *c);
    }
  }
  const Verdict& verdict = *chosen;
  auto listed = [&](const LoopView& l) { return container.empty() || l.container == container; };
  const bool observe = config.mode == Mode::kObserve;
  // The hold is read once: Active() and the remaining time must agree.
  Hold::State held;
  bool hold_active = false;
  if (probe == Probe::kLive && hold.Active(now_ns)) {
    held = hold.Snapshot();
    hold_active = now_ns < held.until_ns;
  }

  ProbeResponse r;
  std::string line;
  const std::string reason = OneLine(verdict.reason);
  if (verdict.ok) {
    r.status = 200;
    line = reason;
  } else if (observe) {
    r.status = 200;
    line = "ok (observe mode; would fail: " + reason + ")";
  } else if (hold_active) {
    r.status = 200;
    line = "ok (held for another " + HumanDuration(held.until_ns - now_ns) + ": " +
           OneLine(held.reason) + "; would fail: " + reason + ")";
  } else {
    r.status = 503;
    line = reason;
  }
  if (verdict.ok && hold_active) {
    line += " (hold active for another " + HumanDuration(held.until_ns - now_ns) + ")";
  }
  const bool stale = ViewIsStale(view, now_ns, config);
  if (stale) line += " (view is " + HumanDuration(ViewAge(view, now_ns)) + " old)";

  if (detail_json) {
    JsonWriter w;
    w.BeginObject();
    w.Field("status", r.status == 200 ? "ok" : "fail");
    w.Field("code", r.status);
    w.Field("probe", ProbeName(probe));
    w.Field("verdict", verdict.ok ? "pass" : "fail");
    w.Field("reason", verdict.reason);
    w.Field("message", line);
    w.Field("mode", ModeName(config.mode));
    w.Key("hold");
    if (hold_active) {
      w.BeginObject();
      w.Field("remaining_seconds", Seconds(held.until_ns - now_ns));
      w.Field("reason", held.reason);
      w.EndObject();
    } else {
      w.Null();
    }
    w.Field("view_age_seconds", Seconds(ViewAge(view, now_ns)));
    w.Field("stale", stale);
    w.Field("poll", view.poll);
    SegmentJson(view, false, &w);
    if (!container.empty()) w.Field("container", container);
    w.Key("loops").BeginArray();
    for (const LoopView& l : view.loops)
      if (listed(l)) ProbeLoopJson(l, &w);
    w.EndArray();
    w.EndObject();
    r.content_type = kJsonType;
    r.body = w.TakeLine();
    return r;
  }

  r.content_type = kTextType;
  r.body = line;
  r.body += '\n';
  if (verbose) {
    r.body += "segment " + std::string(SegmentStatusName(view.segment));
    r.body += ", mode " + std::string(ModeName(config.mode)) + ", view " +
              Fixed(ViewAge(view, now_ns)) + " old, " +
              std::to_string(std::count_if(view.loops.begin(), view.loops.end(), listed)) +
              " loops" + (container.empty() ? "" : " of container " + std::string(container)) +
              "\n";
    for (const LoopView& l : view.loops) {
      if (!listed(l)) continue;
      r.body += LoopLine(l);
      r.body += '\n';
    }
  }
  return r;
}

ProbeResponse HealthzResponse(const View& view, int64_t now_ns,
                              const Config& config) {
  ProbeResponse r;
  r.content_type = kTextType;
  const int64_t age = ViewAge(view, now_ns);
  if (ViewIsStale(view, now_ns, config)) {
    r.status = 503;
    r.body = "poll thread stuck: last poll " + HumanDuration(age) + " ago (poll_interval " +
             FormatDuration(config.poll_interval) + ")\n";
    return r;
  }
  r.status = 200;
  r.body = "ok: poll " + std::to_string(view.poll) + " " + HumanDuration(age) +
           " ago, segment " + SegmentStatusName(view.segment) + ", " +
           std::to_string(view.loops.size()) + " loops\n";
  return r;
}

// ---------------------------------------------------------------- /debug

std::string LoopsJson(const View& view, int64_t now_ns) {
  JsonWriter w;
  w.BeginObject();
  w.Field("view_age_seconds", Seconds(ViewAge(view, now_ns)));
  w.Field("poll", view.poll);
  SegmentJson(view, true, &w);
  w.Key("verdicts").BeginObject();
  const std::pair<const char*, const Verdict*> verdicts[] = {
      {"livez", &view.live}, {"readyz", &view.ready}, {"startupz", &view.startup}};
  for (const auto& [name, v] : verdicts) {
    w.Key(name).BeginObject();
    w.Field("ok", v->ok);
    w.Field("reason", v->reason);
    w.EndObject();
  }
  w.EndObject();
  w.Field("started", view.started);
  w.Key("loops").BeginArray();
  for (const LoopView& l : view.loops) {
    w.BeginObject();
    LoopIdentityJson(l, &w);
    w.Field("generation", l.generation);
    w.Field("ready", l.ready);
    w.Field("failing_liveness", l.failing_liveness);
    w.Field("interval_seconds", Seconds(l.interval_ns));
    w.Field("heartbeat_age_seconds", Seconds(l.heartbeat_age_ns));
    w.Field("beats", l.beats);
    w.Field("lag_seconds", Seconds(l.lag_ns));
    LagP99(l, &w);
    w.Field("lag_max_seconds", Seconds(int64_t(l.lag_max_ns)));
    w.Field("activity", l.activity);
    if (l.state == LoopState::kDead) {
      w.Field("dead_seconds", Seconds(view.taken_ns - l.dead_since_ns));
    }
    w.Key("stalls").BeginObject();
    for (int c = 0; c < kStallClasses; c++) {
      w.Field(StallClassName(StallClass(c)), l.stalls[size_t(c)]);
    }
    w.EndObject();
    w.Key("stall");
    if (l.stall_open) {
      StallJson(l.stall, true, &w);
    } else {
      w.Null();
    }
    // Cumulative, like Prometheus "le" buckets; the segment's are not.
    w.Key("lag_histogram").BeginObject();
    uint64_t run = 0;
    w.Key("buckets").BeginArray();
    for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
      run += l.lag_bucket[b];
      w.BeginObject();
      if (b < LW_LAG_FINITE_BOUNDS) {
        w.Field("le", Seconds(LagBucketUpperNs(b)));
      } else {
        w.Field("le", "+Inf");
      }
      w.Field("count", run);
      w.EndObject();
    }
    w.EndArray();
    w.Field("count", run);
    w.Field("sum_seconds", Seconds(int64_t(l.lag_sum_ns)));
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.TakeLine();
}

std::string StallsJson(const View& view, int64_t now_ns) {
  JsonWriter w;
  w.BeginObject();
  w.Field("view_age_seconds", Seconds(ViewAge(view, now_ns)));
  w.Key("totals").BeginObject();
  for (int c = 0; c < kStallClasses; c++) {
    w.Field(StallClassName(StallClass(c)), view.stalls_total[size_t(c)]);
  }
  w.EndObject();
  w.Field("reports_suppressed", view.reports_suppressed_total);
  w.Key("stalls").BeginArray();
  for (auto it = view.recent_stalls->rbegin(); it != view.recent_stalls->rend(); ++it) {
    const StallRecord& s = **it;
    // The loop's current copy is fresher while the stall lasts.
    const StallRecord* cur = &s;
    bool open = false;
    for (const LoopView& l : view.loops) {
      if (l.stall_open && l.stall.id == s.id) {
        cur = &l.stall;
        open = true;
        break;
      }
    }
    w.BeginObject();
    w.Field("id", cur->id);
    w.Field("loop", cur->loop);
    w.Field("slot", cur->slot);
    w.Field("pid", cur->pid);
    w.Field("class", StallClassName(cur->stall_class));
    w.Field("open", open);
    w.Field("duration_seconds", Seconds(cur->duration_ns));
    w.Field("started_seconds_ago", Seconds(now_ns - cur->started_ns));
    w.Key("ended_seconds_ago");
    if (open || cur->ended_ns == 0) {
      w.Null();
    } else {
      w.Double(Seconds(now_ns - cur->ended_ns));
    }
    w.Field("started_ns", cur->started_ns);
    w.Field("ended_ns", cur->ended_ns);
    w.Field("syscall", cur->syscall);
    w.Field("wchan", cur->wchan);
    w.Field("cpu_seconds", Seconds(cur->loop_cpu_ns));
    w.Field("activity", cur->activity);
    w.Field("has_report", cur->has_report);
    w.Field("summary", DescribeStall(*cur));
    w.Field("text", cur->text);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.TakeLine();
}

std::string HoldJson(const Hold& hold, const Config& config, int64_t now_ns) {
  Hold::State s = hold.Snapshot();
  const bool active = now_ns < s.until_ns;
  JsonWriter w;
  w.BeginObject();
  w.Field("active", active);
  w.Key("remaining_seconds");
  if (active) {
    w.Double(Seconds(s.until_ns - now_ns));
  } else {
    w.Null();
  }
  w.Key("reason");
  if (active) {
    w.String(s.reason);
  } else {
    w.Null();
  }
  w.Key("set_seconds_ago");
  if (active && s.set_ns > 0) {
    w.Double(Seconds(now_ns - s.set_ns));
  } else {
    w.Null();
  }
  w.Field("holds_total", s.count);
  w.Field("max_hold_seconds", Seconds(config.max_hold.count()));
  w.EndObject();
  return w.TakeLine();
}

}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
#include "metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <utility>
#include <vector>

namespace loopwatch {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

constexpr double kNsPerSec = 1e9;
constexpr uint64_t kLagBoundsNs[LW_LAG_FINITE_BOUNDS] = LW_LAG_BOUNDS_NS_INIT;
constexpr int kFixedCodeValues[] = {200, 503};

// The states a loop is exported in (gone loops are not exported).
constexpr LoopState kExportedStates[] = {LoopState::kStarting, LoopState::kLive,
                                         LoopState::kLagging, LoopState::kStalled,
                                         LoopState::kDead};
constexpr SegmentStatus kSegmentStatuses[] = {
    SegmentStatus::kOk,      SegmentStatus::kMissing,
    SegmentStatus::kNotInitialised, SegmentStatus::kBadMagic,
    SegmentStatus::kVersionMismatch, SegmentStatus::kCorrupt,
    SegmentStatus::kError};

double Sec(int64_t ns) { return double(ns) / kNsPerSec; }

// Length of the valid UTF-8 sequence at s[i], or 0.
size_t Utf8Len(const std::string& s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; k++) {
    unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return n;
}

// The exposition format is UTF-8: a loop name is whatever bytes the segment
// held, so invalid sequences become U+FFFD. (Quotes, backslashes and line
// feeds are escaped by the serializer.)
std::string Utf8Label(const std::string& s) {
  bool clean = true;
  for (unsigned char c : s) {
    if (c >= 0x80) {
      clean = false;
      break;
    }
  }
  if (clean) return s;
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    size_t n = Utf8Len(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i++;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

MetricFamily NewFamily(const char* name, const char* help, MetricType type) {
  MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

void AddGauge(MetricFamily* f, Labels labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  f->metric.push_back(std::move(m));
}

void AddCounter(MetricFamily* f, Labels labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  f->metric.push_back(std::move(m));
}

Labels With(const Labels& base, const char* name, std::string value) {
  Labels l;
  l.reserve(base.size() + 1);
  l = base;
  l.push_back({name, std::move(value)});
  return l;
}

bool Up(LoopState s) {
  return s == LoopState::kStarting || s == LoopState::kLive ||
         s == LoopState::kLagging;
}

}  // namespace

const char* EndpointName(Endpoint e) {
  switch (e) {
    case Endpoint::kLivez: return "livez";
    case Endpoint::kReadyz: return "readyz";
    case Endpoint::kStartupz: return "startupz";
    case Endpoint::kHealthz: return "healthz";
    case Endpoint::kMetrics: return "metrics";
  }
  return "unknown";
}

SidecarMetrics::SidecarMetrics()
    : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("loopwatch_probe_requests_total")
                   .Help("HTTP requests answered by the sidecar, by endpoint "
                         "and status code.")
                   .Register(*registry_);
  for (int e = 0; e < kEndpoints; e++) {
    for (int c = 0; c < kFixedCodes; c++) {
      // /metrics answers 200 or an error: no 503 series for it up front.
      if (Endpoint(e) == Endpoint::kMetrics && kFixedCodeValues[c] != 200) continue;
      fixed_[size_t(e)][size_t(c)] = &requests_->Add(
          {{"endpoint", EndpointName(Endpoint(e))},
           {"code", std::to_string(kFixedCodeValues[c])}});
    }
  }
}

SidecarMetrics::~SidecarMetrics() = default;

void SidecarMetrics::CountProbe(Endpoint endpoint, int code) {
  const auto e = size_t(endpoint);
  if (e >= size_t(kEndpoints)) return;
  for (int c = 0; c < kFixedCodes; c++) {
    if (kFixedCodeValues[c] == code && fixed_[e][size_t(c)] != nullptr) {
      fixed_[e][size_t(c)]->Increment();
      return;
    }
  }
  requests_
      ->Add({{"endpoint", EndpointName(endpoint)}, {"code", std::to_string(code)}})
      .Increment();
}

std::string SidecarMetrics::Render(const View& view, const Hold& hold,
                                   int64_t now_ns) const {
  const std::vector<MetricFamily> fams = Collect(view, hold, now_ns);
  // Sized once (about 110 bytes a line) instead of doubling up to a megabyte.
  size_t lines = 0;
  for (const MetricFamily& f : fams) {
    for (const ClientMetric& m : f.metric) lines += 3 + m.histogram.bucket.size();
  }
  std::string out;
  out.reserve(lines * 112 + 16384);
  WriteText(fams, &out);
  return out;
}

std::vector<MetricFamily> SidecarMetrics::Collect(const View& view, const Hold& hold,
                                                  int64_t now_ns) const {
  std::vector<MetricFamily> fams;
  fams.reserve(40);

  // ---- per loop
  auto up = NewFamily("loopwatch_loop_up",
                   "1 while the loop beats (starting, live, lagging), 0 when "
                   "stalled or dead.",
                   MetricType::Gauge);
  auto state = NewFamily("loopwatch_loop_state",
                      "The loop's state, one-hot over starting, live, "
                      "lagging, stalled, dead.",
                      MetricType::Gauge);
  auto age = NewFamily("loopwatch_loop_heartbeat_age_seconds",
                    "Seconds since the loop's last heartbeat.", MetricType::Gauge);
  auto lag = NewFamily("loopwatch_loop_lag_seconds",
                    "How late the loop's heartbeat timer fired, from the "
                    "segment's histogram since the loop opened.",
                    MetricType::Histogram);
  auto lag_max = NewFamily("loopwatch_loop_lag_max_seconds",
                        "Largest heartbeat lag since the loop opened.",
                        MetricType::Gauge);
  auto beats = NewFamily("loopwatch_loop_beats_total",
                      "Heartbeats since the loop opened.", MetricType::Counter);
  auto loop_stalls = NewFamily("loopwatch_loop_stalls_total",
                            "Stalls of this loop, by class (cpu, blocked, "
                            "host, unknown).",
                            MetricType::Counter);
  auto stall_secs = NewFamily("loopwatch_loop_stall_seconds",
                           "Length so far of the loop's current stall; 0 if "
                           "none.",
                           MetricType::Gauge);
  auto ready = NewFamily("loopwatch_loop_ready",
                      "1 unless the app declared the loop not ready.",
                      MetricType::Gauge);
  auto failing = NewFamily("loopwatch_loop_failing_liveness",
                        "1 while this loop makes /livez fail (before observe "
                        "mode and holds).",
                        MetricType::Gauge);

  const size_t n = view.loops.size();
  for (auto* f : {&up, &age, &lag, &lag_max, &beats, &stall_secs, &ready, &failing}) {
    f->metric.reserve(n);
  }
  state.metric.reserve(n * std::size(kExportedStates));
  loop_stalls.metric.reserve(n * kStallClasses);

  std::array<uint64_t, std::size(kExportedStates)> by_state{};
  for (const LoopView& l : view.loops) {
    if (l.state == LoopState::kGone) continue;
    const Labels base = {{"loop", Utf8Label(l.name)},
                         {"slot", std::to_string(l.slot)},
                         {"kind", Utf8Label(l.kind)},
                         {"pid", std::to_string(l.pid)}};
    AddGauge(&up, base, Up(l.state) ? 1 : 0);
    for (size_t i = 0; i < std::size(kExportedStates); i++) {
      bool on = l.state == kExportedStates[i];
      if (on) by_state[i]++;
      AddGauge(&state, With(base, "state", LoopStateName(kExportedStates[i])),
               on ? 1 : 0);
    }
    AddGauge(&age, base, Sec(l.heartbeat_age_ns));
    {
      ClientMetric m;
      m.label = base;
      auto& h = m.histogram;
      h.bucket.reserve(LW_LAG_BUCKETS);
      uint64_t run = 0;
      for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
        run += l.lag_bucket[b];
        ClientMetric::Bucket bk;
        bk.cumulative_count = run;
        bk.upper_bound = b < LW_LAG_FINITE_BOUNDS
                             ? double(kLagBoundsNs[b]) / kNsPerSec
                             : std::numeric_limits<double>::infinity();
        h.bucket.push_back(bk);
      }
      // The buckets are the histogram: +Inf and _count agree by construction.
      h.sample_count = run;
      h.sample_sum = double(l.lag_sum_ns) / kNsPerSec;
      lag.metric.push_back(std::move(m));
    }
    AddGauge(&lag_max, base, double(l.lag_max_ns) / kNsPerSec);
    AddCounter(&beats, base, double(l.beats));
    for (int c = 0; c < kStallClasses; c++) {
      AddCounter(&loop_stalls, With(base, "class", StallClassName(StallClass(c))),
                 double(l.stalls[size_t(c)]));
    }
    AddGauge(&stall_secs, base, l.stall_open ? Sec(l.stall.duration_ns) : 0);
    AddGauge(&ready, base, l.ready ? 1 : 0);
    AddGauge(&failing, base, l.failing_liveness ? 1 : 0);
  }
  for (auto* f : {&up, &state, &age, &lag, &lag_max, &beats, &loop_stalls,
                  &stall_secs, &ready, &failing}) {
    fams.push_back(std::move(*f));
  }

  // ---- sidecar-wide
  {
    auto f = NewFamily("loopwatch_loops", "Loops in the segment, by state.",
                    MetricType::Gauge);
    for (size_t i = 0; i < std::size(kExportedStates); i++) {
      AddGauge(&f, {{"state", LoopStateName(kExportedStates[i])}},
               double(by_state[i]));
    }
    fams.push_back(std::move(f));
  }
  {
    auto f = NewFamily("loopwatch_stalls_total",
                    "Stalls of all loops since the sidecar started, by class.",
                    MetricType::Counter);
    for (int c = 0; c < kStallClasses; c++) {
      AddCounter(&f, {{"class", StallClassName(StallClass(c))}},
                 double(view.stalls_total[size_t(c)]));
    }
    fams.push_back(std::move(f));
  }
  {
    auto f = NewFamily("loopwatch_stall_duration_seconds",
                    "Duration of ended stalls, by class.", MetricType::Histogram);
    for (int c = 0; c < kStallClasses; c++) {
      const StallDurationHistogram& sd = view.stall_duration[size_t(c)];
      ClientMetric m;
      m.label = {{"class", StallClassName(StallClass(c))}};
      uint64_t run = 0;
      for (size_t b = 0; b < sd.bucket.size(); b++) {
        run += sd.bucket[b];
        ClientMetric::Bucket bk;
        bk.cumulative_count = run;
        bk.upper_bound = b < kStallDurationBounds.size()
                             ? kStallDurationBounds[b]
                             : std::numeric_limits<double>::infinity();
        m.histogram.bucket.push_back(bk);
      }
      m.histogram.sample_count = run;
      m.histogram.sample_sum = sd.sum_seconds;
      f.metric.push_back(std::move(m));
    }
    fams.push_back(std::move(f));
  }
  auto scalar = [&](const char* name, const char* help, MetricType type,
                    double v) {
    auto f = NewFamily(name, help, type);
    if (type == MetricType::Counter) {
      AddCounter(&f, {}, v);
    } else {
      AddGauge(&f, {}, v);
    }
    fams.push_back(std::move(f));
  };
  scalar("loopwatch_loop_deaths_total",
         "Loops whose owner process exited without closing them.",
         MetricType::Counter, double(view.deaths_total));
  scalar("loopwatch_reports_suppressed_total",
         "Stall reports not logged because of the per-loop rate limit.",
         MetricType::Counter, double(view.reports_suppressed_total));
  scalar("loopwatch_poll_lateness_seconds",
         "How late the sidecar's last poll woke (large: the pod was paused).",
         MetricType::Gauge, Sec(view.last_poll_lateness_ns));
  scalar("loopwatch_polls_total", "Segment polls since the sidecar started.",
         MetricType::Counter, double(view.poll));
  scalar("loopwatch_view_age_seconds",
         "Age of the snapshot the sidecar answers from.", MetricType::Gauge,
         Sec(now_ns > view.taken_ns ? now_ns - view.taken_ns : 0));
  {
    Hold::State hs = hold.Snapshot();
    const bool active = now_ns < hs.until_ns;
    scalar("loopwatch_holds_total", "Liveness holds set on the admin port.",
           MetricType::Counter, double(hs.count));
    scalar("loopwatch_hold_active", "1 while a hold makes /livez pass.",
           MetricType::Gauge, active ? 1 : 0);
    scalar("loopwatch_hold_remaining_seconds",
           "Seconds until the current hold expires; 0 if none.",
           MetricType::Gauge, active ? Sec(hs.until_ns - now_ns) : 0);
  }
  scalar("loopwatch_segment_errors_total",
         "Times the segment became unreadable (missing, corrupt, ...).",
         MetricType::Counter, double(view.segment_errors_total));
  {
    auto f = NewFamily("loopwatch_segment_status",
                    "The segment's status, one-hot.", MetricType::Gauge);
    for (SegmentStatus s : kSegmentStatuses) {
      AddGauge(&f, {{"status", SegmentStatusName(s)}},
               view.segment == s ? 1 : 0);
    }
    fams.push_back(std::move(f));
  }
  scalar("loopwatch_segment_slots", "Slots in the segment.", MetricType::Gauge,
         double(view.slot_count));
  {
    auto f = NewFamily("loopwatch_build_info",
                    "The sidecar's version and the segment format it reads.",
                    MetricType::Gauge);
    AddGauge(&f,
             {{"version", LOOPWATCH_VERSION},
              {"format_version", std::to_string(LW_SEG_VERSION_MAJOR) + "." +
                                     std::to_string(LW_SEG_VERSION_MINOR)}},
             1);
    fams.push_back(std::move(f));
  }

  for (auto& f : registry_->Collect()) {
    // The registry keeps series in hash order; sorted reads better and diffs.
    std::sort(f.metric.begin(), f.metric.end(),
              [](const ClientMetric& a, const ClientMetric& b) { return a.label < b.label; });
    fams.push_back(std::move(f));
  }
  return fams;
}

// ---------------------------------------------------------------------------
// The text format, as prometheus-cpp's TextSerializer writes it: HELP and
// TYPE lines, label values escaped (backslash, quote, line feed), doubles as
// "%.16g" (integral values print as integers either way), histograms as
// _count, _sum, then the _bucket lines with +Inf added when missing, and
// timestamps when set.

namespace {

void AppendEscaped(const std::string& v, std::string* out) {
  size_t start = 0;
  for (size_t i = 0; i < v.size(); i++) {
    const char c = v[i];
    if (c == '\n' || c == '\\' || c == '"') {
      out->append(v, start, i - start);
      out->push_back('\\');
      out->push_back(c == '\n' ? 'n' : c);
      start = i + 1;
    }
  }
  out->append(v, start, std::string::npos);
}

template <typename T>
void AppendInt(T v, std::string* out) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, size_t(r.ptr - buf));
}

void AppendDouble(double v, std::string* out) {
  if (std::isnan(v)) {
    *out += "Nan";
  } else if (std::isinf(v)) {
    *out += v < 0 ? "-Inf" : "+Inf";
  } else if (v == std::trunc(v) && std::fabs(v) < 1e15 &&
             !(v == 0 && std::signbit(v))) {
    AppendInt(int64_t(v), out);  // what %.16g prints for these, faster
  } else {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%.*g",
                     std::numeric_limits<double>::max_digits10 - 1, v);
    if (n > 0) out->append(buf, size_t(std::min<int>(n, int(sizeof buf) - 1)));
  }
}

void AppendTail(const ClientMetric& m, std::string* out) {
  if (m.timestamp_ms != 0) {
    out->push_back(' ');
    AppendInt(m.timestamp_ms, out);
  }
  out->push_back('\n');
}

// name + suffix + {labels[,extra]} + ' '. `extra_value` is already escaped.
void AppendHead(const MetricFamily& f, const ClientMetric& m, const char* suffix,
                const char* extra_name, const std::string& extra_value,
                std::string* out) {
  *out += f.name;
  *out += suffix;
  if (!m.label.empty() || extra_name != nullptr) {
    out->push_back('{');
    const char* sep = "";
    for (const auto& l : m.label) {
      *out += sep;
      *out += l.name;
      *out += "=\"";
      AppendEscaped(l.value, out);
      out->push_back('"');
      sep = ",";
    }
    if (extra_name != nullptr) {
      *out += sep;
      *out += extra_name;
      *out += "=\"";
      *out += extra_value;
      out->push_back('"');
    }
    out->push_back('}');
  }
  out->push_back(' ');
}

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Summary: return "summary";
    case MetricType::Untyped: return "untyped";
    case MetricType::Histogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

void WriteText(const std::vector<MetricFamily>& families, std::string* out) {
  static const std::string kNone;
  static const std::string kInf = "+Inf";
  // Bucket bounds repeat for every loop: each distinct one is formatted once.
  std::vector<std::pair<double, std::string>> bounds;
  auto bound = [&bounds](double v) -> const std::string& {
    for (const auto& [d, s] : bounds) {
      if (d == v) return s;
    }
    std::string s;
    AppendDouble(v, &s);
    bounds.emplace_back(v, std::move(s));
    return bounds.back().second;
  };
  for (const MetricFamily& f : families) {
    if (!f.help.empty()) {
      *out += "# HELP ";
      *out += f.name;
      out->push_back(' ');
      *out += f.help;
      out->push_back('\n');
    }
    *out += "# TYPE ";
    *out += f.name;
    out->push_back(' ');
    *out += TypeName(f.type);
    out->push_back('\n');
    for (const ClientMetric& m : f.metric) {
      switch (f.type) {
        case MetricType::Counter:
          AppendHead(f, m, "", nullptr, kNone, out);
          AppendDouble(m.counter.value, out);
          AppendTail(m, out);
          break;
        case MetricType::Gauge:
          AppendHead(f, m, "", nullptr, kNone, out);
          AppendDouble(m.gauge.value, out);
          AppendTail(m, out);
          break;
        case MetricType::Untyped:
          AppendHead(f, m, "", nullptr, kNone, out);
          AppendDouble(m.untyped.value, out);
          AppendTail(m, out);
          break;
        case MetricType::Summary:
          AppendHead(f, m, "_count", nullptr, kNone, out);
          AppendInt(m.summary.sample_count, out);
          AppendTail(m, out);
          AppendHead(f, m, "_sum", nullptr, kNone, out);
          AppendDouble(m.summary.sample_sum, out);
          AppendTail(m, out);
          for (const auto& q : m.summary.quantile) {
            AppendHead(f, m, "", "quantile", bound(q.quantile), out);
            AppendDouble(q.value, out);
            AppendTail(m, out);
          }
          break;
        case MetricType::Histogram: {
          const auto& h = m.histogram;
          AppendHead(f, m, "_count", nullptr, kNone, out);
          AppendInt(h.sample_count, out);
          AppendTail(m, out);
          AppendHead(f, m, "_sum", nullptr, kNone, out);
          AppendDouble(h.sample_sum, out);
          AppendTail(m, out);
          double last = -std::numeric_limits<double>::infinity();
          for (const auto& b : h.bucket) {
            AppendHead(f, m, "_bucket", "le", bound(b.upper_bound), out);
            last = b.upper_bound;
            AppendInt(b.cumulative_count, out);
            AppendTail(m, out);
          }
          if (last != std::numeric_limits<double>::infinity()) {
            AppendHead(f, m, "_bucket", "le", kInf, out);
            AppendInt(h.sample_count, out);
            AppendTail(m, out);
          }
          break;
        }
      }
    }
  }
}

}  // namespace loopwatch

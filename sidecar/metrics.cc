// SPDX-License-Identifier: Apache-2.0
#include "metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include "format.h"

namespace loopwatch {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

constexpr int kFixedCodeValues[] = {200, 503};
constexpr SegmentStatus kSegmentStatuses[] = {
    SegmentStatus::kOk,      SegmentStatus::kMissing,
    SegmentStatus::kNotInitialised, SegmentStatus::kBadMagic,
    SegmentStatus::kVersionMismatch, SegmentStatus::kCorrupt,
    SegmentStatus::kError};

// The upper bound of lag bucket b, in seconds (+Inf for the last).
double LagBound(unsigned b) {
  const int64_t ns = LagBucketUpperNs(b);
  return ns >= 0 ? Seconds(ns) : std::numeric_limits<double>::infinity();
}

// Counts of nanoseconds from the segment, which may exceed INT64_MAX.
double SecondsOf(uint64_t ns) { return double(ns) / 1e9; }

bool Up(LoopState s) {
  return s == LoopState::kStarting || s == LoopState::kLive ||
         s == LoopState::kLagging;
}

// ---- the per-loop families, in exposition order.
enum LoopFamilyId {
  kUp,
  kState,       // one series per kExportedStates, label "state"
  kAge,
  kLag,         // histogram
  kLagMax,
  kBeats,
  kLoopStalls,  // one series per stall class, label "class"
  kStallSecs,
  kReady,
  kFailing,
  kLoopFamilies
};

}  // namespace

const LoopFamilyDef kLoopFamilyDefs[kLoopFamilyCount] = {
    {"loopwatch_loop_up",
     "1 while the loop beats (starting, live, lagging), 0 when stalled or dead.",
     MetricType::Gauge},
    {"loopwatch_loop_state",
     "The loop's state, one-hot over starting, live, lagging, stalled, dead.",
     MetricType::Gauge},
    {"loopwatch_loop_heartbeat_age_seconds", "Seconds since the loop's last heartbeat.",
     MetricType::Gauge},
    {"loopwatch_loop_lag_seconds",
     "How late the loop's heartbeat timer fired, from the segment's histogram since "
     "the loop opened.",
     MetricType::Histogram},
    {"loopwatch_loop_lag_max_seconds", "Largest heartbeat lag since the loop opened.",
     MetricType::Gauge},
    {"loopwatch_loop_beats_total", "Heartbeats since the loop opened.",
     MetricType::Counter},
    {"loopwatch_loop_stalls_total",
     "Stalls of this loop, by class (cpu, blocked, gil, host, unknown).",
     MetricType::Counter},
    {"loopwatch_loop_stall_seconds",
     "Length so far of the loop's current stall; 0 if none.", MetricType::Gauge},
    {"loopwatch_loop_ready", "1 unless the app declared the loop not ready.",
     MetricType::Gauge},
    {"loopwatch_loop_failing_liveness",
     "1 while this loop makes /livez fail (before observe mode and holds).",
     MetricType::Gauge},
};

namespace {

static_assert(kLoopFamilies == kLoopFamilyCount, "one definition per family");

// The value of a one-series-per-loop family (not kState, kLag, kLoopStalls).
double LoopValue(LoopFamilyId f, const LoopView& l) {
  switch (f) {
    case kUp: return Up(l.state) ? 1 : 0;
    case kAge: return Seconds(l.heartbeat_age_ns);
    case kLagMax: return SecondsOf(l.lag_max_ns);
    case kBeats: return double(l.beats);
    case kStallSecs: return l.stall_open ? Seconds(l.stall.duration_ns) : 0;
    case kReady: return l.ready ? 1 : 0;
    case kFailing: return l.failing_liveness ? 1 : 0;
    case kState:
    case kLag:
    case kLoopStalls:
    case kLoopFamilies: break;
  }
  return 0;
}


// ---- text formatting of the per-loop writer.

void AppendEscaped(std::string_view v, std::string* out) {
  size_t start = 0;
  for (size_t i = 0; i < v.size(); i++) {
    const char c = v[i];
    if (c == '\n' || c == '\\' || c == '"') {
      out->append(v.data() + start, i - start);
      out->push_back('\\');
      out->push_back(c == '\n' ? 'n' : c);
      start = i + 1;
    }
  }
  out->append(v.data() + start, v.size() - start);
}

// Room FormatDouble() and FormatInt() may need.
constexpr size_t kMaxNumber = 32;

template <typename T>
char* FormatInt(T v, char* p) {
  return std::to_chars(p, p + kMaxNumber, v).ptr;
}

// A double as prometheus-cpp's TextSerializer writes it: "Nan", "+Inf",
// "-Inf", otherwise "%.16g" (std::to_chars with a precision is specified as
// printf's "%.*g", without the locale and several times faster). Integral
// values print as integers either way; they take the integer path.
char* FormatDouble(double v, char* p) {
  if (std::isnan(v)) {
    std::memcpy(p, "Nan", 3);
    return p + 3;
  }
  if (std::isinf(v)) {
    std::memcpy(p, v < 0 ? "-Inf" : "+Inf", 4);
    return p + 4;
  }
  if (v == std::trunc(v) && std::fabs(v) < 1e15 && !(v == 0 && std::signbit(v))) {
    return FormatInt(int64_t(v), p);
  }
  return std::to_chars(p, p + kMaxNumber, v, std::chars_format::general,
                       std::numeric_limits<double>::max_digits10 - 1)
      .ptr;
}

template <typename T>
void AppendInt(T v, std::string* out) {
  char buf[kMaxNumber];
  out->append(buf, size_t(FormatInt(v, buf) - buf));
}

void AppendDouble(double v, std::string* out) {
  char buf[kMaxNumber];
  out->append(buf, size_t(FormatDouble(v, buf) - buf));
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

// ---- the per-loop families as text, written straight into the output.
//
// 256 loops make some 8,500 lines, each carrying the loop's four labels. Each
// loop's label block, `{loop="...",slot="...",kind="...",pid="..."`, is
// escaped and formatted once and copied into its 33 lines; the constant
// pieces (names with their suffixes, `,state="live"`, `,le="0.005"`) are
// formatted once per render; numbers go through std::to_chars. Lines are
// written through a raw pointer into a buffer sized up front, with one bounds
// check per line.

// A bounded-append cursor over a std::string: Need(n) makes room for n more
// bytes, then Put*() write without checks. Done() trims the string.
class TextCursor {
 public:
  TextCursor(std::string* s, size_t expect) : s_(s) {
    const size_t used = s->size();
    s->resize(std::max(s->capacity(), used + expect));
    p_ = s->data() + used;
    end_ = s->data() + s->size();
  }
  TextCursor(const TextCursor&) = delete;
  TextCursor& operator=(const TextCursor&) = delete;
  ~TextCursor() { Done(); }

  void Need(size_t n) {
    if (size_t(end_ - p_) < n) Grow(n);
  }
  void Put(std::string_view v) {
    std::memcpy(p_, v.data(), v.size());
    p_ += v.size();
  }
  void Put(char c) { *p_++ = c; }
  void PutUint(uint64_t v) { p_ = FormatInt(v, p_); }
  void PutDouble(double v) { p_ = FormatDouble(v, p_); }
  void Done() {
    if (s_ != nullptr) s_->resize(size_t(p_ - s_->data()));
    s_ = nullptr;
  }

 private:
  void Grow(size_t n) {
    const size_t used = size_t(p_ - s_->data());
    s_->resize(std::max(s_->size() + s_->size() / 2, used + n));
    p_ = s_->data() + used;
    end_ = s_->data() + s_->size();
  }

  std::string* s_;
  char* p_;
  char* end_;
};

// The label names and values that are the same for every loop, formatted
// once: `,state="starting"`, `,class="unknown"`, `,le="0.001"`, ...
struct LoopConstants {
  std::string state_extra[std::size(kExportedStates)];
  std::string class_extra[kStallClasses];
  std::string le_extra[LW_LAG_BUCKETS];
  size_t longest_line = 0;  // everything but the label block and the value

  LoopConstants() {
    for (size_t i = 0; i < std::size(kExportedStates); i++) {
      state_extra[i] = std::string(",state=\"") + LoopStateName(kExportedStates[i]) + "\"";
    }
    for (int c = 0; c < kStallClasses; c++) {
      class_extra[c] = std::string(",class=\"") + StallClassName(StallClass(c)) + "\"";
    }
    size_t longest_extra = 0;
    for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
      le_extra[b] = ",le=\"";
      AppendDouble(LagBound(b), &le_extra[b]);
      le_extra[b] += "\"";
      longest_extra = std::max(longest_extra, le_extra[b].size());
    }
    for (const auto& s : state_extra) longest_extra = std::max(longest_extra, s.size());
    for (const auto& s : class_extra) longest_extra = std::max(longest_extra, s.size());
    size_t longest_name = 0;
    for (const auto& f : kLoopFamilyDefs) {
      longest_name = std::max(longest_name, std::strlen(f.name));
    }
    // name + "_bucket" + extra + "} " + value + "\n"
    longest_line = longest_name + 7 + longest_extra + 2 + kMaxNumber + 1;
  }
};

const LoopConstants& Constants() {
  static const LoopConstants c;
  return c;
}

// A label value as the exposition format wants it: UTF-8 (a loop name is
// whatever bytes the segment held: invalid ones become U+FFFD), with quotes,
// backslashes and line feeds escaped. A name is usually plain ASCII,
// appended as it is.
void AppendLabelValue(const std::string& v, std::string* out) {
  for (unsigned char c : v) {
    if (c >= 0x80 || c == '\n' || c == '\\' || c == '"') {
      AppendEscaped(ValidUtf8(v), out);
      return;
    }
  }
  out->append(v);
}

// `{loop="...",slot="...",kind="...",pid="..."` (no closing brace).
void AppendLabelBlock(const LoopView& l, std::string* out) {
  *out += "{loop=\"";
  AppendLabelValue(l.name, out);
  *out += "\",slot=\"";
  AppendInt(l.slot, out);
  *out += "\",kind=\"";
  AppendLabelValue(l.kind, out);
  *out += "\",pid=\"";
  AppendInt(l.pid, out);
  out->push_back('"');
}

void WriteLoops(const View& view, std::string* out) {
  const LoopConstants& k = Constants();
  std::vector<const LoopView*> loops;
  loops.reserve(view.loops.size());
  for (const LoopView& l : view.loops) {
    if (l.state != LoopState::kGone) loops.push_back(&l);
  }

  // Every loop's label block, in one string.
  std::string blocks;
  blocks.reserve(loops.size() * 96);
  std::vector<std::pair<size_t, size_t>> at;  // offset, length in `blocks`
  at.reserve(loops.size());
  size_t block_bytes = 0;
  size_t longest_block = 0;
  for (const LoopView* l : loops) {
    const size_t start = blocks.size();
    AppendLabelBlock(*l, &blocks);
    at.emplace_back(start, blocks.size() - start);
    block_bytes += blocks.size() - start;
    longest_block = std::max(longest_block, blocks.size() - start);
  }
  auto block = [&](size_t i) {
    return std::string_view(blocks.data() + at[i].first, at[i].second);
  };

  constexpr size_t kLinesPerLoop =
      std::size(kExportedStates) + kStallClasses + LW_LAG_BUCKETS + 2 + 7;
  // Lines take some 45 bytes besides the label block, the help texts 1.5 KB
  // and the sidecar-wide families after these about 7 KB: the estimate errs
  // on the large side, so that the string is not reallocated (the cursor
  // grows it if needed).
  TextCursor c(out, kLinesPerLoop * (block_bytes + loops.size() * 48) + 16384);
  const size_t line_room = k.longest_line + longest_block;

  auto header = [&](const LoopFamilyDef& f) {
    const size_t n = std::strlen(f.name);
    c.Need(2 * n + std::strlen(f.help) + 32);
    c.Put("# HELP ");
    c.Put(std::string_view(f.name, n));
    c.Put(' ');
    c.Put(f.help);
    c.Put("\n# TYPE ");
    c.Put(std::string_view(f.name, n));
    c.Put(' ');
    c.Put(TypeName(f.type));
    c.Put('\n');
  };
  // name{block extra} — the value and the line feed follow.
  auto head = [&](std::string_view name, size_t i, std::string_view extra) {
    c.Need(line_room);
    c.Put(name);
    c.Put(block(i));
    c.Put(extra);
    c.Put("} ");
  };

  for (int fi = 0; fi < kLoopFamilies; fi++) {
    const auto f = LoopFamilyId(fi);
    const LoopFamilyDef& def = kLoopFamilyDefs[fi];
    const std::string_view name = def.name;
    header(def);
    switch (f) {
      case kState:
        for (size_t i = 0; i < loops.size(); i++) {
          for (size_t s = 0; s < std::size(kExportedStates); s++) {
            head(name, i, k.state_extra[s]);
            c.Put(loops[i]->state == kExportedStates[s] ? '1' : '0');
            c.Put('\n');
          }
        }
        break;
      case kLoopStalls:
        for (size_t i = 0; i < loops.size(); i++) {
          for (int s = 0; s < kStallClasses; s++) {
            head(name, i, k.class_extra[s]);
            c.PutDouble(double(loops[i]->stalls[size_t(s)]));
            c.Put('\n');
          }
        }
        break;
      case kLag: {
        const std::string count = std::string(name) + "_count";
        const std::string sum = std::string(name) + "_sum";
        const std::string bucket = std::string(name) + "_bucket";
        for (size_t i = 0; i < loops.size(); i++) {
          const LoopView& l = *loops[i];
          uint64_t total = 0;
          for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) total += l.lag_bucket[b];
          head(count, i, "");
          c.PutUint(total);
          c.Put('\n');
          head(sum, i, "");
          c.PutDouble(SecondsOf(l.lag_sum_ns));
          c.Put('\n');
          // The buckets are the histogram: +Inf and _count agree by
          // construction (the last bucket is +Inf).
          uint64_t run = 0;
          for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
            run += l.lag_bucket[b];
            head(bucket, i, k.le_extra[b]);
            c.PutUint(run);
            c.Put('\n');
          }
        }
        break;
      }
      default:
        for (size_t i = 0; i < loops.size(); i++) {
          head(name, i, "");
          c.PutDouble(LoopValue(f, *loops[i]));
          c.Put('\n');
        }
        break;
    }
  }
}

// ---- the sidecar-wide families, as prometheus-cpp objects.

MetricFamily NewFamily(const char* name, const char* help, MetricType type) {
  MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

// Adds a series of a gauge or counter family.
void AddValue(MetricFamily* f, Labels labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f->type == MetricType::Counter) {
    m.counter.value = v;
  } else {
    m.gauge.value = v;
  }
  f->metric.push_back(std::move(m));
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
                   .Help("HTTP requests answered by the sidecar, by handler "
                         "(livez, readyz, startupz, healthz, metrics) and status code.")
                   .Register(*registry_);
  for (int e = 0; e < kEndpoints; e++) {
    for (int c = 0; c < kFixedCodes; c++) {
      // /metrics answers 200 or an error: no 503 series for it up front.
      if (Endpoint(e) == Endpoint::kMetrics && kFixedCodeValues[c] != 200) continue;
      fixed_[size_t(e)][size_t(c)] = &requests_->Add(
          {{"handler", EndpointName(Endpoint(e))},
           {"code", std::to_string(kFixedCodeValues[c])}});
    }
  }
  auto& connections = prometheus::BuildCounter()
                          .Name("loopwatch_http_connections_total")
                          .Help("HTTP connections accepted, by listener (public, probe_lane, "
                                "admin).")
                          .Register(*registry_);
  for (int l = 0; l < kListeners; l++) {
    connections_[size_t(l)] = &connections.Add({{"listener", ListenerName(Listener(l))}});
  }
}

SidecarMetrics::~SidecarMetrics() = default;

const char* ListenerName(Listener l) {
  switch (l) {
    case Listener::kPublic: return "public";
    case Listener::kProbeLane: return "probe_lane";
    case Listener::kAdmin: return "admin";
  }
  return "unknown";
}

void SidecarMetrics::CountConnection(Listener listener) {
  const auto i = size_t(listener);
  if (i < connections_.size()) connections_[i]->Increment();
}

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
      ->Add({{"handler", EndpointName(endpoint)}, {"code", std::to_string(code)}})
      .Increment();
}

std::string SidecarMetrics::Render(const View& view, const Hold& hold,
                                   int64_t now_ns) const {
  std::string out;
  WriteLoops(view, &out);
  out += prometheus::TextSerializer().Serialize(SidecarWide(view, hold, now_ns));
  return out;
}

std::vector<MetricFamily> SidecarMetrics::SidecarWide(const View& view, const Hold& hold,
                                                      int64_t now_ns) const {
  std::vector<MetricFamily> fams;
  fams.reserve(32);
  {
    std::array<uint64_t, std::size(kExportedStates)> by_state{};
    for (const LoopView& l : view.loops) {
      for (size_t i = 0; i < std::size(kExportedStates); i++) {
        if (l.state == kExportedStates[i]) by_state[i]++;
      }
    }
    auto f = NewFamily("loopwatch_loops", "Loops in the segment, by state.",
                    MetricType::Gauge);
    for (size_t i = 0; i < std::size(kExportedStates); i++) {
      AddValue(&f, {{"state", LoopStateName(kExportedStates[i])}},
               double(by_state[i]));
    }
    fams.push_back(std::move(f));
  }
  {
    auto f = NewFamily("loopwatch_stalls_total",
                    "Stalls of all loops since the sidecar started, by class.",
                    MetricType::Counter);
    for (int c = 0; c < kStallClasses; c++) {
      AddValue(&f, {{"class", StallClassName(StallClass(c))}},
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
    AddValue(&f, {}, v);
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
         MetricType::Gauge, Seconds(view.last_poll_lateness_ns));
  scalar("loopwatch_polls_total", "Segment polls since the sidecar started.",
         MetricType::Counter, double(view.poll));
  scalar("loopwatch_view_age_seconds",
         "Age of the snapshot the sidecar answers from.", MetricType::Gauge,
         Seconds(now_ns > view.taken_ns ? now_ns - view.taken_ns : 0));
  {
    Hold::State hs = hold.Snapshot();
    const bool active = now_ns < hs.until_ns;
    scalar("loopwatch_holds_total", "Liveness holds set on the admin port.",
           MetricType::Counter, double(hs.count));
    scalar("loopwatch_hold_active", "1 while a hold makes /livez pass.",
           MetricType::Gauge, active ? 1 : 0);
    scalar("loopwatch_hold_remaining_seconds",
           "Seconds until the current hold expires; 0 if none.",
           MetricType::Gauge, active ? Seconds(hs.until_ns - now_ns) : 0);
  }
  scalar("loopwatch_segment_errors_total",
         "Times the segment became unreadable (missing, corrupt, ...).",
         MetricType::Counter, double(view.segment_errors_total));
  scalar("loopwatch_segment_unreadable_seconds",
         "How long the segment has been unreadable; 0 while it is readable.",
         MetricType::Gauge,
         view.unreadable_since_ns > 0 ? Seconds(view.taken_ns - view.unreadable_since_ns) : 0);
  scalar("loopwatch_segment_loops_lost",
         "Loops that were live when the segment was last read, while it is unreadable "
         "(after stall_after, /livez fails); 0 while it is readable.",
         MetricType::Gauge, double(view.loops_lost));
  {
    auto f = NewFamily("loopwatch_segment_status",
                    "The segment's status, one-hot.", MetricType::Gauge);
    for (SegmentStatus s : kSegmentStatuses) {
      AddValue(&f, {{"status", SegmentStatusName(s)}},
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
    AddValue(&f,
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

}  // namespace loopwatch

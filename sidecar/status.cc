// SPDX-License-Identifier: Apache-2.0
#include "status.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "clock.h"
#include "config.h"
#include "format.h"
#include "health.h"
#include "json.h"
#include "probes.h"
#include "reader.h"


namespace loopwatch {
namespace {

// Two snapshots this far apart give Health a beat-counter change to see.
constexpr std::chrono::milliseconds kSecondLook(150);

// A table cell of text from the app's memory: one line, "-" if empty.
std::string Cell(const std::string& s) { return s.empty() ? "-" : OneLine(s); }

std::string Detail(const LoopView& l) {
  std::string d;
  std::string activity = l.activity;
  switch (l.state) {
    case LoopState::kStalled:
      d = DescribeStall(l.stall);
      if (!l.stall.activity.empty()) activity = l.stall.activity;
      break;
    case LoopState::kDead: d = "owner gone without closing"; break;
    case LoopState::kGone: d = "closed"; break;
    case LoopState::kStarting: d = "has not beaten yet"; break;
    case LoopState::kLagging: d = "lag " + HumanDuration(l.lag_ns); break;
    case LoopState::kLive: break;
  }
  if (!l.ready && l.state != LoopState::kDead && l.state != LoopState::kGone) {
    d += std::string(d.empty() ? "" : ", ") + "not ready (set by the app)";
  }
  if (!activity.empty() && l.state != LoopState::kGone) {
    d += std::string(d.empty() ? "" : ", ") + "activity \"" +
         OneLine(activity) + "\"";
  }
  return d;
}

// The loop's lag p99 since it opened, from its histogram in the segment:
// two looks 150 ms apart are too short a window for a recent p99.
int64_t LifetimeLagP99(const LoopView& l) { return LagP99Ns(l.lag_bucket, l.lag_max_ns); }

// Stalls since the loop opened its slot: the library's own count, which
// outlives this short look; what Health saw if the slot changed hands.
uint64_t StallCount(const LoopView& l, const std::vector<SlotSnapshot>& slots) {
  for (const SlotSnapshot& s : slots) {
    if (s.valid && s.index == l.slot && s.generation == l.generation &&
        s.state != LW_SLOT_FREE) {
      return s.report.stall_count;
    }
  }
  uint64_t n = 0;
  for (uint64_t c : l.stalls) n += c;
  return n;
}

void PrintTable(const std::string& path, const HeaderSnapshot& h,
                const View& v, const std::vector<SlotSnapshot>& slots,
                std::ostream& out) {
  size_t present = 0, closed = 0;
  for (const LoopView& l : v.loops) present += l.state != LoopState::kGone;
  for (const SlotSnapshot& s : slots) closed += s.valid && s.state == LW_SLOT_CLOSED;
  out << "segment " << path << " (format " << h.version_major << "."
      << h.version_minor << ", " << h.slot_count << " slots): " << present
      << (present == 1 ? " loop" : " loops");
  if (closed) out << ", " << closed << " closed";
  out << "\n";
  if (v.loops.empty()) return;

  std::vector<std::vector<std::string>> rows;
  rows.push_back({"SLOT", "NAME", "KIND", "PID", "STATE", "AGE", "LAG_P99",
                  "STALLS", "DETAIL"});
  for (const LoopView& l : v.loops) {
    rows.push_back({std::to_string(l.slot), Cell(l.name),
                    Cell(l.kind), std::to_string(l.pid),
                    LoopStateName(l.state), HumanDuration(l.heartbeat_age_ns),
                    HumanDuration(LifetimeLagP99(l)), std::to_string(StallCount(l, slots)),
                    Detail(l)});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (auto& r : rows) {
    for (size_t i = 0; i < r.size(); i++) width[i] = std::max(width[i], r[i].size());
  }
  for (auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); i++) {
      line += r[i];
      if (i + 1 < r.size()) line.append(width[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
}

void PrintJson(const std::string& path, const HeaderSnapshot& h, const View& v,
               const std::vector<SlotSnapshot>& slots, std::ostream& out) {
  JsonWriter j;
  j.BeginObject();
  j.Field("segment", path);
  j.Field("format_version", std::to_string(h.version_major) + "." +
                                std::to_string(h.version_minor));
  j.Field("slot_count", h.slot_count);
  j.Key("loops").BeginArray();
  for (const LoopView& l : v.loops) {
    j.BeginObject();
    LoopIdentityJson(l, &j);
    j.Field("ready", l.ready);
    j.Field("heartbeat_age_seconds", Seconds(l.heartbeat_age_ns));
    int64_t p99 = LifetimeLagP99(l);
    j.Key("lag_p99_seconds");
    if (p99 < 0) j.Null(); else j.Double(Seconds(p99));
    j.Field("lag_seconds", Seconds(l.lag_ns));
    j.Field("interval_seconds", Seconds(l.interval_ns));
    j.Field("beats", l.beats);
    j.Field("stalls", StallCount(l, slots));
    j.Field("activity", l.activity);
    j.Key("stall");
    if (l.state == LoopState::kStalled) {
      j.BeginObject();
      j.Field("class", StallClassName(l.stall.stall_class));
      j.Field("duration_seconds", Seconds(l.stall.duration_ns));
      j.Field("loop_cpu_seconds", Seconds(l.stall.loop_cpu_ns));
      j.Field("syscall", l.stall.syscall);
      j.Field("wchan", l.stall.wchan);
      j.Field("activity", l.stall.activity);
      j.Field("text", l.stall.text);
      j.EndObject();
    } else {
      j.Null();
    }
    j.EndObject();
  }
  j.EndArray();
  j.EndObject();
  out << j.str() << "\n";
}

std::string Hint(SegmentStatus s) {
  switch (s) {
    case SegmentStatus::kMissing:
    case SegmentStatus::kNotInitialised:
      return "is the app running with LOOPWATCH_SEGMENT set to this path? "
             "Give another path with --segment PATH.";
    case SegmentStatus::kVersionMismatch:
      return "use a loopwatch of the same major version as the app's library.";
    case SegmentStatus::kBadMagic:
    case SegmentStatus::kCorrupt:
      return "check that --segment names the file shared with the app.";
    default:
      return "";
  }
}

}  // namespace

std::string StatusHelp() {
  return "Usage: loopwatch status [--segment PATH] [--json] [--SETTING VALUE]...\n"
         "\n"
         "Shows every loop in the segment: slot, name, kind, pid, state,\n"
         "heartbeat age (AGE), the 99th percentile of its lag since it opened\n"
         "(LAG_P99, from its histogram) and how many stalls its watchdog saw.\n"
         "It reads the segment file directly (not the sidecar's HTTP port), so\n"
         "it works while the sidecar is stuck or stopped.\n"
         "\n"
         "  --segment PATH   segment file (LOOPWATCH_SEGMENT, default\n"
         "                   /run/loopwatch/segment)\n"
         "  --json           one JSON object instead of the table\n"
         "  --help           print this help and exit\n"
         "\n"
         "Settings that judge loops (--stall-after, --lag-above, ...) are read\n"
         "as `loopwatch run` reads them; see `loopwatch run --help`.\n"
         "Exit status: 0 shown, 1 segment unreadable, 2 bad arguments.\n";
}

int RunStatus(const std::vector<std::string>& args,
              const std::map<std::string, std::string>& env, std::ostream& out,
              std::ostream& err) {
  bool json = false;
  std::vector<std::string> rest;
  for (const std::string& a : args) {
    if (a == "--json") {
      json = true;
    } else {
      rest.push_back(a);
    }
  }
  Config config;
  std::vector<ConfigError> errors;
  bool print_config = false, help = false;
  bool ok = LoadConfig(rest, env, &config, &errors, &print_config, &help);
  if (help) {
    out << StatusHelp();
    return 0;
  }
  if (print_config) {
    errors.push_back({"--print-config", "is for `loopwatch run`"});
    ok = false;
  }
  if (!ok) {
    for (const ConfigError& e : errors) {
      err << "loopwatch status: " << e.ToString() << "\n";
    }
    err << "Run `loopwatch status --help` for usage.\n";
    return 2;
  }

  // Never create the segment: a status look must not change anything.
  SegmentReader reader(config.segment, 0);
  std::vector<SlotSnapshot> slots;
  Health health(config);
  std::vector<Event> events;
  std::shared_ptr<const View> view;
  for (int look = 0; look < 2; look++) {
    if (look > 0) std::this_thread::sleep_for(kSecondLook);
    SegmentStatus st = reader.Snapshot(&slots);
    if (st != SegmentStatus::kOk) {
      err << "loopwatch status: " << reader.error() << "\n";
      std::string hint = Hint(st);
      if (!hint.empty()) err << hint << "\n";
      return 1;
    }
    view = health.Update(st, "", slots, MonotonicNowNs(), 0, &events);
  }
  std::vector<LoopView> loops = view->loops;
  std::sort(loops.begin(), loops.end(),
            [](const LoopView& a, const LoopView& b) { return a.slot < b.slot; });
  View sorted = *view;
  sorted.loops = std::move(loops);
  if (json) {
    PrintJson(config.segment, reader.header(), sorted, slots, out);
  } else {
    PrintTable(config.segment, reader.header(), sorted, slots, out);
  }
  return 0;
}

}  // namespace loopwatch

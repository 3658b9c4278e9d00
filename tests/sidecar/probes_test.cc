// SPDX-License-Identifier: Apache-2.0
//
// The probe answers as pure functions: hand-made Views, injected times.
#include "probes.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace loopwatch {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr int64_t kSec = 1000000000;
constexpr int64_t kMs = 1000000;
constexpr int64_t kT0 = 1000 * kSec;  // the view's poll time

// ---- a minimal JSON parser, enough to check shapes and validity

struct Json {
  enum Type { kNull, kBool, kNumber, kString, kArray, kObject } type = kNull;
  bool b = false;
  double n = 0;
  std::string s;
  std::vector<Json> a;
  std::vector<std::pair<std::string, Json>> o;

  const Json* Get(const std::string& k) const {
    for (auto& [key, v] : o) {
      if (key == k) return &v;
    }
    return nullptr;
  }
  const Json& operator[](const std::string& k) const {
    static const Json kMissing;
    const Json* v = Get(k);
    return v ? *v : kMissing;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : t_(text) {}
  // Whole text is one value (plus whitespace).
  bool Parse(Json* out) {
    if (!Value(out, 0)) return false;
    Ws();
    return i_ == t_.size();
  }

 private:
  void Ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\r' ||
                              t_[i_] == '\t')) {
      i_++;
    }
  }
  bool Lit(const char* w) {
    size_t n = strlen(w);
    if (t_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }
  bool Str(std::string* out) {
    if (i_ >= t_.size() || t_[i_] != '"') return false;
    i_++;
    while (i_ < t_.size()) {
      unsigned char c = static_cast<unsigned char>(t_[i_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;  // raw control characters are invalid
      if (c == '\\') {
        if (i_ >= t_.size()) return false;
        char e = t_[i_++];
        switch (e) {
          case '"': out->push_back('"'); break;
          case '\\': out->push_back('\\'); break;
          case '/': out->push_back('/'); break;
          case 'b': out->push_back('\b'); break;
          case 'f': out->push_back('\f'); break;
          case 'n': out->push_back('\n'); break;
          case 'r': out->push_back('\r'); break;
          case 't': out->push_back('\t'); break;
          case 'u': {
            if (i_ + 4 > t_.size()) return false;
            for (int k = 0; k < 4; k++) {
              if (!isxdigit(static_cast<unsigned char>(t_[i_ + size_t(k)]))) return false;
            }
            unsigned cp = unsigned(strtoul(t_.substr(i_, 4).c_str(), nullptr, 16));
            i_ += 4;
            if (cp < 0x80) {
              out->push_back(char(cp));
            } else {
              out->push_back('?');  // enough for these tests
            }
            break;
          }
          default: return false;
        }
      } else {
        out->push_back(char(c));
      }
    }
    return false;
  }
  bool Value(Json* v, int depth) {
    if (depth > 64) return false;
    Ws();
    if (i_ >= t_.size()) return false;
    char c = t_[i_];
    if (c == '{') {
      v->type = Json::kObject;
      i_++;
      Ws();
      if (i_ < t_.size() && t_[i_] == '}') {
        i_++;
        return true;
      }
      for (;;) {
        Ws();
        std::string k;
        if (!Str(&k)) return false;
        Ws();
        if (i_ >= t_.size() || t_[i_++] != ':') return false;
        Json child;
        if (!Value(&child, depth + 1)) return false;
        v->o.emplace_back(std::move(k), std::move(child));
        Ws();
        if (i_ >= t_.size()) return false;
        if (t_[i_] == ',') {
          i_++;
          continue;
        }
        if (t_[i_] == '}') {
          i_++;
          return true;
        }
        return false;
      }
    }
    if (c == '[') {
      v->type = Json::kArray;
      i_++;
      Ws();
      if (i_ < t_.size() && t_[i_] == ']') {
        i_++;
        return true;
      }
      for (;;) {
        Json child;
        if (!Value(&child, depth + 1)) return false;
        v->a.push_back(std::move(child));
        Ws();
        if (i_ >= t_.size()) return false;
        if (t_[i_] == ',') {
          i_++;
          continue;
        }
        if (t_[i_] == ']') {
          i_++;
          return true;
        }
        return false;
      }
    }
    if (c == '"') {
      v->type = Json::kString;
      return Str(&v->s);
    }
    if (Lit("true")) {
      v->type = Json::kBool;
      v->b = true;
      return true;
    }
    if (Lit("false")) {
      v->type = Json::kBool;
      return true;
    }
    if (Lit("null")) return true;
    // number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    size_t start = i_;
    if (t_[i_] == '-') i_++;
    if (i_ >= t_.size() || !isdigit(static_cast<unsigned char>(t_[i_]))) return false;
    if (t_[i_] == '0') {
      i_++;
    } else {
      while (i_ < t_.size() && isdigit(static_cast<unsigned char>(t_[i_]))) i_++;
    }
    if (i_ < t_.size() && t_[i_] == '.') {
      i_++;
      if (i_ >= t_.size() || !isdigit(static_cast<unsigned char>(t_[i_]))) return false;
      while (i_ < t_.size() && isdigit(static_cast<unsigned char>(t_[i_]))) i_++;
    }
    if (i_ < t_.size() && (t_[i_] == 'e' || t_[i_] == 'E')) {
      i_++;
      if (i_ < t_.size() && (t_[i_] == '+' || t_[i_] == '-')) i_++;
      if (i_ >= t_.size() || !isdigit(static_cast<unsigned char>(t_[i_]))) return false;
      while (i_ < t_.size() && isdigit(static_cast<unsigned char>(t_[i_]))) i_++;
    }
    v->type = Json::kNumber;
    v->n = strtod(t_.substr(start, i_ - start).c_str(), nullptr);
    return true;
  }
  const std::string& t_;
  size_t i_ = 0;
};

Json ParseOrFail(const std::string& text) {
  Json j;
  EXPECT_TRUE(JsonParser(text).Parse(&j)) << "invalid JSON:\n" << text;
  return j;
}

// ---- hand-made views

LoopView Loop(uint32_t slot, const std::string& name, LoopState state) {
  LoopView l;
  l.slot = slot;
  l.generation = 2;
  l.name = name;
  l.kind = "asyncio";
  l.pid = 100 + slot;
  l.state = state;
  l.interval_ns = 100 * kMs;
  l.heartbeat_age_ns = 50 * kMs;
  l.lag_ns = 2 * kMs;
  l.lag_p99_ns = 5 * kMs;
  l.beats = 1000;
  l.lag_bucket[0] = 900;
  l.lag_bucket[1] = 90;
  l.lag_bucket[2] = 9;
  l.lag_count = 999;
  l.lag_sum_ns = 999 * kMs;
  l.lag_max_ns = 4 * kMs;
  return l;
}

View HealthyView() {
  View v;
  v.taken_ns = kT0;
  v.poll = 42;
  v.segment = SegmentStatus::kOk;
  v.slot_count = 64;
  v.loops = {Loop(0, "uvicorn-1", LoopState::kLive), Loop(1, "uvicorn-2", LoopState::kLive),
             Loop(2, "uvicorn-3", LoopState::kLive)};
  v.live = {true, "ok: 3 loops, 3 live"};
  v.ready = {true, "ok: 3 loops ready"};
  v.startup = {true, "ok: started"};
  v.started = true;
  return v;
}

const char* kStallReason = "loop uvicorn-7 stalled 6.2s (blocked in clock_nanosleep)";

View StalledView() {
  View v = HealthyView();
  LoopView& l = v.loops[1];
  l.name = "uvicorn-7";
  l.state = LoopState::kStalled;
  l.failing_liveness = true;
  l.heartbeat_age_ns = 6200 * kMs;
  l.lag_ns = 6100 * kMs;
  l.stall_open = true;
  l.stall.id = 7;
  l.stall.loop = l.name;
  l.stall.slot = l.slot;
  l.stall.pid = l.pid;
  l.stall.stall_class = StallClass::kBlocked;
  l.stall.started_ns = kT0 - 6200 * kMs;
  l.stall.duration_ns = 6200 * kMs;
  l.stall.syscall = "clock_nanosleep";
  l.stall.wchan = "hrtimer_nanosleep";
  l.stall.activity = "GET /slow";
  l.stall.text = "Traceback:\n  File \"app.py\", line 12, in slow\n    time.sleep(10)\n";
  l.stall.has_report = true;
  l.stalls[int(StallClass::kBlocked)] = 1;
  v.live = {false, kStallReason};
  v.ready = {false, "loop uvicorn-7 stalled 6.2s"};
  v.stalls_total[int(StallClass::kBlocked)] = 1;
  v.recent_stalls = std::make_shared<StallHistory>(StallHistory{std::make_shared<StallRecord>(l.stall)});
  return v;
}

Config TestConfig() {
  Config c;
  c.poll_interval = std::chrono::milliseconds(100);
  return c;
}

// ---- tests

TEST(Probes, HealthyViewPassesEveryProbe) {
  View v = HealthyView();
  Config c = TestConfig();
  Hold hold;
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0 + 10 * kMs, false, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok: 3 loops, 3 live\n");
  EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
  r = AnswerProbe(Probe::kReady, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok: 3 loops ready\n");
  r = AnswerProbe(Probe::kStartup, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok: started\n");
}

TEST(Probes, StalledLoopFailsLivenessWithTheReason) {
  View v = StalledView();
  Config c = TestConfig();
  Hold hold;
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, std::string(kStallReason) + "\n");
  r = AnswerProbe(Probe::kReady, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "loop uvicorn-7 stalled 6.2s\n");
  r = AnswerProbe(Probe::kStartup, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 200);
}

TEST(Probes, ReadinessAndStartupFailOnTheirOwn) {
  View v = HealthyView();
  v.ready = {false, "loop uvicorn-2 lagging 1.5s (lag_above 1s)"};
  v.startup = {false, "waiting for 4 loops to beat (3 so far)"};
  Config c = TestConfig();
  Hold hold;
  EXPECT_EQ(AnswerProbe(Probe::kLive, v, c, hold, kT0, false, false).status, 200);
  ProbeResponse r = AnswerProbe(Probe::kReady, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "loop uvicorn-2 lagging 1.5s (lag_above 1s)\n");
  r = AnswerProbe(Probe::kStartup, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "waiting for 4 loops to beat (3 so far)\n");
}

TEST(Probes, ObserveModeAlwaysPassesAndSaysWhatWouldFail) {
  View v = StalledView();
  v.startup = {false, "waiting for 4 loops to beat (3 so far)"};
  Config c = TestConfig();
  c.mode = Mode::kObserve;
  Hold hold;
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok (observe mode; would fail: " + std::string(kStallReason) + ")\n");
  r = AnswerProbe(Probe::kReady, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok (observe mode; would fail: loop uvicorn-7 stalled 6.2s)\n");
  r = AnswerProbe(Probe::kStartup, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.status, 200);
  // A passing verdict reads the same as in enforce mode.
  r = AnswerProbe(Probe::kLive, HealthyView(), c, hold, kT0, false, false);
  EXPECT_EQ(r.body, "ok: 3 loops, 3 live\n");
}

TEST(Probes, HoldPassesLivenessUntilItExpires) {
  View v = StalledView();
  Config c = TestConfig();
  Hold hold;
  EXPECT_FALSE(hold.Active(kT0));
  EXPECT_EQ(hold.Snapshot().count, 0u);
  hold.Set(kT0, kT0 + 10 * kSec, "debugging INC-42");
  EXPECT_EQ(hold.Snapshot().count, 1u);
  EXPECT_TRUE(hold.Active(kT0));
  EXPECT_EQ(hold.Snapshot().until_ns, kT0 + 10 * kSec);
  EXPECT_EQ(hold.Snapshot().reason, "debugging INC-42");

  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0 + 500 * kMs, false, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok (held for another 9.5s: debugging INC-42; would fail: " +
                        std::string(kStallReason) + ")\n");
  // Only liveness is held: readiness still sheds traffic.
  EXPECT_EQ(AnswerProbe(Probe::kReady, v, c, hold, kT0, false, false).status, 503);

  // It expires by itself.
  EXPECT_TRUE(hold.Active(kT0 + 10 * kSec - 1));
  EXPECT_FALSE(hold.Active(kT0 + 10 * kSec));
  r = AnswerProbe(Probe::kLive, v, c, hold, kT0 + 10 * kSec, false, false);
  EXPECT_EQ(r.status, 503);

  // A passing verdict mentions an active hold.
  r = AnswerProbe(Probe::kLive, HealthyView(), c, hold, kT0 + 1 * kSec, false, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok: 3 loops, 3 live (hold active for another 9.0s)\n");

  hold.Set(kT0, kT0 + 60 * kSec, "again");
  EXPECT_EQ(hold.Snapshot().count, 2u);
  hold.Clear();
  EXPECT_FALSE(hold.Active(kT0));
  EXPECT_EQ(AnswerProbe(Probe::kLive, v, c, hold, kT0, false, false).status, 503);
  EXPECT_EQ(hold.Snapshot().count, 2u);
}

TEST(Probes, StaleViewIsStillAnsweredButSaysItsAge) {
  View v = StalledView();
  Config c = TestConfig();
  Hold hold;
  // 3 polls + 1 s = 1.3 s: not stale yet.
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0 + 1300 * kMs, false, false);
  EXPECT_EQ(r.body, std::string(kStallReason) + "\n");
  r = AnswerProbe(Probe::kLive, v, c, hold, kT0 + 2500 * kMs, false, false);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, std::string(kStallReason) + " (view is 2.5s old)\n");
}

TEST(Probes, HealthzFailsWhenThePollThreadStops) {
  View v = HealthyView();
  Config c = TestConfig();
  ProbeResponse r = HealthzResponse(v, kT0 + 50 * kMs, c);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok: poll 42 50ms ago, segment ok, 3 loops\n");
  r = HealthzResponse(v, kT0 + 1300 * kMs, c);
  EXPECT_EQ(r.status, 200);
  r = HealthzResponse(v, kT0 + 1301 * kMs, c);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body.rfind("poll thread stuck: last poll 1.3s ago", 0), 0u) << r.body;
  // A broken segment is the app's problem, not the sidecar's.
  v.segment = SegmentStatus::kCorrupt;
  v.segment_error = "slot_count 5000 exceeds 1024";
  r = HealthzResponse(v, kT0, c);
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("segment corrupt"), std::string::npos);
}

TEST(Probes, VerboseTextHasALinePerLoop) {
  View v = StalledView();
  Config c = TestConfig();
  Hold hold;
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0, false, true);
  EXPECT_EQ(r.status, 503);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = r.body.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(r.body.substr(start, nl - start));
  }
  ASSERT_EQ(lines.size(), 2u + v.loops.size()) << r.body;
  EXPECT_EQ(lines[0], kStallReason);
  EXPECT_EQ(lines[1], "segment ok, mode enforce, view 0.000s old, 3 loops");
  EXPECT_EQ(lines[2],
            "loop uvicorn-1 slot=0 pid=100 kind=asyncio state=live age=0.050s "
            "lag=0.002s p99=0.005s ready=yes");
  EXPECT_EQ(lines[3],
            "loop uvicorn-7 slot=1 pid=101 kind=asyncio state=stalled age=6.200s "
            "lag=6.100s p99=0.005s ready=yes failing_liveness stall=blocked/6.200s "
            "syscall=clock_nanosleep");
  // The activity label came from the app's memory: not on the public port.
  EXPECT_EQ(r.body.find("GET /slow"), std::string::npos) << r.body;
}

TEST(Probes, HostileNamesNeverBreakTheOneLineBody) {
  View v = StalledView();
  v.loops[1].name = "evil\nname\r\x01";
  v.live = {false, "loop evil\nname\r\x01 stalled 6.2s (cpu-bound)"};
  Config c = TestConfig();
  Hold hold;
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0, false, false);
  EXPECT_EQ(r.body, "loop evil?name?? stalled 6.2s (cpu-bound)\n");
  r = AnswerProbe(Probe::kLive, v, c, hold, kT0, false, true);
  EXPECT_NE(r.body.find("loop evil?name?? slot=1"), std::string::npos) << r.body;
}

TEST(Probes, JsonDetailHasTheDocumentedShape) {
  View v = StalledView();
  Config c = TestConfig();
  Hold hold;
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0 + 20 * kMs, true, false);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.content_type, "application/json");
  Json j = ParseOrFail(r.body);
  ASSERT_EQ(j.type, Json::kObject);
  EXPECT_EQ(j["status"].s, "fail");
  EXPECT_EQ(j["code"].n, 503);
  EXPECT_EQ(j["probe"].s, "livez");
  EXPECT_EQ(j["verdict"].s, "fail");
  EXPECT_EQ(j["reason"].s, kStallReason);
  EXPECT_EQ(j["mode"].s, "enforce");
  EXPECT_EQ(j["hold"].type, Json::kNull);
  EXPECT_NEAR(j["view_age_seconds"].n, 0.02, 1e-9);
  EXPECT_EQ(j["segment"]["status"].s, "ok");
  EXPECT_EQ(j["segment"]["slot_count"].n, 64);
  ASSERT_EQ(j["loops"].type, Json::kArray);
  ASSERT_EQ(j["loops"].a.size(), 3u);
  const Json& healthy = j["loops"].a[0];
  for (const char* k : {"slot", "name", "kind", "pid", "state", "heartbeat_age_seconds",
                        "lag_seconds", "lag_p99_seconds", "ready", "failing_liveness",
                        "stall"}) {
    EXPECT_NE(healthy.Get(k), nullptr) << k;
  }
  EXPECT_EQ(healthy["stall"].type, Json::kNull);
  EXPECT_EQ(healthy["state"].s, "live");
  EXPECT_NEAR(healthy["lag_p99_seconds"].n, 0.005, 1e-12);
  const Json& stalled = j["loops"].a[1];
  EXPECT_EQ(stalled["name"].s, "uvicorn-7");
  EXPECT_EQ(stalled["state"].s, "stalled");
  EXPECT_TRUE(stalled["failing_liveness"].b);
  EXPECT_EQ(stalled["stall"]["class"].s, "blocked");
  EXPECT_NEAR(stalled["stall"]["seconds"].n, 6.2, 1e-9);
  EXPECT_EQ(stalled["stall"]["syscall"].s, "clock_nanosleep");
  EXPECT_EQ(stalled["stall"].Get("activity"), nullptr) << "app text stays off the public port";

  // Held and observe: status follows the code, verdict the health.
  hold.Set(kT0, kT0 + 60 * kSec, "why \"not\"");
  j = ParseOrFail(AnswerProbe(Probe::kLive, v, c, hold, kT0, true, false).body);
  EXPECT_EQ(j["status"].s, "ok");
  EXPECT_EQ(j["verdict"].s, "fail");
  EXPECT_EQ(j["hold"]["reason"].s, "why \"not\"");
  EXPECT_NEAR(j["hold"]["remaining_seconds"].n, 60, 1e-9);
  c.mode = Mode::kObserve;
  j = ParseOrFail(AnswerProbe(Probe::kReady, v, c, hold, kT0, true, false).body);
  EXPECT_EQ(j["status"].s, "ok");
  EXPECT_EQ(j["mode"].s, "observe");
  EXPECT_EQ(j["hold"].type, Json::kNull);  // holds are for liveness only
}

TEST(Probes, JsonStaysValidForAnyBytes) {
  View v = StalledView();
  std::string evil = "q\"b\\s\nn\t\x01\x7f\xff\xfe\xc3(";
  v.loops[0].name = evil;
  v.loops[0].kind = evil;
  v.loops[1].stall.syscall = evil;
  v.loops[1].stall.text = evil;
  auto record = std::make_shared<StallRecord>(*(*v.recent_stalls)[0]);
  record->text = evil;
  record->activity = evil;
  v.recent_stalls = std::make_shared<StallHistory>(StallHistory{record});
  v.live.reason = evil;
  v.segment_error = evil;
  Config c = TestConfig();
  Hold hold;
  hold.Set(kT0, kT0 + kSec, evil);
  Json j = ParseOrFail(AnswerProbe(Probe::kLive, v, c, hold, kT0, true, true).body);
  EXPECT_EQ(j["loops"].a[0]["name"].s.substr(0, 8), "q\"b\\s\nn\t");
  ParseOrFail(LoopsJson(v, kT0));
  ParseOrFail(StallsJson(v, kT0));
  ParseOrFail(HoldJson(hold, c, kT0));
}

TEST(Probes, LoopsJsonHasEverythingPerLoop) {
  View v = StalledView();
  v.loops[2].state = LoopState::kDead;
  v.loops[2].dead_since_ns = kT0 - 3 * kSec;
  v.loops[2].lag_p99_ns = -1;
  v.loops[0].activity = "GET /items";
  Json j = ParseOrFail(LoopsJson(v, kT0 + 100 * kMs));
  EXPECT_NEAR(j["view_age_seconds"].n, 0.1, 1e-9);
  EXPECT_EQ(j["poll"].n, 42);
  EXPECT_FALSE(j["verdicts"]["livez"]["ok"].b);
  EXPECT_EQ(j["verdicts"]["livez"]["reason"].s, kStallReason);
  ASSERT_EQ(j["loops"].a.size(), 3u);
  const Json& a = j["loops"].a[0];
  EXPECT_EQ(a["activity"].s, "GET /items");
  EXPECT_EQ(a["beats"].n, 1000);
  EXPECT_NEAR(a["interval_seconds"].n, 0.1, 1e-12);
  EXPECT_NEAR(a["lag_max_seconds"].n, 0.004, 1e-12);
  EXPECT_EQ(a["stalls"]["blocked"].n, 0);
  // The histogram is cumulative and ends with +Inf == count.
  const Json& h = a["lag_histogram"];
  ASSERT_EQ(h["buckets"].a.size(), size_t(LW_LAG_BUCKETS));
  EXPECT_NEAR(h["buckets"].a[0]["le"].n, 0.001, 1e-12);
  EXPECT_EQ(h["buckets"].a[0]["count"].n, 900);
  EXPECT_EQ(h["buckets"].a[1]["count"].n, 990);
  EXPECT_EQ(h["buckets"].a[2]["count"].n, 999);
  EXPECT_EQ(h["buckets"].a.back()["le"].s, "+Inf");
  EXPECT_EQ(h["buckets"].a.back()["count"].n, 999);
  EXPECT_EQ(h["count"].n, 999);
  EXPECT_NEAR(h["sum_seconds"].n, 0.999, 1e-9);
  const Json& b = j["loops"].a[1];
  EXPECT_EQ(b["stalls"]["blocked"].n, 1);
  EXPECT_EQ(b["stall"]["class"].s, "blocked");
  EXPECT_EQ(b["stall"]["wchan"].s, "hrtimer_nanosleep");
  EXPECT_TRUE(b["stall"]["open"].b);
  const Json& d = j["loops"].a[2];
  EXPECT_EQ(d["state"].s, "dead");
  EXPECT_NEAR(d["dead_seconds"].n, 3, 1e-9);
  EXPECT_EQ(d["lag_p99_seconds"].type, Json::kNull);
}

TEST(Probes, StallsJsonListsReportsNewestFirstWithStacks) {
  View v = StalledView();
  StallRecord old;
  old.id = 3;
  old.loop = "uvicorn-2";
  old.slot = 1;
  old.pid = 99;
  old.stall_class = StallClass::kCpu;
  old.started_ns = kT0 - 100 * kSec;
  old.ended_ns = kT0 - 90 * kSec;
  old.duration_ns = 10 * kSec;
  old.loop_cpu_ns = 9900 * kMs;
  old.text = "File \"app.py\", line 30, in spin\n";
  old.has_report = true;
  auto history = std::make_shared<StallHistory>(*v.recent_stalls);
  history->insert(history->begin(), std::make_shared<StallRecord>(old));
  v.recent_stalls = history;
  Json j = ParseOrFail(StallsJson(v, kT0));
  EXPECT_EQ(j["totals"]["blocked"].n, 1);
  ASSERT_EQ(j["stalls"].a.size(), 2u);
  const Json& now = j["stalls"].a[0];
  EXPECT_EQ(now["id"].n, 7);
  EXPECT_EQ(now["loop"].s, "uvicorn-7");
  EXPECT_EQ(now["class"].s, "blocked");
  EXPECT_TRUE(now["open"].b);
  EXPECT_EQ(now["syscall"].s, "clock_nanosleep");
  EXPECT_EQ(now["wchan"].s, "hrtimer_nanosleep");
  EXPECT_EQ(now["summary"].s, "blocked in clock_nanosleep");
  EXPECT_NEAR(now["duration_seconds"].n, 6.2, 1e-9);
  EXPECT_NEAR(now["started_seconds_ago"].n, 6.2, 1e-9);
  EXPECT_EQ(now["ended_seconds_ago"].type, Json::kNull);
  EXPECT_NE(now["text"].s.find("time.sleep(10)"), std::string::npos);
  const Json& before = j["stalls"].a[1];
  EXPECT_EQ(before["id"].n, 3);
  EXPECT_EQ(before["class"].s, "cpu");
  EXPECT_FALSE(before["open"].b);
  EXPECT_NEAR(before["cpu_seconds"].n, 9.9, 1e-9);
  EXPECT_NEAR(before["ended_seconds_ago"].n, 90, 1e-9);
  EXPECT_EQ(before["text"].s, "File \"app.py\", line 30, in spin\n");
}

TEST(Probes, HoldJson) {
  Config c = TestConfig();
  c.max_hold = std::chrono::hours(1);
  Hold hold;
  Json j = ParseOrFail(HoldJson(hold, c, kT0));
  EXPECT_FALSE(j["active"].b);
  EXPECT_EQ(j["remaining_seconds"].type, Json::kNull);
  EXPECT_EQ(j["max_hold_seconds"].n, 3600);
  hold.Set(kT0, kT0 + 600 * kSec, "INC-7");
  j = ParseOrFail(HoldJson(hold, c, kT0 + 100 * kSec));
  EXPECT_TRUE(j["active"].b);
  EXPECT_NEAR(j["remaining_seconds"].n, 500, 1e-9);
  EXPECT_NEAR(j["set_seconds_ago"].n, 100, 1e-9);
  EXPECT_EQ(j["reason"].s, "INC-7");
  EXPECT_EQ(j["holds_total"].n, 1);
  j = ParseOrFail(HoldJson(hold, c, kT0 + 600 * kSec));
  EXPECT_FALSE(j["active"].b);
}

TEST(Probes, HoldIsSafeAcrossThreads) {
  Hold hold;
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      Hold::State s = hold.Snapshot();
      // A reason is only ever seen with its own hold.
      if (s.until_ns == kT0 + 1) {
        EXPECT_EQ(s.reason, "a");
      }
      if (s.until_ns == kT0 + 2) {
        EXPECT_EQ(s.reason, "b");
      }
    }
  });
  for (int i = 0; i < 20000; i++) {
    hold.Set(kT0, kT0 + 1 + (i & 1), (i & 1) ? "b" : "a");
    if (i % 7 == 0) hold.Clear();
  }
  stop = true;
  reader.join();
  EXPECT_EQ(hold.Snapshot().count, 20000u);
}

TEST(Probes, ContainerProbesJudgeThatContainerAndListOnlyItsLoops) {
  View v = StalledView();  // uvicorn-7 (slot 1) is stalled
  v.loops[0].container = "web";
  v.loops[1].container = "worker";
  v.loops[2].container = "web";
  v.containers = {{"web", true, {true, "ok: 2 loops, 2 live"}, {true, "ok: 2 loops ready"},
                   {true, "ok: started"}},
                  {"worker", true, {false, kStallReason}, {false, "loop uvicorn-7 stalled 6.2s"},
                   {true, "ok: started"}},
                  {"batch", false, {true, "ok: 0 loops, 0 live"}, {false, "waiting"},
                   {false, "waiting"}}};
  Config c = TestConfig();
  Hold hold;
  ProbeResponse r = AnswerProbe(Probe::kLive, v, c, hold, kT0, false, true, "web");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, StartsWith("ok: 2 loops, 2 live\n"));
  EXPECT_THAT(r.body, HasSubstr("2 loops of container web\n"));
  EXPECT_THAT(r.body, HasSubstr("loop uvicorn-1 "));
  EXPECT_THAT(r.body, HasSubstr(" container=web "));
  EXPECT_THAT(r.body, Not(HasSubstr("uvicorn-7")));
  r = AnswerProbe(Probe::kLive, v, c, hold, kT0, false, false, "worker");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, std::string(kStallReason) + "\n");
  // The pod-wide probe is unchanged.
  EXPECT_EQ(AnswerProbe(Probe::kLive, v, c, hold, kT0, false, false).status, 503);
  // No loop of `batch` has beaten, and nobody ever heard of `other`: not
  // judged yet, so every probe passes and says why.
  for (const char* name : {"batch", "other"}) {
    for (Probe p : {Probe::kLive, Probe::kReady, Probe::kStartup}) {
      r = AnswerProbe(p, v, c, hold, kT0, false, false, name);
      EXPECT_EQ(r.status, 200) << name;
      EXPECT_EQ(r.body, "ok: no loop of container " + std::string(name) +
                            " has beaten yet, and it has no probe of its own\n");
    }
  }
  // JSON names the container and lists only its loops.
  r = AnswerProbe(Probe::kReady, v, c, hold, kT0, true, false, "worker");
  EXPECT_EQ(r.status, 503);
  Json j = ParseOrFail(r.body);
  EXPECT_EQ(j["container"].s, "worker");
  ASSERT_EQ(j["loops"].a.size(), 1u);
  EXPECT_EQ(j["loops"].a[0]["name"].s, "uvicorn-7");
  EXPECT_EQ(j["loops"].a[0]["container"].s, "worker");
}

TEST(Probes, ContainerNamesAreKubernetesNames) {
  for (const char* ok : {"a", "app", "web-2", "0x"}) EXPECT_TRUE(ValidContainerName(ok)) << ok;
  EXPECT_TRUE(ValidContainerName(std::string(63, 'a')));
  for (const char* bad : {"", "-a", "a-", "App", "a_b", "a.b", "a b", "é"})
    EXPECT_FALSE(ValidContainerName(bad)) << bad;
  EXPECT_FALSE(ValidContainerName(std::string(64, 'a')));
}

}  // namespace
}  // namespace loopwatch

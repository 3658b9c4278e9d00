// SPDX-License-Identifier: Apache-2.0
//
// The sidecar's log: one JSON object per line (or text), the level filter,
// and the lines each health event becomes, written through spdlog to a real
// file and parsed back.
#include "log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "json.h"

namespace loopwatch {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kMs = 1000000;

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/loopwatch-log-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The lines an EventLog wrote to its file.
  std::vector<std::string> Lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }

  std::string dir_;
};

LoopView Loop() {
  LoopView l;
  l.name = "uvicorn-7";
  l.slot = 3;
  l.pid = 7;
  l.kind = "asyncio";
  l.interval_ns = 100 * kMs;
  l.heartbeat_age_ns = 6200 * kMs;
  return l;
}

StallRecord Stall() {
  StallRecord s;
  s.id = 12;
  s.stall_class = StallClass::kBlocked;
  s.syscall = "clock_nanosleep";
  s.wchan = "hrtimer_nanosleep";
  s.duration_ns = 3077 * kMs;
  s.loop_cpu_ns = 3 * kMs;
  s.activity = "POST /orders/42/invoice";
  s.text = "Stack (most recent call first):\n  File \"app.py\", line 55\n\ttime.sleep(\"x\")";
  return s;
}

TEST_F(LogTest, JsonLinesCarryTypedFields) {
  LogLine line("stall report");
  line.Str("loop", "a \"b\"\n").Int("pid", -3).Seconds("silent_seconds", 3077 * kMs);
  const std::string j = line.ToJson("2026-01-01T00:00:00.000Z", "warn");
  EXPECT_EQ(j,
            "{\"ts\":\"2026-01-01T00:00:00.000Z\",\"level\":\"warn\",\"msg\":\"stall report\","
            "\"loop\":\"a \\\"b\\\"\\n\",\"pid\":-3,\"silent_seconds\":3.077}");
  // An empty block (a native app has no stack) adds no field.
  EXPECT_EQ(LogLine("x").Block("stack", "").ToText(), "x");
}

TEST_F(LogTest, TextLinesQuoteWhatNeedsItAndIndentBlocks) {
  LogLine line("stall ended");
  line.Str("loop", "api").Str("activity", "GET /x").Str("empty", "").Int("slot", 2);
  line.Block("stack", "first\nsecond\n");
  EXPECT_EQ(line.ToText(),
            "stall ended loop=api activity=\"GET /x\" empty=\"\" slot=2\n"
            "  stack:\n    first\n    second");
}

TEST_F(LogTest, LevelsBelowTheSettingAreDropped) {
  Config c;
  c.log_level = LogLevel::kWarn;
  const std::string path = dir_ + "/log";
  {
    EventLog log(c, path);
    log.Debug(LogLine("debug line"));
    log.Info(LogLine("info line"));
    log.Warn(LogLine("warn line"));
    log.Error(LogLine("error line"));
  }
  const std::vector<std::string> lines = Lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr("\"level\":\"warn\",\"msg\":\"warn line\""));
  EXPECT_THAT(lines[1], HasSubstr("\"level\":\"error\",\"msg\":\"error line\""));
  EXPECT_THAT(lines[0], StartsWith("{\"ts\":\"20"));
}

TEST_F(LogTest, EveryEventBecomesOneJsonLine) {
  Config c;
  const std::string path = dir_ + "/events";
  const LoopView l = Loop();
  const StallRecord s = Stall();
  const std::vector<Event> events = {
      {Event::Kind::kLoopAppeared, l, {}, ""},
      {Event::Kind::kStallStarted, l, s, ""},
      {Event::Kind::kStallReport, l, s, ""},
      {Event::Kind::kStallReportSuppressed, l, s, ""},
      {Event::Kind::kStallEnded, l, s, ""},
      {Event::Kind::kLoopDied, l, {}, ""},
      {Event::Kind::kLoopGone, l, {}, "closed"},
      {Event::Kind::kSegmentProblem, {}, {}, "segment /x does not exist yet"},
      {Event::Kind::kSegmentOk, {}, {}, "segment readable"},
  };
  {
    EventLog log(c, path);
    log.Events(events);
  }
  const std::vector<std::string> lines = Lines(path);
  ASSERT_EQ(lines.size(), events.size());
  const char* const msgs[] = {"loop appeared",
                              "stall started",
                              "stall report",
                              "stall report suppressed by the rate limit",
                              "stall ended",
                              "loop died: its process is gone without closing it",
                              "loop gone",
                              "segment unreadable",
                              "segment readable"};
  for (size_t i = 0; i < lines.size(); i++) {
    EXPECT_THAT(lines[i], HasSubstr(",\"msg\":\"" + std::string(msgs[i]) + "\"")) << i;
    EXPECT_EQ(lines[i].back(), '}') << "one object per line: " << lines[i];
  }
  const std::string loop_fields = "\"loop\":\"uvicorn-7\",\"slot\":3,\"pid\":7";
  for (size_t i = 0; i < 7; i++) EXPECT_THAT(lines[i], HasSubstr(loop_fields)) << i;
  EXPECT_THAT(lines[0], HasSubstr("\"kind\":\"asyncio\",\"interval_seconds\":0.100"));
  EXPECT_THAT(lines[1], HasSubstr("\"class\":\"blocked\",\"syscall\":\"clock_nanosleep\""));
  EXPECT_THAT(lines[2], HasSubstr("\"wchan\":\"hrtimer_nanosleep\",\"silent_seconds\":3.077,"
                                  "\"loop_cpu_seconds\":0.003,"
                                  "\"activity\":\"POST /orders/42/invoice\",\"stall_id\":12"));
  EXPECT_THAT(lines[2], HasSubstr("\"stack\":\"Stack (most recent call first):\\n  File "
                                  "\\\"app.py\\\", line 55\\n\\ttime.sleep(\\\"x\\\")\""));
  EXPECT_THAT(lines[3], HasSubstr("\"level\":\"info\""));
  EXPECT_THAT(lines[4], HasSubstr("\"duration_seconds\":3.077,\"stall_id\":12"));
  EXPECT_THAT(lines[5], HasSubstr("\"level\":\"error\""));
  EXPECT_THAT(lines[5], HasSubstr("\"last_beat_seconds_ago\":6.200"));
  EXPECT_THAT(lines[6], HasSubstr("\"reason\":\"closed\""));
  EXPECT_THAT(lines[7], HasSubstr("\"error\":\"segment /x does not exist yet\""));
}

TEST_F(LogTest, TextFormatPutsTheStackOnIndentedLines) {
  Config c;
  c.log_format = LogFormat::kText;
  const std::string path = dir_ + "/text";
  {
    EventLog log(c, path);
    log.Events({{Event::Kind::kStallReport, Loop(), Stall(), ""}});
  }
  const std::vector<std::string> lines = Lines(path);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_THAT(lines[0], HasSubstr(" warn stall report loop=uvicorn-7 slot=3 pid=7 "
                                  "class=blocked syscall=clock_nanosleep"));
  EXPECT_THAT(lines[0], HasSubstr("activity=\"POST /orders/42/invoice\""));
  EXPECT_EQ(lines[1], "  stack:");
  EXPECT_EQ(lines[2], "    Stack (most recent call first):");
  EXPECT_EQ(lines[3], "      File \"app.py\", line 55");
  EXPECT_EQ(lines[4], "    \ttime.sleep(\"x\")");
}

}  // namespace
}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// `loopwatch status` against a real segment written by the library. Writers
// run in forked children: the library maps the segment named by
// LOOPWATCH_SEGMENT once per process, so each test's segment needs fresh
// processes, and a writer that dies must be a process of its own anyway.
#include "status.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "loopwatch/loopwatch.h"
#include "reader.h"

namespace loopwatch {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kMs = 1000000;

// What a forked writer does once its loop is open and has beaten.
enum class Role { kBeat, kClose, kPause, kSleep };

class StatusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/loopwatch-status-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    segment_ = dir_ + "/segment";
  }
  void TearDown() override {
    for (pid_t p : children_) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }

  // Forks a writer with a loop `name`; returns once the loop has opened and
  // beaten, with its pid.
  pid_t Spawn(const std::string& name, Role role) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      setenv("LOOPWATCH_SEGMENT", segment_.c_str(), 1);
      lw_loop_options_t o{};
      o.struct_size = sizeof o;
      o.name = name.c_str();
      o.kind = "test";
      o.interval_ns = 20 * kMs;
      o.report_after_ns = 50 * kMs;
      lw_loop_t* loop = nullptr;
      if (lw_loop_open_ex(&o, &loop) != 0 || !loop) _exit(3);
      for (int i = 0; i < 3; i++) {
        lw_beat(loop);
        usleep(20000);
      }
      if (role == Role::kClose) {
        lw_loop_close(loop);
      }
      if (role == Role::kSleep) lw_set_activity(loop, "GET /sleep");
      char ok = 1;
      if (write(fds[1], &ok, 1) != 1) _exit(4);
      switch (role) {
        case Role::kBeat:
          for (;;) {
            lw_beat(loop);
            usleep(20000);
          }
        case Role::kClose: _exit(0);
        case Role::kPause: for (;;) pause();
        case Role::kSleep: sleep(600); _exit(0);
      }
      _exit(0);
    }
    close(fds[1]);
    char ok = 0;
    EXPECT_EQ(read(fds[0], &ok, 1), 1) << "writer " << name << " did not start";
    close(fds[0]);
    if (role == Role::kClose) {
      int status = 0;
      waitpid(pid, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    } else {
      children_.push_back(pid);
    }
    return pid;
  }

  void Kill(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    children_.erase(std::remove(children_.begin(), children_.end(), pid),
                    children_.end());
  }

  // Waits (bounded) until the watchdog of the loop in `slot_name` has opened
  // a stall report.
  void AwaitReport(const std::string& slot_name) {
    SegmentReader reader(segment_);
    std::vector<SlotSnapshot> slots;
    for (int i = 0; i < 500; i++) {
      if (reader.Snapshot(&slots) == SegmentStatus::kOk) {
        for (auto& s : slots) {
          if (s.valid && s.name == slot_name && s.report.state == LW_REPORT_OPEN) {
            return;
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "no stall report for " << slot_name;
  }

  int Run(const std::vector<std::string>& args, std::string* out,
          std::string* err, std::map<std::string, std::string> env = {}) {
    std::ostringstream o, e;
    int rc = RunStatus(args, env, o, e);
    *out = o.str();
    *err = e.str();
    return rc;
  }

  // The table row of loop `name`, split on runs of spaces (DETAIL is the
  // rest of the line, in the last field).
  std::vector<std::string> Row(const std::string& table, const std::string& name) {
    std::istringstream in(table);
    for (std::string line; std::getline(in, line);) {
      std::istringstream words(line);
      std::vector<std::string> w;
      for (std::string x; w.size() < 8 && words >> x;) w.push_back(x);
      std::string rest;
      std::getline(words, rest);
      size_t start = rest.find_first_not_of(' ');
      w.push_back(start == std::string::npos ? "" : rest.substr(start));
      if (w.size() > 1 && w[1] == name) return w;
    }
    return {};
  }

  std::string dir_, segment_;
  std::vector<pid_t> children_;
};

TEST_F(StatusTest, TableShowsEveryLoopWithItsState) {
  // Slots are taken in this order (a closed slot would be reused first).
  pid_t beater = Spawn("beater", Role::kBeat);
  pid_t sleeper = Spawn("sleeper", Role::kSleep);
  pid_t victim = Spawn("victim", Role::kPause);
  Kill(victim);
  Spawn("closer", Role::kClose);
  AwaitReport("sleeper");
  // The sleeper must be silent longer than --stall-after.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  std::string out, err;
  ASSERT_EQ(Run({"--segment", segment_, "--stall-after", "250ms"}, &out, &err), 0) << err;
  EXPECT_THAT(err, IsEmpty());
  SCOPED_TRACE(out);

  std::istringstream lines(out);
  std::string header, columns;
  std::getline(lines, header);
  std::getline(lines, columns);
  EXPECT_EQ(header, "segment " + segment_ + " (format 1.1, 64 slots): 3 loops, 1 closed");
  EXPECT_THAT(columns, ::testing::MatchesRegex(
                           "SLOT +NAME +KIND +PID +STATE +AGE +LAG_P99 +STALLS +DETAIL"));

  auto row = Row(out, "beater");
  ASSERT_EQ(row.size(), 9u) << out;
  EXPECT_EQ(row[2], "test");
  EXPECT_EQ(row[3], std::to_string(beater));
  EXPECT_EQ(row[4], "live");
  EXPECT_THAT(row[5], ::testing::MatchesRegex("[0-9]+ms"));
  EXPECT_THAT(row[6], ::testing::MatchesRegex("[0-9]+ms|-"));
  EXPECT_EQ(row[7], "0");

  row = Row(out, "victim");
  ASSERT_EQ(row.size(), 9u) << out;
  EXPECT_EQ(row[3], std::to_string(victim));
  EXPECT_EQ(row[4], "dead");
  EXPECT_EQ(row[8], "owner gone without closing");

  row = Row(out, "sleeper");
  ASSERT_EQ(row.size(), 9u) << out;
  EXPECT_EQ(row[3], std::to_string(sleeper));
  EXPECT_EQ(row[4], "stalled");
  EXPECT_EQ(row[7], "1");
  EXPECT_EQ(row[8], "blocked in clock_nanosleep, activity \"GET /sleep\"");

  EXPECT_THAT(Row(out, "closer"), IsEmpty()) << "closed loops are counted, not listed";

  // Rows are sorted by slot.
  EXPECT_EQ(Row(out, "beater")[0], "0");
  EXPECT_EQ(Row(out, "sleeper")[0], "1");
  EXPECT_EQ(Row(out, "victim")[0], "2");
  EXPECT_LT(out.find("beater"), out.find("sleeper"));
  EXPECT_LT(out.find("sleeper"), out.find("victim"));
}

TEST_F(StatusTest, DefaultStallAfterKeepsASilentLoopLagging) {
  Spawn("sleeper", Role::kSleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  std::string out, err;
  ASSERT_EQ(Run({"--segment", segment_}, &out, &err), 0) << err;
  auto row = Row(out, "sleeper");
  ASSERT_EQ(row.size(), 9u) << out;
  EXPECT_EQ(row[4], "lagging");  // silent > lag_above (1s), < stall_after (5s)
  EXPECT_THAT(row[5], ::testing::MatchesRegex("[1-4]\\.[0-9]s"));
}

TEST_F(StatusTest, Json) {
  Spawn("beater", Role::kBeat);
  Spawn("sleeper", Role::kSleep);
  AwaitReport("sleeper");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::string out, err;
  ASSERT_EQ(Run({"--json", "--stall-after=250ms"}, &out, &err,
                {{"LOOPWATCH_SEGMENT", segment_}}),
            0)
      << err;
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line";
  EXPECT_THAT(out, HasSubstr("{\"segment\":\"" + segment_ +
                             "\",\"format_version\":\"1.1\",\"slot_count\":64,"
                             "\"loops\":[{\"slot\":0,\"name\":\"beater\""));
  EXPECT_THAT(out, HasSubstr("\"state\":\"live\""));
  EXPECT_THAT(out, HasSubstr("\"name\":\"sleeper\",\"kind\":\"test\""));
  EXPECT_THAT(out, HasSubstr("\"state\":\"stalled\""));
  EXPECT_THAT(out, HasSubstr("\"stall\":{\"class\":\"blocked\""));
  EXPECT_THAT(out, HasSubstr("\"syscall\":\"clock_nanosleep\""));
  EXPECT_THAT(out, HasSubstr("\"activity\":\"GET /sleep\""));
  EXPECT_THAT(out, HasSubstr("\"stall\":null"));
}

TEST_F(StatusTest, EmptySegment) {
  pid_t p = Spawn("once", Role::kClose);
  (void)p;
  std::string out, err;
  ASSERT_EQ(Run({"--segment", segment_}, &out, &err), 0) << err;
  EXPECT_EQ(out, "segment " + segment_ + " (format 1.1, 64 slots): 0 loops, 1 closed\n");
}

TEST_F(StatusTest, MissingSegmentIsExitCode1) {
  std::string out, err;
  EXPECT_EQ(Run({"--segment", dir_ + "/nope"}, &out, &err), 1);
  EXPECT_THAT(out, IsEmpty());
  EXPECT_THAT(err, HasSubstr("loopwatch status: segment " + dir_ +
                             "/nope does not exist yet\n"));
  EXPECT_THAT(err, HasSubstr("LOOPWATCH_SEGMENT"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/nope")) << "status must not create it";
}

TEST_F(StatusTest, SegmentDefaultsToTheEnvironment) {
  std::string out, err;
  EXPECT_EQ(Run({}, &out, &err, {{"LOOPWATCH_SEGMENT", dir_ + "/from-env"}}), 1);
  EXPECT_THAT(err, HasSubstr("segment " + dir_ + "/from-env does not exist"));
  EXPECT_EQ(Run({}, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("segment /run/loopwatch/segment "));
}

TEST_F(StatusTest, OtherMajorVersionIsExitCode1) {
  Spawn("once", Role::kClose);
  {
    std::fstream f(segment_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(offsetof(lw_seg_header_t, version_major));
    uint16_t v = 9;
    f.write(reinterpret_cast<const char*>(&v), sizeof v);
  }
  std::string out, err;
  EXPECT_EQ(Run({"--segment", segment_}, &out, &err), 1);
  EXPECT_THAT(out, IsEmpty());
  EXPECT_THAT(err, HasSubstr("has format version 9.1; this reader understands version 1."));
}

TEST_F(StatusTest, NotASegmentIsExitCode1) {
  {
    std::ofstream f(segment_, std::ios::binary);
    for (int i = 0; i < 4096; i++) f.put(char(i * 37));
  }
  std::string out, err;
  EXPECT_EQ(Run({"--segment", segment_}, &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("is not a loopwatch segment"));
}

TEST_F(StatusTest, BadFlagsAreExitCode2) {
  std::string out, err;
  EXPECT_EQ(Run({"--stal-after", "1s"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("loopwatch status: --stal-after: unknown flag (did you mean --stall-after?)"));
  EXPECT_EQ(Run({"--stall-after", "soon"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("--stall-after: \"soon\" is not a duration"));
  EXPECT_EQ(Run({"--print-config"}, &out, &err), 2);
}

TEST_F(StatusTest, Help) {
  std::string out, err;
  EXPECT_EQ(Run({"--help"}, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("Usage: loopwatch status [--segment PATH] [--json]"));
}

}  // namespace
}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// The poll thread over a real segment file with real writer processes: the
// first poll happens before Start() returns, the View is published and the
// events reach the sink, the thread keeps its cadence, and Stop() returns
// within a poll.
#include "monitor.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "loopwatch/loopwatch.h"

namespace loopwatch {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

constexpr int64_t kMs = 1000000;

class MonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/loopwatch-monitor-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    config_.segment = dir_ + "/segment";
    config_.poll_interval = milliseconds(20);
    config_.stall_after = milliseconds(500);
    config_.create_slots = 4;
  }
  void TearDown() override {
    for (pid_t p : children_) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }

  // A forked process whose loop `name` beats every 10 ms until killed;
  // returns once it has beaten.
  pid_t SpawnWriter(const std::string& name) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      setenv("LOOPWATCH_SEGMENT", config_.segment.c_str(), 1);
      lw_loop_t* loop = nullptr;
      if (lw_loop_open(name.c_str(), 10 * kMs, &loop) != 0 || !loop) _exit(3);
      lw_beat(loop);
      const char ok = 1;
      if (write(fds[1], &ok, 1) != 1) _exit(4);
      for (;;) {
        usleep(10000);
        lw_beat(loop);
      }
    }
    close(fds[1]);
    char ok = 0;
    EXPECT_EQ(read(fds[0], &ok, 1), 1) << "writer " << name << " did not start";
    close(fds[0]);
    children_.push_back(pid);
    return pid;
  }

  // Events the monitor handed to its sink, by kind.
  size_t Count(Event::Kind kind) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const Event& e : events_) n += e.kind == kind;
    return n;
  }
  Monitor::EventSink Sink() {
    return [this](const std::vector<Event>& events) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.insert(events_.end(), events.begin(), events.end());
    };
  }

  // Polls `pred` until it holds, at most `timeout`.
  template <typename Pred>
  static bool Eventually(Pred pred, milliseconds timeout = milliseconds(5000)) {
    const auto end = SteadyClock::now() + timeout;
    while (SteadyClock::now() < end) {
      if (pred()) return true;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return pred();
  }

  Config config_;
  std::string dir_;
  std::vector<pid_t> children_;
  std::mutex mu_;
  std::vector<Event> events_;
};

TEST_F(MonitorTest, ViewBeforeAnyPollIsEmptyNotNull) {
  Monitor m(config_, nullptr);
  std::shared_ptr<const View> v = m.view();
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->poll, 0u);
  EXPECT_TRUE(v->loops.empty());
}

TEST_F(MonitorTest, PollCreatesTheSegmentAndSeesLoops) {
  Monitor m(config_, Sink());
  m.PollAt(MonotonicNowNs(), 0);
  struct stat st;
  ASSERT_EQ(stat(config_.segment.c_str(), &st), 0) << "create_slots makes the segment";
  std::shared_ptr<const View> v = m.view();
  EXPECT_EQ(v->segment, SegmentStatus::kOk);
  EXPECT_EQ(v->slot_count, 4u);
  EXPECT_TRUE(v->loops.empty());

  SpawnWriter("api");
  m.PollAt(MonotonicNowNs(), 0);
  v = m.view();
  ASSERT_EQ(v->loops.size(), 1u);
  EXPECT_EQ(v->loops[0].name, "api");
  EXPECT_EQ(v->poll, 2u);
  EXPECT_EQ(Count(Event::Kind::kLoopAppeared), 1u);
}

TEST_F(MonitorTest, MissingSegmentWithoutCreateIsReportedOnce) {
  config_.create_slots = 0;
  Monitor m(config_, Sink());
  m.PollAt(MonotonicNowNs(), 0);
  m.PollAt(MonotonicNowNs(), 0);
  std::shared_ptr<const View> v = m.view();
  EXPECT_EQ(v->segment, SegmentStatus::kMissing);
  EXPECT_NE(v->segment_error.find(config_.segment), std::string::npos) << v->segment_error;
  EXPECT_EQ(Count(Event::Kind::kSegmentProblem), 1u) << "a status change is one event";
}

TEST_F(MonitorTest, ThreadPollsAtItsCadenceAndSeesADeath) {
  const pid_t writer = SpawnWriter("worker");
  Monitor m(config_, Sink());
  m.Start();
  // The first poll happened in Start(): a probe has an answer at once.
  EXPECT_GE(m.view()->poll, 1u);
  EXPECT_EQ(m.view()->loops.size(), 1u);
  ASSERT_TRUE(Eventually([&] { return m.view()->poll >= 10; }))
      << "poll " << m.view()->poll;
  EXPECT_EQ(m.view()->loops[0].state, LoopState::kLive);

  kill(writer, SIGKILL);
  waitpid(writer, nullptr, 0);
  children_.clear();
  ASSERT_TRUE(Eventually([&] { return Count(Event::Kind::kLoopDied) == 1; }));
  EXPECT_EQ(m.view()->loops[0].state, LoopState::kDead);

  const auto t0 = SteadyClock::now();
  m.Stop();
  EXPECT_LT(SteadyClock::now() - t0, milliseconds(1000)) << "Stop() waits for one poll at most";
  const uint64_t after = m.view()->poll;
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(m.view()->poll, after) << "no poll after Stop()";
  m.Stop();  // idempotent
}

TEST_F(MonitorTest, ViewIsReadWhileThePollThreadPublishes) {
  SpawnWriter("a");
  Monitor m(config_, nullptr);
  m.Start();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::thread reader([&] {
    while (!stop) {
      std::shared_ptr<const View> v = m.view();
      ASSERT_NE(v, nullptr);
      reads++;
    }
  });
  ASSERT_TRUE(Eventually([&] { return m.view()->poll >= 5; }));
  stop = true;
  reader.join();
  m.Stop();
  EXPECT_GT(reads.load(), 0u);
}

}  // namespace
}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// The watchdog's stall reports. A loop runs on a thread of its own (the
// watchdog samples the thread that opened the loop) and stops beating in a
// known way: asleep in nanosleep, blocked in read() on an empty pipe, or
// spinning on the CPU. The report must open within interval + report_after +
// one watchdog tick (plus a margin), carry the right class, syscall, activity
// label and hook text, and close once the loop beats again.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "loopwatch/loopwatch.h"
#include "reader.h"
#include "segment_layout.h"
#include "test_support.h"

namespace {

using lwtest::RunIsolated;
using lwtest::TempDir;
using std::chrono::milliseconds;

constexpr uint64_t kInterval = 20000000;     // 20 ms
constexpr uint64_t kReportAfter = 100000000;  // 100 ms
// The watchdog looks every max(report_after / 4, 10 ms) = 25 ms; allow a
// scheduling margin on top (more under a sanitizer).
constexpr uint64_t kTick = 25000000;
const milliseconds kMargin(500);

struct HookCalls {
  std::atomic<int> calls{0};
  std::atomic<pid_t> tid{0};
};

size_t Hook(lw_loop_t*, void* user, char* buf, size_t size) {
  auto* h = static_cast<HookCalls*>(user);
  h->calls++;
  h->tid = static_cast<pid_t>(syscall(SYS_gettid));
  static const char kText[] =
      "Traceback (most recent call last):\n  File \"app.py\", line 12, in "
      "handler\n    time.sleep(5)\n";
  size_t n = std::min(size, sizeof kText - 1);
  memcpy(buf, kText, n);
  return n;
}

// A loop on its own thread: opens, beats regularly until told to stall, runs
// `stall`, then beats again until stopped.
class LoopThread {
 public:
  LoopThread(const std::string& name, std::function<void()> stall,
             HookCalls* hook, const char* activity, lw_report_hook_fn hook_fn = Hook)
      : thread_([this, name, stall, hook, activity, hook_fn] {
          lw_loop_options_t o{};
          o.struct_size = sizeof o;
          o.name = name.c_str();
          o.interval_ns = kInterval;
          o.report_after_ns = kReportAfter;
          lw_loop_t* loop = nullptr;
          rc_ = lw_loop_open_ex(&o, &loop);
          tid_ = static_cast<pid_t>(syscall(SYS_gettid));
          if (loop && hook) lw_set_report_hook(loop, hook_fn, hook);
          if (loop && activity) lw_set_activity(loop, activity);
          opened_ = true;
          while (!stall_now_) Beat(loop, &last_beat_before_);
          stalling_ = true;
          stall();
          stalling_ = false;
          Beat(loop, &first_beat_after_);
          while (!stop_) Beat(loop, nullptr);
          lw_loop_close(loop);
        }) {
    while (!opened_) std::this_thread::yield();
  }
  ~LoopThread() { Stop(); }
  void Stall() {
    stall_now_ = true;
    while (!stalling_) std::this_thread::yield();
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool StallDone() const { return !stalling_ && first_beat_after_ != 0; }
  int rc() const { return rc_; }
  pid_t tid() const { return tid_; }
  uint64_t last_beat_before() const { return last_beat_before_; }
  uint64_t first_beat_after() const { return first_beat_after_; }

 private:
  // Beats, records the beat's time in *when (before anyone can see the
  // beat), then waits one interval, or less once a stall is asked for, so
  // that the stall itself starts right after the last beat.
  void Beat(lw_loop_t* loop, std::atomic<uint64_t>* when) {
    uint64_t now = lw_now_ns();
    if (when) *when = now;
    lw_beat_at(loop, now);
    for (uint64_t slept = 0; slept < kInterval; slept += 1000000) {
      if (stall_now_ && !stalling_ && first_beat_after_ == 0) return;
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, nullptr);
    }
  }
  std::atomic<bool> opened_{false}, stall_now_{false}, stalling_{false},
      stop_{false};
  std::atomic<int> rc_{0};
  std::atomic<pid_t> tid_{0};
  std::atomic<uint64_t> last_beat_before_{0}, first_beat_after_{0};
  std::thread thread_;
};

// Waits for the open report of the stall that began at `start` on `slot`;
// returns it and when it was first seen. (A loaded machine may have made the
// loop miss a beat earlier: that stall's report is not the one we want.)
bool WaitForOpenReport(loopwatch::SegmentReader& r, int slot, uint64_t start,
                       loopwatch::SlotSnapshot* out, uint64_t* seen_ns,
                       milliseconds timeout) {
  std::vector<loopwatch::SlotSnapshot> snaps;
  return lwtest::WaitUntil(
      [&] {
        if (r.Snapshot(&snaps) != loopwatch::SegmentStatus::kOk) return false;
        if (!snaps[slot].valid) return false;
        if (snaps[slot].report.state != LW_REPORT_OPEN) return false;
        if (snaps[slot].report.stall_start_ns != start) return false;
        *out = snaps[slot];
        *seen_ns = lw_now_ns();
        return true;
      },
      timeout, milliseconds(1));
}

struct Scenario {
  const char* name;
  std::function<void()> stall;
  uint32_t want_class;
  std::vector<std::string> want_syscalls;  // empty: no syscall named
  // Run by the test while the loop stalls, once the report has been checked.
  std::function<void()> unblock;
};

// Runs one stall scenario and checks everything about its report.
void RunScenario(const std::string& path, const Scenario& sc) {
  lwtest::SetSegmentEnv(path, 4);
  HookCalls hook;
  LoopThread lt(sc.name, sc.stall, &hook, "GET /slow");
  ASSERT_EQ(lt.rc(), 0) << lw_last_error();
  loopwatch::SegmentReader r(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  int slot = -1;
  ASSERT_TRUE(lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        slot = lwtest::FindSlotByName(snaps, sc.name);
        return slot >= 0 && snaps[slot].beat_count >= 3;
      },
      lwtest::Scaled(milliseconds(5000))));
  // (Test RegularBeatsGetNoReport checks that beating loops get no report.)
  EXPECT_EQ(snaps[slot].tid, static_cast<uint32_t>(lt.tid()));

  lt.Stall();
  const uint64_t start = lt.last_beat_before();
  loopwatch::SlotSnapshot rep;
  uint64_t seen_ns = 0;
  ASSERT_TRUE(WaitForOpenReport(r, slot, start, &rep, &seen_ns,
                                lwtest::Scaled(milliseconds(5000))))
      << sc.name << ": no stall report";
  const auto& p = rep.report;
  const uint64_t n = p.stall_count;  // 1, unless the loop missed a beat before
  if (n != 1) {
    printf("note: %s: %llu earlier stall(s) before the one under test (a "
           "loaded machine)\n", sc.name, (unsigned long long)(n - 1));
  }
  // It opened neither early nor late.
  EXPECT_EQ(p.stall_start_ns, start);
  EXPECT_GE(p.updated_ns, start + kInterval + kReportAfter)
      << "report opened before interval + report_after";
  uint64_t bound = kInterval + kReportAfter + kTick +
                   static_cast<uint64_t>(lwtest::Scaled(kMargin).count()) * 1000000;
  EXPECT_LE(seen_ns - start, bound)
      << sc.name << ": report seen " << (seen_ns - start) / 1000000
      << " ms after the last beat";
  EXPECT_EQ(p.stall_end_ns, 0u);
  EXPECT_GE(n, 1u);
  EXPECT_EQ(p.stall_class, sc.want_class)
      << sc.name << ": class " << p.stall_class << ", cpu "
      << p.loop_cpu_ns / 1000000 << " ms, syscall \"" << p.syscall_name << "\"";
  if (sc.want_syscalls.empty()) {
    EXPECT_STREQ(p.syscall_name, "");
  } else {
    bool ok = false;
    for (const auto& s : sc.want_syscalls) ok |= s == p.syscall_name;
    EXPECT_TRUE(ok) << sc.name << ": syscall \"" << p.syscall_name << "\"";
    EXPECT_GE(p.syscall_nr, 0);
  }
  EXPECT_STREQ(p.activity, "GET /slow");

  // The hook's text arrives (from the watchdog thread, not the loop's).
  ASSERT_TRUE(lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        return snaps[slot].valid && snaps[slot].report.stall_count == n &&
               !snaps[slot].report.text.empty();
      },
      lwtest::Scaled(milliseconds(2000))));
  EXPECT_NE(snaps[slot].report.text.find("app.py\", line 12"), std::string::npos)
      << snaps[slot].report.text;
  EXPECT_EQ(hook.calls.load(), static_cast<int>(n)) << "one hook call per report";
  EXPECT_NE(hook.tid.load(), lt.tid());

  // The report is updated while the stall lasts.
  uint64_t first_update = snaps[slot].report.updated_ns;
  EXPECT_TRUE(lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        return snaps[slot].valid && snaps[slot].report.updated_ns > first_update;
      },
      lwtest::Scaled(milliseconds(2000))))
      << "the open report was never updated";
  if (sc.want_class == LW_CLASS_CPU) {
    EXPECT_GT(snaps[slot].report.loop_cpu_ns, 0u);
  }

  if (sc.unblock) sc.unblock();
  // Closed after the next beat, with stall_end_ns = a beat after the stall.
  ASSERT_TRUE(lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        return snaps[slot].valid && snaps[slot].report.state == LW_REPORT_CLOSED;
      },
      lwtest::Scaled(milliseconds(5000))))
      << sc.name << ": report never closed";
  ASSERT_TRUE(lt.StallDone());
  const auto& c = snaps[slot].report;
  EXPECT_GE(c.stall_end_ns, lt.first_beat_after());
  EXPECT_GT(c.stall_end_ns, c.stall_start_ns);
  EXPECT_EQ(c.stall_start_ns, start);
  EXPECT_EQ(c.stall_count, n);
  EXPECT_EQ(c.stall_class, sc.want_class);
  EXPECT_FALSE(c.text.empty()) << "closing keeps the report's text";
  lt.Stop();
}

void NoOpHandler(int) {}

TEST(Stall, SleepIsBlockedInNanosleep) {
  TempDir dir;
  RunIsolated([&] {
    // One long sleep, which the test interrupts (EINTR) once it has checked
    // the report: the loop thread is in nanosleep the whole time.
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = NoOpHandler;  // no SA_RESTART
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
    std::atomic<pthread_t> sleeper{};
    std::atomic<bool> asleep{false};
    RunScenario(dir.File("segment"),
                {"sleeper",
                 [&] {
                   sleeper = pthread_self();
                   asleep = true;
                   struct timespec ts = {30, 0};
                   nanosleep(&ts, nullptr);
                 },
                 LW_CLASS_BLOCKED,
                 {"clock_nanosleep", "nanosleep"},
                 [&] {
                   while (!asleep) std::this_thread::yield();
                   pthread_kill(sleeper.load(), SIGUSR1);
                 }});
  });
}

TEST(Stall, ReadOnAnEmptyPipeIsBlockedInRead) {
  TempDir dir;
  RunIsolated([&] {
    lwtest::Pipe p;
    RunScenario(dir.File("segment"),
                {"reader",
                 [&] {
                   char c;
                   ASSERT_EQ(read(p.rd, &c, 1), 1);
                 },
                 LW_CLASS_BLOCKED,
                 {"read"},
                 [&] { lwtest::WriteLine(p.wr, "x"); }});
  });
}

TEST(Stall, BusyLoopIsCpu) {
  TempDir dir;
  RunIsolated([&] {
    std::atomic<bool> release{false};
    RunScenario(dir.File("segment"),
                {"spinner",
                 [&] {
                   // Spin without system calls until the test has seen the
                   // report (bounded, in case it never comes).
                   uint64_t end = lw_now_ns() + 20000000000ull;
                   while (!release.load(std::memory_order_relaxed) &&
                          lw_now_ns() < end) {
                   }
                 },
                 LW_CLASS_CPU,
                 {},
                 [&] { release = true; }});
  });
}

// A busy loop that does not get the CPU it wants (a pod at its CPU limit,
// an oversubscribed node) is still a CPU stall: the loop thread never
// blocks in a system call. Made deterministic by pinning the loop thread
// and two other spinning threads to one CPU, so that the loop gets about a
// third of the wall time.
TEST(Stall, BusyLoopStarvedOfCpuIsStillCpu) {
  TempDir dir;
  RunIsolated([&] {
    cpu_set_t mask;
    ASSERT_EQ(sched_getaffinity(0, sizeof mask, &mask), 0);
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &mask)) cpu++;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    std::atomic<bool> release{false};
    std::vector<std::thread> rivals;
    RunScenario(dir.File("segment"),
                {"starved-spinner",
                 [&] {
                   sched_setaffinity(0, sizeof one, &one);
                   for (int i = 0; i < 2; i++) {
                     rivals.emplace_back([&] {
                       sched_setaffinity(0, sizeof one, &one);
                       while (!release.load(std::memory_order_relaxed)) {
                       }
                     });
                   }
                   uint64_t end = lw_now_ns() + 20000000000ull;
                   while (!release.load(std::memory_order_relaxed) &&
                          lw_now_ns() < end) {
                   }
                 },
                 LW_CLASS_CPU,
                 {},
                 [&] { release = true; }});
    release = true;
    for (auto& t : rivals) t.join();
  });
}

// Watches the open report of a loop that stalls with `stall` (until
// `release` is set) for `watch`, re-reading it every millisecond: returns
// the class of every fresh measurement (a new updated_ns).
std::vector<uint32_t> ClassesOverAStall(const std::string& path, const char* name,
                                        std::function<void()> stall,
                                        std::atomic<bool>* release, milliseconds watch,
                                        HookCalls* hook = nullptr,
                                        lw_report_hook_fn hook_fn = Hook) {
  std::vector<uint32_t> classes;
  lwtest::SetSegmentEnv(path, 4);
  LoopThread lt(name, stall, hook, nullptr, hook_fn);
  EXPECT_EQ(lt.rc(), 0) << lw_last_error();
  loopwatch::SegmentReader r(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  int slot = -1;
  EXPECT_TRUE(lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        slot = lwtest::FindSlotByName(snaps, name);
        return slot >= 0 && snaps[slot].beat_count >= 3;
      },
      lwtest::Scaled(milliseconds(5000))));
  if (slot < 0) return classes;
  lt.Stall();
  loopwatch::SlotSnapshot rep;
  uint64_t seen_ns = 0;
  EXPECT_TRUE(WaitForOpenReport(r, slot, lt.last_beat_before(), &rep, &seen_ns,
                                lwtest::Scaled(milliseconds(5000))));
  uint64_t last_update = 0;
  const uint64_t end = lw_now_ns() + uint64_t(watch.count()) * 1000000;
  while (lw_now_ns() < end) {
    if (r.Snapshot(&snaps) == loopwatch::SegmentStatus::kOk && snaps[slot].valid &&
        snaps[slot].report.state == LW_REPORT_OPEN &&
        snaps[slot].report.updated_ns != last_update) {
      last_update = snaps[slot].report.updated_ns;
      classes.push_back(snaps[slot].report.stall_class);
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  *release = true;
  EXPECT_TRUE(lwtest::WaitUntil([&] { return lt.StallDone(); },
                                lwtest::Scaled(milliseconds(5000))));
  lt.Stop();
  return classes;
}

// A loop thread that sleeps but wakes every 5 ms and runs a little (as a
// Python loop thread waiting for the GIL asks for it every switch interval)
// is blocked, whatever /proc says at the instant of a look: the class
// follows the CPU the thread wanted. (It used to read "running" at some
// looks and be called cpu with a few ms of CPU.)
TEST(Stall, WakingOftenToAskForALockIsBlockedNotCpu) {
  TempDir dir;
  RunIsolated([&] {
    std::atomic<bool> release{false};
    auto classes = ClassesOverAStall(
        dir.File("segment"), "waker",
        [&] {
          uint64_t end = lw_now_ns() + 20000000000ull;
          while (!release.load(std::memory_order_relaxed) && lw_now_ns() < end) {
            // 1 ms of CPU (readable as "running"), then 4 ms asleep: 20%.
            uint64_t spin_end = lw_now_ns() + 1000000;
            while (lw_now_ns() < spin_end) {
            }
            struct timespec ts = {0, 4000000};
            nanosleep(&ts, nullptr);
          }
        },
        &release, lwtest::Scaled(milliseconds(1500)));
    // 25 ms looks over 1.5 s: some 60 measurements.
    EXPECT_GE(classes.size(), 20u);
    size_t cpu = std::count(classes.begin(), classes.end(), LW_CLASS_CPU);
    EXPECT_EQ(cpu, 0u) << cpu << " of " << classes.size() << " looks said cpu";
    EXPECT_EQ(size_t(std::count(classes.begin(), classes.end(), LW_CLASS_BLOCKED)),
              classes.size());
  });
}

// A hook that says the loop waits for the interpreter's lock: the report's
// class is gil, at once and at every later look, while the loop thread
// sleeps; a report of a loop that spins stays cpu.
size_t GilHook(lw_loop_t* loop, void* user, char* buf, size_t size) {
  auto* h = static_cast<HookCalls*>(user);
  h->calls++;
  EXPECT_EQ(lw_report_gil_wait(loop), 0);
  const char kText[] = "Thread 42 holds the GIL\n";
  size_t n = std::min(size, sizeof kText - 1);
  memcpy(buf, kText, n);
  return n;
}

TEST(Stall, TheBindingCanSayTheLoopWaitsForTheGil) {
  TempDir dir;
  RunIsolated([&] {
    std::atomic<bool> release{false};
    HookCalls hook;
    auto classes = ClassesOverAStall(
        dir.File("segment"), "gil-waiter",
        [&] {
          while (!release) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, nullptr);
          }
        },
        &release, lwtest::Scaled(milliseconds(500)), &hook, GilHook);
    EXPECT_EQ(hook.calls.load(), 1);
    ASSERT_GE(classes.size(), 5u);
    // The first measurement may be seen before the hook ran.
    EXPECT_TRUE(classes[0] == LW_CLASS_BLOCKED || classes[0] == LW_CLASS_GIL) << classes[0];
    for (size_t i = 1; i < classes.size(); i++) {
      EXPECT_EQ(classes[i], LW_CLASS_GIL) << "look " << i;
    }
  });
}

TEST(Stall, AGilWaitSaidOfASpinningLoopStaysCpu) {
  TempDir dir;
  RunIsolated([&] {
    std::atomic<bool> release{false};
    HookCalls hook;
    auto classes = ClassesOverAStall(
        dir.File("segment"), "gil-spinner",
        [&] {
          uint64_t end = lw_now_ns() + 20000000000ull;
          while (!release.load(std::memory_order_relaxed) && lw_now_ns() < end) {
          }
        },
        &release, lwtest::Scaled(milliseconds(500)), &hook, GilHook);
    ASSERT_GE(classes.size(), 5u);
    for (size_t i = 0; i < classes.size(); i++) {
      EXPECT_EQ(classes[i], LW_CLASS_CPU) << "look " << i;
    }
  });
}

// A loop that beats on time never gets a report, even with a tight
// report_after, over many watchdog ticks.
TEST(Stall, RegularBeatsGetNoReport) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 2);
    std::atomic<bool> stop{false};
    std::atomic<int> rc{1};
    std::thread t([&] {
      lw_loop_options_t o{};
      o.struct_size = sizeof o;
      o.name = "steady";
      o.interval_ns = 10000000;         // 10 ms
      o.report_after_ns = 200000000;    // 200 ms
      lw_loop_t* loop = nullptr;
      rc = lw_loop_open_ex(&o, &loop);
      while (!stop) {
        lw_beat(loop);
        usleep(10000);
      }
      lw_loop_close(loop);
    });
    std::this_thread::sleep_for(milliseconds(600));
    stop = true;
    t.join();
    ASSERT_EQ(rc.load(), 0);
    loopwatch::SegmentReader r(path);
    auto snaps = lwtest::MustSnapshot(r);
    ASSERT_EQ(snaps.size(), 2u);
    EXPECT_GE(snaps[0].beat_count, 10u);
    EXPECT_EQ(snaps[0].report.state, LW_REPORT_NONE);
    EXPECT_EQ(snaps[0].report.stall_count, 0u);
    EXPECT_EQ(snaps[0].state, LW_SLOT_CLOSED);
  });
}

// LOOPWATCH_REPORT_AFTER sets the threshold when the options leave it 0,
// and a second stall gets a second report (stall_count 2, fresh text).
TEST(Stall, ReportAfterFromEnvironmentAndRepeatedStalls) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 2, "80ms");
    HookCalls hook;
    lw_loop_t* loop = nullptr;
    lwtest::Pipe wake;
    std::atomic<int> phase{0};
    std::thread t([&] {
      ASSERT_EQ(lw_loop_open("env-threshold", 10000000, &loop), 0)
          << lw_last_error();
      lw_set_report_hook(loop, Hook, &hook);
      lw_beat(loop);
      phase = 1;
      for (int stall = 0; stall < 2; stall++) {
        char c;
        ASSERT_EQ(read(wake.rd, &c, 1), 1);
        lw_beat(loop);
        phase = 2 + stall;
      }
      lw_loop_close(loop);
    });
    while (phase == 0) std::this_thread::yield();
    loopwatch::SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    snaps = lwtest::MustSnapshot(r);
    ASSERT_EQ(snaps.size(), 2u);
    EXPECT_EQ(snaps[0].report_after_ns, 80000000u);
    for (uint64_t n = 1; n <= 2; n++) {
      ASSERT_TRUE(lwtest::WaitUntil(
          [&] {
            snaps = lwtest::MustSnapshot(r);
            const auto& p = snaps[0].report;
            return snaps[0].valid && p.state == LW_REPORT_OPEN &&
                   p.stall_count == n && !p.text.empty();
          },
          lwtest::Scaled(milliseconds(3000))))
          << "stall " << n;
      EXPECT_STREQ(snaps[0].report.syscall_name, "read");
      lwtest::WriteLine(wake.wr, "");  // one byte: '\n'
      ASSERT_TRUE(lwtest::WaitUntil(
          [&] {
            snaps = lwtest::MustSnapshot(r);
            return snaps[0].valid && snaps[0].report.state == LW_REPORT_CLOSED &&
                   snaps[0].report.stall_count == n;
          },
          lwtest::Scaled(milliseconds(3000))));
    }
    t.join();
    EXPECT_EQ(hook.calls.load(), 2);
  });
}

// lw_loop_close during a stall closes the report with the time of the
// close (the loop never beat again).
TEST(Stall, CloseDuringAStallClosesTheReport) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 2, "50ms");
    lwtest::Pipe wake;
    std::atomic<uint64_t> woke_ns{0}, closed_ns{0};
    std::atomic<bool> opened{false};
    std::thread t([&] {
      lw_loop_t* loop = nullptr;
      EXPECT_EQ(lw_loop_open("closer", 10000000, &loop), 0);
      lw_beat(loop);
      opened = true;
      char c;
      ASSERT_EQ(read(wake.rd, &c, 1), 1);
      woke_ns = lw_now_ns();
      lw_loop_close(loop);  // no beat first
      closed_ns = lw_now_ns();
    });
    while (!opened) std::this_thread::yield();
    loopwatch::SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    ASSERT_TRUE(lwtest::WaitUntil(
        [&] {
          snaps = lwtest::MustSnapshot(r);
          return snaps.size() == 2 && snaps[0].valid &&
                 snaps[0].report.state == LW_REPORT_OPEN;
        },
        lwtest::Scaled(milliseconds(3000))));
    lwtest::WriteLine(wake.wr, "");
    t.join();
    snaps = lwtest::MustSnapshot(r);
    ASSERT_TRUE(snaps[0].valid);
    EXPECT_EQ(snaps[0].state, LW_SLOT_CLOSED);
    const auto& rep = snaps[0].report;
    EXPECT_EQ(rep.state, LW_REPORT_CLOSED);
    EXPECT_EQ(rep.stall_count, 1u);
    EXPECT_GE(rep.stall_end_ns, woke_ns.load());
    EXPECT_LE(rep.stall_end_ns, closed_ns.load());
    EXPECT_GT(rep.stall_end_ns, rep.stall_start_ns);
  });
}

// Twenty loops stalling at once all get their hook's text (the watchdog
// takes at most 16 per tick, the rest on the next ones).
TEST(Stall, ManyLoopsStallingAtOnceAllGetHookText) {
  TempDir dir;
  RunIsolated([&] {
    const int kLoops = 20;
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 24, "40ms");
    HookCalls hook;
    std::vector<lw_loop_t*> loops(kLoops);
    for (int i = 0; i < kLoops; i++) {
      ASSERT_EQ(lw_loop_open(("many-" + std::to_string(i)).c_str(), 10000000,
                             &loops[i]), 0);
      lw_set_report_hook(loops[i], Hook, &hook);
    }
    for (lw_loop_t* l : loops) lw_beat(l);  // then silence, for all of them
    loopwatch::SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    int with_text = 0;
    bool all = lwtest::WaitUntil(
        [&] {
          snaps = lwtest::MustSnapshot(r);
          with_text = 0;
          for (const auto& s : snaps) {
            with_text += s.valid && s.state == LW_SLOT_ACTIVE &&
                         s.report.state == LW_REPORT_OPEN && !s.report.text.empty();
          }
          return with_text == kLoops;
        },
        lwtest::Scaled(milliseconds(3000)));
    EXPECT_TRUE(all) << with_text << " of " << kLoops << " reports got text";
    EXPECT_EQ(hook.calls.load(), kLoops);
    for (lw_loop_t* l : loops) lw_loop_close(l);
  });
}

// A hook that takes its time: lw_loop_close waits for it, the text lands,
// and nothing touches the loop after it is freed (ASan checks that).
std::atomic<bool> g_slow_hook_running{false};
size_t SlowHook(lw_loop_t*, void*, char* buf, size_t size) {
  g_slow_hook_running = true;
  std::this_thread::sleep_for(milliseconds(300));
  const char kText[] = "slow hook";
  size_t n = std::min(size, sizeof kText - 1);
  memcpy(buf, kText, n);
  return n;
}

TEST(Stall, CloseWaitsForARunningHook) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 2, "30ms");
    lw_loop_t* loop = nullptr;
    ASSERT_EQ(lw_loop_open("slow-hook", 10000000, &loop), 0);
    lw_set_report_hook(loop, SlowHook, nullptr);
    lw_beat(loop);
    ASSERT_TRUE(lwtest::WaitUntil([] { return g_slow_hook_running.load(); },
                                  lwtest::Scaled(milliseconds(3000))));
    auto t0 = lwtest::Clock::now();
    ASSERT_EQ(lw_loop_close(loop), 0);
    auto waited = lwtest::Clock::now() - t0;
    EXPECT_GE(waited, milliseconds(100)) << "close did not wait for the hook";
    loopwatch::SegmentReader r(path);
    auto snaps = lwtest::MustSnapshot(r);
    ASSERT_TRUE(snaps[0].valid);
    EXPECT_EQ(snaps[0].state, LW_SLOT_CLOSED);
    EXPECT_EQ(snaps[0].report.state, LW_REPORT_CLOSED);
    EXPECT_EQ(snaps[0].report.text, "slow hook");
  });
}

// The hook's text is bounded by the report area, whatever it returns.
size_t GreedyHook(lw_loop_t*, void* user, char* buf, size_t size) {
  memset(buf, 'x', size);
  return *static_cast<size_t*>(user);
}

TEST(Stall, HookTextIsBoundedByTheReportArea) {
  for (size_t claimed : {size_t{LW_REPORT_TEXT_SIZE}, SIZE_MAX}) {
    SCOPED_TRACE("hook returns " + std::to_string(claimed));
    TempDir dir;
    RunIsolated([&] {
      std::string path = dir.File("segment");
      lwtest::SetSegmentEnv(path, 2, "30ms");
      size_t ret = claimed;
      lw_loop_t* loop = nullptr;
      ASSERT_EQ(lw_loop_open("greedy", 10000000, &loop), 0);
      lw_set_report_hook(loop, GreedyHook, &ret);
      lw_beat(loop);
      loopwatch::SegmentReader r(path);
      std::vector<loopwatch::SlotSnapshot> snaps;
      ASSERT_TRUE(lwtest::WaitUntil(
          [&] {
            snaps = lwtest::MustSnapshot(r);
            return snaps.size() == 2 && !snaps[0].report.text.empty();
          },
          lwtest::Scaled(milliseconds(3000))));
      EXPECT_EQ(snaps[0].report.text, std::string(LW_REPORT_TEXT_SIZE - 1, 'x'));
      auto raw = lwtest::ReadFileBytes(
          path, LW_SEG_HEADER_SIZE + offsetof(lw_seg_slot_t, text_len), 4);
      ASSERT_EQ(raw.size(), 4u);
      uint32_t len;
      memcpy(&len, raw.data(), 4);
      EXPECT_EQ(len, LW_REPORT_TEXT_SIZE - 1);
      lw_loop_close(loop);
    });
  }
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
//
// fork(): a pre-forking server (gunicorn's arbiter) opens loops, then forks
// workers that open loops of their own. Each worker must get a slot of its
// own, writes through handles inherited from the parent must go nowhere, and
// the parent's slots must die with the parent, not live on through a child
// that inherited its descriptor (the slot locks belong to the open file
// description, which fork() shares).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "loopwatch/loopwatch.h"
#include "reader.h"
#include "segment_layout.h"
#include "test_support.h"

namespace {

using lwtest::Child;
using lwtest::Pipe;
using lwtest::RunIsolated;
using lwtest::TempDir;
using std::chrono::milliseconds;

constexpr uint64_t kInterval = 100000000;  // 100 ms
// Far in the future of CLOCK_MONOTONIC: beats at these times never look late
// to the watchdog, so the test controls every byte of the beat area.
constexpr uint64_t kBase = UINT64_C(0x4000000000000000);

lw_loop_t* Open(const std::string& name) {
  lw_loop_t* loop = nullptr;
  int rc = lw_loop_open(name.c_str(), kInterval, &loop);
  if (rc != 0) fprintf(stderr, "lw_loop_open(%s): %d %s\n", name.c_str(), rc,
                       lw_last_error());
  return loop;
}

size_t ChildHook(lw_loop_t*, void*, char*, size_t) { return 0; }

// The part of a forked child that opens a loop of its own: opens `name`,
// beats `beats` times (at kBase + k * kInterval), writes "<prefix> <slot>"
// to report_fd, holds the loop until hold_fd reaches EOF, closes it.
int RunOwnLoop(const std::string& name, int beats, int report_fd, int hold_fd,
               const std::string& prefix) {
  lw_loop_t* own = Open(name);
  for (int k = 0; own && k < beats; k++) lw_beat_at(own, kBase + k * kInterval);
  lwtest::WriteLine(report_fd, prefix + " " + std::to_string(lw_loop_slot(own)));
  close(report_fd);
  lwtest::WaitForLineOrEof(hold_fd);
  lw_loop_close(own);
  return own ? 0 : 3;
}

// Under TSan a child forked from a multithreaded process (the parent runs
// its watchdog) cannot start threads, and opening a loop starts one. There
// the child re-executes this binary, which runs RunOwnLoop before main()
// (below); the fork-specific checks (inherited handles) happen before the
// exec. Other builds stay in the forked child, as a gunicorn worker does.
[[noreturn]] void OwnLoopInChild(const std::string& name, int beats,
                                 int report_fd, int hold_fd,
                                 const std::string& prefix) {
  if (lwtest::UnderThreadSanitizer()) {
    fcntl(report_fd, F_SETFD, 0);
    fcntl(hold_fd, F_SETFD, 0);
    setenv("LWTEST_FORK_HELPER", name.c_str(), 1);
    setenv("LWTEST_FORK_BEATS", std::to_string(beats).c_str(), 1);
    setenv("LWTEST_FORK_FDS",
           (std::to_string(report_fd) + " " + std::to_string(hold_fd)).c_str(), 1);
    setenv("LWTEST_FORK_PREFIX", prefix.c_str(), 1);
    execl("/proc/self/exe", "fork_test_helper", static_cast<char*>(nullptr));
    _exit(127);
  }
  int rc = RunOwnLoop(name, beats, report_fd, hold_fd, prefix);
  fflush(nullptr);
  _exit(rc);
}

const bool kHelperMode = [] {
  const char* name = getenv("LWTEST_FORK_HELPER");
  if (!name) return false;
  int report_fd = -1, hold_fd = -1;
  sscanf(getenv("LWTEST_FORK_FDS"), "%d %d", &report_fd, &hold_fd);
  int rc = RunOwnLoop(name, atoi(getenv("LWTEST_FORK_BEATS")), report_fd,
                      hold_fd, getenv("LWTEST_FORK_PREFIX"));
  fflush(nullptr);
  _exit(rc);
}();

TEST(Fork, ChildrenGetOwnSlotsAndInheritedHandlesAreInert) {
  TempDir dir;
  RunIsolated([&] {
    const int kParentLoops = 3, kChildren = 3, kChildBeats = 5;
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 16);
    std::vector<lw_loop_t*> mine;
    std::set<int> parent_slots;
    for (int j = 0; j < kParentLoops; j++) {
      lw_loop_t* l = Open("parent-" + std::to_string(j));
      ASSERT_NE(l, nullptr);
      // Loop j beats j + 2 times.
      for (int k = 0; k < j + 2; k++) lw_beat_at(l, kBase + k * kInterval);
      lw_set_activity(l, "parent-activity");
      parent_slots.insert(lw_loop_slot(l));
      mine.push_back(l);
    }
    ASSERT_EQ(parent_slots.size(), static_cast<size_t>(kParentLoops));
    ASSERT_TRUE(lwtest::WaitUntilThreadParked("loopwatch-wd",
                                              lwtest::Scaled(milliseconds(5000))));

    Pipe report, release;
    std::vector<pid_t> kids;
    for (int c = 0; c < kChildren; c++) {
      fflush(nullptr);
      pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        report.CloseRead();
        release.CloseWrite();
        // Every call on an inherited handle is a no-op returning 0.
        int bad = 0;
        for (lw_loop_t* l : mine) {
          for (int k = 0; k < 100; k++) bad |= lw_beat(l);
          bad |= lw_beat_at(l, kBase + 1000 * kInterval);
          bad |= lw_set_ready(l, 0);
          bad |= lw_set_activity(l, "child-wrote-this");
          bad |= lw_set_report_hook(l, ChildHook, nullptr);
          if (lw_loop_slot(l) != -1) bad |= 1;
        }
        for (lw_loop_t* l : mine) lw_loop_close(l);  // frees, touches nothing
        OwnLoopInChild("child-" + std::to_string(c), kChildBeats, report.wr,
                       release.rd,
                       std::to_string(c) + " " + std::to_string(bad));
      }
      kids.push_back(pid);
    }
    report.CloseWrite();
    release.CloseRead();

    std::set<int> child_slots;
    for (int c = 0; c < kChildren; c++) {
      std::string line;
      ASSERT_TRUE(lwtest::ReadLine(report.rd, &line, lwtest::Scaled(milliseconds(10000))))
          << "child " << c << " did not report";
      int idx = -1, slot = -1, bad = -1;
      ASSERT_EQ(sscanf(line.c_str(), "%d %d %d", &idx, &bad, &slot), 3) << line;
      EXPECT_EQ(bad, 0) << "child " << idx << ": a call on an inherited handle "
                        << "did not return 0, or lw_loop_slot was not -1";
      EXPECT_GE(slot, 0) << "child " << idx << " got no slot";
      EXPECT_EQ(parent_slots.count(slot), 0u)
          << "child " << idx << " got a slot of its parent: " << slot;
      EXPECT_TRUE(child_slots.insert(slot).second)
          << "two children share slot " << slot;
    }

    loopwatch::SegmentReader r(path);
    auto snaps = lwtest::MustSnapshot(r);
    ASSERT_EQ(snaps.size(), 16u);
    for (int j = 0; j < kParentLoops; j++) {
      const auto& s = snaps[lw_loop_slot(mine[j])];
      ASSERT_TRUE(s.valid);
      EXPECT_EQ(s.state, LW_SLOT_ACTIVE);
      EXPECT_EQ(s.pid, static_cast<uint32_t>(getpid()));
      EXPECT_EQ(s.owner_alive, 1);
      EXPECT_EQ(s.beat_count, static_cast<uint64_t>(j + 2))
          << "a child's write through an inherited handle reached the "
          << "parent's slot " << s.index;
      EXPECT_EQ(s.last_beat_ns, kBase + (j + 1) * kInterval);
      EXPECT_TRUE(s.ready);
      EXPECT_STREQ(s.activity, "parent-activity");
    }
    for (size_t c = 0; c < kids.size(); c++) {
      int slot = -1;
      for (const auto& s : snaps) {
        if (s.valid && s.pid == static_cast<uint32_t>(kids[c])) slot = s.index;
      }
      ASSERT_GE(slot, 0) << "no slot for child pid " << kids[c];
      const auto& s = snaps[slot];
      EXPECT_EQ(s.state, LW_SLOT_ACTIVE);
      EXPECT_EQ(s.owner_alive, 1);
      EXPECT_EQ(s.beat_count, static_cast<uint64_t>(kChildBeats));
      EXPECT_EQ(std::string(s.name).rfind("child-", 0), 0u) << s.name;
    }

    // The children leave; the parent's slots stay owned, by the parent.
    release.CloseWrite();
    for (pid_t pid : kids) {
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "child " << pid << " status 0x" << std::hex << status;
    }
    snaps = lwtest::MustSnapshot(r);
    for (int slot : child_slots) {
      EXPECT_EQ(snaps[slot].state, LW_SLOT_CLOSED);
      EXPECT_EQ(snaps[slot].owner_alive, 0);
    }
    for (int slot : parent_slots) {
      EXPECT_EQ(snaps[slot].state, LW_SLOT_ACTIVE);
      EXPECT_EQ(snaps[slot].owner_alive, 1)
          << "a child's exit released its parent's slot lock";
    }
    // The parent still beats (its watchdog and handles survived the forks).
    lw_beat_at(mine[0], kBase + 10 * kInterval);
    snaps = lwtest::MustSnapshot(r);
    EXPECT_EQ(snaps[lw_loop_slot(mine[0])].beat_count, 3u);
    for (lw_loop_t* l : mine) EXPECT_EQ(lw_loop_close(l), 0);
  });
}

// A process tree: the test spawns P; P opens a loop and forks C, which keeps
// running (with a loop of its own); P exits without closing. P's slot must
// read dead (owner_alive 0) while C, which inherited P's descriptor, lives.
TEST(Fork, ParentSlotDiesWithParentWhileItsChildLives) {
  TempDir dir;
  std::string path = dir.File("segment");
  Pipe lines;         // P and C -> test
  Pipe hold_grandchild;  // test -> C: C runs until this closes
  Child p([&]() -> int {
    lines.CloseRead();
    hold_grandchild.CloseWrite();
    lwtest::SetSegmentEnv(path, 8);
    lw_loop_t* loop = Open("arbiter");
    if (!loop) return 2;
    lw_beat(loop);
    if (!lwtest::WaitUntilThreadParked("loopwatch-wd", milliseconds(20000))) return 4;
    fflush(nullptr);
    pid_t c = fork();
    if (c < 0) return 3;
    if (c == 0) {
      OwnLoopInChild("worker", 1, lines.wr, hold_grandchild.rd,
                     "worker " + std::to_string(getpid()));
    }
    lwtest::WriteLine(lines.wr, "arbiter " + std::to_string(getpid()) + " " +
                                    std::to_string(lw_loop_slot(loop)));
    // Exit without closing, like a crash: the kernel drops what P held.
    return 0;
  });
  lines.CloseWrite();
  hold_grandchild.CloseRead();

  int arbiter_slot = -1, worker_slot = -1;
  pid_t worker_pid = -1;
  for (int i = 0; i < 2; i++) {
    std::string line;
    ASSERT_TRUE(lwtest::ReadLine(lines.rd, &line, lwtest::Scaled(milliseconds(10000))));
    char who[16];
    int pid = 0, slot = -1;
    ASSERT_EQ(sscanf(line.c_str(), "%15s %d %d", who, &pid, &slot), 3) << line;
    if (std::string(who) == "worker") {
      worker_pid = pid;
      worker_slot = slot;
    } else {
      arbiter_slot = slot;
    }
  }
  ASSERT_GE(arbiter_slot, 0);
  ASSERT_GE(worker_slot, 0);
  ASSERT_NE(arbiter_slot, worker_slot);
  int status = p.Wait(lwtest::Scaled(milliseconds(10000)));
  ASSERT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "P status " << status;
  ASSERT_EQ(kill(worker_pid, 0), 0) << "the worker should still run";

  loopwatch::SegmentReader r(path);
  auto snaps = lwtest::MustSnapshot(r);
  ASSERT_EQ(snaps.size(), 8u);
  const auto& arb = snaps[arbiter_slot];
  ASSERT_TRUE(arb.valid);
  EXPECT_STREQ(arb.name, "arbiter");
  EXPECT_EQ(arb.state, LW_SLOT_ACTIVE) << "P never closed it";
  EXPECT_EQ(arb.owner_alive, 0)
      << "P is gone but its slot lock lives on in its child";
  const auto& wk = snaps[worker_slot];
  EXPECT_STREQ(wk.name, "worker");
  EXPECT_EQ(wk.pid, static_cast<uint32_t>(worker_pid));
  EXPECT_EQ(wk.owner_alive, 1);

  // Let the worker go; its slot closes cleanly.
  hold_grandchild.CloseWrite();
  bool closed = lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        return snaps.size() == 8 && snaps[worker_slot].state == LW_SLOT_CLOSED;
      },
      lwtest::Scaled(milliseconds(5000)));
  EXPECT_TRUE(closed);
  kill(worker_pid, SIGKILL);  // not our child: init reaps it
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
//
// A writer process frozen by SIGSTOP (a debugger, a cgroup freezer, a
// paused container): its beats stop, but it still owns its slot
// (owner_alive 1): a stall, not a death. SIGCONT resumes the beats.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "loopwatch/loopwatch.h"
#include "reader.h"
#include "segment_layout.h"
#include "test_support.h"

namespace {

using lwtest::Child;
using lwtest::Pipe;
using lwtest::TempDir;
using std::chrono::milliseconds;

TEST(Sigstop, StoppedWriterIsStalledNotDeadAndResumes) {
  TempDir dir;
  std::string path = dir.File("segment");
  Pipe ready;
  Child w([&]() -> int {
    ready.CloseRead();
    lwtest::SetSegmentEnv(path, 2);
    lw_loop_t* loop = nullptr;
    if (lw_loop_open("stoppable", 5000000, &loop) != 0) return 2;
    lwtest::WriteLine(ready.wr, std::to_string(lw_loop_slot(loop)));
    for (;;) {
      lw_beat(loop);
      usleep(5000);
    }
  });
  ready.CloseWrite();
  std::string line;
  ASSERT_TRUE(lwtest::ReadLine(ready.rd, &line, lwtest::Scaled(milliseconds(10000))));
  const int slot = std::stoi(line);
  ASSERT_GE(slot, 0);

  loopwatch::SegmentReader r(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  ASSERT_TRUE(lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        return snaps.size() == 2 && snaps[slot].valid && snaps[slot].beat_count >= 5;
      },
      lwtest::Scaled(milliseconds(5000))));

  // Stop it. A stop that lands inside a beat (a few ns out of 5 ms) leaves
  // the beat seqlock odd, and the reader rightly refuses the slot while it
  // lasts; then resume and stop again.
  loopwatch::SlotSnapshot frozen;
  bool stopped_cleanly = false;
  for (int attempt = 0; attempt < 5 && !stopped_cleanly; attempt++) {
    ASSERT_EQ(kill(w.pid(), SIGSTOP), 0);
    int status = 0;
    ASSERT_EQ(waitpid(w.pid(), &status, WUNTRACED), w.pid());
    ASSERT_TRUE(WIFSTOPPED(status));
    snaps = lwtest::MustSnapshot(r);
    if (snaps[slot].valid) {
      frozen = snaps[slot];
      stopped_cleanly = true;
    } else {
      kill(w.pid(), SIGCONT);
      std::this_thread::sleep_for(milliseconds(7));
    }
  }
  ASSERT_TRUE(stopped_cleanly);
  EXPECT_EQ(frozen.state, LW_SLOT_ACTIVE);
  EXPECT_EQ(frozen.owner_alive, 1);

  std::this_thread::sleep_for(milliseconds(300));
  snaps = lwtest::MustSnapshot(r);
  ASSERT_TRUE(snaps[slot].valid);
  EXPECT_EQ(snaps[slot].beat_count, frozen.beat_count) << "beats while stopped";
  EXPECT_EQ(snaps[slot].last_beat_ns, frozen.last_beat_ns);
  EXPECT_EQ(snaps[slot].owner_alive, 1) << "a stopped owner is not dead";
  EXPECT_EQ(snaps[slot].state, LW_SLOT_ACTIVE);
  // The reader sees the silence on its own clock.
  EXPECT_GE(lw_now_ns() - snaps[slot].last_beat_ns, 300000000u);

  ASSERT_EQ(kill(w.pid(), SIGCONT), 0);
  EXPECT_TRUE(lwtest::WaitUntil(
      [&] {
        snaps = lwtest::MustSnapshot(r);
        return snaps[slot].valid && snaps[slot].beat_count > frozen.beat_count + 2;
      },
      lwtest::Scaled(milliseconds(3000))))
      << "no beats after SIGCONT";
  EXPECT_EQ(snaps[slot].owner_alive, 1);

  w.Kill(SIGKILL);
  int status = w.Wait(lwtest::Scaled(milliseconds(10000)));
  EXPECT_TRUE(status >= 0 && WIFSIGNALED(status));
  snaps = lwtest::MustSnapshot(r);
  EXPECT_EQ(snaps[slot].owner_alive, 0);
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
//
// An owner killed without closing (SIGKILL, OOM kill) must be told apart
// from a stalled one by a reader that cannot see the owner's /proc: the slot
// stays ACTIVE, but nobody holds its lock (owner_alive 0). A new process
// takes free and closed slots first and reclaims a dead one only when there
// is nothing else, with a new generation and a clean slate.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
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

// A writer process: opens a loop named `name`, beats `beats` times (or
// forever, every 2 ms, when beats < 0) and reports "rc slot error" on a pipe,
// then holds the slot until killed, or released: then it closes the loop
// cleanly and exits.
class Writer {
 public:
  Writer(const std::string& path, int slots, const std::string& name,
         int beats) {
    child_ = std::make_unique<Child>([&, path, slots, name, beats]() -> int {
      lwtest::CloseOtherPipes({out_.wr, hold_.rd});
      lwtest::SetSegmentEnv(path, slots);
      lw_loop_t* loop = nullptr;
      int rc = lw_loop_open(name.c_str(), 1000000, &loop);
      for (int i = 0; loop && beats >= 0 && i < beats; i++) lw_beat(loop);
      lwtest::WriteLine(out_.wr, std::to_string(rc) + " " +
                                     std::to_string(lw_loop_slot(loop)) + " " +
                                     lw_last_error());
      if (beats < 0) {
        for (;;) {
          lw_beat(loop);
          usleep(2000);
        }
      }
      lwtest::WaitForLineOrEof(hold_.rd);
      lw_loop_close(loop);
      return 0;
    });
    out_.CloseWrite();
    hold_.CloseRead();
    std::string line;
    if (!lwtest::ReadLine(out_.rd, &line, lwtest::Scaled(milliseconds(10000)))) {
      ADD_FAILURE() << "writer " << name << " did not report";
      return;
    }
    char err[256] = "";
    sscanf(line.c_str(), "%d %d %255[^\n]", &rc_, &slot_, err);
    error_ = err;
  }
  int rc() const { return rc_; }
  int slot() const { return slot_; }
  pid_t pid() const { return child_->pid(); }
  const std::string& error() const { return error_; }
  void KillAndReap() {
    child_->Kill(SIGKILL);
    int status = child_->Wait(lwtest::Scaled(milliseconds(10000)));
    EXPECT_TRUE(status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }
  void ReleaseAndReap() {
    hold_.CloseWrite();
    int status = child_->Wait(lwtest::Scaled(milliseconds(10000)));
    EXPECT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }

 private:
  Pipe out_, hold_;
  std::unique_ptr<Child> child_;
  int rc_ = -1, slot_ = -1;
  std::string error_;
};

TEST(Death, KilledOwnerIsDeadNotStalledAndItsSlotIsReclaimedLast) {
  TempDir dir;
  std::string path = dir.File("segment");
  // Two slots: the victim's, and one free one.
  Writer victim(path, 2, "victim", -1);
  ASSERT_EQ(victim.rc(), 0) << victim.error();
  const int a = victim.slot();
  ASSERT_GE(a, 0);

  loopwatch::SegmentReader r(path);
  // Alive and beating.
  ASSERT_TRUE(lwtest::WaitUntil(
      [&] {
        auto s = lwtest::MustSnapshot(r);
        return s.size() == 2 && s[a].valid && s[a].beat_count >= 10;
      },
      lwtest::Scaled(milliseconds(5000))));
  auto snaps = lwtest::MustSnapshot(r);
  EXPECT_EQ(snaps[a].state, LW_SLOT_ACTIVE);
  EXPECT_EQ(snaps[a].owner_alive, 1);
  EXPECT_EQ(snaps[a].pid, static_cast<uint32_t>(victim.pid()));
  const uint32_t gen_a = snaps[a].generation;

  victim.KillAndReap();
  snaps = lwtest::MustSnapshot(r);
  const auto dead = snaps[a];
  ASSERT_TRUE(dead.valid);
  EXPECT_EQ(dead.state, LW_SLOT_ACTIVE) << "nobody closed it";
  EXPECT_EQ(dead.owner_alive, 0) << "the kernel dropped the owner's lock";
  EXPECT_STREQ(dead.name, "victim");
  std::this_thread::sleep_for(milliseconds(30));
  snaps = lwtest::MustSnapshot(r);
  EXPECT_EQ(snaps[a].beat_count, dead.beat_count);

  // A free slot is preferred to the dead one, which the sidecar still shows.
  Writer second(path, 2, "second", 1);
  ASSERT_EQ(second.rc(), 0) << second.error();
  EXPECT_NE(second.slot(), a) << "took the dead slot while a free one was left";
  snaps = lwtest::MustSnapshot(r);
  EXPECT_STREQ(snaps[a].name, "victim");
  EXPECT_EQ(snaps[a].owner_alive, 0);

  // Full but for the dead slot: reclaimed, with a new generation and a
  // clean beat and report area.
  Writer third(path, 2, "third", 3);
  ASSERT_EQ(third.rc(), 0) << third.error();
  EXPECT_EQ(third.slot(), a);
  snaps = lwtest::MustSnapshot(r);
  const auto& re = snaps[a];
  ASSERT_TRUE(re.valid);
  EXPECT_STREQ(re.name, "third");
  EXPECT_EQ(re.pid, static_cast<uint32_t>(third.pid()));
  EXPECT_EQ(re.owner_alive, 1);
  EXPECT_EQ(re.state, LW_SLOT_ACTIVE);
  EXPECT_EQ(re.generation, gen_a + 2);
  EXPECT_NE(re.claim_token, dead.claim_token);
  EXPECT_EQ(re.beat_count, 3u);
  EXPECT_EQ(re.lag_count, 2u);
  EXPECT_EQ(re.report.state, LW_REPORT_NONE);
  EXPECT_EQ(re.report.stall_count, 0u);

  // Full of live owners: no slot, a clear error, a NULL handle.
  Writer fourth(path, 2, "fourth", 0);
  EXPECT_EQ(fourth.rc(), -ENOSPC);
  EXPECT_EQ(fourth.slot(), -1);
  EXPECT_NE(fourth.error().find("LOOPWATCH_SLOTS"), std::string::npos)
      << fourth.error();

  second.ReleaseAndReap();
  third.ReleaseAndReap();
  fourth.ReleaseAndReap();
}

TEST(Death, ClosedSlotIsTakenBeforeADeadOne) {
  TempDir dir;
  std::string path = dir.File("segment");
  // Three slots: one dead, one live, one closed cleanly.
  Writer victim(path, 3, "victim", 5);
  ASSERT_EQ(victim.rc(), 0);
  victim.KillAndReap();
  Writer stayer(path, 3, "stayer", 5);
  ASSERT_EQ(stayer.rc(), 0);
  Writer leaver(path, 3, "leaver", 5);
  ASSERT_EQ(leaver.rc(), 0);
  leaver.ReleaseAndReap();

  loopwatch::SegmentReader r(path);
  auto snaps = lwtest::MustSnapshot(r);
  ASSERT_EQ(snaps.size(), 3u);
  EXPECT_EQ(snaps[victim.slot()].owner_alive, 0);
  EXPECT_EQ(snaps[victim.slot()].state, LW_SLOT_ACTIVE);
  EXPECT_EQ(snaps[stayer.slot()].owner_alive, 1);
  EXPECT_EQ(snaps[leaver.slot()].state, LW_SLOT_CLOSED);
  EXPECT_EQ(snaps[leaver.slot()].owner_alive, 0);

  Writer next(path, 3, "next", 1);
  ASSERT_EQ(next.rc(), 0);
  EXPECT_EQ(next.slot(), leaver.slot()) << "a dead slot went before a closed one";
  Writer last(path, 3, "last", 1);
  ASSERT_EQ(last.rc(), 0);
  EXPECT_EQ(last.slot(), victim.slot());
  snaps = lwtest::MustSnapshot(r);
  EXPECT_STREQ(snaps[victim.slot()].name, "last");
  EXPECT_EQ(snaps[victim.slot()].owner_alive, 1);
  stayer.ReleaseAndReap();
  next.ReleaseAndReap();
  last.ReleaseAndReap();
}

// An owner killed inside a seqlock write leaves an odd sequence word (and a
// claimer killed mid-claim an odd generation). The reader must not trust
// the slot meanwhile, and the next owner must leave it readable.
TEST(Death, OwnerKilledInsideAWriteLeavesNoStuckSlot) {
  TempDir dir;
  std::string path = dir.File("segment");
  Writer victim(path, 1, "victim", 5);
  ASSERT_EQ(victim.rc(), 0);
  ASSERT_EQ(victim.slot(), 0);
  victim.KillAndReap();

  // What a kill inside lw_beat, lw_set_activity, a report update and a claim
  // would leave behind.
  const uint64_t slot = LW_SEG_HEADER_SIZE;
  auto read_u64 = [&](size_t off) {
    auto b = lwtest::ReadFileBytes(path, slot + off, 8);
    uint64_t v;
    memcpy(&v, b.data(), 8);
    return v;
  };
  uint64_t odd_beat = read_u64(offsetof(lw_seg_slot_t, beat_seq)) | 1;
  uint64_t odd_act = read_u64(offsetof(lw_seg_slot_t, activity_seq)) | 1;
  uint64_t odd_rep = read_u64(offsetof(lw_seg_slot_t, report_seq)) | 1;
  lwtest::PatchFile(path, slot + offsetof(lw_seg_slot_t, beat_seq), &odd_beat, 8);
  lwtest::PatchFile(path, slot + offsetof(lw_seg_slot_t, activity_seq), &odd_act, 8);
  lwtest::PatchFile(path, slot + offsetof(lw_seg_slot_t, report_seq), &odd_rep, 8);

  loopwatch::SegmentReader r(path);
  auto snaps = lwtest::MustSnapshot(r);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_FALSE(snaps[0].valid) << "a beat under way must not read as valid";

  uint32_t odd_gen = 5;  // a claim under way
  lwtest::PatchFile(path, slot + offsetof(lw_seg_slot_t, generation), &odd_gen, 4);
  snaps = lwtest::MustSnapshot(r);
  EXPECT_FALSE(snaps[0].valid);

  Writer heir(path, 1, "heir", 4);
  ASSERT_EQ(heir.rc(), 0) << heir.error();
  ASSERT_EQ(heir.slot(), 0);
  snaps = lwtest::MustSnapshot(r);
  ASSERT_TRUE(snaps[0].valid) << "the new owner left a sequence word odd";
  EXPECT_STREQ(snaps[0].name, "heir");
  EXPECT_EQ(snaps[0].generation % 2, 0u);
  EXPECT_GT(snaps[0].generation, odd_gen);
  EXPECT_EQ(snaps[0].beat_count, 4u);
  EXPECT_EQ(snaps[0].owner_alive, 1);
  EXPECT_EQ(read_u64(offsetof(lw_seg_slot_t, beat_seq)) % 2, 0u);
  EXPECT_EQ(read_u64(offsetof(lw_seg_slot_t, activity_seq)) % 2, 0u);
  EXPECT_EQ(read_u64(offsetof(lw_seg_slot_t, report_seq)) % 2, 0u);
  // Sequence words never go back: a reader that saw the old value must
  // never mistake new contents for the old ones.
  EXPECT_GT(read_u64(offsetof(lw_seg_slot_t, beat_seq)), odd_beat);
  EXPECT_GT(read_u64(offsetof(lw_seg_slot_t, activity_seq)), odd_act);
  EXPECT_GT(read_u64(offsetof(lw_seg_slot_t, report_seq)), odd_rep);
  heir.ReleaseAndReap();
}

}  // namespace

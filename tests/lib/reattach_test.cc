// SPDX-License-Identifier: Apache-2.0
//
// The segment changes under a running app: deleted, replaced (another file
// renamed over it), truncated, or taken by a file that is not a segment.
// The library must notice within a second, re-attach its loops to the file
// now at the path (creating it if need be), with their identity and last
// beat, and never raise SIGBUS in the app, however the file was cut. Each
// test runs in a forked child (RunIsolated) with a loop beating on a thread
// of its own; the checks read the path with the sidecar's reader, as the
// sidecar would.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
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

constexpr uint64_t kInterval = 2000000;  // 2 ms: many stores into the mapping

// A loop beating every kInterval on a thread of its own until stopped or
// paused.
class Beater {
 public:
  explicit Beater(const char* name) {
    thread_ = std::thread([this, name] {
      lw_loop_options_t o{};
      o.struct_size = sizeof o;
      o.name = name;
      o.interval_ns = kInterval;
      o.report_after_ns = 100000000;  // 100 ms
      rc_ = lw_loop_open_ex(&o, &loop_);
      if (loop_) lw_set_activity(loop_, "GET /orders");
      opened_ = true;
      while (!stop_) {
        if (!pause_) {
          lw_beat(loop_);
          beats_++;
        }
        struct timespec ts = {0, long(kInterval)};
        nanosleep(&ts, nullptr);
      }
      lw_loop_close(loop_);
    });
    while (!opened_) std::this_thread::yield();
  }
  ~Beater() {
    stop_ = true;
    thread_.join();
  }
  int rc() const { return rc_; }
  void Pause(bool p) { pause_ = p; }
  uint64_t beats() const { return beats_; }

 private:
  std::thread thread_;
  lw_loop_t* loop_ = nullptr;
  std::atomic<int> rc_{0};
  std::atomic<bool> opened_{false}, stop_{false}, pause_{false};
  std::atomic<uint64_t> beats_{0};
};

struct Seen {
  bool found = false;
  uint64_t segment_inode = 0;
  loopwatch::SlotSnapshot slot;
};

ino_t InodeOf(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// The loop's slot in the file now at `path`, read as the sidecar reads it.
Seen Look(const std::string& path, const char* name) {
  Seen s;
  loopwatch::SegmentReader r(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  if (r.Snapshot(&snaps) != loopwatch::SegmentStatus::kOk) return s;
  int i = lwtest::FindSlotByName(snaps, name);
  if (i < 0 || snaps[size_t(i)].state != LW_SLOT_ACTIVE) return s;
  s.found = true;
  s.segment_inode = InodeOf(path);
  s.slot = snaps[size_t(i)];
  return s;
}

// Waits until the file at `path` is not `old_inode` and holds the loop,
// beating (unless `silent`); returns how long that took.
milliseconds WaitReattached(const std::string& path, const char* name, ino_t old_inode,
                            bool silent = false, Seen* out = nullptr) {
  const auto t0 = lwtest::Clock::now();
  uint64_t first_count = 0;
  bool have_first = false;
  bool ok = lwtest::WaitUntil(
      [&] {
        Seen s = Look(path, name);
        if (!s.found || (old_inode && s.segment_inode == old_inode)) return false;
        if (out) *out = s;
        if (silent) return true;
        if (!have_first) {
          first_count = s.slot.beat_count;
          have_first = true;
          return false;
        }
        return s.slot.beat_count > first_count;  // the loop beats into it
      },
      lwtest::Scaled(milliseconds(5000)), milliseconds(5));
  EXPECT_TRUE(ok) << "the loop never showed up, beating, in the new file at " << path;
  return std::chrono::duration_cast<milliseconds>(lwtest::Clock::now() - t0);
}

// "Within a second", with room for a loaded machine (more under a sanitizer).
const milliseconds kWithin = lwtest::Scaled(milliseconds(1000));

TEST(Reattach, DeletedSegmentIsCreatedAgainWithTheLoopInIt) {
  TempDir dir;
  const std::string path = dir.File("segment");
  RunIsolated([&] {
    lwtest::SetSegmentEnv(path, 8);
    Beater b("deleted");
    ASSERT_EQ(b.rc(), 0) << lw_last_error();
    ASSERT_TRUE(lwtest::WaitUntil([&] { return Look(path, "deleted").found; },
                                  lwtest::Scaled(milliseconds(2000))));
    const ino_t old = InodeOf(path);
    const uint64_t before = Look(path, "deleted").slot.beat_count;
    ASSERT_EQ(unlink(path.c_str()), 0);
    Seen s;
    milliseconds took = WaitReattached(path, "deleted", old, false, &s);
    printf("re-attached %lld ms after the unlink\n", (long long)took.count());
    EXPECT_LE(took, kWithin);
    // The same loop: its pid, its counts carried over, its activity.
    EXPECT_EQ(s.slot.pid, uint32_t(getpid()));
    EXPECT_GE(s.slot.beat_count, before);
    EXPECT_STREQ(s.slot.activity, "GET /orders");
    EXPECT_EQ(s.slot.interval_ns, kInterval);
  });
}

TEST(Reattach, FileRenamedOverItIsTakenUp) {
  TempDir dir;
  const std::string path = dir.File("segment");
  RunIsolated([&] {
    lwtest::SetSegmentEnv(path, 8);
    Beater b("renamed");
    ASSERT_EQ(b.rc(), 0) << lw_last_error();
    ASSERT_TRUE(lwtest::WaitUntil([&] { return Look(path, "renamed").found; },
                                  lwtest::Scaled(milliseconds(2000))));
    // A new segment, made by a reader with create_slots (as a sidecar
    // does), renamed over the old one: a new inode with no loops in it.
    const std::string other = dir.File("other");
    {
      loopwatch::SegmentReader maker(other, 16);
      std::vector<loopwatch::SlotSnapshot> snaps;
      ASSERT_EQ(maker.Snapshot(&snaps), loopwatch::SegmentStatus::kOk) << maker.error();
    }
    const ino_t old = InodeOf(path);
    ASSERT_EQ(rename(other.c_str(), path.c_str()), 0);
    milliseconds took = WaitReattached(path, "renamed", old);
    printf("re-attached %lld ms after the rename\n", (long long)took.count());
    EXPECT_LE(took, kWithin);
    // Exactly one slot of ours in it, in the 16-slot file that was there.
    loopwatch::SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    ASSERT_EQ(r.Snapshot(&snaps), loopwatch::SegmentStatus::kOk);
    EXPECT_EQ(snaps.size(), 16u);
    EXPECT_EQ(lwtest::FindActiveSlotOfPid(snaps, getpid()) >= 0, true);
  });
}

// Truncated while the loop beats every 2 ms: the stores that land past the
// new end of file are caught (no SIGBUS reaches the app), and the file is
// replaced by a whole segment with the loop in it.
TEST(Reattach, TruncatedUnderABeatingLoopRaisesNoSigbus) {
  for (off_t cut : {off_t(0), off_t(4096), off_t(LW_SEG_HEADER_SIZE + LW_SEG_SLOT_SIZE / 2)}) {
    TempDir dir;
    const std::string path = dir.File("segment");
    RunIsolated([&] {
      lwtest::SetSegmentEnv(path, 8);
      Beater b("cut");
      ASSERT_EQ(b.rc(), 0) << lw_last_error();
      ASSERT_TRUE(lwtest::WaitUntil([&] { return Look(path, "cut").found; },
                                    lwtest::Scaled(milliseconds(2000))));
      const uint64_t beats = b.beats();
      ASSERT_EQ(truncate(path.c_str(), cut), 0);
      // The loop goes on beating: the process is alive to count.
      ASSERT_TRUE(lwtest::WaitUntil([&] { return b.beats() > beats + 50; },
                                    lwtest::Scaled(milliseconds(3000))));
      Seen s;
      milliseconds took = WaitReattached(path, "cut", 0, false, &s);
      printf("cut to %lld bytes: re-attached within %lld ms\n", (long long)cut,
             (long long)took.count());
      EXPECT_LE(took, kWithin);
      EXPECT_EQ(lwtest::FileSize(path), uint64_t(LW_SEG_HEADER_SIZE) + 8u * LW_SEG_SLOT_SIZE);
      EXPECT_EQ(s.slot.pid, uint32_t(getpid()));
    });
  }
}

// A stalled loop moves too, with its last beat, so that the sidecar sees
// it silent since then (not a loop that never beat), and its stall report
// opens in the new slot.
TEST(Reattach, StalledLoopMovesWithItsLastBeatAndGetsItsReport) {
  TempDir dir;
  const std::string path = dir.File("segment");
  RunIsolated([&] {
    lwtest::SetSegmentEnv(path, 8);
    Beater b("stalled");
    ASSERT_EQ(b.rc(), 0) << lw_last_error();
    ASSERT_TRUE(lwtest::WaitUntil([&] { return Look(path, "stalled").found; },
                                  lwtest::Scaled(milliseconds(2000))));
    b.Pause(true);
    std::this_thread::sleep_for(milliseconds(50));
    const Seen last = Look(path, "stalled");
    ASSERT_TRUE(last.found);
    const ino_t old = InodeOf(path);
    ASSERT_EQ(unlink(path.c_str()), 0);
    Seen s;
    WaitReattached(path, "stalled", old, true, &s);
    EXPECT_EQ(s.slot.beat_count, last.slot.beat_count);
    EXPECT_EQ(s.slot.last_beat_ns, last.slot.last_beat_ns);
    // The watchdog's report of the stall, in the new file.
    ASSERT_TRUE(lwtest::WaitUntil(
        [&] {
          Seen now = Look(path, "stalled");
          return now.found && now.slot.report.state == LW_REPORT_OPEN &&
                 now.slot.report.stall_start_ns == last.slot.last_beat_ns;
        },
        lwtest::Scaled(milliseconds(3000))))
        << "no stall report in the new slot";
    b.Pause(false);
    ASSERT_TRUE(lwtest::WaitUntil(
        [&] {
          Seen now = Look(path, "stalled");
          return now.found && now.slot.beat_count > last.slot.beat_count &&
                 now.slot.report.state == LW_REPORT_CLOSED;
        },
        lwtest::Scaled(milliseconds(3000))));
  });
}

// Someone's file at the path (not a segment): left byte for byte as it is;
// the loop goes on beating into its old mapping, and moves once a segment
// can be made there again.
TEST(Reattach, AFileThatIsNotASegmentIsLeftAloneUntilItGoes) {
  TempDir dir;
  const std::string path = dir.File("segment");
  RunIsolated([&] {
    lwtest::SetSegmentEnv(path, 8);
    Beater b("waiting");
    ASSERT_EQ(b.rc(), 0) << lw_last_error();
    ASSERT_TRUE(lwtest::WaitUntil([&] { return Look(path, "waiting").found; },
                                  lwtest::Scaled(milliseconds(2000))));
    const ino_t old = InodeOf(path);
    const std::string precious = dir.File("precious");
    std::vector<uint8_t> bytes(10000);
    for (size_t i = 0; i < bytes.size(); i++) bytes[i] = uint8_t(i * 7 + 1);
    lwtest::WriteWholeFile(precious, bytes);
    ASSERT_EQ(rename(precious.c_str(), path.c_str()), 0);
    std::this_thread::sleep_for(lwtest::Scaled(milliseconds(1500)));
    EXPECT_EQ(lwtest::ReadWholeFile(path), bytes) << "the library wrote into someone's file";
    const uint64_t beats = b.beats();
    ASSERT_TRUE(lwtest::WaitUntil([&] { return b.beats() > beats + 10; },
                                  lwtest::Scaled(milliseconds(2000))));
    ASSERT_EQ(unlink(path.c_str()), 0);
    milliseconds took = WaitReattached(path, "waiting", old);
    EXPECT_LE(took, kWithin);
  });
}

// A segment of a future major version: the library cannot write it, leaves
// it as it is, and keeps its loop on the old mapping.
TEST(Reattach, AnotherMajorVersionIsLeftAlone) {
  TempDir dir;
  const std::string path = dir.File("segment");
  RunIsolated([&] {
    lwtest::SetSegmentEnv(path, 8);
    Beater b("old");
    ASSERT_EQ(b.rc(), 0) << lw_last_error();
    ASSERT_TRUE(lwtest::WaitUntil([&] { return Look(path, "old").found; },
                                  lwtest::Scaled(milliseconds(2000))));
    const std::string next = dir.File("v2");
    std::vector<uint8_t> v2 = lwtest::ReadWholeFile(path);
    v2[8] = 2;  // version_major, u16 at offset 8
    v2[9] = 0;
    lwtest::WriteWholeFile(next, v2);
    ASSERT_EQ(rename(next.c_str(), path.c_str()), 0);
    std::this_thread::sleep_for(lwtest::Scaled(milliseconds(1500)));
    EXPECT_EQ(lwtest::ReadWholeFile(path), v2);
    const uint64_t beats = b.beats();
    EXPECT_TRUE(lwtest::WaitUntil([&] { return b.beats() > beats + 10; },
                                  lwtest::Scaled(milliseconds(2000))));
  });
}

// Replaced over and over: every time the loop follows, and the process
// keeps no more than a few old mappings (they are unmapped once no loop
// beats into them).
TEST(Reattach, ReplacedManyTimesKeepsFollowing) {
  TempDir dir;
  const std::string path = dir.File("segment");
  RunIsolated([&] {
    lwtest::SetSegmentEnv(path, 4);
    Beater b("chased");
    ASSERT_EQ(b.rc(), 0) << lw_last_error();
    ASSERT_TRUE(lwtest::WaitUntil([&] { return Look(path, "chased").found; },
                                  lwtest::Scaled(milliseconds(2000))));
    for (int k = 0; k < 5; k++) {
      const ino_t old = InodeOf(path);
      ASSERT_EQ(unlink(path.c_str()), 0);
      WaitReattached(path, "chased", old);
    }
  });
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
//
// Who creates the segment: the sidecar (a reader with create_slots > 0) may
// start before the app, or after it; a creator may die half-way (file sized,
// magic still 0), which readers must not trust and the next writer must
// finish; several workers may race to create it; and the file may be
// removed and created again under a running reader.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <memory>
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
using lwtest::TempDir;
using loopwatch::SegmentReader;
using loopwatch::SegmentStatus;
using std::chrono::milliseconds;

// A writer process that opens one loop, beats once and reports "rc slot",
// then holds its slot until released. `go`, if given, is a pipe it waits on
// (for EOF) before opening: a start line for racing writers.
class Writer {
 public:
  Writer(const std::string& path, int slots, const std::string& name,
         int go_fd = -1) {
    child_ = std::make_unique<Child>([&, path, slots, name, go_fd]() -> int {
      lwtest::CloseOtherPipes({out_.wr, hold_.rd, go_fd});
      lwtest::SetSegmentEnv(path, slots);
      if (go_fd >= 0) lwtest::WaitForLineOrEof(go_fd);
      lw_loop_t* loop = nullptr;
      int rc = lw_loop_open(name.c_str(), 100000000, &loop);
      lw_beat(loop);
      lwtest::WriteLine(out_.wr, std::to_string(rc) + " " +
                                     std::to_string(lw_loop_slot(loop)) + " " +
                                     lw_last_error());
      lwtest::WaitForLineOrEof(hold_.rd);
      lw_loop_close(loop);
      return 0;
    });
    out_.CloseWrite();
    hold_.CloseRead();
  }
  // Reads the writer's report; false if it never came.
  bool Collect() {
    std::string line;
    if (!lwtest::ReadLine(out_.rd, &line, lwtest::Scaled(milliseconds(10000)))) {
      return false;
    }
    char err[256] = "";
    sscanf(line.c_str(), "%d %d %255[^\n]", &rc_, &slot_, err);
    error_ = err;
    return true;
  }
  int rc() const { return rc_; }
  int slot() const { return slot_; }
  pid_t pid() const { return child_->pid(); }
  const std::string& error() const { return error_; }
  void Release() {
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

TEST(CreateOrder, ReaderFirst) {
  TempDir dir;
  std::string path = dir.File("segment");
  // A plain reader never creates anything.
  SegmentReader plain(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  EXPECT_EQ(plain.Snapshot(&snaps), SegmentStatus::kMissing);
  EXPECT_TRUE(snaps.empty());
  EXPECT_NE(plain.error().find(path), std::string::npos) << plain.error();
  EXPECT_EQ(lwtest::FileSize(path), 0u);
  EXPECT_NE(access(path.c_str(), F_OK), 0);

  // The sidecar creates it, with its slot count.
  SegmentReader creator(path, 4);
  snaps = lwtest::MustSnapshot(creator);
  ASSERT_EQ(snaps.size(), 4u);
  EXPECT_EQ(creator.header().creator_pid, static_cast<uint32_t>(getpid()));
  EXPECT_EQ(creator.header().version_major, LW_SEG_VERSION_MAJOR);
  EXPECT_NE(creator.header().segment_id, 0u);
  for (const auto& s : snaps) {
    EXPECT_TRUE(s.valid);
    EXPECT_EQ(s.state, LW_SLOT_FREE);
  }
  EXPECT_EQ(lwtest::FileSize(path), lw_seg_size(4));
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u) << "the app may run as another user";

  // The app comes second: its own LOOPWATCH_SLOTS does not resize it.
  Writer w(path, 16, "app-loop");
  ASSERT_TRUE(w.Collect());
  ASSERT_EQ(w.rc(), 0) << w.error();
  snaps = lwtest::MustSnapshot(creator);
  ASSERT_EQ(snaps.size(), 4u);
  ASSERT_GE(w.slot(), 0);
  EXPECT_STREQ(snaps[w.slot()].name, "app-loop");
  EXPECT_EQ(snaps[w.slot()].owner_alive, 1);
  EXPECT_EQ(snaps[w.slot()].beat_count, 1u);
  auto again = lwtest::MustSnapshot(plain);
  ASSERT_EQ(again.size(), 4u);
  EXPECT_STREQ(again[w.slot()].name, "app-loop");
  w.Release();
}

TEST(CreateOrder, WriterFirst) {
  TempDir dir;
  std::string path = dir.File("segment");
  Writer w(path, 3, "app-loop");
  ASSERT_TRUE(w.Collect());
  ASSERT_EQ(w.rc(), 0) << w.error();
  EXPECT_EQ(lwtest::FileSize(path), lw_seg_size(3));
  // Neither kind of reader re-creates or resizes an existing segment.
  for (uint32_t create : {0u, 8u}) {
    SegmentReader r(path, create);
    auto snaps = lwtest::MustSnapshot(r);
    ASSERT_EQ(snaps.size(), 3u);
    EXPECT_EQ(r.header().creator_pid, static_cast<uint32_t>(w.pid()));
    ASSERT_GE(w.slot(), 0);
    EXPECT_STREQ(snaps[w.slot()].name, "app-loop");
    EXPECT_EQ(snaps[w.slot()].owner_alive, 1);
  }
  EXPECT_EQ(lwtest::FileSize(path), lw_seg_size(3));
  w.Release();
}

// A creator that died between sizing the file and publishing the magic.
// Segments are created complete, then linked into place (segment.c,
// create_complete): a non-empty file without the magic at the path is not
// a half-made segment but someone's data (a wrong LOOPWATCH_SEGMENT naming a
// user's file). Readers call it not initialised; the library refuses it
// with a clear message and leaves it byte for byte as it was.
TEST(CreateOrder, FileWithoutTheMagicIsSomeonesDataAndIsLeftAlone) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> files;
  std::vector<uint8_t> half(lw_seg_size(2), 0xA5);  // sized like a segment
  memset(half.data(), 0, 8);
  files.push_back(half);
  std::vector<uint8_t> precious(100000, 0);  // precious.bin: zeros, then data
  for (size_t i = 50000; i < precious.size(); i++) precious[i] = uint8_t(i * 7);
  files.push_back(precious);
  files.push_back(std::vector<uint8_t>(4096, 0));  // zeros only, not a slot's worth

  for (size_t f = 0; f < files.size(); f++) {
    const std::string path = dir.File("precious-" + std::to_string(f) + ".bin");
    lwtest::WriteWholeFile(path, files[f]);
    struct stat before;
    ASSERT_EQ(stat(path.c_str(), &before), 0);
    for (uint32_t create : {0u, 4u}) {
      SegmentReader r(path, create);
      std::vector<loopwatch::SlotSnapshot> snaps;
      EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kNotInitialised)
          << "create_slots " << create << ": " << r.error();
      EXPECT_TRUE(snaps.empty());
    }
    Writer w(path, 8, "intruder");
    ASSERT_TRUE(w.Collect());
    EXPECT_EQ(w.rc(), -EPROTO) << w.error();
    EXPECT_NE(w.error().find("is not a loopwatch segment"), std::string::npos) << w.error();
    EXPECT_NE(w.error().find("left as it is"), std::string::npos) << w.error();
    EXPECT_NE(w.error().find("LOOPWATCH_SEGMENT"), std::string::npos) << w.error();
    EXPECT_EQ(lwtest::ReadWholeFile(path), files[f]) << "file " << f << " was changed";
    struct stat after;
    ASSERT_EQ(stat(path.c_str(), &after), 0);
    EXPECT_EQ(after.st_mode, before.st_mode) << "not even its mode";
    EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  }
}

// An empty file (a creator killed before sizing it, or `touch`).
TEST(CreateOrder, EmptyFileIsNotInitialisedUntilSomeoneCreatesIt) {
  TempDir dir;
  std::string path = dir.File("segment");
  lwtest::WriteWholeFile(path, {});
  SegmentReader plain(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  EXPECT_EQ(plain.Snapshot(&snaps), SegmentStatus::kNotInitialised)
      << plain.error();
  SegmentReader creator(path, 2);
  snaps = lwtest::MustSnapshot(creator);
  EXPECT_EQ(snaps.size(), 2u);
  snaps = lwtest::MustSnapshot(plain);
  EXPECT_EQ(snaps.size(), 2u) << "the first reader must follow";
}

// Several workers race to create the segment on a fresh path, with a
// creating reader (the sidecar) in the race too.
TEST(CreateOrder, ConcurrentCreatorsMakeOneSegmentWithDistinctSlots) {
  const int kRounds = 5, kWriters = 6;
  for (int round = 0; round < kRounds; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    TempDir dir;
    std::string path = dir.File("segment");
    Pipe go;
    std::vector<std::unique_ptr<Writer>> writers;
    for (int i = 0; i < kWriters; i++) {
      writers.push_back(std::make_unique<Writer>(
          path, 8, "worker-" + std::to_string(i), go.rd));
    }
    go.CloseRead();
    go.CloseWrite();  // all start at once
    SegmentReader sidecar(path, 8);
    std::vector<loopwatch::SlotSnapshot> snaps;
    sidecar.Snapshot(&snaps);  // may find it missing, half-made or done

    std::set<int> slots;
    for (auto& w : writers) {
      ASSERT_TRUE(w->Collect());
      EXPECT_EQ(w->rc(), 0) << w->error();
      EXPECT_TRUE(slots.insert(w->slot()).second) << "slot " << w->slot()
                                                  << " given twice";
    }
    EXPECT_EQ(lwtest::FileSize(path), lw_seg_size(8));
    snaps = lwtest::MustSnapshot(sidecar);
    ASSERT_EQ(snaps.size(), 8u);
    uint64_t id = sidecar.header().segment_id;
    int active = 0;
    for (auto& w : writers) {
      const auto& s = snaps[w->slot()];
      EXPECT_TRUE(s.valid);
      EXPECT_EQ(s.pid, static_cast<uint32_t>(w->pid()));
      EXPECT_EQ(s.owner_alive, 1);
      EXPECT_EQ(s.beat_count, 1u) << "a later creator wiped an earlier claim";
      active += s.state == LW_SLOT_ACTIVE;
    }
    EXPECT_EQ(active, kWriters);
    for (auto& w : writers) w->Release();
    snaps = lwtest::MustSnapshot(sidecar);
    EXPECT_EQ(sidecar.header().segment_id, id) << "re-initialised meanwhile";
  }
}

// ---- a segment removed and created again under a running reader ----------
// (an operator follows the advice "remove it so that it is created again",
// or the sidecar's emptyDir is recycled)

std::vector<uint8_t> SegmentBytes(uint32_t slots, uint64_t segment_id) {
  std::vector<uint8_t> b(lw_seg_size(slots), 0);
  auto* h = reinterpret_cast<lw_seg_header_t*>(b.data());
  h->magic = LW_SEG_MAGIC;
  h->version_major = LW_SEG_VERSION_MAJOR;
  h->version_minor = LW_SEG_VERSION_MINOR;
  h->header_size = LW_SEG_HEADER_SIZE;
  h->slot_size = LW_SEG_SLOT_SIZE;
  h->slot_count = slots;
  h->segment_id = segment_id;
  return b;
}

lw_seg_slot_t* SlotOf(std::vector<uint8_t>& b, uint32_t i) {
  return reinterpret_cast<lw_seg_slot_t*>(b.data() + LW_SEG_HEADER_SIZE +
                                          i * LW_SEG_SLOT_SIZE);
}

void ReplaceFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::string tmp = path + ".new";
  lwtest::WriteWholeFile(tmp, bytes);
  ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0);
}

// A file that was too short (or empty) when the reader first looked, then
// replaced by a good segment: the reader must look at the new file.
TEST(CreateOrder, ReaderFollowsAReplacedShortFile) {
  for (size_t short_size : {size_t{0}, size_t{100}}) {
    SCOPED_TRACE("short file of " + std::to_string(short_size) + " bytes");
    TempDir dir;
    std::string path = dir.File("segment");
    lwtest::WriteWholeFile(path, std::vector<uint8_t>(short_size, 0x11));
    SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    EXPECT_NE(r.Snapshot(&snaps), SegmentStatus::kOk);
    ASSERT_NO_FATAL_FAILURE(ReplaceFile(path, SegmentBytes(2, 42)));
    SegmentStatus st = r.Snapshot(&snaps);
    EXPECT_EQ(st, SegmentStatus::kOk)
        << "still reading the removed file: " << loopwatch::SegmentStatusName(st)
        << ": " << r.error();
    EXPECT_EQ(snaps.size(), 2u);
  }
}

// A segment removed and created again with the same geometry: nothing of
// the old one (beats, liveness, report text) may show through.
TEST(CreateOrder, RecreatedSegmentShowsNothingOfTheOldOne) {
  TempDir dir;
  std::string path = dir.File("segment");
  auto old_seg = SegmentBytes(2, 1);
  lw_seg_slot_t* s0 = SlotOf(old_seg, 0);
  s0->state = LW_SLOT_CLOSED;
  s0->generation = 2;
  strcpy(s0->name, "old-loop");
  s0->beat_count = 77;
  s0->last_beat_ns = 123456789;
  s0->report_seq = 6;
  s0->report_state = LW_REPORT_CLOSED;
  s0->stall_count = 1;
  s0->text_len = 8;
  memcpy(s0->text, "OLD-TEXT", 8);
  lw_seg_slot_t* s1 = SlotOf(old_seg, 1);
  s1->state = LW_SLOT_CLOSED;
  s1->generation = 2;
  strcpy(s1->name, "gone");
  s1->beat_count = 5;
  lwtest::WriteWholeFile(path, old_seg);

  // One vector across snapshots, as the sidecar's poll loop keeps it (the
  // reader reuses what it holds, e.g. report text whose sequence is
  // unchanged).
  SegmentReader r(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
  ASSERT_EQ(snaps.size(), 2u);
  ASSERT_EQ(snaps[0].report.text, "OLD-TEXT");
  ASSERT_EQ(snaps[1].beat_count, 5u);

  // The new segment: slot 0 at the same generation and report sequence but
  // another text; slot 1 never used.
  auto new_seg = SegmentBytes(2, 2);
  lw_seg_slot_t* n0 = SlotOf(new_seg, 0);
  n0->state = LW_SLOT_CLOSED;
  n0->generation = 2;
  strcpy(n0->name, "new-loop");
  n0->beat_count = 77;
  n0->report_seq = 6;
  n0->report_state = LW_REPORT_CLOSED;
  n0->stall_count = 1;
  n0->text_len = 8;
  memcpy(n0->text, "NEW-TEXT", 8);
  ASSERT_NO_FATAL_FAILURE(ReplaceFile(path, new_seg));

  ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
  ASSERT_EQ(snaps.size(), 2u);
  EXPECT_EQ(r.header().segment_id, 2u);
  EXPECT_STREQ(snaps[0].name, "new-loop");
  EXPECT_EQ(snaps[0].report.text, "NEW-TEXT")
      << "report text of the removed segment shown for the new one";
  EXPECT_EQ(snaps[1].state, LW_SLOT_FREE);
  EXPECT_STREQ(snaps[1].name, "");
  EXPECT_EQ(snaps[1].beat_count, 0u)
      << "beats of the removed segment shown on a free slot";
  EXPECT_EQ(snaps[1].report.text, "");
}

// A creating reader asked for more slots than the format allows must not
// create a segment that every writer then refuses as corrupt.
TEST(CreateOrder, ReaderNeverCreatesASegmentWritersRefuse) {
  TempDir dir;
  std::string path = dir.File("segment");
  SegmentReader r(path, LW_SEG_MAX_SLOTS + 1);
  std::vector<loopwatch::SlotSnapshot> snaps;
  SegmentStatus st = r.Snapshot(&snaps);
  if (st == SegmentStatus::kOk) {
    EXPECT_LE(snaps.size(), LW_SEG_MAX_SLOTS);
  }
  Writer w(path, 4, "app-loop");
  ASSERT_TRUE(w.Collect());
  EXPECT_EQ(w.rc(), 0) << "reader status " << loopwatch::SegmentStatusName(st)
                       << "; writer: " << w.error();
  w.Release();
}

}  // namespace

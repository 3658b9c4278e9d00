// SPDX-License-Identifier: Apache-2.0
//
// The reader against hostile bytes: random files, random headers with a
// valid magic, valid headers over garbage slots, truncated files, huge slot
// counts and text lengths, strings without a NUL, files rewritten and
// replaced under a long-lived reader, and a file truncated while the reader
// is reading it (SIGBUS). It must never crash or read out of bounds (ASan
// checks that in CI), must give the status a model of the validation rules
// (lib/FORMAT.md section 9) predicts, and everything it hands out must be
// bounded: NUL-terminated strings, text of at most 7423 bytes, enums in
// range.
//
// Seeded: set LOOPWATCH_HOSTILE_SEED=<n> to replay a failure; the seed in
// use is printed with every failure.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdarg>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "reader.h"
#include "segment_layout.h"
#include "test_support.h"

// ---- a hook inside the reader's slot scan -----------------------------------
//
// To truncate the file exactly while the reader is reading it, the test
// interposes fcntl(): the reader calls F_OFD_GETLK for each ACTIVE slot,
// after it has checked the file's size and between two slot reads. When
// armed, the interposer runs the hook first. Everything else goes straight
// to the system call. Not instrumented, and trivial while disarmed, because
// sanitizer runtimes call fcntl() during their own start-up.
namespace {
std::atomic<void (*)()> g_getlk_hook{nullptr};
}  // namespace

extern "C" {
__attribute__((no_sanitize("address", "thread", "undefined"))) int fcntl(
    int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (cmd == F_OFD_GETLK) {
    void (*hook)() = g_getlk_hook.exchange(nullptr);
    if (hook) hook();
  }
  return static_cast<int>(syscall(SYS_fcntl, fd, cmd, arg));
}
__attribute__((no_sanitize("address", "thread", "undefined"))) int fcntl64(
    int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return fcntl(fd, cmd, arg);
}
}

namespace {

using loopwatch::SegmentReader;
using loopwatch::SegmentStatus;
using loopwatch::SlotSnapshot;
using lwtest::TempDir;

uint64_t Seed() {
  const char* s = getenv("LOOPWATCH_HOSTILE_SEED");
  return s && *s ? strtoull(s, nullptr, 0) : UINT64_C(0x6c77686f7374696c);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t Next() { return g_(); }
  uint64_t Below(uint64_t n) { return n ? g_() % n : 0; }
  bool Chance(double p) { return std::uniform_real_distribution<>(0, 1)(g_) < p; }
  void Fill(uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = static_cast<uint8_t>(g_());
  }
  // Bytes with no zero among them: a string field without a NUL.
  void FillNonZero(uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = static_cast<uint8_t>(1 + g_() % 255);
  }

 private:
  std::mt19937_64 g_;
};

template <typename T>
void Put(std::vector<uint8_t>& b, size_t off, T v) {
  if (off + sizeof v <= b.size()) memcpy(b.data() + off, &v, sizeof v);
}
template <typename T>
T Get(const std::vector<uint8_t>& b, size_t off) {
  T v{};
  if (off + sizeof v <= b.size()) memcpy(&v, b.data() + off, sizeof v);
  return v;
}

// What the reader must say about these bytes (lib/FORMAT.md section 9).
SegmentStatus Expected(const std::vector<uint8_t>& b) {
  if (b.empty()) return SegmentStatus::kNotInitialised;
  if (b.size() < LW_SEG_HEADER_SIZE) return SegmentStatus::kCorrupt;
  uint64_t magic = Get<uint64_t>(b, 0);
  if (magic == 0) return SegmentStatus::kNotInitialised;
  if (magic != LW_SEG_MAGIC) return SegmentStatus::kBadMagic;
  if (Get<uint16_t>(b, 8) != LW_SEG_VERSION_MAJOR) {
    return SegmentStatus::kVersionMismatch;
  }
  uint32_t slots = Get<uint32_t>(b, 20);
  if (Get<uint32_t>(b, 12) != LW_SEG_HEADER_SIZE ||
      Get<uint32_t>(b, 16) != LW_SEG_SLOT_SIZE || slots < 1 ||
      slots > LW_SEG_MAX_SLOTS || lw_seg_size(slots) > b.size()) {
    return SegmentStatus::kCorrupt;
  }
  return SegmentStatus::kOk;
}

bool Terminated(const char* s, size_t size) {
  return memchr(s, '\0', size) != nullptr;
}

// Everything a snapshot hands out is bounded and in range.
void CheckSnapshots(const SegmentReader& r, SegmentStatus st,
                    const std::vector<SlotSnapshot>& snaps, uint64_t file_size) {
  EXPECT_EQ(r.status(), st);
  if (st != SegmentStatus::kOk) {
    EXPECT_TRUE(snaps.empty()) << "slots handed out with status "
                               << loopwatch::SegmentStatusName(st);
    EXPECT_FALSE(r.error().empty()) << "a failure without a message";
    return;
  }
  uint32_t n = r.header().slot_count;
  ASSERT_GE(n, 1u);
  ASSERT_LE(n, LW_SEG_MAX_SLOTS);
  EXPECT_LE(lw_seg_size(n), file_size);
  ASSERT_EQ(snaps.size(), n);
  for (uint32_t i = 0; i < n; i++) {
    const SlotSnapshot& s = snaps[i];
    EXPECT_EQ(s.index, i);
    EXPECT_TRUE(Terminated(s.name, sizeof s.name)) << "slot " << i << " name";
    EXPECT_TRUE(Terminated(s.kind, sizeof s.kind)) << "slot " << i << " kind";
    EXPECT_TRUE(Terminated(s.activity, sizeof s.activity)) << "slot " << i;
    EXPECT_TRUE(Terminated(s.report.syscall_name, sizeof s.report.syscall_name));
    EXPECT_TRUE(Terminated(s.report.wchan, sizeof s.report.wchan));
    EXPECT_TRUE(Terminated(s.report.activity, sizeof s.report.activity));
    EXPECT_LE(s.report.text.size(), LW_REPORT_TEXT_SIZE - 1u);
    EXPECT_GE(s.owner_alive, -1);
    EXPECT_LE(s.owner_alive, 1);
    if (!s.valid) continue;
    EXPECT_LE(s.state, LW_SLOT_CLOSED) << "slot " << i;
    EXPECT_FALSE(s.claiming) << "slot " << i;
    EXPECT_LE(s.report.state, LW_REPORT_CLOSED) << "slot " << i;
    EXPECT_LE(s.report.stall_class, LW_CLASS_GIL) << "slot " << i;
    if (s.state == LW_SLOT_FREE) {
      EXPECT_EQ(s.beat_count, 0u) << "slot " << i;
      EXPECT_EQ(s.owner_alive, 0) << "slot " << i;
      EXPECT_TRUE(s.report.text.empty()) << "slot " << i;
    } else {
      EXPECT_EQ(s.owner_alive, 0) << "nobody holds a lock in this test";
    }
  }
}

// A random file, from pure noise to a valid segment with hostile slots.
std::vector<uint8_t> RandomSegment(Rng& rng) {
  size_t size;
  switch (rng.Below(6)) {
    case 0: size = rng.Below(LW_SEG_HEADER_SIZE + 1); break;       // <= header
    case 1: size = LW_SEG_HEADER_SIZE + rng.Below(LW_SEG_SLOT_SIZE); break;
    case 2: size = lw_seg_size(1 + rng.Below(3)) - rng.Below(9); break;
    default: size = lw_seg_size(1 + rng.Below(3)) + rng.Below(100); break;
  }
  std::vector<uint8_t> b(size);
  rng.Fill(b.data(), b.size());
  if (rng.Chance(0.85)) Put<uint64_t>(b, 0, LW_SEG_MAGIC);
  else if (rng.Chance(0.3)) Put<uint64_t>(b, 0, 0);
  if (rng.Chance(0.85)) Put<uint16_t>(b, 8, LW_SEG_VERSION_MAJOR);
  if (rng.Chance(0.8)) Put<uint32_t>(b, 12, LW_SEG_HEADER_SIZE);
  if (rng.Chance(0.8)) Put<uint32_t>(b, 16, LW_SEG_SLOT_SIZE);
  uint32_t fit = size > LW_SEG_HEADER_SIZE
                     ? static_cast<uint32_t>((size - LW_SEG_HEADER_SIZE) /
                                             LW_SEG_SLOT_SIZE)
                     : 0;
  switch (rng.Below(5)) {
    case 0: Put<uint32_t>(b, 20, static_cast<uint32_t>(rng.Next())); break;
    case 1: {
      const uint32_t huge[] = {0, LW_SEG_MAX_SLOTS, LW_SEG_MAX_SLOTS + 1,
                               0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu,
                               fit + 1, 0x00080000u};
      Put<uint32_t>(b, 20, huge[rng.Below(std::size(huge))]);
      break;
    }
    default:
      if (fit) Put<uint32_t>(b, 20, 1 + static_cast<uint32_t>(rng.Below(fit)));
  }
  // Slots that get past the first checks, hostile inside.
  for (uint32_t i = 0; i < fit; i++) {
    size_t s = LW_SEG_HEADER_SIZE + static_cast<size_t>(i) * LW_SEG_SLOT_SIZE;
    if (rng.Chance(0.2)) continue;  // pure noise
    Put<uint32_t>(b, s + offsetof(lw_seg_slot_t, state),
                  static_cast<uint32_t>(rng.Below(4)));
    uint32_t gen = static_cast<uint32_t>(rng.Next());
    Put<uint32_t>(b, s + offsetof(lw_seg_slot_t, generation),
                  rng.Chance(0.8) ? gen & ~1u : gen);
    for (size_t seq : {offsetof(lw_seg_slot_t, beat_seq),
                       offsetof(lw_seg_slot_t, activity_seq),
                       offsetof(lw_seg_slot_t, report_seq)}) {
      uint64_t v = rng.Next();
      Put<uint64_t>(b, s + seq, rng.Chance(0.85) ? v & ~uint64_t{1} : v);
    }
    const uint32_t lens[] = {0, 1, 7, 8, LW_REPORT_TEXT_SIZE - 1,
                             LW_REPORT_TEXT_SIZE, LW_REPORT_TEXT_SIZE + 1,
                             0x7FFFFFFFu, 0xFFFFFFFFu};
    Put<uint32_t>(b, s + offsetof(lw_seg_slot_t, text_len),
                  rng.Chance(0.5) ? lens[rng.Below(std::size(lens))]
                                  : static_cast<uint32_t>(rng.Next()));
    for (auto [off, len] : {std::pair<size_t, size_t>{offsetof(lw_seg_slot_t, name), LW_SLOT_NAME_SIZE},
                            {offsetof(lw_seg_slot_t, kind), LW_SLOT_KIND_SIZE},
                            {offsetof(lw_seg_slot_t, activity), LW_ACTIVITY_SIZE},
                            {offsetof(lw_seg_slot_t, syscall_name), LW_SYSCALL_NAME_SIZE},
                            {offsetof(lw_seg_slot_t, wchan), LW_WCHAN_SIZE},
                            {offsetof(lw_seg_slot_t, report_activity), LW_ACTIVITY_SIZE}}) {
      if (s + off + len <= b.size() && rng.Chance(0.7)) {
        rng.FillNonZero(b.data() + s + off, len);
      }
    }
  }
  return b;
}

// Writes `bytes` to `path`: in place (same inode, as a writer would) or by
// replacing the file (a new inode).
void Store(const std::string& path, const std::vector<uint8_t>& bytes,
           bool replace) {
  if (replace) {
    std::string tmp = path + ".tmp";
    lwtest::WriteWholeFile(tmp, bytes);
    ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0);
  } else {
    lwtest::WriteWholeFile(path, bytes);
  }
}

TEST(Hostile, RandomSegmentsNeverCrashTheReader) {
  const uint64_t seed = Seed();
  SCOPED_TRACE("LOOPWATCH_HOSTILE_SEED=" + std::to_string(seed));
  const int kIterations = lwtest::UnderSanitizer() ? 1500 : 3000;
  Rng rng(seed);
  TempDir dir;
  std::string path = dir.File("segment");
  // One reader that lives through every file (remaps, replacements, cached
  // report text), and a fresh one per file.
  SegmentReader long_lived(path);
  std::vector<SlotSnapshot> kept;
  int ok = 0;
  for (int it = 0; it < kIterations; it++) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    std::vector<uint8_t> bytes = RandomSegment(rng);
    ASSERT_NO_FATAL_FAILURE(Store(path, bytes, rng.Chance(0.3)));
    SegmentStatus want = Expected(bytes);

    SegmentReader fresh(path);
    std::vector<SlotSnapshot> snaps;
    SegmentStatus st = fresh.Snapshot(&snaps);
    ASSERT_EQ(st, want) << "fresh reader: " << fresh.error();
    ASSERT_NO_FATAL_FAILURE(CheckSnapshots(fresh, st, snaps, bytes.size()));

    st = long_lived.Snapshot(&kept);
    ASSERT_EQ(st, want) << "long-lived reader: " << long_lived.error();
    ASSERT_NO_FATAL_FAILURE(CheckSnapshots(long_lived, st, kept, bytes.size()));
    ok += st == SegmentStatus::kOk;
  }
  // The generator reaches the slot code often enough to matter (about one
  // file in six is a valid segment).
  EXPECT_GT(ok, kIterations / 10);
  printf("%d of %d files read as valid segments\n", ok, kIterations);
}

std::vector<uint8_t> ValidSegment(uint32_t slots) {
  std::vector<uint8_t> b(lw_seg_size(slots), 0);
  Put<uint64_t>(b, 0, LW_SEG_MAGIC);
  Put<uint16_t>(b, 8, LW_SEG_VERSION_MAJOR);
  Put<uint32_t>(b, 12, LW_SEG_HEADER_SIZE);
  Put<uint32_t>(b, 16, LW_SEG_SLOT_SIZE);
  Put<uint32_t>(b, 20, slots);
  Put<uint64_t>(b, 24, 0x1234);
  return b;
}

TEST(Hostile, TruncatedFilesOfEverySize) {
  // A valid two-slot segment, slot 0 in use with a report and text.
  std::vector<uint8_t> full = ValidSegment(2);
  size_t s0 = LW_SEG_HEADER_SIZE;
  Put<uint32_t>(full, s0 + offsetof(lw_seg_slot_t, state), LW_SLOT_CLOSED);
  Put<uint32_t>(full, s0 + offsetof(lw_seg_slot_t, generation), 2);
  memcpy(full.data() + s0 + offsetof(lw_seg_slot_t, name), "loop", 4);
  Put<uint32_t>(full, s0 + offsetof(lw_seg_slot_t, report_state), LW_REPORT_CLOSED);
  Put<uint32_t>(full, s0 + offsetof(lw_seg_slot_t, text_len), 5);
  memcpy(full.data() + s0 + LW_REPORT_TEXT_OFFSET, "stack", 5);
  TempDir dir;
  std::string path = dir.File("segment");
  const size_t sizes[] = {0, 1, 7, 8, 23, 24, 255, 256, 257, 256 + 100,
                          256 + 767, 256 + 768, 256 + 8191, 256 + 8192,
                          256 + 8192 + 1, 256 + 8192 + 4000,
                          256 + 2 * 8192 - 1};
  SegmentReader long_lived(path);
  std::vector<SlotSnapshot> kept;
  for (size_t size : sizes) {
    SCOPED_TRACE("file of " + std::to_string(size) + " bytes");
    std::vector<uint8_t> b(full.begin(), full.begin() + size);
    ASSERT_NO_FATAL_FAILURE(Store(path, b, false));
    SegmentStatus want = size == 0 ? SegmentStatus::kNotInitialised
                                   : SegmentStatus::kCorrupt;
    SegmentReader r(path);
    std::vector<SlotSnapshot> snaps;
    EXPECT_EQ(r.Snapshot(&snaps), want) << r.error();
    CheckSnapshots(r, want, snaps, size);
    EXPECT_EQ(long_lived.Snapshot(&kept), want) << long_lived.error();
    CheckSnapshots(long_lived, want, kept, size);
  }
  // Whole again: both read it, text included.
  ASSERT_NO_FATAL_FAILURE(Store(path, full, false));
  EXPECT_EQ(long_lived.Snapshot(&kept), SegmentStatus::kOk) << long_lived.error();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].report.text, "stack");
}

TEST(Hostile, HugeGeometryAndLengths) {
  TempDir dir;
  std::string path = dir.File("segment");
  // The largest legal segment, sparse: every slot free.
  {
    std::vector<uint8_t> hdr = ValidSegment(1);
    Put<uint32_t>(hdr, 20, LW_SEG_MAX_SLOTS);
    hdr.resize(LW_SEG_HEADER_SIZE);
    lwtest::WriteWholeFile(path, hdr);
    ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(lw_seg_size(LW_SEG_MAX_SLOTS))), 0);
    SegmentReader r(path);
    std::vector<SlotSnapshot> snaps;
    ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
    EXPECT_EQ(snaps.size(), LW_SEG_MAX_SLOTS);
  }
  // Slot counts past the limit or past the file, with a big file.
  for (uint32_t n : {LW_SEG_MAX_SLOTS + 1, 0x7FFFFFFFu, 0xFFFFFFFFu, 0u}) {
    std::vector<uint8_t> hdr = ValidSegment(1);
    Put<uint32_t>(hdr, 20, n);
    lwtest::WriteWholeFile(path, hdr);
    ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(lw_seg_size(LW_SEG_MAX_SLOTS + 1))), 0);
    SegmentReader r(path);
    std::vector<SlotSnapshot> snaps;
    EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kCorrupt) << n;
    EXPECT_TRUE(snaps.empty());
    EXPECT_NE(r.error().find(std::to_string(n)), std::string::npos) << r.error();
  }
  // text_len past the text area, strings without NULs, enums out of range.
  for (uint32_t len : {LW_REPORT_TEXT_SIZE, LW_REPORT_TEXT_SIZE + 1, 0xFFFFFFFFu}) {
    std::vector<uint8_t> b = ValidSegment(1);
    size_t s = LW_SEG_HEADER_SIZE;
    Put<uint32_t>(b, s + offsetof(lw_seg_slot_t, state), LW_SLOT_CLOSED);
    Put<uint32_t>(b, s + offsetof(lw_seg_slot_t, report_state), 77);
    Put<uint32_t>(b, s + offsetof(lw_seg_slot_t, stall_class), 99);
    Put<uint32_t>(b, s + offsetof(lw_seg_slot_t, text_len), len);
    memset(b.data() + s + offsetof(lw_seg_slot_t, name), 'N', LW_SLOT_NAME_SIZE);
    memset(b.data() + s + offsetof(lw_seg_slot_t, kind), 'K', LW_SLOT_KIND_SIZE);
    memset(b.data() + s + offsetof(lw_seg_slot_t, activity), 'A', LW_ACTIVITY_SIZE);
    memset(b.data() + s + offsetof(lw_seg_slot_t, syscall_name), 'S',
           LW_SYSCALL_NAME_SIZE + LW_WCHAN_SIZE + LW_ACTIVITY_SIZE);
    memset(b.data() + s + LW_REPORT_TEXT_OFFSET, 'T', LW_REPORT_TEXT_SIZE);
    lwtest::WriteWholeFile(path, b);
    SegmentReader r(path);
    std::vector<SlotSnapshot> snaps;
    ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
    CheckSnapshots(r, SegmentStatus::kOk, snaps, b.size());
    ASSERT_TRUE(snaps[0].valid);
    EXPECT_EQ(snaps[0].report.text.size(), LW_REPORT_TEXT_SIZE - 1u);
    EXPECT_EQ(snaps[0].report.text, std::string(LW_REPORT_TEXT_SIZE - 1, 'T'));
    EXPECT_EQ(std::string(snaps[0].name), std::string(LW_SLOT_NAME_SIZE - 1, 'N'));
    EXPECT_EQ(snaps[0].report.state, LW_REPORT_NONE);
    EXPECT_EQ(snaps[0].report.stall_class, LW_CLASS_UNKNOWN);
  }
  // Unknown slot states make the slot invalid, not the segment.
  std::vector<uint8_t> b = ValidSegment(2);
  Put<uint32_t>(b, LW_SEG_HEADER_SIZE + offsetof(lw_seg_slot_t, state), 3);
  lwtest::WriteWholeFile(path, b);
  SegmentReader r(path);
  std::vector<SlotSnapshot> snaps;
  ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk);
  EXPECT_FALSE(snaps[0].valid);
  EXPECT_TRUE(snaps[1].valid);
}

// ---- truncated while mapped --------------------------------------------------

std::string g_truncate_path;
off_t g_truncate_to = 0;
void TruncateNow() {
  // Not through the reader's descriptor: an independent writer does it.
  truncate(g_truncate_path.c_str(), g_truncate_to);
}

TEST(Hostile, FileTruncatedWhileTheReaderReadsItRaisesNoCrash) {
  TempDir dir;
  std::string path = dir.File("segment");
  // 64 slots; slot 0 ACTIVE, so that the reader tests its lock (the hook)
  // after reading slot 0 and before slot 1, which the truncation removes.
  std::vector<uint8_t> full = ValidSegment(64);
  Put<uint32_t>(full, LW_SEG_HEADER_SIZE + offsetof(lw_seg_slot_t, state),
                LW_SLOT_ACTIVE);
  Put<uint32_t>(full, LW_SEG_HEADER_SIZE + offsetof(lw_seg_slot_t, generation), 2);
  lwtest::WriteWholeFile(path, full);
  SegmentReader r(path);
  std::vector<SlotSnapshot> snaps;
  ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
  ASSERT_EQ(snaps.size(), 64u);

  for (off_t to : {off_t{4096}, off_t{0}, off_t{300}, off_t{8448 + 4096}}) {
    SCOPED_TRACE("truncated to " + std::to_string(to));
    g_truncate_path = path;
    g_truncate_to = to;
    g_getlk_hook = TruncateNow;
    SegmentStatus st = r.Snapshot(&snaps);
    EXPECT_EQ(g_getlk_hook.load(), nullptr) << "the hook never ran";
    g_getlk_hook = nullptr;
    // Not ok, says it was cut, and says what is there now (empty, short).
    EXPECT_TRUE(st == SegmentStatus::kCorrupt ||
                st == SegmentStatus::kNotInitialised) << r.error();
    EXPECT_NE(r.error().find("truncated"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("; now "), std::string::npos) << r.error();
    EXPECT_TRUE(snaps.empty());
    // Next poll: the short file, seen as such.
    SegmentStatus again = r.Snapshot(&snaps);
    EXPECT_EQ(again, to == 0 ? SegmentStatus::kNotInitialised
                             : SegmentStatus::kCorrupt)
        << r.error();
    // Restored: the same reader reads it again.
    lwtest::WriteWholeFile(path, full);
    ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
    EXPECT_EQ(snaps.size(), 64u);
  }
}

// The same, from another thread at random moments: no crash, bounded output.
TEST(Hostile, FileTruncatedConcurrentlyNeverCrashes) {
  TempDir dir;
  std::string path = dir.File("segment");
  std::vector<uint8_t> full = ValidSegment(32);
  for (uint32_t i = 0; i < 32; i += 3) {
    size_t s = LW_SEG_HEADER_SIZE + i * LW_SEG_SLOT_SIZE;
    Put<uint32_t>(full, s + offsetof(lw_seg_slot_t, state), LW_SLOT_CLOSED);
    Put<uint32_t>(full, s + offsetof(lw_seg_slot_t, text_len), 4000);
  }
  lwtest::WriteWholeFile(path, full);
  std::atomic<bool> stop{false};
  std::atomic<int> oks{0};
  std::thread truncator([&] {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    // Rounds of cutting it short and writing it back whole (re-extending
    // alone would leave zeros, not a segment), then leaving it whole until
    // the reader has had one good snapshot: the reader makes progress however
    // slow the build (sanitizers, a loaded CI machine) and races every round.
    for (uint64_t k = 0; !stop; k++) {
      for (int j = 0; j < 200 && !stop; j++) {
        ftruncate(fd, static_cast<off_t>(4096 * ((k + j) % 7)));
        pwrite(fd, full.data(), full.size(), 0);
      }
      for (int seen = oks.load(); !stop && oks.load() == seen;)
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    close(fd);
  });
  // Stops and joins the truncator on every way out, a failed ASSERT included.
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } joiner{stop, truncator};
  SegmentReader r(path);
  std::vector<SlotSnapshot> snaps;
  int trips = 0;
  // 0.5 s and at least 10 good snapshots; a hang shows as a failure at 20 s.
  auto start = lwtest::Clock::now();
  for (;;) {
    auto elapsed = lwtest::Clock::now() - start;
    if (elapsed > std::chrono::milliseconds(500) && oks >= 10) break;
    if (elapsed > std::chrono::seconds(20)) break;
    SegmentStatus st = r.Snapshot(&snaps);
    if (st == SegmentStatus::kOk) {
      oks++;
      ASSERT_EQ(snaps.size(), 32u);
      for (const auto& s : snaps) {
        ASSERT_LE(s.report.text.size(), LW_REPORT_TEXT_SIZE - 1u);
        ASSERT_TRUE(Terminated(s.name, sizeof s.name));
      }
    } else {
      ASSERT_TRUE(snaps.empty());
      trips += r.error().find("truncated") != std::string::npos;
    }
  }
  stop = true;
  truncator.join();  // its last write left the file whole
  printf("%d good snapshots, %d faults caught\n", oks.load(), trips);
  EXPECT_GE(oks, 10);
  EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
//
// The segment format v1, byte by byte: a segment written by libloopwatch from
// fixed inputs is compared with the golden dump in
// golden/segment_v1_header.hex, and every field's documented offset is
// checked twice: against offsetof() (as the static_asserts do), and by
// finding a value the test wrote at that byte offset of the file, read with
// read(2), not through the library's mapping.
//
// Changing the golden file is a format change: it needs a new minor version
// (fields carved out of reserved bytes) or a new major version, and
// lib/FORMAT.md updated to match. To regenerate it after such a change:
//   LOOPWATCH_UPDATE_GOLDEN=1 ./golden_test --gtest_filter=Golden.*
// then review the diff line by line.
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
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

// ---- fixed inputs --------------------------------------------------------
// Beat times lie far in the future of CLOCK_MONOTONIC so that the watchdog
// never sees the loop as silent (it ignores a last beat later than now) and
// the report area stays as the claim left it.
constexpr uint32_t kSlots = 2;
constexpr char kName[] = "golden-loop";
constexpr char kKind[] = "asio";
constexpr uint64_t kInterval = 100000000;     // 100 ms
constexpr uint64_t kReportAfter = 250000000;  // 250 ms
constexpr uint64_t kT1 = UINT64_C(0x4000000000000000);
constexpr uint64_t kLag2 = 3000000;   // 3 ms: bucket 2 (<= 5 ms)
constexpr uint64_t kLag3 = 40000000;  // 40 ms: bucket 5 (<= 50 ms)
constexpr uint64_t kT2 = kT1 + kInterval + kLag2;
constexpr uint64_t kT3 = kT2 + kInterval + kLag3;
constexpr char kActivity[] = "GET /golden";
constexpr char kContainer[] = "golden-app";  // LOOPWATCH_CONTAINER

// ---- the mask ------------------------------------------------------------
// Bytes that differ from run to run (random or time- or pid-dependent) and
// are therefore not compared; the golden file shows them as "xx", and the
// test checks that the file's "xx" bytes are exactly these.
struct MaskRange {
  const char* section;
  size_t begin, end;  // [begin, end)
  const char* why;
};
constexpr MaskRange kMask[] = {
    {"header", 24, 32, "segment_id: random per creation"},
    {"header", 32, 40, "created_mono_ns: creation time"},
    {"header", 40, 48, "created_real_ns: creation time"},
    {"header", 48, 52, "creator_pid"},
    {"slot0", 8, 12, "pid of the owner"},
    {"slot0", 12, 16, "tid of the loop thread"},
    {"slot0", 16, 24, "claim_token: random per claim"},
    {"slot0", 24, 32, "opened_ns: time of lw_loop_open"},
};
// Slot 0 is dumped up to the report text; the text (768..8191) must be zero.
constexpr size_t kSlotDumpBytes = LW_REPORT_TEXT_OFFSET;

bool Masked(const std::string& section, size_t off) {
  for (const MaskRange& m : kMask) {
    if (section == m.section && off >= m.begin && off < m.end) return true;
  }
  return false;
}

uint64_t Le(const std::vector<uint8_t>& b, size_t off, size_t size) {
  uint64_t v = 0;
  for (size_t i = 0; i < size; i++) v |= uint64_t{b.at(off + i)} << (8 * i);
  return v;
}

std::string Str(const std::vector<uint8_t>& b, size_t off, size_t size) {
  std::string s(reinterpret_cast<const char*>(b.data() + off), size);
  return s.substr(0, s.find('\0'));
}

// Creates the golden segment in `path` (in an isolated process).
void MakeGoldenSegment(const std::string& path, lw_loop_t** out) {
  lwtest::SetSegmentEnv(path, kSlots);
  setenv("LOOPWATCH_CONTAINER", kContainer, 1);
  lw_loop_options_t o{};
  o.struct_size = sizeof o;
  o.name = kName;
  o.kind = kKind;
  o.interval_ns = kInterval;
  o.report_after_ns = kReportAfter;
  ASSERT_EQ(lw_loop_open_ex(&o, out), 0) << lw_last_error();
  ASSERT_NE(*out, nullptr);
  ASSERT_EQ(lw_beat_at(*out, kT1), 0);
  ASSERT_EQ(lw_beat_at(*out, kT2), 0);
  ASSERT_EQ(lw_beat_at(*out, kT3), 0);
  ASSERT_EQ(lw_set_ready(*out, 0), 0);
  ASSERT_EQ(lw_set_activity(*out, kActivity), 0);
}

// ---- the golden file -----------------------------------------------------

struct Dump {
  // section -> bytes; -1 for a masked byte
  std::vector<std::pair<std::string, std::vector<int>>> sections;
  std::vector<int>* Find(const std::string& name) {
    for (auto& s : sections) {
      if (s.first == name) return &s.second;
    }
    return nullptr;
  }
};

std::string FormatDump(const std::string& section,
                       const std::vector<uint8_t>& bytes) {
  std::string out;
  char buf[32];
  for (size_t off = 0; off < bytes.size(); off += 16) {
    snprintf(buf, sizeof buf, "%-6s %04zx:", section.c_str(), off);
    out += buf;
    for (size_t i = off; i < off + 16 && i < bytes.size(); i++) {
      if (Masked(section, i)) {
        out += " xx";
      } else {
        snprintf(buf, sizeof buf, " %02x", bytes[i]);
        out += buf;
      }
    }
    out += "\n";
  }
  return out;
}

std::string GoldenText(const std::vector<uint8_t>& header,
                       const std::vector<uint8_t>& slot0) {
  std::ostringstream o;
  o << "# Golden dump of a loopwatch segment, format v1.1 (lib/FORMAT.md).\n"
       "# Checked by tests/lib/golden_test.cc; regenerate only for a format\n"
       "# change: LOOPWATCH_UPDATE_GOLDEN=1 ./golden_test, then review.\n"
       "#\n"
       "# Inputs: LOOPWATCH_SLOTS=2; lw_loop_open_ex(name \"golden-loop\",\n"
       "# kind \"asio\", interval_ns 100000000, report_after_ns 250000000);\n"
       "# lw_beat_at at T1 = 0x4000000000000000, T2 = T1 + 100 ms + 3 ms,\n"
       "# T3 = T2 + 100 ms + 40 ms (lags 3 ms and 40 ms); lw_set_ready(0);\n"
       "# lw_set_activity(\"GET /golden\").\n"
       "#\n"
       "# \"header\" is bytes 0..255 of the file; \"slot0\" is bytes 0..767 of\n"
       "# slot 0 (file offset 256), up to the report text, which is all zero.\n"
       "# Little-endian. Bytes shown as xx differ per run and are masked:\n";
  for (const MaskRange& m : kMask) {
    o << "#   " << m.section << " " << m.begin << ".." << m.end - 1 << "  "
      << m.why << "\n";
  }
  o << FormatDump("header", header) << FormatDump("slot0", slot0);
  return o.str();
}

bool ParseGolden(const std::string& text, Dump* dump, std::string* err) {
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    lineno++;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string section, offtok;
    ls >> section >> offtok;
    if (offtok.empty() || offtok.back() != ':') {
      *err = "line " + std::to_string(lineno) + ": expected \"section off:\"";
      return false;
    }
    size_t off = std::stoul(offtok.substr(0, offtok.size() - 1), nullptr, 16);
    std::vector<int>* bytes = dump->Find(section);
    if (!bytes) {
      dump->sections.push_back({section, {}});
      bytes = &dump->sections.back().second;
    }
    if (off != bytes->size()) {
      *err = "line " + std::to_string(lineno) + ": offset out of sequence";
      return false;
    }
    std::string tok;
    while (ls >> tok) {
      if (tok == "xx") {
        bytes->push_back(-1);
      } else {
        bytes->push_back(static_cast<int>(std::stoul(tok, nullptr, 16)));
      }
    }
  }
  return true;
}

void CompareWithGolden(const std::string& section,
                       const std::vector<uint8_t>& actual,
                       const std::vector<int>& golden) {
  ASSERT_EQ(golden.size(), actual.size()) << section;
  int mismatches = 0;
  for (size_t i = 0; i < actual.size(); i++) {
    bool masked = Masked(section, i);
    EXPECT_EQ(golden[i] == -1, masked)
        << section << " byte " << i
        << ": the golden file's mask differs from the test's mask";
    if (masked || golden[i] == -1) continue;
    if (golden[i] != actual[i] && ++mismatches <= 16) {
      ADD_FAILURE() << section << " byte " << i << " (0x" << std::hex << i
                    << "): golden 0x" << golden[i] << ", segment 0x"
                    << int{actual[i]};
    }
  }
  EXPECT_EQ(mismatches, 0) << section << ": bytes differ from the golden dump";
}

TEST(Golden, SegmentMatchesGoldenDump) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lw_loop_t* loop = nullptr;
    MakeGoldenSegment(path, &loop);
    if (::testing::Test::HasFatalFailure()) return;

    ASSERT_EQ(lwtest::FileSize(path), lw_seg_size(kSlots));
    auto header = lwtest::ReadFileBytes(path, 0, LW_SEG_HEADER_SIZE);
    auto slot0 = lwtest::ReadFileBytes(path, LW_SEG_HEADER_SIZE, kSlotDumpBytes);
    auto text = lwtest::ReadFileBytes(path, LW_SEG_HEADER_SIZE + kSlotDumpBytes,
                                      LW_REPORT_TEXT_SIZE);
    auto slot1 = lwtest::ReadFileBytes(
        path, LW_SEG_HEADER_SIZE + LW_SEG_SLOT_SIZE, LW_SEG_SLOT_SIZE);
    ASSERT_EQ(lw_loop_close(loop), 0);

    std::string generated = GoldenText(header, slot0);
    if (const char* u = getenv("LOOPWATCH_UPDATE_GOLDEN"); u && *u == '1') {
      std::ofstream(LWTEST_GOLDEN_FILE) << generated;
      printf("wrote %s\n", LWTEST_GOLDEN_FILE);
    }
    std::ifstream f(LWTEST_GOLDEN_FILE);
    ASSERT_TRUE(f.good()) << "cannot read " << LWTEST_GOLDEN_FILE;
    std::stringstream ss;
    ss << f.rdbuf();
    Dump golden;
    std::string err;
    ASSERT_TRUE(ParseGolden(ss.str(), &golden, &err)) << err;
    ASSERT_NE(golden.Find("header"), nullptr);
    ASSERT_NE(golden.Find("slot0"), nullptr);
    CompareWithGolden("header", header, *golden.Find("header"));
    CompareWithGolden("slot0", slot0, *golden.Find("slot0"));
    if (::testing::Test::HasFailure()) {
      printf("segment as written now:\n%s", generated.c_str());
    }
    for (size_t i = 0; i < text.size(); i++) {
      ASSERT_EQ(text[i], 0) << "report text byte " << i << " not zero";
    }
    for (size_t i = 0; i < slot1.size(); i++) {
      ASSERT_EQ(slot1[i], 0) << "unused slot 1, byte " << i << " not zero";
    }
  });
}

// ---- documented offsets -----------------------------------------------------

struct FieldDoc {
  const char* name;
  size_t offset, size;     // as documented (segment_layout.h, lib/FORMAT.md)
  size_t actual_offset, actual_size;  // offsetof / sizeof
};
#define LW_FIELD(type, member, off, size)                              \
  FieldDoc {                                                           \
    #member, off, size, offsetof(type, member), sizeof(((type*)nullptr)->member) \
  }

const FieldDoc kHeaderFields[] = {
    LW_FIELD(lw_seg_header_t, magic, 0, 8),
    LW_FIELD(lw_seg_header_t, version_major, 8, 2),
    LW_FIELD(lw_seg_header_t, version_minor, 10, 2),
    LW_FIELD(lw_seg_header_t, header_size, 12, 4),
    LW_FIELD(lw_seg_header_t, slot_size, 16, 4),
    LW_FIELD(lw_seg_header_t, slot_count, 20, 4),
    LW_FIELD(lw_seg_header_t, segment_id, 24, 8),
    LW_FIELD(lw_seg_header_t, created_mono_ns, 32, 8),
    LW_FIELD(lw_seg_header_t, created_real_ns, 40, 8),
    LW_FIELD(lw_seg_header_t, creator_pid, 48, 4),
    LW_FIELD(lw_seg_header_t, reserved0, 52, 4),
    LW_FIELD(lw_seg_header_t, reserved, 56, 200),
};

const FieldDoc kSlotFields[] = {
    LW_FIELD(lw_seg_slot_t, state, 0, 4),
    LW_FIELD(lw_seg_slot_t, generation, 4, 4),
    LW_FIELD(lw_seg_slot_t, pid, 8, 4),
    LW_FIELD(lw_seg_slot_t, tid, 12, 4),
    LW_FIELD(lw_seg_slot_t, claim_token, 16, 8),
    LW_FIELD(lw_seg_slot_t, opened_ns, 24, 8),
    LW_FIELD(lw_seg_slot_t, interval_ns, 32, 8),
    LW_FIELD(lw_seg_slot_t, report_after_ns, 40, 8),
    LW_FIELD(lw_seg_slot_t, name, 48, 64),
    LW_FIELD(lw_seg_slot_t, kind, 112, 16),
    LW_FIELD(lw_seg_slot_t, beat_seq, 128, 8),
    LW_FIELD(lw_seg_slot_t, beat_count, 136, 8),
    LW_FIELD(lw_seg_slot_t, last_beat_ns, 144, 8),
    LW_FIELD(lw_seg_slot_t, lag_max_ns, 152, 8),
    LW_FIELD(lw_seg_slot_t, lag_sum_ns, 160, 8),
    LW_FIELD(lw_seg_slot_t, lag_count, 168, 8),
    LW_FIELD(lw_seg_slot_t, lag_bucket, 176, 128),
    LW_FIELD(lw_seg_slot_t, reserved1, 304, 16),
    LW_FIELD(lw_seg_slot_t, ready, 320, 4),
    LW_FIELD(lw_seg_slot_t, reserved2, 324, 4),
    LW_FIELD(lw_seg_slot_t, activity_seq, 328, 8),
    LW_FIELD(lw_seg_slot_t, activity, 336, 64),
    LW_FIELD(lw_seg_slot_t, container, 400, 64),
    LW_FIELD(lw_seg_slot_t, reserved3, 464, 48),
    LW_FIELD(lw_seg_slot_t, report_seq, 512, 8),
    LW_FIELD(lw_seg_slot_t, stall_count, 520, 8),
    LW_FIELD(lw_seg_slot_t, stall_start_ns, 528, 8),
    LW_FIELD(lw_seg_slot_t, stall_end_ns, 536, 8),
    LW_FIELD(lw_seg_slot_t, report_updated_ns, 544, 8),
    LW_FIELD(lw_seg_slot_t, loop_cpu_ns, 552, 8),
    LW_FIELD(lw_seg_slot_t, report_state, 560, 4),
    LW_FIELD(lw_seg_slot_t, stall_class, 564, 4),
    LW_FIELD(lw_seg_slot_t, syscall_nr, 568, 4),
    LW_FIELD(lw_seg_slot_t, text_len, 572, 4),
    LW_FIELD(lw_seg_slot_t, syscall_name, 576, 32),
    LW_FIELD(lw_seg_slot_t, wchan, 608, 32),
    LW_FIELD(lw_seg_slot_t, report_activity, 640, 64),
    LW_FIELD(lw_seg_slot_t, reserved4, 704, 64),
    LW_FIELD(lw_seg_slot_t, text, 768, 7424),
};
#undef LW_FIELD

void CheckFieldTable(const char* what, const FieldDoc* fields, size_t n,
                     size_t total) {
  size_t expected_next = 0;
  for (size_t i = 0; i < n; i++) {
    const FieldDoc& f = fields[i];
    EXPECT_EQ(f.actual_offset, f.offset) << what << "." << f.name;
    EXPECT_EQ(f.actual_size, f.size) << what << "." << f.name;
    // Fields tile the struct: no implicit padding anywhere.
    EXPECT_EQ(f.offset, expected_next) << what << "." << f.name
                                       << " leaves a hole before it";
    expected_next = f.offset + f.size;
  }
  EXPECT_EQ(expected_next, total) << what << " has trailing padding";
}

TEST(Golden, StructOffsetsMatchDocumentation) {
  CheckFieldTable("header", kHeaderFields, std::size(kHeaderFields),
                  sizeof(lw_seg_header_t));
  CheckFieldTable("slot", kSlotFields, std::size(kSlotFields),
                  sizeof(lw_seg_slot_t));
  EXPECT_EQ(sizeof(lw_seg_header_t), 256u);
  EXPECT_EQ(sizeof(lw_seg_slot_t), 8192u);
  EXPECT_EQ(lw_seg_size(3), 256u + 3u * 8192u);
  // The magic reads "LOOPWTCH" in the file.
  uint64_t magic = LW_SEG_MAGIC;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&magic), 8), "LOOPWTCH");
  const uint64_t bounds[] = LW_LAG_BOUNDS_NS_INIT;
  ASSERT_EQ(std::size(bounds), LW_LAG_FINITE_BOUNDS);
  EXPECT_EQ(bounds[0], 1000000u);
  EXPECT_EQ(bounds[LW_LAG_FINITE_BOUNDS - 1], 30000000000u);
  for (size_t i = 1; i < std::size(bounds); i++) EXPECT_LT(bounds[i - 1], bounds[i]);
  EXPECT_EQ(LW_LAG_BUCKETS, LW_LAG_FINITE_BOUNDS + 1);
}

// Values the test wrote, found at the documented byte offsets of the file.
TEST(Golden, WrittenValuesLandAtDocumentedOffsets) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    uint64_t before = lw_now_ns();
    lw_loop_t* loop = nullptr;
    MakeGoldenSegment(path, &loop);
    if (::testing::Test::HasFatalFailure()) return;
    uint64_t after = lw_now_ns();

    auto h = lwtest::ReadFileBytes(path, 0, LW_SEG_HEADER_SIZE);
    ASSERT_EQ(h.size(), LW_SEG_HEADER_SIZE);
    EXPECT_EQ(Le(h, 0, 8), LW_SEG_MAGIC);
    EXPECT_EQ(Le(h, 8, 2), 1u);   // version_major
    EXPECT_EQ(Le(h, 10, 2), 1u);  // version_minor
    EXPECT_EQ(Le(h, 12, 4), 256u);
    EXPECT_EQ(Le(h, 16, 4), 8192u);
    EXPECT_EQ(Le(h, 20, 4), kSlots);
    EXPECT_NE(Le(h, 24, 8), 0u);  // segment_id
    EXPECT_GE(Le(h, 32, 8), before);
    EXPECT_LE(Le(h, 32, 8), after);
    EXPECT_GT(Le(h, 40, 8), UINT64_C(1600000000) * 1000000000);  // after 2020
    EXPECT_EQ(Le(h, 48, 4), static_cast<uint64_t>(getpid()));
    for (size_t i = 52; i < 256; i++) EXPECT_EQ(h[i], 0) << "header byte " << i;

    // The reader agrees with the raw bytes.
    loopwatch::SegmentReader r(path);
    auto snaps = lwtest::MustSnapshot(r);
    ASSERT_EQ(snaps.size(), kSlots);
    EXPECT_EQ(r.header().segment_id, Le(h, 24, 8));
    EXPECT_EQ(r.header().created_mono_ns, Le(h, 32, 8));
    EXPECT_EQ(r.header().created_real_ns, Le(h, 40, 8));

    auto s = lwtest::ReadFileBytes(path, LW_SEG_HEADER_SIZE, LW_SEG_SLOT_SIZE);
    ASSERT_EQ(s.size(), LW_SEG_SLOT_SIZE);
    EXPECT_EQ(Le(s, 0, 4), LW_SLOT_ACTIVE);
    EXPECT_EQ(Le(s, 4, 4), 2u);  // generation: 0 -> 1 (claiming) -> 2
    EXPECT_EQ(Le(s, 8, 4), static_cast<uint64_t>(getpid()));
    EXPECT_EQ(Le(s, 12, 4), static_cast<uint64_t>(syscall(SYS_gettid)));
    EXPECT_EQ(Le(s, 16, 8), snaps[0].claim_token);
    EXPECT_NE(Le(s, 16, 8), 0u);
    EXPECT_GE(Le(s, 24, 8), before);
    EXPECT_LE(Le(s, 24, 8), after);
    EXPECT_EQ(Le(s, 32, 8), kInterval);
    EXPECT_EQ(Le(s, 40, 8), kReportAfter);
    EXPECT_EQ(Str(s, 48, 64), kName);
    EXPECT_EQ(Str(s, 112, 16), kKind);
    EXPECT_EQ(Le(s, 128, 8) % 2, 0u);  // beat_seq even: no beat under way
    EXPECT_EQ(Le(s, 136, 8), 3u);      // beat_count
    EXPECT_EQ(Le(s, 144, 8), kT3);     // last_beat_ns
    EXPECT_EQ(Le(s, 152, 8), kLag3);   // lag_max_ns
    EXPECT_EQ(Le(s, 160, 8), kLag2 + kLag3);  // lag_sum_ns
    EXPECT_EQ(Le(s, 168, 8), 2u);             // lag_count
    for (unsigned b = 0; b < LW_LAG_BUCKET_SLOTS; b++) {
      uint64_t want = (b == 2 || b == 5) ? 1 : 0;
      EXPECT_EQ(Le(s, 176 + 8 * b, 8), want) << "lag_bucket[" << b << "]";
    }
    EXPECT_EQ(Le(s, 320, 4), 0u);  // ready
    EXPECT_EQ(Le(s, 328, 8) % 2, 0u);
    EXPECT_EQ(Str(s, 336, 64), kActivity);
    EXPECT_EQ(Str(s, 400, 64), kContainer);
    EXPECT_EQ(Le(s, 560, 4), LW_REPORT_NONE);
    EXPECT_EQ(static_cast<int32_t>(Le(s, 568, 4)), -1);  // syscall_nr
    EXPECT_EQ(Le(s, 572, 4), 0u);                        // text_len

    // The reader's view of the same slot.
    const auto& sn = snaps[0];
    EXPECT_TRUE(sn.valid);
    EXPECT_EQ(sn.owner_alive, 1);
    EXPECT_EQ(sn.beat_count, 3u);
    EXPECT_EQ(sn.last_beat_ns, kT3);
    EXPECT_EQ(sn.lag_count, 2u);
    EXPECT_EQ(sn.lag_bucket[2], 1u);
    EXPECT_EQ(sn.lag_bucket[5], 1u);
    EXPECT_FALSE(sn.ready);
    EXPECT_STREQ(sn.activity, kActivity);
    EXPECT_STREQ(sn.name, kName);
    EXPECT_STREQ(sn.kind, kKind);
    EXPECT_STREQ(sn.container, kContainer);
    ASSERT_EQ(lw_loop_close(loop), 0);

    // Closing writes the state word, and only it, in the identity.
    auto c = lwtest::ReadFileBytes(path, LW_SEG_HEADER_SIZE, 8);
    EXPECT_EQ(Le(c, 0, 4), LW_SLOT_CLOSED);
    EXPECT_EQ(Le(c, 4, 4), 2u);
  });
}

size_t HookText(lw_loop_t*, void*, char* buf, size_t size) {
  static const char kText[] = "frame app.py:42 in handler";
  size_t n = sizeof kText - 1;
  if (n > size) n = size;
  memcpy(buf, kText, n);
  return n;
}

// The report fields, at their documented offsets, after a real stall: the
// loop (this thread) blocks in read() on a pipe while a helper thread polls
// the file and wakes it once the report is written.
TEST(Golden, ReportFieldsLandAtDocumentedOffsets) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, kSlots);
    lw_loop_options_t o{};
    o.struct_size = sizeof o;
    o.name = "report-loop";
    o.interval_ns = 10000000;       // 10 ms
    o.report_after_ns = 50000000;   // 50 ms
    lw_loop_t* loop = nullptr;
    ASSERT_EQ(lw_loop_open_ex(&o, &loop), 0) << lw_last_error();
    ASSERT_EQ(lw_set_report_hook(loop, HookText, nullptr), 0);
    ASSERT_EQ(lw_set_activity(loop, "POST /orders"), 0);
    ASSERT_EQ(lw_beat(loop), 0);
    const size_t base = LW_SEG_HEADER_SIZE;  // slot 0
    std::vector<uint8_t> s;
    bool text_seen = false;
    lwtest::Pipe wake;
    std::thread poller([&] {
      text_seen = lwtest::WaitUntil(
          [&] {
            s = lwtest::ReadFileBytes(path, base, LW_SEG_SLOT_SIZE);
            return s.size() == LW_SEG_SLOT_SIZE &&
                   Le(s, 560, 4) == LW_REPORT_OPEN && Le(s, 572, 4) > 0;
          },
          lwtest::Scaled(std::chrono::milliseconds(3000)),
          std::chrono::milliseconds(5));
      lwtest::WriteLine(wake.wr, "done");
    });
    char c;
    ASSERT_EQ(read(wake.rd, &c, 1), 1);  // the stall: blocked in read()
    poller.join();
    ASSERT_TRUE(text_seen) << "no stall report with text within 3 s";
    uint64_t last_beat = Le(s, 144, 8);
    EXPECT_EQ(Le(s, 520, 8), 1u);         // stall_count
    EXPECT_EQ(Le(s, 528, 8), last_beat);  // stall_start_ns
    EXPECT_EQ(Le(s, 536, 8), 0u);         // stall_end_ns: open
    EXPECT_GE(Le(s, 544, 8), last_beat + 60000000);  // report_updated_ns
    EXPECT_EQ(Le(s, 564, 4), LW_CLASS_BLOCKED);
    EXPECT_EQ(static_cast<int32_t>(Le(s, 568, 4)), SYS_read);
    std::string text = "frame app.py:42 in handler";
    EXPECT_EQ(Le(s, 572, 4), text.size());
    EXPECT_EQ(Str(s, 576, 32), "read");
    EXPECT_EQ(s[608 + 31], 0) << "wchan not NUL-terminated";
    EXPECT_EQ(Str(s, 640, 64), "POST /orders");
    EXPECT_EQ(Str(s, 768, LW_REPORT_TEXT_SIZE), text);
    EXPECT_EQ(Le(s, 512, 8) % 2, 0u);  // report_seq even after the update

    ASSERT_EQ(lw_beat(loop), 0);
    bool closed = lwtest::WaitUntil(
        [&] {
          s = lwtest::ReadFileBytes(path, base, LW_SEG_SLOT_SIZE);
          return Le(s, 560, 4) == LW_REPORT_CLOSED;
        },
        lwtest::Scaled(std::chrono::milliseconds(3000)),
        std::chrono::milliseconds(5));
    ASSERT_TRUE(closed);
    EXPECT_EQ(Le(s, 536, 8), Le(s, 144, 8));  // stall_end_ns: the new beat
    EXPECT_GT(Le(s, 536, 8), Le(s, 528, 8));
    EXPECT_EQ(Str(s, 768, LW_REPORT_TEXT_SIZE), text);  // kept after closing
    ASSERT_EQ(lw_loop_close(loop), 0);
  });
}

}  // namespace

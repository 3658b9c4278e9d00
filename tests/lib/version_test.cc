// SPDX-License-Identifier: Apache-2.0
//
// Format versions: a segment of another major version is refused by the
// writer (-EPROTO) and by the reader (kVersionMismatch), each naming both
// versions, and left untouched; a newer minor version (fields carved out of
// reserved bytes) is accepted by both.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

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

struct OpenResult {
  int rc = 1;
  bool handle_null = false;
  std::string error;
};

// lw_loop_open in a fresh process (the library attaches one segment per
// process).
OpenResult OpenInChild(const std::string& path) {
  Pipe out;
  Child c([&]() -> int {
    out.CloseRead();
    lwtest::SetSegmentEnv(path, 4);
    lw_loop_t* loop = reinterpret_cast<lw_loop_t*>(0x1);  // must become NULL
    int rc = lw_loop_open("versioned", 100000000, &loop);
    lwtest::WriteLine(out.wr, std::to_string(rc) + " " +
                                  std::to_string(loop == nullptr) + " " +
                                  lw_last_error());
    lw_loop_close(loop);
    return 0;
  });
  out.CloseWrite();
  OpenResult r;
  std::string line;
  if (!lwtest::ReadLine(out.rd, &line, lwtest::Scaled(milliseconds(10000)))) {
    ADD_FAILURE() << "the writer did not report";
    return r;
  }
  int null_flag = 0;
  char err[512] = "";
  sscanf(line.c_str(), "%d %d %511[^\n]", &r.rc, &null_flag, err);
  r.handle_null = null_flag != 0;
  r.error = err;
  EXPECT_GE(c.Wait(lwtest::Scaled(milliseconds(10000))), 0);
  return r;
}

// A valid v1 segment, created by the reader as the sidecar would.
void MakeSegment(const std::string& path) {
  SegmentReader creator(path, 2);
  std::vector<loopwatch::SlotSnapshot> snaps;
  ASSERT_EQ(creator.Snapshot(&snaps), SegmentStatus::kOk) << creator.error();
}

void SetVersion(const std::string& path, uint16_t major, uint16_t minor) {
  lwtest::PatchFile(path, offsetof(lw_seg_header_t, version_major), &major, 2);
  lwtest::PatchFile(path, offsetof(lw_seg_header_t, version_minor), &minor, 2);
}

TEST(Version, WriterRefusesAnotherMajorVersionNamingBoth) {
  TempDir dir;
  std::string path = dir.File("segment");
  ASSERT_NO_FATAL_FAILURE(MakeSegment(path));
  SetVersion(path, 2, 3);
  auto before = lwtest::ReadWholeFile(path);

  OpenResult r = OpenInChild(path);
  EXPECT_EQ(r.rc, -EPROTO);
  EXPECT_TRUE(r.handle_null);
  EXPECT_NE(r.error.find("version 2.3"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("version 1.1"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find(path), std::string::npos) << r.error;
  EXPECT_STRNE(lw_strerror(-EPROTO), "");
  EXPECT_EQ(lwtest::ReadWholeFile(path), before) << "a refused segment changed";

  // Version 0 is another major version too.
  SetVersion(path, 0, 9);
  r = OpenInChild(path);
  EXPECT_EQ(r.rc, -EPROTO);
  EXPECT_NE(r.error.find("version 0.9"), std::string::npos) << r.error;
}

TEST(Version, ReaderRefusesAnotherMajorVersionNamingBoth) {
  TempDir dir;
  std::string path = dir.File("segment");
  ASSERT_NO_FATAL_FAILURE(MakeSegment(path));
  SegmentReader r(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  ASSERT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk);
  ASSERT_EQ(snaps.size(), 2u);

  // Changed under a running reader, which must notice.
  SetVersion(path, 2, 3);
  auto before = lwtest::ReadWholeFile(path);
  EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kVersionMismatch) << r.error();
  EXPECT_TRUE(snaps.empty());
  EXPECT_EQ(r.status(), SegmentStatus::kVersionMismatch);
  EXPECT_NE(r.error().find("2.3"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("1.1"), std::string::npos) << r.error();
  EXPECT_STREQ(loopwatch::SegmentStatusName(SegmentStatus::kVersionMismatch),
               "version_mismatch");

  // A fresh reader, and a creating one, say the same and change nothing.
  for (uint32_t create : {0u, 4u}) {
    SegmentReader fresh(path, create);
    EXPECT_EQ(fresh.Snapshot(&snaps), SegmentStatus::kVersionMismatch);
    EXPECT_NE(fresh.error().find("version 2.3"), std::string::npos)
        << fresh.error();
    EXPECT_NE(fresh.error().find("version 1.1"), std::string::npos)
        << fresh.error();
  }
  EXPECT_EQ(lwtest::ReadWholeFile(path), before);

  // Back to version 1: the same reader recovers.
  SetVersion(path, 1, 0);
  EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
  EXPECT_EQ(snaps.size(), 2u);
}

TEST(Version, NewerMinorVersionIsAccepted) {
  TempDir dir;
  std::string path = dir.File("segment");
  ASSERT_NO_FATAL_FAILURE(MakeSegment(path));
  SetVersion(path, 1, 7);
  SegmentReader r(path);
  auto snaps = lwtest::MustSnapshot(r);
  EXPECT_EQ(r.header().version_minor, 7u);
  EXPECT_EQ(snaps.size(), 2u);
  OpenResult o = OpenInChild(path);
  EXPECT_EQ(o.rc, 0) << o.error;
  // The writer does not downgrade the minor version it found.
  auto h = lwtest::ReadFileBytes(path, offsetof(lw_seg_header_t, version_minor), 2);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0] | (h[1] << 8), 7);
}

}  // namespace

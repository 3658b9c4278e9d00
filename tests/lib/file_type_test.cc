// SPDX-License-Identifier: Apache-2.0
//
// Files that are not what they claim, at the segment's path: a symbolic
// link (to another file, or dangling), a FIFO, a directory. Neither the
// library nor the reader follows a final symbolic link or takes anything but
// a regular file, each says so clearly, nothing hangs, and nothing is
// created or changed anywhere. And the mode of a segment the library or the
// reader creates: 0660 in a setgid directory (an fsGroup emptyDir), 0666
// elsewhere, whatever the umask.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "loopwatch/loopwatch.h"
#include "reader.h"
#include "segment_layout.h"
#include "test_support.h"

namespace {

using loopwatch::SegmentReader;
using loopwatch::SegmentStatus;
using lwtest::TempDir;

// lw_loop_open in a fresh process: (rc, lw_last_error()).
std::pair<int, std::string> OpenIn(const std::string& path) {
  lwtest::Pipe out;
  lwtest::Child c([&]() -> int {
    out.CloseRead();
    lwtest::SetSegmentEnv(path, 4);
    lw_loop_t* loop = nullptr;
    const int rc = lw_loop_open("files", 100000000, &loop);
    lwtest::WriteLine(out.wr, std::to_string(rc) + " " + lw_last_error());
    lw_loop_close(loop);
    return 0;
  });
  out.CloseWrite();
  std::string line;
  EXPECT_TRUE(lwtest::ReadLine(out.rd, &line, lwtest::Scaled(std::chrono::milliseconds(10000))))
      << "the writer did not answer (hung?)";
  const size_t sp = line.find(' ');
  return {atoi(line.c_str()), sp == std::string::npos ? "" : line.substr(sp + 1)};
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = d ? readdir(d) : nullptr) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.push_back(e->d_name);
  }
  if (d) closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

TEST(SegmentFiles, SymlinkToAnotherFileIsNeitherReadNorWritten) {
  TempDir dir;
  const std::string secret = dir.File("secret");
  const std::vector<uint8_t> bytes = {'S', 'E', 'C', 'R', 'E', 'T', '4', '2', 0, 0, 0};
  lwtest::WriteWholeFile(secret, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  const std::string path = dir.File("segment");
  ASSERT_EQ(symlink(secret.c_str(), path.c_str()), 0);

  for (uint32_t create : {0u, 4u}) {
    SegmentReader r(path, create);
    std::vector<loopwatch::SlotSnapshot> snaps;
    EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kError);
    EXPECT_NE(r.error().find("is a symbolic link"), std::string::npos) << r.error();
    EXPECT_EQ(r.error().find("534543"), std::string::npos) << "no bytes of the target";
  }
  auto [rc, error] = OpenIn(path);
  EXPECT_EQ(rc, -ELOOP) << error;
  EXPECT_NE(error.find("is a symbolic link"), std::string::npos) << error;
  EXPECT_EQ(lwtest::ReadWholeFile(secret), bytes) << "the target was changed";
}

TEST(SegmentFiles, DanglingSymlinkCreatesNothing) {
  TempDir dir;
  const std::string target = dir.File("elsewhere");
  const std::string path = dir.File("segment");
  ASSERT_EQ(symlink(target.c_str(), path.c_str()), 0);
  SegmentReader r(path, 4);
  std::vector<loopwatch::SlotSnapshot> snaps;
  EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kError) << r.error();
  auto [rc, error] = OpenIn(path);
  EXPECT_EQ(rc, -ELOOP) << error;
  EXPECT_NE(access(target.c_str(), F_OK), 0) << "a file appeared at the link's target";
  EXPECT_EQ(Entries(dir.path()), std::vector<std::string>{"segment"});
}

TEST(SegmentFiles, FifoAndDirectoryAreRefusedWithoutWaiting) {
  TempDir dir;
  const std::string fifo = dir.File("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string sub = dir.File("dir");
  ASSERT_EQ(mkdir(sub.c_str(), 0700), 0);
  for (const std::string& path : {fifo, sub}) {
    for (uint32_t create : {0u, 4u}) {
      SegmentReader r(path, create);
      std::vector<loopwatch::SlotSnapshot> snaps;
      EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kError) << path;
      EXPECT_NE(r.error().find("not a regular file"), std::string::npos) << r.error();
    }
    auto [rc, error] = OpenIn(path);
    EXPECT_LT(rc, 0) << path;
    EXPECT_FALSE(error.empty()) << path;
  }
  auto [rc, error] = OpenIn(fifo);
  EXPECT_EQ(rc, -EPROTO);
  EXPECT_NE(error.find("is not a regular file"), std::string::npos) << error;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(SegmentFiles, CreatedModeFollowsTheDirectory) {
  TempDir dir;
  const std::string plain = dir.File("plain");
  const std::string shared = dir.File("fsgroup");
  ASSERT_EQ(mkdir(plain.c_str(), 0777), 0);
  ASSERT_EQ(mkdir(shared.c_str(), 0777), 0);
  ASSERT_EQ(chmod(shared.c_str(), 02777), 0);  // what the kubelet makes of an fsGroup emptyDir
  const mode_t old = umask(077);  // the app's umask must not lock the sidecar out
  for (const auto& [d, want] : {std::pair<std::string, mode_t>{plain, 0666},
                                std::pair<std::string, mode_t>{shared, 0660}}) {
    auto [rc, error] = OpenIn(d + "/by-library");
    EXPECT_EQ(rc, 0) << error;
    EXPECT_EQ(ModeOf(d + "/by-library"), want) << d;
    SegmentReader r(d + "/by-reader", 4);
    std::vector<loopwatch::SlotSnapshot> snaps;
    EXPECT_EQ(r.Snapshot(&snaps), SegmentStatus::kOk) << r.error();
    EXPECT_EQ(ModeOf(d + "/by-reader"), want) << d;
    // Created complete, in one step: no other file was left behind.
    EXPECT_EQ(Entries(d), (std::vector<std::string>{"by-library", "by-reader"}));
  }
  umask(old);
}

}  // namespace

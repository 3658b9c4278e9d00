// SPDX-License-Identifier: Apache-2.0
//
// test_support.h: helpers shared by the libloopwatch tests.
//
// Process isolation. libloopwatch reads LOOPWATCH_SEGMENT once per process:
// the first lw_loop_open() maps that segment and keeps it for the life of
// the process. So a test that drives the writer in-process runs its body in a
// forked child (RunIsolated), with its own temp dir and segment, and tests
// that need writers in other processes fork them (Child). The gtest process
// itself never opens a loop, so every test sees a fresh library, whether the
// binary runs one test (ctest) or all of them.
#ifndef LOOPWATCH_TESTS_LIB_TEST_SUPPORT_H_
#define LOOPWATCH_TESTS_LIB_TEST_SUPPORT_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "reader.h"

namespace lwtest {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Time bounds: generous, and larger still under a sanitizer, which slows the
// process down several times. No test sleeps to make time pass where it can
// wait for a condition instead.
std::chrono::milliseconds Scaled(std::chrono::milliseconds base);
bool UnderSanitizer();
bool UnderThreadSanitizer();

// A fresh directory under $LOOPWATCH_TEST_TMPDIR, /dev/shm, $TMPDIR or /tmp
// (the first that is set or exists), removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs `body` in a forked child and waits for it, at most `timeout`; the
// child's gtest failures are printed by the child and make this call fail
// the test (the child exits 1). Use it for every test that opens loops in
// the test's own process.
void RunIsolated(const std::function<void()>& body,
                 std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A pipe; both ends close-on-exec.
struct Pipe {
  Pipe();
  ~Pipe();
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  void CloseRead();
  void CloseWrite();
  int rd = -1;
  int wr = -1;
};

// Writes one line (a '\n' is appended). Returns false on error.
bool WriteLine(int fd, const std::string& line);
// Reads one line (without '\n') within `timeout`; false on EOF or timeout.
// Reads byte by byte, so that nothing past the line is consumed.
bool ReadLine(int fd, std::string* line, std::chrono::milliseconds timeout);
// Blocks until the other end writes a line or closes (EOF); for children.
void WaitForLineOrEof(int fd);
// In a forked child: closes every pipe descriptor but `keep`, so that the
// pipes of other helpers (a sibling's "hold" pipe, say) reach EOF when
// their owner closes them.
void CloseOtherPipes(std::initializer_list<int> keep);

// A forked helper process: runs `fn` and _exits with its return value. Not a
// gtest context: report to the test through pipes and the exit code. The
// child dies with the test process (PR_SET_PDEATHSIG), unless
// `outlive_parent`.
class Child {
 public:
  explicit Child(const std::function<int()>& fn, bool outlive_parent = false);
  ~Child();  // SIGKILLs and reaps the child if still there
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  // Waits for exit, at most `timeout`; returns the raw wait status, or -1 on
  // timeout.
  int Wait(std::chrono::milliseconds timeout);
  void Kill(int sig);
  bool reaped() const { return reaped_; }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// Waits until this process has a thread named `comm` (e.g. "loopwatch-wd")
// and it sleeps in futex() (a condition wait). Call it before fork() in a
// process whose watchdog has just started: ASan's allocator (GCC 12's
// libasan) is not locked around fork(), so a fork while another thread is
// inside malloc -- a new thread is, briefly, in ASan's thread start-up --
// leaves the child's allocator locked forever. glibc's own malloc is
// fork-safe; this is for the sanitizer builds.
bool WaitUntilThreadParked(const std::string& comm,
                           std::chrono::milliseconds timeout);

// Polls `pred` every `step` until it is true or `timeout` passes.
bool WaitUntil(const std::function<bool()>& pred,
               std::chrono::milliseconds timeout,
               std::chrono::milliseconds step = std::chrono::milliseconds(2));

// Raw bytes of a file through read(2), never through a mapping.
std::vector<uint8_t> ReadFileBytes(const std::string& path, uint64_t offset,
                                   size_t len);
std::vector<uint8_t> ReadWholeFile(const std::string& path);
void WriteWholeFile(const std::string& path, const std::vector<uint8_t>& bytes);
void PatchFile(const std::string& path, uint64_t offset, const void* data,
               size_t len);
uint64_t FileSize(const std::string& path);

// Sets the environment for a process that is about to open loops.
void SetSegmentEnv(const std::string& path, int slots = 0,
                   const char* report_after = nullptr);

// Takes a snapshot and returns it; fails the test on a status other than kOk.
std::vector<loopwatch::SlotSnapshot> MustSnapshot(loopwatch::SegmentReader& r);

// The (only) slot whose owner pid is `pid` and state ACTIVE, or -1.
int FindActiveSlotOfPid(const std::vector<loopwatch::SlotSnapshot>& snaps,
                        pid_t pid);
int FindSlotByName(const std::vector<loopwatch::SlotSnapshot>& snaps,
                   const std::string& name);

// Converts a snapshot's time (CLOCK_MONOTONIC ns) into "ms since" for logs.
double MsSince(uint64_t mono_ns);

}  // namespace lwtest

#endif  // LOOPWATCH_TESTS_LIB_TEST_SUPPORT_H_

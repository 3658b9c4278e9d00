// SPDX-License-Identifier: Apache-2.0
#include "test_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "loopwatch/loopwatch.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LWTEST_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define LWTEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define LWTEST_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LWTEST_ASAN 1
#endif

#if defined(LWTEST_TSAN)
// The fork tests fork a process whose watchdog thread is running, and the
// child then opens a loop of its own, which starts a thread: that is exactly
// what gunicorn does. TSan supports it once told to (its internal locks are
// taken around fork); without this option it kills such a child.
extern "C" const char* __tsan_default_options() { return "die_after_fork=0"; }
#endif

namespace lwtest {

bool UnderThreadSanitizer() {
#if defined(LWTEST_TSAN)
  return true;
#else
  return false;
#endif
}

bool UnderSanitizer() {
#if defined(LWTEST_TSAN) || defined(LWTEST_ASAN)
  return true;
#else
  return false;
#endif
}

std::chrono::milliseconds Scaled(std::chrono::milliseconds base) {
  return UnderSanitizer() ? base * 4 : base;
}

// ---- TempDir ---------------------------------------------------------------

namespace {

void RemoveTree(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (d) {
    while (struct dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string p = path + "/" + name;
      struct stat st;
      if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        RemoveTree(p);
      } else {
        unlink(p.c_str());
      }
    }
    closedir(d);
  }
  rmdir(path.c_str());
}

}  // namespace

// Where temp dirs go: $LOOPWATCH_TEST_TMPDIR, else /dev/shm (a tmpfs, like
// the memory-backed emptyDir that holds a segment in a pod; rewriting files
// there costs no disk flushes), else $TMPDIR, else /tmp.
std::string TempBase() {
  const char* env = getenv("LOOPWATCH_TEST_TMPDIR");
  if (env && *env) return env;
  struct stat st;
  if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
      access("/dev/shm", W_OK) == 0) {
    return "/dev/shm";
  }
  env = getenv("TMPDIR");
  return env && *env ? env : "/tmp";
}

TempDir::TempDir() {
  std::string tmpl = TempBase() + "/lwtest.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    ADD_FAILURE() << "mkdtemp(" << tmpl << "): " << strerror(errno);
    return;
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (!path_.empty()) RemoveTree(path_);
}

// ---- processes ---------------------------------------------------------------

namespace {

// Waits for `pid` at most `timeout`; the raw status or -1 on timeout.
int WaitPid(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -2;
    if (Clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::string DescribeStatus(int status) {
  char buf[64];
  if (status == -1) return "timed out";
  if (WIFEXITED(status)) {
    snprintf(buf, sizeof buf, "exited with %d", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    snprintf(buf, sizeof buf, "killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  } else {
    snprintf(buf, sizeof buf, "status 0x%x", status);
  }
  return buf;
}

void DieWithParent(pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(111);
}

}  // namespace

void RunIsolated(const std::function<void()>& body,
                 std::chrono::milliseconds timeout) {
  fflush(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  ASSERT_GE(pid, 0) << "fork: " << strerror(errno);
  if (pid == 0) {
    setpgid(0, 0);
    DieWithParent(parent);
    body();
    bool failed = ::testing::Test::HasFailure();
    fflush(nullptr);
    _exit(failed ? 1 : 0);
  }
  setpgid(pid, pid);
  int status = WaitPid(pid, Scaled(timeout));
  if (status == -1) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "the isolated test body did not finish within "
                  << Scaled(timeout).count() << " ms; killed";
    return;
  }
  // Anything the body left behind in its process group goes with it.
  kill(-pid, SIGKILL);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the isolated test body " << DescribeStatus(status)
      << " (its failures are printed above)";
}

Pipe::Pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << strerror(errno);
    return;
  }
  rd = fds[0];
  wr = fds[1];
}

Pipe::~Pipe() {
  CloseRead();
  CloseWrite();
}

void Pipe::CloseRead() {
  if (rd >= 0) close(rd);
  rd = -1;
}

void Pipe::CloseWrite() {
  if (wr >= 0) close(wr);
  wr = -1;
}

bool WriteLine(int fd, const std::string& line) {
  std::string s = line + "\n";
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool ReadLine(int fd, std::string* line, std::chrono::milliseconds timeout) {
  line->clear();
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Clock::now());
    if (left.count() < 0) return false;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left.count()) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    char c;
    ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (c == '\n') return true;
    line->push_back(c);
  }
}

void WaitForLineOrEof(int fd) {
  char c;
  for (;;) {
    ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return;
  }
}

void CloseOtherPipes(std::initializer_list<int> keep) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return;
  std::vector<int> doomed;
  while (struct dirent* e = readdir(d)) {
    int fd = atoi(e->d_name);
    if (fd <= 2 || fd == dirfd(d)) continue;
    bool kept = false;
    for (int k : keep) kept |= k == fd;
    if (kept) continue;
    char target[64] = "";
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && strncmp(target, "pipe:", 5) == 0) doomed.push_back(fd);
  }
  closedir(d);
  for (int fd : doomed) close(fd);
}

Child::Child(const std::function<int()>& fn, bool outlive_parent) {
  fflush(nullptr);
  pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) {
    ADD_FAILURE() << "fork: " << strerror(errno);
    return;
  }
  if (pid_ == 0) {
    if (!outlive_parent) DieWithParent(parent);
    int rc = fn();
    fflush(nullptr);
    _exit(rc);
  }
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
}

int Child::Wait(std::chrono::milliseconds timeout) {
  if (reaped_ || pid_ <= 0) return -2;
  int status = WaitPid(pid_, timeout);
  if (status >= 0) reaped_ = true;
  return status;
}

void Child::Kill(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

bool WaitUntil(const std::function<bool()>& pred,
               std::chrono::milliseconds timeout,
               std::chrono::milliseconds step) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() > deadline) return pred();
    std::this_thread::sleep_for(step);
  }
}

bool WaitUntilThreadParked(const std::string& comm,
                           std::chrono::milliseconds timeout) {
  return WaitUntil(
      [&] {
        DIR* d = opendir("/proc/self/task");
        if (!d) return false;
        bool parked = false;
        while (struct dirent* e = readdir(d)) {
          if (e->d_name[0] == '.') continue;
          std::string task = std::string("/proc/self/task/") + e->d_name;
          char name[64] = "", sys[64] = "";
          if (FILE* f = fopen((task + "/comm").c_str(), "r")) {
            if (!fgets(name, sizeof name, f)) name[0] = '\0';
            fclose(f);
          }
          name[strcspn(name, "\n")] = '\0';
          if (comm != name) continue;
          if (FILE* f = fopen((task + "/syscall").c_str(), "r")) {
            if (!fgets(sys, sizeof sys, f)) sys[0] = '\0';
            fclose(f);
          }
          parked = atoi(sys) == SYS_futex && isdigit(static_cast<unsigned char>(sys[0]));
        }
        closedir(d);
        return parked;
      },
      timeout, std::chrono::milliseconds(1));
}

// ---- files -------------------------------------------------------------------

std::vector<uint8_t> ReadFileBytes(const std::string& path, uint64_t offset,
                                   size_t len) {
  std::vector<uint8_t> out(len);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "open " << path << ": " << strerror(errno);
    return {};
  }
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, out.data() + got, len - got,
                      static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  out.resize(got);
  return out;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

std::vector<uint8_t> ReadWholeFile(const std::string& path) {
  return ReadFileBytes(path, 0, FileSize(path));
}

void WriteWholeFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  ASSERT_GE(fd, 0) << "open " << path << ": " << strerror(errno);
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    ASSERT_GT(n, 0) << "write " << path << ": " << strerror(errno);
    off += static_cast<size_t>(n);
  }
  close(fd);
}

void PatchFile(const std::string& path, uint64_t offset, const void* data,
               size_t len) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << "open " << path << ": " << strerror(errno);
  ASSERT_EQ(pwrite(fd, data, len, static_cast<off_t>(offset)),
            static_cast<ssize_t>(len));
  close(fd);
}

void SetSegmentEnv(const std::string& path, int slots,
                   const char* report_after) {
  setenv("LOOPWATCH_SEGMENT", path.c_str(), 1);
  if (slots > 0) {
    setenv("LOOPWATCH_SLOTS", std::to_string(slots).c_str(), 1);
  } else {
    unsetenv("LOOPWATCH_SLOTS");
  }
  if (report_after) {
    setenv("LOOPWATCH_REPORT_AFTER", report_after, 1);
  } else {
    unsetenv("LOOPWATCH_REPORT_AFTER");
  }
}

std::vector<loopwatch::SlotSnapshot> MustSnapshot(loopwatch::SegmentReader& r) {
  std::vector<loopwatch::SlotSnapshot> snaps;
  loopwatch::SegmentStatus st = r.Snapshot(&snaps);
  EXPECT_EQ(st, loopwatch::SegmentStatus::kOk)
      << loopwatch::SegmentStatusName(st) << ": " << r.error();
  return snaps;
}

int FindActiveSlotOfPid(const std::vector<loopwatch::SlotSnapshot>& snaps,
                        pid_t pid) {
  int found = -1;
  for (const auto& s : snaps) {
    if (s.valid && s.state == LW_SLOT_ACTIVE &&
        s.pid == static_cast<uint32_t>(pid)) {
      if (found >= 0) return -2;  // more than one: the caller asserts
      found = static_cast<int>(s.index);
    }
  }
  return found;
}

int FindSlotByName(const std::vector<loopwatch::SlotSnapshot>& snaps,
                   const std::string& name) {
  for (const auto& s : snaps) {
    if (s.valid && s.state != LW_SLOT_FREE && name == s.name) {
      return static_cast<int>(s.index);
    }
  }
  return -1;
}

double MsSince(uint64_t mono_ns) {
  return static_cast<double>(lw_now_ns() - mono_ns) / 1e6;
}

}  // namespace lwtest

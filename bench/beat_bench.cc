// SPDX-License-Identifier: Apache-2.0
//
// loopwatch_beat_bench: the per-beat cost of libloopwatch's heartbeat next to
// the heartbeats loopwatch replaces, measured in one run on one machine:
//
//   clock_gettime       one clock_gettime(CLOCK_MONOTONIC): the floor, since
//                       a beat must read the clock to measure lag
//   lw_beat             the heartbeat on a real segment on tmpfs
//   lw_beat_at          the same for loops that already hold the time
//   lw_beat_at lag_*    lw_beat_at with lags landing in varying buckets
//   lw_beat disabled    lw_beat(NULL): LOOPWATCH_SEGMENT unset
//   gunicorn futimens   gunicorn since PR #3095: os.utime(fd, (t, t)) on a
//                       tmpfs file
//   gunicorn fchmod     older gunicorn (Debian 12's 20.1): os.fchmod(fd, 0|1)
//   systemd sendto      "WATCHDOG=1" to a bound AF_UNIX datagram socket
//   systemd sd_notify   libsystemd's sd_notify(): socket + sendto + close
//
// A custom main runs the benchmarks with a reporter that also collects the
// results, then prints a summary with the ratios and the targets of
// docs/design.md. See bench/README.md.
//
// Extra flags (everything else goes to Google Benchmark):
//   --check-targets        exit 1 if a target is missed or not measured
//   --beat-loop=N          no benchmark: open a loop, beat N times between two
//                          marker syscalls (write(-1, "LW_BEAT_LOOP_BEGIN")),
//                          close; for bench/check_no_syscalls.sh under strace
//   --beat-mode=beat|beat_at|disabled   what --beat-loop calls (beat)
// Environment: LOOPWATCH_BENCH_DIR, a tmpfs directory for the segment and
// the heartbeat files (default /dev/shm).
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "loopwatch/loopwatch.h"
#include "segment_layout.h"

#ifndef LW_BENCH_SHARED_LIB
#define LW_BENCH_SHARED_LIB ""
#endif
#ifndef LW_BENCH_BUILD_TYPE
#define LW_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef LW_BENCH_C_COMPILER
#define LW_BENCH_C_COMPILER "unknown"
#endif

namespace {

constexpr uint64_t kIntervalNs = 100'000'000;  // the Python binding's default
constexpr char kWatchdogMsg[] = "WATCHDOG=1";

// ---- environment: a private tmpfs directory -------------------------------

struct BenchEnv {
  std::string dir;      // private directory, removed at exit
  std::string segment;  // LOOPWATCH_SEGMENT
  std::string fs;       // "tmpfs" or the magic number of another file system
  bool tmpfs = false;
  int dgram_qlen = 10;  // /proc/sys/net/unix/max_dgram_qlen
  // Read-only view of the segment, to check that the beats got there.
  const uint8_t* seg = nullptr;
  size_t seg_size = 0;
};
BenchEnv g_env;

// Errors of the competitors' system calls, by case and errno. A benchmark
// that fails at setup reports through SkipWithError instead.
std::map<std::string, uint64_t> g_errors;
std::string g_load_start = "?";

void CountError(const char* what, int err) {
  g_errors[std::string(what) + ": " + strerrorname_np(err)]++;
}

std::string ReadFirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

bool SetUpEnv(std::string* err) {
  const char* base = getenv("LOOPWATCH_BENCH_DIR");
  if (!base || !*base) base = "/dev/shm";
  std::string tmpl = std::string(base) + "/loopwatch-bench.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    *err = "mkdtemp(" + tmpl + "): " + strerror(errno);
    return false;
  }
  g_env.dir = buf.data();
  g_env.segment = g_env.dir + "/segment";
  struct statfs sf;
  if (statfs(g_env.dir.c_str(), &sf) == 0) {
    g_env.tmpfs = sf.f_type == TMPFS_MAGIC;
    char hex[32];
    snprintf(hex, sizeof hex, "fs magic 0x%lx", (unsigned long)sf.f_type);
    g_env.fs = g_env.tmpfs ? "tmpfs" : hex;
  }
  std::string q = ReadFirstLine("/proc/sys/net/unix/max_dgram_qlen");
  if (!q.empty()) g_env.dgram_qlen = std::max(1, atoi(q.c_str()));
  // The library reads LOOPWATCH_SEGMENT when a loop opens. Always ours: a
  // value inherited from the environment must not receive benchmark beats.
  setenv("LOOPWATCH_SEGMENT", g_env.segment.c_str(), 1);
  unsetenv("LOOPWATCH_SLOTS");
  unsetenv("LOOPWATCH_REPORT_AFTER");
  return true;
}

void TearDownEnv() {
  if (g_env.seg) munmap(const_cast<uint8_t*>(g_env.seg), g_env.seg_size);
  g_env.seg = nullptr;
  if (!g_env.dir.empty()) {
    unlink(g_env.segment.c_str());
    rmdir(g_env.dir.c_str());
  }
}

// Beats recorded in the segment for `slot`, read through our own mapping of
// the file: proof that the benchmarked calls wrote shared memory.
bool SegmentBeatCount(int slot, uint64_t* out) {
  if (!g_env.seg) {
    int fd = open(g_env.segment.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
      close(fd);
      return false;
    }
    void* p = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return false;
    g_env.seg = static_cast<const uint8_t*>(p);
    g_env.seg_size = (size_t)st.st_size;
  }
  size_t off = LW_SEG_HEADER_SIZE + (size_t)slot * LW_SEG_SLOT_SIZE +
               offsetof(lw_seg_slot_t, beat_count);
  if (slot < 0 || off + sizeof(uint64_t) > g_env.seg_size) return false;
  *out = __atomic_load_n(reinterpret_cast<const uint64_t*>(g_env.seg + off),
                         __ATOMIC_ACQUIRE);
  return true;
}

// ---- loops ------------------------------------------------------------------

// The shared library, loaded privately so that its lw_* do not clash with
// the static copy linked into this binary.
struct SharedLib {
  bool tried = false;
  std::string error;
  int (*open)(const char*, uint64_t, lw_loop_t**) = nullptr;
  int (*beat)(lw_loop_t*) = nullptr;
  int (*close)(lw_loop_t*) = nullptr;
  int (*slot)(const lw_loop_t*) = nullptr;
  const char* (*last_error)() = nullptr;
};
SharedLib g_shared;

const SharedLib& LoadShared() {
  if (g_shared.tried) return g_shared;
  g_shared.tried = true;
  const char* path = LW_BENCH_SHARED_LIB;
  void* h = *path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : nullptr;
  if (!h) {
    g_shared.error = std::string("dlopen(") + path + "): " +
                     (*path ? dlerror() : "path not compiled in");
    return g_shared;
  }
  g_shared.open = reinterpret_cast<decltype(g_shared.open)>(dlsym(h, "lw_loop_open"));
  g_shared.beat = reinterpret_cast<decltype(g_shared.beat)>(dlsym(h, "lw_beat"));
  g_shared.close = reinterpret_cast<decltype(g_shared.close)>(dlsym(h, "lw_loop_close"));
  g_shared.slot = reinterpret_cast<decltype(g_shared.slot)>(dlsym(h, "lw_loop_slot"));
  g_shared.last_error =
      reinterpret_cast<decltype(g_shared.last_error)>(dlsym(h, "lw_last_error"));
  if (!g_shared.open || !g_shared.beat || !g_shared.close || !g_shared.slot ||
      !g_shared.last_error) {
    g_shared.error = std::string("dlsym in ") + path + " failed";
    g_shared.open = nullptr;
  }
  return g_shared;  // never dlclose()d: cheap, and keeps its pointers valid
}

// One loop per benchmark invocation: opened before the timed loop, closed
// after it, so the library's watchdog thread only runs during lw_* cases.
class Loop {
 public:
  explicit Loop(const char* name, bool shared = false) : shared_(shared) {
    if (shared) {
      const SharedLib& so = LoadShared();
      if (!so.open) {
        error_ = so.error;
        return;
      }
      rc_ = so.open(name, kIntervalNs, &l_);
      if (rc_ != 0 || !l_) error_ = so.last_error();
    } else {
      rc_ = lw_loop_open(name, kIntervalNs, &l_);
      if (rc_ != 0 || !l_) error_ = lw_last_error();
    }
    if ((rc_ != 0 || !l_) && error_.empty()) {
      error_ = rc_ ? lw_strerror(rc_) : "library disabled (LOOPWATCH_SEGMENT)";
    }
  }
  ~Loop() {
    if (shared_ && l_) g_shared.close(l_);
    if (!shared_) lw_loop_close(l_);
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  lw_loop_t* get() const { return l_; }
  bool ok(benchmark::State& state) const {
    if (l_) return true;
    state.SkipWithError(("lw_loop_open: " + error_).c_str());
    return false;
  }
  // After the timed loop: every iteration's beat must be in the segment.
  void Verify(benchmark::State& state) const {
    int slot = shared_ ? g_shared.slot(l_) : lw_loop_slot(l_);
    uint64_t n = 0;
    if (!SegmentBeatCount(slot, &n)) {
      state.SkipWithError("cannot read the beat counter back from the segment");
    } else if (n != (uint64_t)state.iterations()) {
      char msg[128];
      snprintf(msg, sizeof msg, "segment beat_count %llu != iterations %llu",
               (unsigned long long)n, (unsigned long long)state.iterations());
      state.SkipWithError(msg);
    }
  }

 private:
  bool shared_;
  lw_loop_t* l_ = nullptr;
  int rc_ = 0;
  std::string error_;
};

// ---- the floor ----------------------------------------------------------------

void BM_clock_gettime(benchmark::State& state) {
  for (auto _ : state) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    benchmark::DoNotOptimize(ts);
  }
}

void BM_lw_now_ns(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(lw_now_ns());
}

// ---- libloopwatch -------------------------------------------------------------

void BM_lw_beat(benchmark::State& state) {
  Loop loop("bench-beat");
  if (!loop.ok(state)) return;
  lw_loop_t* l = loop.get();
  for (auto _ : state) benchmark::DoNotOptimize(lw_beat(l));
  loop.Verify(state);
}

void BM_lw_beat_shared(benchmark::State& state) {
  Loop loop("bench-beat-so", /*shared=*/true);
  if (!loop.ok(state)) return;
  lw_loop_t* l = loop.get();
  int (*beat)(lw_loop_t*) = g_shared.beat;
  for (auto _ : state) benchmark::DoNotOptimize(beat(l));
  loop.Verify(state);
}

// The loop already holds the time (asio, libuv, asyncio keep one per
// iteration): each beat is exactly one interval after the previous one, so
// the lag is 0 and lands in the first bucket, like a healthy loop's.
void BM_lw_beat_at(benchmark::State& state) {
  Loop loop("bench-beat-at");
  if (!loop.ok(state)) return;
  lw_loop_t* l = loop.get();
  uint64_t now = lw_now_ns();
  for (auto _ : state) {
    now += kIntervalNs;
    benchmark::DoNotOptimize(lw_beat_at(l, now));
  }
  loop.Verify(state);
}

// Lags that land in different histogram buckets. The bucket search is linear
// over 14 bounds, so the cost grows with the lag; `lags` is the table of lags
// the beats cycle through.
void BeatAtWithLags(benchmark::State& state, const char* name,
                    const std::vector<uint64_t>& lags) {
  Loop loop(name);
  if (!loop.ok(state)) return;
  lw_loop_t* l = loop.get();
  std::vector<uint64_t> step(lags.size());
  for (size_t i = 0; i < lags.size(); i++) step[i] = kIntervalNs + lags[i];
  const size_t mask = step.size() - 1;  // a power of two
  const uint64_t* s = step.data();
  uint64_t now = lw_now_ns();
  size_t i = 0;
  for (auto _ : state) {
    now += s[i++ & mask];
    benchmark::DoNotOptimize(lw_beat_at(l, now));
  }
  loop.Verify(state);
}

// A lag inside bucket b (0..14) of the v1 bounds (1 ms .. 30 s, then over).
uint64_t LagInBucket(unsigned b) {
  static const uint64_t bounds[LW_LAG_FINITE_BOUNDS] = LW_LAG_BOUNDS_NS_INIT;
  if (b >= LW_LAG_FINITE_BOUNDS) return bounds[LW_LAG_FINITE_BOUNDS - 1] + 1'000'000'000;
  uint64_t lo = b ? bounds[b - 1] : 0;
  return lo + (bounds[b] - lo) / 2;
}

// Buckets 0..14 in turn (a pattern the branch predictor can learn).
void BM_lw_beat_at_lag_cycle(benchmark::State& state) {
  std::vector<uint64_t> lags(16);
  for (unsigned i = 0; i < 16; i++) lags[i] = LagInBucket(i % LW_LAG_BUCKETS);
  BeatAtWithLags(state, "bench-lag-cycle", lags);
}

// A random bucket each beat (4096 draws: mispredicted branches).
void BM_lw_beat_at_lag_random(benchmark::State& state) {
  std::vector<uint64_t> lags(4096);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& lag : lags) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    lag = LagInBucket((unsigned)(x % LW_LAG_BUCKETS));
  }
  BeatAtWithLags(state, "bench-lag-random", lags);
}

// Always the last bucket (> 30 s): the longest bucket search.
void BM_lw_beat_at_lag_over30s(benchmark::State& state) {
  BeatAtWithLags(state, "bench-lag-max",
                 std::vector<uint64_t>(1, LagInBucket(LW_LAG_BUCKETS - 1)));
}

// LOOPWATCH_SEGMENT unset: lw_loop_open hands out NULL, every call a no-op.
void BM_lw_beat_disabled(benchmark::State& state) {
  unsetenv("LOOPWATCH_SEGMENT");
  lw_loop_t* l = nullptr;
  int rc = lw_loop_open("bench-disabled", kIntervalNs, &l);
  setenv("LOOPWATCH_SEGMENT", g_env.segment.c_str(), 1);
  if (rc != 0 || l != nullptr) {
    lw_loop_close(l);
    state.SkipWithError("lw_loop_open did not return a NULL handle when disabled");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(lw_beat(l));
}

// ---- gunicorn: the worker touches a temp file; the arbiter stats it ----------

// WorkerTmp: mkstemp in worker_tmp_dir (a tmpfs in the recommended set-up),
// unlinked at once, the descriptor kept.
int GunicornTmpFile(benchmark::State& state) {
  std::string tmpl = g_env.dir + "/wgunicorn-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  int fd = mkstemp(buf.data());
  if (fd < 0) {
    state.SkipWithError((std::string("mkstemp: ") + strerror(errno)).c_str());
    return -1;
  }
  unlink(buf.data());
  return fd;
}

// gunicorn since PR #3095 ("Use utime instead of fchmod in WorkerTmp.notify"):
// notify() { t = time.monotonic(); os.utime(fd, (t, t)) },
// i.e. futimens with explicit times. The clock read is not included (that
// only favours gunicorn).
void BM_gunicorn_futimens(benchmark::State& state) {
  int fd = GunicornTmpFile(state);
  if (fd < 0) return;
  struct timespec t[2];
  clock_gettime(CLOCK_MONOTONIC, &t[0]);
  uint64_t errors = 0;
  for (auto _ : state) {
    if (++t[0].tv_nsec >= 1'000'000'000) {
      t[0].tv_nsec = 0;
      t[0].tv_sec++;
    }
    t[1] = t[0];
    if (futimens(fd, t) != 0) {
      errors++;
      CountError("futimens", errno);
    }
  }
  close(fd);
  if (errors) state.counters["errors"] = (double)errors;
}

// Older gunicorn (Debian 12 ships 20.1): notify() { spinner ^= 1;
// os.fchmod(fd, spinner) }.
void BM_gunicorn_fchmod(benchmark::State& state) {
  int fd = GunicornTmpFile(state);
  if (fd < 0) return;
  unsigned spinner = 0;
  uint64_t errors = 0;
  for (auto _ : state) {
    spinner ^= 1u;
    if (fchmod(fd, spinner) != 0) {
      errors++;
      CountError("fchmod", errno);
    }
  }
  close(fd);
  if (errors) state.counters["errors"] = (double)errors;
}

// ---- systemd: a datagram to $NOTIFY_SOCKET -----------------------------------

// Receivers bound to paths on tmpfs, like /run/systemd/notify. A unix datagram
// receiver queues at most net.unix.max_dgram_qlen (10 by default) messages,
// so the sender cycles through several receivers and drains them all, with
// the timer paused, before any can fill. A send that fails anyway (EAGAIN)
// is counted as an error, reported, and retried after a drain.
class NotifyRig {
 public:
  static constexpr int kReceivers = 16;

  bool SetUp(benchmark::State& state) {
    per_receiver_ = std::min(g_env.dgram_qlen, 8);
    for (int i = 0; i < kReceivers; i++) {
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      int n = snprintf(a.sun_path, sizeof a.sun_path, "%s/notify-%d",
                       g_env.dir.c_str(), i);
      if (n < 0 || (size_t)n >= sizeof a.sun_path) {
        state.SkipWithError("LOOPWATCH_BENCH_DIR is too long for a socket path");
        return false;
      }
      unlink(a.sun_path);
      int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        state.SkipWithError((std::string("receiver socket/bind: ") + strerror(errno)).c_str());
        if (fd >= 0) close(fd);
        return false;
      }
      rx_.push_back(fd);
      addr_.push_back(a);
    }
    tx_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (tx_ < 0) {
      state.SkipWithError((std::string("socket: ") + strerror(errno)).c_str());
      return false;
    }
    return true;
  }

  ~NotifyRig() {
    if (tx_ >= 0) close(tx_);
    for (size_t i = 0; i < rx_.size(); i++) {
      close(rx_[i]);
      unlink(addr_[i].sun_path);
    }
  }

  // One heartbeat: sd_notify's sendmsg(fd, {msg_name = NOTIFY_SOCKET,
  // "WATCHDOG=1"}, MSG_NOSIGNAL), here without blocking so that a full queue
  // shows up as an error rather than a stall. `fresh_socket`: as libsystemd
  // does, open a socket for this one message and close it.
  void Beat(benchmark::State& state, bool fresh_socket, const char* what) {
    const sockaddr_un& a = addr_[next_];
    for (int attempt = 0;; attempt++) {
      int fd = fresh_socket ? socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) : tx_;
      if (fd < 0) {
        CountError("socket", errno);
        errors_++;
        return;
      }
      ssize_t n = sendto(fd, kWatchdogMsg, sizeof kWatchdogMsg - 1,
                         MSG_NOSIGNAL | MSG_DONTWAIT,
                         reinterpret_cast<const sockaddr*>(&a), sizeof a);
      int err = errno;
      if (fresh_socket) close(fd);
      if (n == (ssize_t)(sizeof kWatchdogMsg - 1)) {
        sent_++;
        break;
      }
      errors_++;
      CountError(what, n < 0 ? err : EMSGSIZE);
      if (n >= 0 || err != EAGAIN || attempt > 0) break;
      state.PauseTiming();  // retry once, after making room
      Drain();
      state.ResumeTiming();
    }
    next_ = (next_ + 1) % kReceivers;
    if (++since_drain_ >= kReceivers * per_receiver_) {
      state.PauseTiming();
      Drain();
      state.ResumeTiming();
    }
  }

  // After the timed loop: every datagram sent must have arrived.
  void Finish(benchmark::State& state) {
    Drain();
    if (received_ != sent_) {
      char msg[128];
      snprintf(msg, sizeof msg, "sent %llu datagrams, received %llu",
               (unsigned long long)sent_, (unsigned long long)received_);
      state.SkipWithError(msg);
    }
    if (errors_) state.counters["errors"] = (double)errors_;
  }

 private:
  void Drain() {
    char buf[64];
    for (int fd : rx_) {
      while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) received_++;
    }
    since_drain_ = 0;
  }

  std::vector<int> rx_;
  std::vector<sockaddr_un> addr_;
  int tx_ = -1;
  int next_ = 0;
  int per_receiver_ = 8;
  int since_drain_ = 0;
  uint64_t sent_ = 0, received_ = 0, errors_ = 0;
};

// One socket kept open, one sendto per beat: the cheapest form of systemd's
// heartbeat (and what a hand-rolled notifier does).
void BM_systemd_sendto(benchmark::State& state) {
  NotifyRig rig;
  if (!rig.SetUp(state)) return;
  for (auto _ : state) rig.Beat(state, /*fresh_socket=*/false, "sendto");
  rig.Finish(state);
}

// libsystemd's sd_notify("WATCHDOG=1"): socket(), sendmsg(), close().
void BM_systemd_sd_notify(benchmark::State& state) {
  NotifyRig rig;
  if (!rig.SetUp(state)) return;
  for (auto _ : state) rig.Beat(state, /*fresh_socket=*/true, "sd_notify sendto");
  rig.Finish(state);
}

BENCHMARK(BM_clock_gettime)->UseRealTime();
BENCHMARK(BM_lw_now_ns)->UseRealTime();
BENCHMARK(BM_lw_beat)->UseRealTime();
BENCHMARK(BM_lw_beat_shared)->UseRealTime();
BENCHMARK(BM_lw_beat_at)->UseRealTime();
BENCHMARK(BM_lw_beat_at_lag_cycle)->UseRealTime();
BENCHMARK(BM_lw_beat_at_lag_random)->UseRealTime();
BENCHMARK(BM_lw_beat_at_lag_over30s)->UseRealTime();
BENCHMARK(BM_lw_beat_disabled)->UseRealTime();
BENCHMARK(BM_gunicorn_futimens)->UseRealTime();
BENCHMARK(BM_gunicorn_fchmod)->UseRealTime();
BENCHMARK(BM_systemd_sendto)->UseRealTime();
BENCHMARK(BM_systemd_sd_notify)->UseRealTime();

// ---- the summary ---------------------------------------------------------------

struct Result {
  std::vector<double> runs_ns;  // one per repetition
  std::vector<double> runs_cpu_ns;
  double median_ns = NAN;  // the "median" aggregate, if reported
  double median_cpu_ns = NAN;
  std::string error;

  static double Median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  double ns() const { return std::isnan(median_ns) ? Median(runs_ns) : median_ns; }
  double cpu_ns() const {
    return std::isnan(median_cpu_ns) ? Median(runs_cpu_ns) : median_cpu_ns;
  }
};

double ToNs(double value, benchmark::TimeUnit unit) {
  return value * 1e9 / benchmark::GetTimeUnitMultiplier(unit);
}

// The console reporter that also keeps what it prints.
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  using ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      Result& res = results_[r.run_name.function_name];
      if (r.error_occurred) {
        res.error = r.error_message;
        continue;
      }
      if (r.run_type == Run::RT_Aggregate) {
        if (r.aggregate_unit != benchmark::kTime) continue;
        if (r.aggregate_name == "median") {
          res.median_ns = ToNs(r.GetAdjustedRealTime(), r.time_unit);
          res.median_cpu_ns = ToNs(r.GetAdjustedCPUTime(), r.time_unit);
        }
      } else {
        res.runs_ns.push_back(ToNs(r.GetAdjustedRealTime(), r.time_unit));
        res.runs_cpu_ns.push_back(ToNs(r.GetAdjustedCPUTime(), r.time_unit));
      }
    }
  }

  const Result* Find(const std::string& name) const {
    auto it = results_.find(name);
    return it == results_.end() ? nullptr : &it->second;
  }
  const std::map<std::string, Result>& all() const { return results_; }

 private:
  std::map<std::string, Result> results_;
};

std::string Trim(std::string s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0 ||
        line.rfind("cpu model", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return Trim(line.substr(colon + 1));
    }
  }
  return "unknown CPU";
}

std::string CompilerName() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string MachineLine() {
  struct utsname u;
  std::string kernel = uname(&u) == 0
                           ? std::string(u.sysname) + " " + u.release + " " + u.machine
                           : "unknown kernel";
  std::string cs = ReadFirstLine("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string gov = ReadFirstLine("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
  char buf[512];
  snprintf(buf, sizeof buf, "%s, %ld CPUs online, %s, clocksource %s%s%s",
           CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN), kernel.c_str(),
           cs.empty() ? "unknown" : cs.c_str(), gov.empty() ? "" : ", governor ",
           gov.c_str());
  return buf;
}

std::string CompilerLine() {
  return "bench " + CompilerName() + "; libloopwatch " LW_BENCH_C_COMPILER
         "; CMAKE_BUILD_TYPE=" LW_BENCH_BUILD_TYPE;
}

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_=./:,+@%") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct Row {
  const char* name;
  const char* label;
};
const Row kRows[] = {
    {"BM_clock_gettime", "clock_gettime(CLOCK_MONOTONIC)  (floor)"},
    {"BM_lw_now_ns", "lw_now_ns()"},
    {"BM_lw_beat", "lw_beat             static, tmpfs segment"},
    {"BM_lw_beat_shared", "lw_beat             shared library"},
    {"BM_lw_beat_at", "lw_beat_at          time given, lag 0"},
    {"BM_lw_beat_at_lag_cycle", "lw_beat_at          lag cycling buckets"},
    {"BM_lw_beat_at_lag_random", "lw_beat_at          lag random bucket"},
    {"BM_lw_beat_at_lag_over30s", "lw_beat_at          lag > 30 s (last)"},
    {"BM_lw_beat_disabled", "lw_beat(NULL)       disabled"},
    {"BM_gunicorn_futimens", "gunicorn futimens   tmpfs file"},
    {"BM_gunicorn_fchmod", "gunicorn fchmod     tmpfs file (older)"},
    {"BM_systemd_sendto", "systemd sendto      WATCHDOG=1, AF_UNIX"},
    {"BM_systemd_sd_notify", "systemd sd_notify   socket+sendto+close"},
};

// Prints the summary; returns 0 (all targets met), 1 (a target missed or
// not measured) or 2 (a benchmark failed or a system call returned errors).
int PrintSummary(const CollectingReporter& rep, const std::string& command) {
  auto ns = [&](const char* name) {
    const Result* r = rep.Find(name);
    return r && r->error.empty() ? r->ns() : NAN;
  };
  const double beat = ns("BM_lw_beat");
  const double clock = ns("BM_clock_gettime");
  const double futimens = ns("BM_gunicorn_futimens");
  const double sendto = ns("BM_systemd_sendto");

  size_t reps = 0;
  bool medians = false;
  for (const auto& kv : rep.all()) {
    reps = std::max(reps, kv.second.runs_ns.size());
    medians = medians || !std::isnan(kv.second.median_ns);
  }

  printf("\n==== loopwatch heartbeat cost: summary ====\n");
  printf("machine:   %s\n", MachineLine().c_str());
  printf("compiler:  %s\n", CompilerLine().c_str());
  printf("files:     %s (%s)\n", g_env.dir.c_str(), g_env.fs.c_str());
  printf("statistic: %s, wall-clock ns per call\n",
         medians ? "median over the repetitions"
                 : reps > 1 ? "median of the runs" : "one run (add --benchmark_repetitions=5)");
  printf("command:   %s\n", command.c_str());
  printf("reproduce: scripts/bench   (Release build in build-bench/, 5 repetitions, medians)\n\n");

  printf("  %-44s %10s %12s\n", "case", "ns/call", "x lw_beat");
  for (const Row& row : kRows) {
    const Result* r = rep.Find(row.name);
    if (!r) continue;
    if (!r->error.empty()) {
      printf("  %-44s %10s   ERROR: %s\n", row.label, "-", r->error.c_str());
      continue;
    }
    double v = r->ns();
    if (std::isnan(beat)) {
      printf("  %-44s %10.2f\n", row.label, v);
    } else {
      printf("  %-44s %10.2f %11.2fx\n", row.label, v, v / beat);
    }
  }

  int status = 0;
  auto verdict = [&](bool measured, bool pass) {
    if (!measured) {
      status = std::max(status, 1);
      return "NOT MEASURED";
    }
    if (!pass) status = std::max(status, 1);
    return pass ? "PASS" : "FAIL";
  };
  auto num = [](double v, const char* fmt) {
    char buf[32];
    if (std::isnan(v)) return std::string("-");
    snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  printf("\n");
  bool m1 = !std::isnan(beat) && !std::isnan(clock);
  double over = beat - clock;
  printf("  lw_beat - clock_gettime   %8s ns   target <= 15 ns   %s\n",
         num(over, "%.2f").c_str(), verdict(m1, over <= 15.0));
  double r2 = futimens / beat;
  printf("  futimens / lw_beat        %8s x    target >= 15 x    %s\n",
         num(r2, "%.1f").c_str(), verdict(!std::isnan(r2), r2 >= 15.0));
  printf("  sendto / lw_beat          %8s x    (no target)\n",
         num(sendto / beat, "%.1f").c_str());
  printf("  futimens / lw_beat_at     %8s x    (no target)\n",
         num(futimens / ns("BM_lw_beat_at"), "%.1f").c_str());

  bool errors = false;
  for (const auto& kv : rep.all()) errors = errors || !kv.second.error.empty();
  if (g_errors.empty()) {
    printf("\n  system call errors in the competitors' heartbeats: none\n");
  } else {
    errors = true;
    printf("\n  system call errors in the competitors' heartbeats:\n");
    for (const auto& kv : g_errors) {
      printf("    %-40s %llu\n", kv.first.c_str(), (unsigned long long)kv.second);
    }
  }
  printf("  that lw_beat makes no system call: bench/check_no_syscalls.sh (strace)\n");
  // Every case is single-threaded: wall-clock time well above the process's
  // CPU time means the benchmark thread was preempted by something else.
  std::string disturbed;
  for (const Row& row : kRows) {
    const Result* r = rep.Find(row.name);
    if (!r || !r->error.empty()) continue;
    double real = r->ns(), cpu = r->cpu_ns();
    if (cpu > 0 && real > 1.15 * cpu) {
      char buf[96];
      snprintf(buf, sizeof buf, "%s%s +%.0f%%", disturbed.empty() ? "" : ", ",
               row.name + 3, (real / cpu - 1) * 100);
      disturbed += buf;
    }
  }
  printf("  load average (1 min) at start %s, at end %s\n", g_load_start.c_str(),
         ReadFirstLine("/proc/loadavg").substr(0, 4).c_str());
  if (!disturbed.empty()) {
    printf("  WARNING: wall-clock time exceeds CPU time (%s): other processes\n"
           "  competed for the CPUs; re-run on a quiet machine\n",
           disturbed.c_str());
  }
  if (!g_env.tmpfs) {
    printf("  WARNING: %s is not on tmpfs (%s); set LOOPWATCH_BENCH_DIR\n",
           g_env.dir.c_str(), g_env.fs.c_str());
  }
  if (errors) status = 2;
  printf("\nRESULT: %s\n", status == 0   ? "PASS"
                           : status == 1 ? "FAIL (a target missed or not measured)"
                                         : "ERROR (see above)");
  return status;
}

// ---- --beat-loop: the no-syscall check -------------------------------------------

void Marker(const char* text) {
  // A system call that strace shows with its text and that does nothing.
  if (syscall(SYS_write, -1, text, strlen(text)) < 0) {
  }
}

int BeatLoopMain(uint64_t n, const std::string& mode) {
  if (mode != "beat" && mode != "beat_at" && mode != "disabled") {
    fprintf(stderr, "--beat-mode must be beat, beat_at or disabled\n");
    return 2;
  }
  if (mode == "disabled") unsetenv("LOOPWATCH_SEGMENT");
  lw_loop_t* l = nullptr;
  int rc = lw_loop_open("bench-syscalls", kIntervalNs, &l);
  if (rc != 0 || (mode != "disabled" && !l)) {
    fprintf(stderr, "lw_loop_open: %s %s\n", lw_strerror(rc), lw_last_error());
    return 2;
  }
  uint64_t now = lw_now_ns();
  Marker("LW_BEAT_LOOP_BEGIN");
  if (mode == "beat_at") {
    for (uint64_t i = 0; i < n; i++) {
      now += kIntervalNs;
      lw_beat_at(l, now);
    }
  } else {
    for (uint64_t i = 0; i < n; i++) lw_beat(l);
  }
  Marker("LW_BEAT_LOOP_END");
  uint64_t count = 0;
  bool have = l && SegmentBeatCount(lw_loop_slot(l), &count);
  lw_loop_close(l);
  if (have) {
    printf("beat-loop: %llu x %s, beat_count in the segment: %llu\n",
           (unsigned long long)n, mode.c_str(), (unsigned long long)count);
    return count == n ? 0 : 2;
  }
  printf("beat-loop: %llu x %s (no segment)\n", (unsigned long long)n, mode.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string command;
  for (int i = 0; i < argc; i++) command += (i ? " " : "") + ShellQuote(argv[i]);

  bool check_targets = false;
  long long beat_loop = -1;
  std::string beat_mode = "beat";
  int kept = 1;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--check-targets") {
      check_targets = true;
    } else if (a.rfind("--beat-loop=", 0) == 0) {
      char* end = nullptr;
      beat_loop = strtoll(a.c_str() + 12, &end, 10);
      if (!end || *end || beat_loop < 0) {
        fprintf(stderr, "bad %s\n", a.c_str());
        return 2;
      }
    } else if (a.rfind("--beat-mode=", 0) == 0) {
      beat_mode = a.substr(12);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;

  std::string err;
  if (!SetUpEnv(&err)) {
    fprintf(stderr, "loopwatch_beat_bench: %s\n", err.c_str());
    return 2;
  }
  if (beat_loop >= 0) {
    int rc = BeatLoopMain((uint64_t)beat_loop, beat_mode);
    TearDownEnv();
    return rc;
  }

  g_load_start = ReadFirstLine("/proc/loadavg").substr(0, 4);
  benchmark::AddCustomContext("machine", MachineLine());
  benchmark::AddCustomContext("compiler", CompilerLine());
  benchmark::AddCustomContext("files", g_env.dir + " (" + g_env.fs + ")");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    TearDownEnv();
    return 2;
  }
  const char* term = getenv("TERM");
  bool color = isatty(STDOUT_FILENO) && term && strcmp(term, "dumb") != 0;
  CollectingReporter reporter(color ? benchmark::ConsoleReporter::OO_ColorTabular
                                    : benchmark::ConsoleReporter::OO_Tabular);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  int status = PrintSummary(reporter, command);
  TearDownEnv();
  fflush(stdout);
  if (status == 2) return 2;
  return check_targets ? status : 0;
}

// SPDX-License-Identifier: Apache-2.0
#include "segment_reader_harness.h"

#include <fcntl.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "segment_layout.h"

namespace lwfuzz {
namespace {

[[noreturn]] void Violation(const char* what, loopwatch::SegmentStatus st,
                            const loopwatch::SegmentReader& r) {
  fprintf(stderr, "segment reader invariant violated: %s (status %s: %s)\n",
          what, loopwatch::SegmentStatusName(st), r.error().c_str());
  abort();
}

#define LWFUZZ_CHECK(cond, st, r) \
  do {                            \
    if (!(cond)) Violation(#cond, st, r); \
  } while (0)

template <typename T>
T Get(const uint8_t* data, size_t size, size_t off) {
  T v{};
  if (off + sizeof v <= size) memcpy(&v, data + off, sizeof v);
  return v;
}

bool Terminated(const char* s, size_t n) { return memchr(s, 0, n) != nullptr; }

// A file of this process's own in a fresh directory on tmpfs (/dev/shm,
// else $TMPDIR or /tmp), removed at exit: the reader opens a path and takes
// only regular files, never a symbolic link such as /proc/self/fd/N.
struct Scratch {
  std::string dir, path;
  int fd = -1;
};

const Scratch& TheScratch() {
  // Never destroyed: the atexit handler below runs after static destructors.
  static const Scratch& s = *[] {
    auto* px = new Scratch;
    Scratch& x = *px;
    const char* tmp = getenv("TMPDIR");
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : tmp && *tmp ? tmp : "/tmp";
    std::string templ = base + "/lw-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) {
      perror("mkdtemp");
      abort();
    }
    x.dir = templ;
    x.path = x.dir + "/segment";
    x.fd = open(x.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (x.fd < 0) {
      perror("open scratch segment");
      abort();
    }
    atexit([] {
      unlink(TheScratch().path.c_str());
      rmdir(TheScratch().dir.c_str());
    });
    return px;
  }();
  return s;
}

const std::string& ScratchPath() { return TheScratch().path; }
int ScratchFd() { return TheScratch().fd; }

void Check(const loopwatch::SegmentReader& r, loopwatch::SegmentStatus st,
           const std::vector<loopwatch::SlotSnapshot>& snaps, size_t size) {
  LWFUZZ_CHECK(r.status() == st, st, r);
  if (st != loopwatch::SegmentStatus::kOk) {
    LWFUZZ_CHECK(snaps.empty(), st, r);
    LWFUZZ_CHECK(!r.error().empty(), st, r);
    return;
  }
  uint32_t n = r.header().slot_count;
  LWFUZZ_CHECK(n >= 1 && n <= LW_SEG_MAX_SLOTS, st, r);
  LWFUZZ_CHECK(lw_seg_size(n) <= size, st, r);
  LWFUZZ_CHECK(snaps.size() == n, st, r);
  for (uint32_t i = 0; i < n; i++) {
    const loopwatch::SlotSnapshot& s = snaps[i];
    LWFUZZ_CHECK(s.index == i, st, r);
    LWFUZZ_CHECK(Terminated(s.name, sizeof s.name), st, r);
    LWFUZZ_CHECK(Terminated(s.kind, sizeof s.kind), st, r);
    LWFUZZ_CHECK(Terminated(s.activity, sizeof s.activity), st, r);
    LWFUZZ_CHECK(Terminated(s.report.syscall_name, sizeof s.report.syscall_name), st, r);
    LWFUZZ_CHECK(Terminated(s.report.wchan, sizeof s.report.wchan), st, r);
    LWFUZZ_CHECK(Terminated(s.report.activity, sizeof s.report.activity), st, r);
    LWFUZZ_CHECK(s.report.text.size() <= LW_REPORT_TEXT_SIZE - 1, st, r);
    LWFUZZ_CHECK(s.owner_alive >= -1 && s.owner_alive <= 1, st, r);
    if (!s.valid) continue;
    LWFUZZ_CHECK(s.state <= LW_SLOT_CLOSED, st, r);
    LWFUZZ_CHECK(!s.claiming, st, r);
    LWFUZZ_CHECK(s.report.state <= LW_REPORT_CLOSED, st, r);
    LWFUZZ_CHECK(s.report.stall_class <= LW_CLASS_LAST, st, r);
    if (s.state == LW_SLOT_FREE) {
      LWFUZZ_CHECK(s.beat_count == 0 && s.owner_alive == 0, st, r);
      LWFUZZ_CHECK(s.report.text.empty(), st, r);
    }
  }
}

}  // namespace

loopwatch::SegmentStatus ExpectedStatus(const uint8_t* data, size_t size) {
  using loopwatch::SegmentStatus;
  if (size == 0) return SegmentStatus::kNotInitialised;
  if (size < LW_SEG_HEADER_SIZE) return SegmentStatus::kCorrupt;
  uint64_t magic = Get<uint64_t>(data, size, 0);
  if (magic == 0) return SegmentStatus::kNotInitialised;
  if (magic != LW_SEG_MAGIC) return SegmentStatus::kBadMagic;
  if (Get<uint16_t>(data, size, 8) != LW_SEG_VERSION_MAJOR) {
    return SegmentStatus::kVersionMismatch;
  }
  uint32_t slots = Get<uint32_t>(data, size, 20);
  if (Get<uint32_t>(data, size, 12) != LW_SEG_HEADER_SIZE ||
      Get<uint32_t>(data, size, 16) != LW_SEG_SLOT_SIZE || slots < 1 ||
      slots > LW_SEG_MAX_SLOTS || lw_seg_size(slots) > size) {
    return SegmentStatus::kCorrupt;
  }
  return SegmentStatus::kOk;
}

loopwatch::SegmentStatus RunSegmentReader(const uint8_t* data, size_t size) {
  int fd = ScratchFd();
  if (ftruncate(fd, 0) != 0) abort();
  size_t off = 0;
  while (off < size) {
    ssize_t n = pwrite(fd, data + off, size - off, static_cast<off_t>(off));
    if (n <= 0) abort();
    off += static_cast<size_t>(n);
  }
  loopwatch::SegmentReader r(ScratchPath());
  std::vector<loopwatch::SlotSnapshot> snaps;
  loopwatch::SegmentStatus st = r.Snapshot(&snaps);
  loopwatch::SegmentStatus want = ExpectedStatus(data, size);
  if (st != want) {
    fprintf(stderr, "expected status %s\n", loopwatch::SegmentStatusName(want));
    Violation("status as the validation rules predict", st, r);
  }
  Check(r, st, snaps, size);
  // Again, with the snapshots of the first pass (cached report text).
  st = r.Snapshot(&snaps);
  LWFUZZ_CHECK(st == want, st, r);
  Check(r, st, snaps, size);
  return st;
}

}  // namespace lwfuzz

// SPDX-License-Identifier: Apache-2.0
#include "reader.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "loopwatch/loopwatch.h"
#include "segment.h"
#include "segment_access.h"

namespace loopwatch {
namespace {

// ---- SIGBUS guard --------------------------------------------------------
//
// A file truncated under a mapping faults on access. The reading thread
// marks the range it is reading; the handler, if the fault lies inside it,
// maps anonymous zero pages over the whole range so that the read finishes
// (on garbage the validation then rejects) and flags the fault. Any other
// SIGBUS goes to the previous disposition.

thread_local const uint8_t* tl_guard_base = nullptr;
thread_local size_t tl_guard_size = 0;
thread_local volatile sig_atomic_t tl_guard_tripped = 0;
struct sigaction g_prev_bus;
std::once_flag g_bus_once;

void OnSigbus(int sig, siginfo_t* info, void* ctx) {
  const uint8_t* addr = static_cast<const uint8_t*>(info->si_addr);
  if (tl_guard_base && addr >= tl_guard_base &&
      addr < tl_guard_base + tl_guard_size) {
    mmap(const_cast<uint8_t*>(tl_guard_base), tl_guard_size, PROT_READ,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    tl_guard_tripped = 1;
    return;
  }
  if (g_prev_bus.sa_flags & SA_SIGINFO) {
    g_prev_bus.sa_sigaction(sig, info, ctx);
    return;
  }
  if (g_prev_bus.sa_handler != SIG_DFL && g_prev_bus.sa_handler != SIG_IGN) {
    g_prev_bus.sa_handler(sig);
    return;
  }
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

void InstallBusGuard() {
  std::call_once(g_bus_once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_prev_bus);
  });
}

class BusGuard {
 public:
  BusGuard(const uint8_t* base, size_t size) {
    tl_guard_tripped = 0;
    tl_guard_base = base;
    tl_guard_size = size;
  }
  ~BusGuard() {
    tl_guard_base = nullptr;
    tl_guard_size = 0;
  }
  bool tripped() const { return tl_guard_tripped != 0; }
};

// ---- word-wise loads -------------------------------------------------------

template <typename T>
T Load(const T* p, int order = __ATOMIC_RELAXED) {
  return __atomic_load_n(p, order);
}

// Copies `len` bytes of report text (the whole words that hold them).
void LoadText(std::string* dst, const char* src, uint32_t len) {
  dst->resize((len + 7) / 8 * 8);
  lw_load_words(dst->data(), src, dst->size() / 8);
  dst->resize(len);
}

}  // namespace

const char* SegmentStatusName(SegmentStatus s) {
  switch (s) {
    case SegmentStatus::kOk: return "ok";
    case SegmentStatus::kMissing: return "missing";
    case SegmentStatus::kNotInitialised: return "not_initialised";
    case SegmentStatus::kBadMagic: return "bad_magic";
    case SegmentStatus::kVersionMismatch: return "version_mismatch";
    case SegmentStatus::kCorrupt: return "corrupt";
    case SegmentStatus::kError: return "error";
  }
  return "unknown";
}

SegmentReader::SegmentReader(std::string path, uint32_t create_slots)
    : path_(std::move(path)), create_slots_(create_slots) {
  InstallBusGuard();
}

SegmentReader::~SegmentReader() { Unmap(); }

void SegmentReader::Unmap() {
  if (base_) munmap(const_cast<uint8_t*>(base_), map_size_);
  if (fd_ >= 0) close(fd_);
  base_ = nullptr;
  map_size_ = 0;
  fd_ = -1;
  dev_ = 0;
  ino_ = 0;
}

SegmentStatus SegmentReader::Fail(SegmentStatus s, std::string message) {
  status_ = s;
  error_ = std::move(message);
  return s;
}

SegmentStatus SegmentReader::Refresh() {
  // While all is well, the path is looked at only every restat interval: a
  // replaced file is found then, a truncated one at once (SIGBUS guard), an
  // overwritten header at once (it is read from the mapping every time).
  if (restat_ns_ > 0 && status_ == SegmentStatus::kOk && base_) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t now = int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    if (now - last_stat_ns_ < restat_ns_) return ValidateHeader(map_size_);
    last_stat_ns_ = now;
  }
  // The path itself, never what a symbolic link there points to: a link to
  // another file would show that file to whoever reads the status.
  struct stat st;
  int stat_rc = lstat(path_.c_str(), &st);
  int err = stat_rc == 0 ? 0 : errno;
  if (stat_rc == 0 && !S_ISREG(st.st_mode)) {
    Unmap();
    return Fail(SegmentStatus::kError,
                "segment " + path_ +
                    (S_ISLNK(st.st_mode) ? " is a symbolic link; loopwatch does not follow one: "
                                           "give the path of the file itself"
                                         : " is not a regular file; expected the segment file"));
  }
  if (stat_rc != 0 || (create_slots_ && st.st_size == 0)) {
    bool missing = err == ENOENT;
    bool empty = stat_rc == 0;
    if ((missing || empty) && create_slots_) {
      lw_seg_map m;
      if (lw_internal_segment_open(path_.c_str(), create_slots_, &m) == 0) {
        munmap(m.base, m.size);
        close(m.fd);
        return Refresh();
      }
      // Cannot create (read-only volume?): wait for the app to do it.
    }
    Unmap();
    if (empty) {
      return Fail(SegmentStatus::kNotInitialised,
                  "segment " + path_ + " is empty and cannot be initialised "
                  "here: " + lw_last_error());
    }
    if (missing) {
      return Fail(SegmentStatus::kMissing,
                  "segment " + path_ + " does not exist yet");
    }
    return Fail(SegmentStatus::kError,
                "cannot stat segment " + path_ + ": " + strerror(err));
  }
  // Replaced (deleted and created again): follow the path, not the old
  // inode, even when nothing is mapped (an empty or short file).
  if (fd_ >= 0 && (st.st_dev != dev_ || st.st_ino != ino_)) Unmap();
  if (!base_) {
    if (fd_ < 0) {
      // No final symlink, and no wait on a FIFO put there since the lstat.
      fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
      if (fd_ < 0) {
        int open_err = errno;
        return Fail(SegmentStatus::kError,
                    "cannot open segment " + path_ + ": " + strerror(open_err));
      }
    }
    struct stat fst;
    if (fstat(fd_, &fst) != 0) {
      int fstat_err = errno;
      Unmap();
      return Fail(SegmentStatus::kError,
                  "cannot stat segment " + path_ + ": " + strerror(fstat_err));
    }
    if (!S_ISREG(fst.st_mode)) {  // changed since the lstat
      Unmap();
      return Fail(SegmentStatus::kError,
                  "segment " + path_ + " is not a regular file; expected the segment file");
    }
    dev_ = fst.st_dev;
    ino_ = fst.st_ino;
    st = fst;
  }
  uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < LW_SEG_HEADER_SIZE) {
    if (base_) {
      munmap(const_cast<uint8_t*>(base_), map_size_);
      base_ = nullptr;
      map_size_ = 0;
    }
    if (file_size == 0) {
      return Fail(SegmentStatus::kNotInitialised,
                  "segment " + path_ + " is empty: not initialised yet");
    }
    return Fail(SegmentStatus::kCorrupt,
                "segment " + path_ + " is " + std::to_string(file_size) +
                    " bytes, shorter than its header (" +
                    std::to_string(LW_SEG_HEADER_SIZE) + ")");
  }
  if (base_ && file_size != map_size_) {
    munmap(const_cast<uint8_t*>(base_), map_size_);
    base_ = nullptr;
    map_size_ = 0;
  }
  if (!base_) {
    void* p = mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) {
      int map_err = errno;
      return Fail(SegmentStatus::kError,
                  "cannot map segment " + path_ + ": " + strerror(map_err));
    }
    base_ = static_cast<const uint8_t*>(p);
    map_size_ = file_size;
  }
  return ValidateHeader(file_size);
}

SegmentStatus SegmentReader::ValidateHeader(uint64_t file_size) {
  BusGuard guard(base_, map_size_);
  const auto* h = reinterpret_cast<const lw_seg_header_t*>(base_);
  uint64_t magic = Load(&h->magic, __ATOMIC_ACQUIRE);
  HeaderSnapshot hs;
  hs.version_major = Load(&h->version_major);
  hs.version_minor = Load(&h->version_minor);
  uint32_t header_size = Load(&h->header_size);
  uint32_t slot_size = Load(&h->slot_size);
  hs.slot_count = Load(&h->slot_count);
  hs.segment_id = Load(&h->segment_id);
  hs.created_mono_ns = Load(&h->created_mono_ns);
  hs.created_real_ns = Load(&h->created_real_ns);
  hs.creator_pid = Load(&h->creator_pid);
  if (guard.tripped()) return AfterTruncation();
  if (magic == 0) {
    return Fail(SegmentStatus::kNotInitialised,
                "segment " + path_ + " is not initialised yet");
  }
  if (magic != LW_SEG_MAGIC) {
    char buf[32];
    snprintf(buf, sizeof buf, "0x%016llx",
             static_cast<unsigned long long>(magic));
    return Fail(SegmentStatus::kBadMagic, "segment " + path_ +
                                              " is not a loopwatch segment "
                                              "(magic " + buf + ")");
  }
  if (hs.version_major != LW_SEG_VERSION_MAJOR) {
    return Fail(SegmentStatus::kVersionMismatch,
                "segment " + path_ + " has format version " +
                    std::to_string(hs.version_major) + "." +
                    std::to_string(hs.version_minor) +
                    "; this reader understands version " +
                    std::to_string(LW_SEG_VERSION_MAJOR) + "." +
                    std::to_string(LW_SEG_VERSION_MINOR) +
                    " (major versions must match)");
  }
  if (header_size != LW_SEG_HEADER_SIZE || slot_size != LW_SEG_SLOT_SIZE ||
      hs.slot_count < 1 || hs.slot_count > LW_SEG_MAX_SLOTS ||
      lw_seg_size(hs.slot_count) > file_size) {
    return Fail(SegmentStatus::kCorrupt,
                "segment " + path_ + " is corrupt: header " +
                    std::to_string(header_size) + " bytes, " +
                    std::to_string(hs.slot_count) + " slots of " +
                    std::to_string(slot_size) + " bytes, file " +
                    std::to_string(file_size) + " bytes");
  }
  header_ = hs;
  status_ = SegmentStatus::kOk;
  error_.clear();
  return status_;
}

int SegmentReader::OwnerAlive(uint32_t index) const {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(LW_SEG_LOCK_BASE + index);
  fl.l_len = 1;
  if (fcntl(fd_, F_OFD_GETLK, &fl) != 0) return -1;
  return fl.l_type == F_UNLCK ? 0 : 1;
}

bool SegmentReader::ReadSlot(uint32_t index, SlotSnapshot* out) {
  // What the caller's previous snapshot of this slot said: a loop that beat
  // since then is alive without asking the kernel about its lock.
  const bool prev_valid = out->valid;
  const uint32_t prev_generation = out->generation;
  const uint64_t prev_beats = out->beat_count;
  const int prev_alive = out->owner_alive;
  out->index = index;
  out->valid = false;
  if (!base_ || index >= header_.slot_count) return false;
  const auto* s = reinterpret_cast<const lw_seg_slot_t*>(
      base_ + LW_SEG_HEADER_SIZE + static_cast<size_t>(index) * LW_SEG_SLOT_SIZE);

  // Identity, guarded by the generation. Only a claim writes these fields,
  // and a claim changes the generation: a snapshot of the same claim keeps
  // its copy (polls then leave the slot's cold lines alone). Within a claim
  // only the state moves (a close).
  const uint32_t generation = Load(&s->generation, __ATOMIC_ACQUIRE);
  const bool same_claim = prev_valid && generation == prev_generation && !(generation & 1u);
  if (same_claim) {
    out->state = Load(&s->state);
  } else if (!LwSeqlockRead(lw_generation_read, &s->generation, [&](uint64_t g) {
        out->generation = uint32_t(g);
        out->state = Load(&s->state);
        out->pid = Load(&s->pid);
        out->tid = Load(&s->tid);
        out->claim_token = Load(&s->claim_token);
        out->opened_ns = Load(&s->opened_ns);
        out->interval_ns = Load(&s->interval_ns);
        out->report_after_ns = Load(&s->report_after_ns);
        lw_load_field(out->name, s->name, sizeof out->name);
        lw_load_field(out->kind, s->kind, sizeof out->kind);
        lw_load_field(out->container, s->container, sizeof out->container);
      })) {
    // Never settled, or a claim under way (odd generation).
    out->claiming = (Load(&s->generation) & 1u) != 0;
    return false;
  }
  out->claiming = false;
  if (out->state > LW_SLOT_CLOSED) return false;
  if (out->state == LW_SLOT_FREE) {
    uint32_t gen = out->generation;
    *out = SlotSnapshot{};
    out->index = index;
    out->generation = gen;
    out->owner_alive = 0;
    out->valid = true;
    return true;
  }

  if (!LwSeqlockRead(lw_seqlock_read, &s->beat_seq, [&](uint64_t) {
        out->beat_count = Load(&s->beat_count);
        out->last_beat_ns = Load(&s->last_beat_ns);
        out->lag_max_ns = Load(&s->lag_max_ns);
        out->lag_sum_ns = Load(&s->lag_sum_ns);
        out->lag_count = Load(&s->lag_count);
        lw_load_words(out->lag_bucket, s->lag_bucket, LW_LAG_BUCKETS);
      })) {
    return false;
  }

  out->ready = Load(&s->ready, __ATOMIC_ACQUIRE) != 0;
  // The activity and the report are copied again only when their sequence
  // moved since the caller's snapshot of the same claim.
  if (!same_claim || Load(&s->activity_seq, __ATOMIC_ACQUIRE) != out->activity_seq) {
    if (!LwSeqlockRead(lw_seqlock_read, &s->activity_seq, [&](uint64_t seq) {
          out->activity_seq = seq;
          lw_load_field(out->activity, s->activity, sizeof out->activity);
        })) {
      out->activity_seq = ~uint64_t{0};
      out->activity[0] = '\0';
    }
  }

  ReportSnapshot& r = out->report;
  uint64_t prev_seq = r.seq;
  if ((!same_claim || Load(&s->report_seq, __ATOMIC_ACQUIRE) != prev_seq) &&
      !LwSeqlockRead(lw_seqlock_read, &s->report_seq, [&](uint64_t seq) {
        r.seq = seq;
        r.stall_count = Load(&s->stall_count);
        r.stall_start_ns = Load(&s->stall_start_ns);
        r.stall_end_ns = Load(&s->stall_end_ns);
        r.updated_ns = Load(&s->report_updated_ns);
        r.loop_cpu_ns = Load(&s->loop_cpu_ns);
        r.state = Load(&s->report_state);
        r.stall_class = Load(&s->stall_class);
        r.syscall_nr = Load(&s->syscall_nr);
        lw_load_field(r.syscall_name, s->syscall_name, sizeof r.syscall_name);
        lw_load_field(r.wchan, s->wchan, sizeof r.wchan);
        lw_load_field(r.activity, s->report_activity, sizeof r.activity);
        uint32_t len = Load(&s->text_len);
        if (len > LW_REPORT_TEXT_SIZE - 1) len = LW_REPORT_TEXT_SIZE - 1;
        // The text is copied only when the report changed since the
        // caller's snapshot; a retry copies it again.
        if (seq != prev_seq || r.text.size() != len) LoadText(&r.text, s->text, len);
        prev_seq = ~seq;
      })) {
    return false;
  }
  if (r.state > LW_REPORT_CLOSED) r.state = LW_REPORT_NONE;
  if (r.stall_class > LW_CLASS_LAST) r.stall_class = LW_CLASS_UNKNOWN;
  const bool beat_since = prev_valid && prev_alive == 1 &&
                          prev_generation == out->generation &&
                          prev_beats != out->beat_count;
  out->owner_alive = out->state != LW_SLOT_ACTIVE ? 0
                     : beat_since                 ? 1
                                                  : OwnerAlive(index);
  if (out->owner_alive == 0 && out->state == LW_SLOT_ACTIVE) {
    // A clean close stores CLOSED before it drops the lock: look again, so
    // that a close racing this read is not taken for a death.
    uint32_t state = Load(&s->state, __ATOMIC_ACQUIRE);
    if (state == LW_SLOT_CLOSED) out->state = LW_SLOT_CLOSED;
  }
  // The identity must not have changed under us (a new claim zeroes the
  // other regions): otherwise this mixes two owners.
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (Load(&s->generation) != out->generation) return false;
  out->valid = true;
  return true;
}

SegmentStatus SegmentReader::Snapshot(std::vector<SlotSnapshot>* out) {
  if (Refresh() != SegmentStatus::kOk) {
    out->clear();
    return status_;
  }
  BusGuard guard(base_, map_size_);
  if (out->size() != header_.slot_count || header_.segment_id != snap_segment_id_) {
    // Another segment (re-created, replaced): nothing of the old one is
    // reused, report text least of all.
    out->clear();
    out->resize(header_.slot_count);
    snap_segment_id_ = header_.segment_id;
  }
  for (uint32_t i = 0; i < header_.slot_count; i++) {
    SlotSnapshot& snap = (*out)[i];
    uint32_t prev_gen = snap.generation;
    if (!ReadSlot(i, &snap)) continue;
    if (snap.generation != prev_gen) {
      // A new owner: never reuse the old owner's report text.
      snap.report.text.clear();
      snap.report.seq = ~uint64_t{0};
      ReadSlot(i, &snap);
    }
  }
  if (guard.tripped()) {
    out->clear();
    return AfterTruncation();
  }
  return status_;
}

// The file shrank under the mapping. Look at it again, once, so that the
// status says what is there now (empty, shorter than a header, ...), not
// just that something was cut.
SegmentStatus SegmentReader::AfterTruncation() {
  Unmap();
  if (!retrying_) {
    retrying_ = true;
    SegmentStatus st = Refresh();
    retrying_ = false;
    if (st != SegmentStatus::kOk) {
      error_ = "segment " + path_ + " was truncated while being read; now " +
               error_;
      return st;
    }
  }
  return Fail(SegmentStatus::kCorrupt,
              "segment " + path_ + " was truncated while being read");
}

}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// reader.h: the reading side of the segment, internal to the project (the
// sidecar, tools and tests use it; it is not part of the public ABI).
//
// A SegmentReader maps the segment read-only and takes consistent snapshots
// of every slot without ever waiting for a writer. It trusts nothing in the
// file: every length, index and enum is checked, strings are bounded, and a
// file truncated under the mapping costs a SIGBUS that is caught and turned
// into a status. It is not thread-safe: one thread (the sidecar's poll
// thread) owns a reader.
#ifndef LOOPWATCH_READER_H_
#define LOOPWATCH_READER_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "segment_layout.h"

namespace loopwatch {

enum class SegmentStatus {
  kOk,
  kMissing,          // no file at the path (yet)
  kNotInitialised,   // empty, or its creator has not published it yet
  kBadMagic,         // not a loopwatch segment
  kVersionMismatch,  // another major format version
  kCorrupt,          // impossible geometry or a file shorter than it says
  kError,            // the file exists but cannot be opened or mapped
};

const char* SegmentStatusName(SegmentStatus s);

struct ReportSnapshot {
  uint64_t seq = 0;
  uint64_t stall_count = 0;
  uint64_t stall_start_ns = 0;
  uint64_t stall_end_ns = 0;
  uint64_t updated_ns = 0;
  uint64_t loop_cpu_ns = 0;
  uint32_t state = LW_REPORT_NONE;      // LW_REPORT_*
  uint32_t stall_class = LW_CLASS_UNKNOWN;  // LW_CLASS_*
  int32_t syscall_nr = -1;
  char syscall_name[LW_SYSCALL_NAME_SIZE] = {};
  char wchan[LW_WCHAN_SIZE] = {};
  char activity[LW_ACTIVITY_SIZE] = {};
  std::string text;
};

struct SlotSnapshot {
  uint32_t index = 0;
  // False when a field failed validation or a seqlock never settled; the
  // rest of the snapshot is then not to be trusted.
  bool valid = false;
  uint32_t state = LW_SLOT_FREE;  // LW_SLOT_*
  uint32_t generation = 0;
  bool claiming = false;          // generation odd: a claim is under way
  int owner_alive = -1;           // 1 owner holds its lock, 0 not, -1 unknown
  uint32_t pid = 0;
  uint32_t tid = 0;
  uint64_t claim_token = 0;
  uint64_t opened_ns = 0;
  uint64_t interval_ns = 0;
  uint64_t report_after_ns = 0;
  char name[LW_SLOT_NAME_SIZE] = {};
  char kind[LW_SLOT_KIND_SIZE] = {};
  char container[LW_SLOT_CONTAINER_SIZE] = {};  // since 1.1; "" when not set

  uint64_t beat_count = 0;
  uint64_t last_beat_ns = 0;
  uint64_t lag_max_ns = 0;
  uint64_t lag_sum_ns = 0;
  uint64_t lag_count = 0;
  uint64_t lag_bucket[LW_LAG_BUCKETS] = {};

  bool ready = true;
  uint64_t activity_seq = ~uint64_t{0};  // of the copy in `activity`
  char activity[LW_ACTIVITY_SIZE] = {};
  ReportSnapshot report;
};

struct HeaderSnapshot {
  uint16_t version_major = 0;
  uint16_t version_minor = 0;
  uint32_t slot_count = 0;
  uint64_t segment_id = 0;
  uint64_t created_mono_ns = 0;
  uint64_t created_real_ns = 0;
  uint32_t creator_pid = 0;
};

class SegmentReader {
 public:
  // create_slots > 0: create and initialise the segment when the file is
  // missing or empty (the sidecar may start before the app), with the same
  // protocol as the library; then map it read-only all the same.
  explicit SegmentReader(std::string path, uint32_t create_slots = 0);
  ~SegmentReader();
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;

  // Re-checks the file (appeared, replaced, resized) and snapshots every
  // slot into *out, resized to the slot count. Text of a report is copied
  // only when the report changed since the snapshot already in *out.
  // On any status but kOk, *out is cleared and error() says why.
  SegmentStatus Snapshot(std::vector<SlotSnapshot>* out);

  SegmentStatus status() const { return status_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }
  const HeaderSnapshot& header() const { return header_; }

  // Look at the path (for a replaced file) at most this often while the
  // segment is healthy; 0, the default, looks at every Snapshot().
  void set_restat_interval_ns(int64_t ns) { restat_ns_ = ns; }

  // Reads one slot. Exposed for tests; Snapshot() calls it for every slot.
  bool ReadSlot(uint32_t index, SlotSnapshot* out);

 private:
  SegmentStatus Refresh();
  SegmentStatus ValidateHeader(uint64_t file_size);
  SegmentStatus AfterTruncation();
  SegmentStatus Fail(SegmentStatus s, std::string message);
  void Unmap();
  int OwnerAlive(uint32_t index) const;

  std::string path_;
  uint32_t create_slots_;
  int fd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  const uint8_t* base_ = nullptr;
  size_t map_size_ = 0;
  HeaderSnapshot header_;
  uint64_t snap_segment_id_ = 0;
  int64_t restat_ns_ = 0;
  int64_t last_stat_ns_ = 0;
  bool retrying_ = false;  // segment the caller's snapshots came from
  SegmentStatus status_ = SegmentStatus::kMissing;
  std::string error_;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_READER_H_

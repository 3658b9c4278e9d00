// SPDX-License-Identifier: Apache-2.0
#include "model.h"

namespace loopwatch {
namespace {

constexpr uint64_t kLagBoundsNs[LW_LAG_FINITE_BOUNDS] = LW_LAG_BOUNDS_NS_INIT;

}  // namespace

const char* LoopStateName(LoopState s) {
  switch (s) {
    case LoopState::kStarting: return "starting";
    case LoopState::kLive: return "live";
    case LoopState::kLagging: return "lagging";
    case LoopState::kStalled: return "stalled";
    case LoopState::kDead: return "dead";
    case LoopState::kGone: return "gone";
  }
  return "unknown";
}

const char* StallClassName(StallClass c) {
  switch (c) {
    case StallClass::kCpu: return "cpu";
    case StallClass::kBlocked: return "blocked";
    case StallClass::kHost: return "host";
    case StallClass::kGil: return "gil";
    case StallClass::kUnknown: break;
  }
  return "unknown";
}

std::string SegmentSummary(SegmentStatus s) {
  const char* what = "";
  switch (s) {
    case SegmentStatus::kOk: what = "readable"; break;
    case SegmentStatus::kMissing: what = "the app has not created it yet"; break;
    case SegmentStatus::kNotInitialised: what = "not initialised yet"; break;
    case SegmentStatus::kBadMagic: what = "not a loopwatch segment"; break;
    case SegmentStatus::kVersionMismatch: what = "another major format version"; break;
    case SegmentStatus::kCorrupt: what = "corrupt"; break;
    case SegmentStatus::kError: what = "cannot be read; see the sidecar's log"; break;
  }
  return std::string("segment ") + SegmentStatusName(s) + " (" + what + ")";
}

const std::shared_ptr<const StallHistory>& NoStalls() {
  static const auto* none = new std::shared_ptr<const StallHistory>(std::make_shared<StallHistory>());
  return *none;
}

std::string DescribeStall(const StallRecord& s) {
  switch (s.stall_class) {
    case StallClass::kCpu: return "cpu-bound";
    case StallClass::kBlocked:
      return s.syscall.empty() ? "blocked" : "blocked in " + s.syscall;
    case StallClass::kHost: return "host paused";
    case StallClass::kGil: return "waiting for the GIL";
    case StallClass::kUnknown: break;
  }
  return s.has_report ? "class unknown" : "no report yet";
}

int64_t LagBucketUpperNs(unsigned b) {
  return b < LW_LAG_FINITE_BOUNDS ? int64_t(kLagBoundsNs[b]) : -1;
}

int64_t LagBucketLowerNs(unsigned b) {
  return b == 0 ? 0 : LagBucketUpperNs(b - 1);
}

int64_t LagP99Ns(const uint64_t (&bucket)[LW_LAG_BUCKETS], uint64_t max_ns) {
  uint64_t total = 0;
  for (uint64_t n : bucket) total += n;
  if (total == 0) return -1;
  const uint64_t need = (total * 99 + 99) / 100;
  const int64_t max = max_ns > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(max_ns);
  uint64_t run = 0;
  for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
    run += bucket[b];
    if (run >= need) {
      const int64_t up = LagBucketUpperNs(b);
      return up >= 0 ? up : max;
    }
  }
  return max;
}

}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// Seqlock consistency: a writer thread publishes as fast as it can while a
// reader thread snapshots the same slot through its own read-only mapping.
// The writer's values obey exact relations, so a snapshot that mixed two
// writes (a torn read the seqlock should have rejected) breaks one of them.
// CI runs this under -fsanitize=thread as well: every shared word must be
// accessed atomically, on both sides.
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <set>
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
using std::chrono::milliseconds;

constexpr uint64_t kInterval = 1000000;  // 1 ms
constexpr uint64_t kLag = 3000000;       // 3 ms: bucket 2 (2.5 < lag <= 5 ms)
// Far in the future of CLOCK_MONOTONIC: the watchdog ignores these beats.
constexpr uint64_t kBase = UINT64_C(0x4000000000000000);

// Two labels of different lengths and contents: a torn copy of one over the
// other is neither.
const std::string kShortLabel = "GET /a";
const std::string kLongLabel =
    "POST /v1/orders/0123456789/items/abcdefghijklmnopqrstuvwxyz-ABC";

lw_loop_t* OpenLoop(const char* name, uint64_t interval_ns,
                    uint64_t report_after_ns) {
  lw_loop_options_t o{};
  o.struct_size = sizeof o;
  o.name = name;
  o.interval_ns = interval_ns;
  o.report_after_ns = report_after_ns;
  lw_loop_t* loop = nullptr;
  int rc = lw_loop_open_ex(&o, &loop);
  EXPECT_EQ(rc, 0) << lw_last_error();
  return loop;
}

// Beat k (1-based) at kBase + (k-1) * (interval + lag): every beat after the
// first is exactly kLag late, so a consistent snapshot with beat_count n has
//   last_beat_ns == kBase + (n-1) * (kInterval + kLag)
//   lag_count == lag_bucket[2] == n-1, lag_sum_ns == (n-1) * kLag,
//   lag_max_ns == (n > 1 ? kLag : 0), and every other bucket 0.
void CheckBeatRelation(const loopwatch::SlotSnapshot& s, std::string* why) {
  uint64_t n = s.beat_count;
  if (n == 0) {
    if (s.last_beat_ns || s.lag_count || s.lag_sum_ns || s.lag_max_ns) {
      *why = "beat_count 0 but lag fields set";
    }
    return;
  }
  if (s.last_beat_ns != kBase + (n - 1) * (kInterval + kLag)) {
    *why = "last_beat_ns does not belong to beat_count";
  } else if (s.lag_count != n - 1) {
    *why = "lag_count != beat_count - 1";
  } else if (s.lag_sum_ns != (n - 1) * kLag) {
    *why = "lag_sum_ns != (beat_count - 1) * lag";
  } else if (s.lag_max_ns != (n > 1 ? kLag : 0)) {
    *why = "lag_max_ns wrong";
  } else {
    for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) {
      uint64_t want = b == 2 ? n - 1 : 0;
      if (s.lag_bucket[b] != want) {
        *why = "lag_bucket[" + std::to_string(b) + "] wrong";
        break;
      }
    }
  }
  if (!why->empty()) {
    *why += " (beat_count " + std::to_string(n) + ", last_beat_ns " +
            std::to_string(s.last_beat_ns) + ", lag_count " +
            std::to_string(s.lag_count) + ", lag_sum_ns " +
            std::to_string(s.lag_sum_ns) + ")";
  }
}

TEST(Seqlock, BeatSnapshotsAreNeverTorn) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 2);
    std::atomic<bool> opened{false}, stop{false};
    std::atomic<uint64_t> beats{0};
    std::thread writer([&] {
      lw_loop_t* loop = OpenLoop("seq-beat", kInterval, 10000000000);
      opened = true;
      if (!loop) return;
      uint64_t k = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        lw_beat_at(loop, kBase + k * (kInterval + kLag));
        k++;
        if ((k & 1023) == 0) beats.store(k, std::memory_order_relaxed);
        // A pause of varying length between beats, so that the reader also
        // succeeds while the writer runs (not only when it is descheduled),
        // and its copies start at every point of a beat.
        for (uint64_t spin = k % 97; spin > 0; spin--) {
          std::atomic_signal_fence(std::memory_order_seq_cst);
        }
      }
      beats = k;
      lw_loop_close(loop);
    });
    while (!opened) std::this_thread::yield();

    loopwatch::SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    uint64_t consistent = 0, unsettled = 0, last_n = 0;
    std::set<uint64_t> distinct;
    std::string failure;
    auto deadline = lwtest::Clock::now() + milliseconds(1000);
    while (lwtest::Clock::now() < deadline && failure.empty()) {
      ASSERT_EQ(r.Snapshot(&snaps), loopwatch::SegmentStatus::kOk) << r.error();
      const auto& s = snaps[0];
      if (!s.valid) {
        unsettled++;
        continue;
      }
      ASSERT_EQ(s.state, LW_SLOT_ACTIVE);
      ASSERT_STREQ(s.name, "seq-beat");
      CheckBeatRelation(s, &failure);
      if (s.beat_count < last_n) failure = "beat_count went back";
      last_n = s.beat_count;
      consistent++;
      if (distinct.size() < 100000) distinct.insert(s.beat_count);
    }
    stop = true;
    writer.join();
    EXPECT_EQ(failure, "") << "torn snapshot after " << consistent
                           << " consistent ones";
    printf("%llu beats written, %llu consistent snapshots (%zu distinct "
           "counts), %llu unsettled\n",
           (unsigned long long)beats.load(), (unsigned long long)consistent,
           distinct.size(), (unsigned long long)unsettled);
    // The two threads really overlapped: many snapshots, at many counts.
    EXPECT_GE(consistent, 50u);
    EXPECT_GE(distinct.size(), 10u);
  });
}

TEST(Seqlock, ActivityLabelIsNeverAMix) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 2);
    std::atomic<bool> opened{false}, stop{false};
    std::thread writer([&] {
      lw_loop_t* loop = OpenLoop("seq-activity", kInterval, 10000000000);
      opened = true;
      if (!loop) return;
      for (uint64_t k = 0; !stop.load(std::memory_order_relaxed); k++) {
        lw_set_activity(loop, (k & 1) ? kLongLabel.c_str() : kShortLabel.c_str());
      }
      lw_loop_close(loop);
    });
    while (!opened) std::this_thread::yield();

    loopwatch::SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    uint64_t seen_short = 0, seen_long = 0;
    std::string bad;
    auto deadline = lwtest::Clock::now() + milliseconds(1000);
    while (lwtest::Clock::now() < deadline && bad.empty()) {
      ASSERT_EQ(r.Snapshot(&snaps), loopwatch::SegmentStatus::kOk) << r.error();
      const auto& s = snaps[0];
      if (!s.valid) continue;
      ASSERT_EQ(strnlen(s.activity, sizeof s.activity), strlen(s.activity));
      std::string a = s.activity;
      if (a == kShortLabel) {
        seen_short++;
      } else if (a == kLongLabel) {
        seen_long++;
      } else if (!a.empty()) {  // "" only before the first label, or unsettled
        bad = a;
      }
    }
    stop = true;
    writer.join();
    EXPECT_EQ(bad, "") << "a label mixed from two writes";
    printf("short %llu, long %llu\n", (unsigned long long)seen_short,
           (unsigned long long)seen_long);
    EXPECT_GT(seen_short, 0u);
    EXPECT_GT(seen_long, 0u);
  });
}

// The report area, written by the watchdog thread (fields, then the hook's
// text) while the loop alternates short stalls and beats.
struct HookState {
  std::atomic<int> calls{0};
};

// Text of the n-th report: "n;" repeated to a length that depends on n.
std::string ReportText(int n) {
  std::string unit = std::to_string(n) + ";";
  size_t len = 64 + static_cast<size_t>(n) * 997 % 4000;
  std::string s;
  while (s.size() < len) s += unit;
  s.resize(len);
  return s;
}

size_t Hook(lw_loop_t*, void* user, char* buf, size_t size) {
  auto* st = static_cast<HookState*>(user);
  int n = ++st->calls;
  std::string t = ReportText(n);
  size_t len = t.size() < size ? t.size() : size;
  memcpy(buf, t.data(), len);
  return len;
}

TEST(Seqlock, ReportAreaIsNeverAMix) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 2);
    std::atomic<bool> opened{false}, stop{false};
    HookState hook;
    std::thread loop_thread([&] {
      // 1 ms interval, 10 ms report_after: a 40 ms pause is a stall.
      lw_loop_t* loop = OpenLoop("seq-report", kInterval, 10000000);
      if (loop) lw_set_report_hook(loop, Hook, &hook);
      opened = true;
      if (!loop) return;
      for (int k = 0; !stop.load(); k++) {
        lw_set_activity(loop, (k & 1) ? kLongLabel.c_str() : kShortLabel.c_str());
        usleep(40000);  // stall
        for (int i = 0; i < 20 && !stop.load(); i++) {
          lw_beat(loop);
          usleep(1000);
        }
      }
      lw_loop_close(loop);
    });
    while (!opened) std::this_thread::yield();

    loopwatch::SegmentReader r(path);
    std::vector<loopwatch::SlotSnapshot> snaps;
    std::set<int> texts_seen;
    uint64_t open_seen = 0, closed_seen = 0, max_stalls = 0;
    std::string bad;
    // At least 1.5 s, and on until enough reports were seen (a sanitizer
    // slows the reader down), at most the scaled bound.
    auto start = lwtest::Clock::now();
    auto enough = [&] {
      return lwtest::Clock::now() - start > milliseconds(1500) &&
             texts_seen.size() >= 3 && open_seen > 0 && closed_seen > 0;
    };
    while (lwtest::Clock::now() - start < lwtest::Scaled(milliseconds(1500)) &&
           !enough() && bad.empty()) {
      ASSERT_EQ(r.Snapshot(&snaps), loopwatch::SegmentStatus::kOk) << r.error();
      const auto& s = snaps[0];
      if (!s.valid) continue;
      const auto& rep = s.report;
      if (rep.stall_count < max_stalls) bad = "stall_count went back";
      max_stalls = rep.stall_count;
      if (rep.state == LW_REPORT_NONE) {
        if (rep.stall_count != 0) bad = "no report but stall_count > 0";
        continue;
      }
      if (rep.stall_count == 0) bad = "a report with stall_count 0";
      if (rep.stall_start_ns == 0) bad = "a report without stall_start_ns";
      if (rep.state == LW_REPORT_OPEN) {
        open_seen++;
        if (rep.stall_end_ns != 0) bad = "open report with stall_end_ns";
      } else if (rep.state == LW_REPORT_CLOSED) {
        closed_seen++;
        if (rep.stall_end_ns <= rep.stall_start_ns) {
          bad = "closed report ends before it starts";
        }
      }
      std::string act = rep.activity;
      if (act != kShortLabel && act != kLongLabel) {
        bad = "report activity is a mix: \"" + act + "\"";
      }
      if (!rep.text.empty()) {
        int n = atoi(rep.text.c_str());
        if (n <= 0 || rep.text != ReportText(n)) {
          bad = "report text is a mix (" + std::to_string(rep.text.size()) +
                " bytes, starts \"" + rep.text.substr(0, 16) + "\")";
        } else if (static_cast<uint64_t>(n) != rep.stall_count) {
          bad = "text of report " + std::to_string(n) + " under stall_count " +
                std::to_string(rep.stall_count);
        } else {
          texts_seen.insert(n);
        }
      }
    }
    stop = true;
    loop_thread.join();
    EXPECT_EQ(bad, "");
    printf("reports: %d hook calls, %zu texts seen, %llu open and %llu closed "
           "snapshots\n",
           hook.calls.load(), texts_seen.size(),
           (unsigned long long)open_seen, (unsigned long long)closed_seen);
    EXPECT_GE(texts_seen.size(), 3u);
    EXPECT_GT(open_seen, 0u);
    EXPECT_GT(closed_seen, 0u);
  });
}

}  // namespace

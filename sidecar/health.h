// SPDX-License-Identifier: Apache-2.0
//
// health.h: the per-loop state machine and the probe verdicts.
//
// Health is fed one segment snapshot per poll, with the sidecar's own
// CLOCK_MONOTONIC time and how late the poll itself woke. It never reads a
// clock or the segment itself, so tests drive it with made-up snapshots and
// times. It produces a View (model.h): an immutable picture of every loop and
// the three verdicts, which the HTTP threads serve without ever waiting on
// the poller, and the Events of the poll, which the log writes.
#ifndef LOOPWATCH_SIDECAR_HEALTH_H_
#define LOOPWATCH_SIDECAR_HEALTH_H_

#include <array>
#include <cstdint>
#include <functional>
#include <set>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "model.h"
#include "reader.h"

namespace loopwatch {

class Health {
 public:
  explicit Health(const Config& config);
  ~Health();

  // Feeds one poll. `now_ns` is the sidecar's CLOCK_MONOTONIC time, and
  // `lateness_ns` how much later than planned the poll woke (a paused host
  // makes it large). Appends what happened to *events.
  std::shared_ptr<const View> Update(SegmentStatus status,
                                     const std::string& segment_error,
                                     const std::vector<SlotSnapshot>& slots,
                                     int64_t now_ns, int64_t lateness_ns,
                                     std::vector<Event>* events);

 private:
  struct Track;
  // The phases of Update(), in order (health.cc).
  void NotePause(int64_t now_ns, int64_t lateness_ns);
  void NoteSegmentStatus(SegmentStatus status, const std::string& error, int64_t now_ns,
                         std::vector<Event>* events);
  // The track of an active slot (new if the loop just appeared); departs
  // the old one if the slot closed or changed hands. Null if not active.
  Track* TrackSlot(const SlotSnapshot& s, int64_t now_ns, std::vector<Event>* events);
  void ObserveBeat(Track* t, const SlotSnapshot& s, int64_t now_ns);
  void MeasureLag(Track* t, const SlotSnapshot& s, int64_t now_ns);
  // True if the owner is dead (nothing more to judge for the loop).
  bool NoteDeath(Track* t, const SlotSnapshot& s, int64_t now_ns, std::vector<Event>* events);
  void AdvanceStall(Track* t, const SlotSnapshot& s, int64_t now_ns,
                    std::vector<Event>* events);
  std::shared_ptr<const View> Publish(SegmentStatus status, const std::string& segment_error,
                                      uint32_t slot_count, int64_t now_ns);

  void Depart(std::unique_ptr<Track> t, const char* why, int64_t now_ns,
              std::vector<Event>* events);
  // How much of [from_ns, to_ns] the last pause of the pod covers.
  int64_t PauseOverlap(int64_t from_ns, int64_t to_ns) const;
  // The app's report of the current stall, if the slot holds it.
  void TakeReport(Track* t, const SlotSnapshot& s, int64_t now_ns);
  void CountStall(Track* t);
  void LogReport(Track* t, int64_t now_ns, std::vector<Event>* events);
  void EndStall(Track* t, int64_t end_ns, std::vector<Event>* events);
  void ObserveStallDuration(StallClass c, int64_t duration_ns);
  // Adds or updates a stall in the bounded history for /debug/stalls.
  void RememberStall(const StallRecord& s);
  void JudgeDead(Track* t, int64_t now_ns);
  // The three verdicts of a View whose loops are filled in, for the pod and
  // for each container.
  void Judge(View* v) const;
  struct Verdicts {
    Verdict live, ready, startup;
  };
  // The verdicts on the loops `keep` accepts; `started`: their startup
  // passed, else `waiting` says what it waits for.
  Verdicts JudgeLoops(const View& v, bool started, const std::string& waiting,
                      const std::function<bool(const LoopView&)>& keep) const;
  // Text from the app's memory as the sidecar keeps it: query string values
  // redacted unless redact_query is off.
  std::string AppText(std::string_view text) const;
  // Why `l` makes /readyz fail; empty if it does not.
  std::string NotReadyReason(const LoopView& l) const;

  Config config_;
  std::vector<std::unique_ptr<Track>> tracks_;  // by slot index; null: none
  size_t tracked_ = 0;                           // non-null entries
  std::vector<std::unique_ptr<Track>> departed_;       // gone, kept a while
  View totals_;  // carries the sidecar-wide totals and recent stalls
  uint64_t polls_ = 0;
  uint64_t next_stall_id_ = 1;
  bool started_ = false;
  std::set<std::string> containers_beaten_;  // containers a loop of which beat
  std::set<std::string> containers_seen_;
  SegmentStatus last_status_ = SegmentStatus::kOk;
  bool first_status_ = true;
  int64_t unreadable_since_ns_ = 0;  // 0 while readable
  uint32_t live_at_last_read_ = 0;   // loops beating at the last readable poll
  bool lost_logged_ = false;
  int64_t prev_poll_ns_ = -1;
  // The last pause of the sidecar itself (a late poll): [end - len, end].
  int64_t pause_end_ns_ = 0;
  int64_t pause_len_ns_ = 0;
  std::array<StallDurationHistogram, kStallClasses> stall_duration_{};
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HEALTH_H_

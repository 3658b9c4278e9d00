// SPDX-License-Identifier: Apache-2.0
#include "monitor.h"

#include <pthread.h>

#include <chrono>

namespace loopwatch {

Monitor::Monitor(const Config& config, EventSink sink)
    : config_(config),
      sink_(std::move(sink)),
      reader_(config.segment, config.create_slots),
      health_(config),
      view_(std::make_shared<View>()) {
  // A replaced segment file is noticed within a second; between those
  // looks a healthy poll makes no system call but the lock probes.
  reader_.set_restat_interval_ns(1000000000);
}

Monitor::~Monitor() { Stop(); }

std::shared_ptr<const View> Monitor::view() const {
  std::lock_guard<std::mutex> lock(view_mu_);
  return view_;
}

void Monitor::PollAt(int64_t now_ns, int64_t lateness_ns) {
  SegmentStatus status = reader_.Snapshot(&slots_);
  events_.clear();
  std::shared_ptr<const View> v = health_.Update(
      status, reader_.error(), slots_, now_ns, lateness_ns, &events_);
  {
    std::lock_guard<std::mutex> lock(view_mu_);
    view_ = std::move(v);
  }
  if (sink_ && !events_.empty()) sink_(events_);
}

void Monitor::Start() {
  PollAt(MonotonicNowNs(), 0);
  thread_ = std::thread([this] { Run(); });
}

void Monitor::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Monitor::Run() {
  pthread_setname_np(pthread_self(), "lw-poll");
  const int64_t period = config_.poll_interval.count();
  int64_t next = MonotonicNowNs() + period;
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stop_) {
    // steady_clock is CLOCK_MONOTONIC on Linux, the clock of `next`.
    auto deadline = std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(next));
    if (stop_cv_.wait_until(lock, deadline, [this] { return stop_; })) break;
    lock.unlock();
    int64_t now = MonotonicNowNs();
    int64_t lateness = now > next ? now - next : 0;
    PollAt(now, lateness);
    // Keep the cadence, but never try to catch up on missed polls.
    next += period;
    if (next <= now) next = now + period;
    lock.lock();
  }
}

}  // namespace loopwatch

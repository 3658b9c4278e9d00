// SPDX-License-Identifier: Apache-2.0
//
// loopwatch.hpp: C++17 RAII over the C ABI in loopwatch.h (the only ABI).
// Header-only; errors are std::error_code in the generic category, with
// loopwatch::last_error() for detail.
//
//   std::error_code ec;
//   auto loop = loopwatch::Loop::open("api", std::chrono::milliseconds(100), ec);
//   timer: loop.beat();              // from the loop's own timer
//
// A default-constructed or moved-from Loop is inert, like a NULL handle.
#ifndef LOOPWATCH_LOOPWATCH_HPP_
#define LOOPWATCH_LOOPWATCH_HPP_

#include <chrono>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include "loopwatch/loopwatch.h"

namespace loopwatch {

inline std::error_code make_error(int rc) {
  return rc < 0 ? std::error_code(-rc, std::generic_category())
                : std::error_code();
}

// Detail about the last failure on this thread ("" if none).
inline std::string last_error() { return lw_last_error(); }

inline bool enabled() { return lw_enabled() != 0; }

struct LoopOptions {
  std::string name;
  std::string kind = "native";
  std::chrono::nanoseconds interval = std::chrono::milliseconds(100);
  std::chrono::nanoseconds report_after{0};  // 0: environment or 500 ms
};

class Loop {
 public:
  Loop() noexcept = default;
  ~Loop() { reset(); }
  Loop(Loop&& other) noexcept : loop_(std::exchange(other.loop_, nullptr)) {}
  Loop& operator=(Loop&& other) noexcept {
    if (this != &other) {
      reset();
      loop_ = std::exchange(other.loop_, nullptr);
    }
    return *this;
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Claims a slot. On failure `ec` is set and the Loop is inert, so a caller
  // may ignore the error and go on beating.
  static Loop open(const LoopOptions& o, std::error_code& ec) noexcept {
    lw_loop_options_t opt{};
    opt.struct_size = sizeof opt;
    opt.name = o.name.c_str();
    opt.kind = o.kind.c_str();
    opt.interval_ns = static_cast<uint64_t>(o.interval.count());
    opt.report_after_ns = static_cast<uint64_t>(o.report_after.count());
    lw_loop_t* handle = nullptr;
    ec = make_error(lw_loop_open_ex(&opt, &handle));
    return Loop(handle);
  }

  static Loop open(const std::string& name, std::chrono::nanoseconds interval,
                   std::error_code& ec) noexcept {
    LoopOptions o;
    o.name = name;
    o.interval = interval;
    return open(o, ec);
  }

  // Wait-free heartbeat (see lw_beat).
  void beat() noexcept { lw_beat(loop_); }
  // For loops that hold the current CLOCK_MONOTONIC time already.
  void beat_at(std::chrono::nanoseconds now) noexcept {
    lw_beat_at(loop_, static_cast<uint64_t>(now.count()));
  }
  void set_ready(bool ready) noexcept { lw_set_ready(loop_, ready ? 1 : 0); }
  void set_activity(const char* label) noexcept {
    lw_set_activity(loop_, label);
  }
  void set_report_hook(lw_report_hook_fn fn, void* user) noexcept {
    lw_set_report_hook(loop_, fn, user);
  }

  // Releases the slot now (the destructor does it too).
  void reset() noexcept {
    if (loop_) lw_loop_close(std::exchange(loop_, nullptr));
  }

  // True when beats go to a segment (false when disabled or inert).
  explicit operator bool() const noexcept { return loop_ != nullptr; }
  int slot() const noexcept { return lw_loop_slot(loop_); }
  lw_loop_t* native_handle() const noexcept { return loop_; }

 private:
  explicit Loop(lw_loop_t* loop) noexcept : loop_(loop) {}
  lw_loop_t* loop_ = nullptr;
};

// Sets a loop's activity label for a scope and clears it after.
class ScopedActivity {
 public:
  ScopedActivity(Loop& loop, const char* label) noexcept : loop_(loop) {
    loop_.set_activity(label);
  }
  ~ScopedActivity() { loop_.set_activity(nullptr); }
  ScopedActivity(const ScopedActivity&) = delete;
  ScopedActivity& operator=(const ScopedActivity&) = delete;

 private:
  Loop& loop_;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_LOOPWATCH_HPP_

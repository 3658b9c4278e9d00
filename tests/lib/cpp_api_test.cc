// SPDX-License-Identifier: Apache-2.0
//
// loopwatch.hpp: RAII over the C ABI. A Loop is move-only; a default,
// moved-from or failed Loop is inert; failures come back as std::error_code
// (generic category) with loopwatch::last_error() for detail; the destructor
// and reset() close the slot cleanly.
#include "loopwatch/loopwatch.hpp"

#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "reader.h"
#include "segment_layout.h"
#include "test_support.h"

namespace {

using loopwatch::Loop;
using loopwatch::LoopOptions;
using lwtest::RunIsolated;
using lwtest::TempDir;
using namespace std::chrono_literals;

static_assert(!std::is_copy_constructible_v<Loop>);
static_assert(!std::is_copy_assignable_v<Loop>);
static_assert(std::is_nothrow_move_constructible_v<Loop>);
static_assert(std::is_nothrow_move_assignable_v<Loop>);
static_assert(std::is_nothrow_default_constructible_v<Loop>);
static_assert(!std::is_convertible_v<Loop, bool>, "explicit operator bool");

const loopwatch::SlotSnapshot& SlotOf(
    const std::vector<loopwatch::SlotSnapshot>& snaps, int slot) {
  static const loopwatch::SlotSnapshot kNone;
  return slot >= 0 && static_cast<size_t>(slot) < snaps.size() ? snaps[slot] : kNone;
}

size_t NoText(lw_loop_t*, void*, char*, size_t) { return 0; }

TEST(CppApi, DefaultLoopIsInert) {
  Loop loop;
  EXPECT_FALSE(loop);
  EXPECT_EQ(loop.slot(), -1);
  EXPECT_EQ(loop.native_handle(), nullptr);
  loop.beat();
  loop.beat_at(std::chrono::steady_clock::now().time_since_epoch());
  loop.set_ready(false);
  loop.set_activity("x");
  loop.set_report_hook(NoText, nullptr);
  {
    loopwatch::ScopedActivity a(loop, "scoped");
  }
  loop.reset();
  loop.reset();
  EXPECT_FALSE(loop);
  Loop other(std::move(loop));
  EXPECT_FALSE(other);
}

TEST(CppApi, DisabledOpenGivesAnInertLoopAndNoError) {
  RunIsolated([] {
    unsetenv("LOOPWATCH_SEGMENT");
    EXPECT_FALSE(loopwatch::enabled());
    std::error_code ec = std::make_error_code(std::errc::io_error);
    Loop loop = Loop::open("api", 100ms, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_FALSE(loop);
    loop.beat();
  });
}

TEST(CppApi, OpenBeatScopedActivityAndDestructorCloses) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 4);
    EXPECT_TRUE(loopwatch::enabled());
    loopwatch::SegmentReader r(path, 4);
    std::vector<loopwatch::SlotSnapshot> snaps;
    int slot = -1;
    {
      LoopOptions o;
      o.name = "cpp-loop";
      o.kind = "asio";
      o.interval = 100ms;
      o.report_after = 300ms;
      std::error_code ec;
      Loop loop = Loop::open(o, ec);
      ASSERT_FALSE(ec) << ec.message() << ": " << loopwatch::last_error();
      ASSERT_TRUE(loop);
      slot = loop.slot();
      EXPECT_EQ(slot, 0);
      EXPECT_NE(loop.native_handle(), nullptr);
      // steady_clock is CLOCK_MONOTONIC on Linux: beat_at takes its time.
      auto now = std::chrono::steady_clock::now().time_since_epoch();
      loop.beat_at(now);
      loop.beat_at(now + 100ms);
      loop.beat();
      loop.set_ready(false);
      snaps = lwtest::MustSnapshot(r);
      const auto& s = SlotOf(snaps, slot);
      EXPECT_STREQ(s.name, "cpp-loop");
      EXPECT_STREQ(s.kind, "asio");
      EXPECT_EQ(s.interval_ns, 100000000u);
      EXPECT_EQ(s.report_after_ns, 300000000u);
      EXPECT_EQ(s.beat_count, 3u);
      EXPECT_EQ(s.last_beat_ns >= static_cast<uint64_t>(now.count()), true);
      EXPECT_FALSE(s.ready);
      loop.set_ready(true);
      {
        loopwatch::ScopedActivity a(loop, "GET /scoped");
        snaps = lwtest::MustSnapshot(r);
        EXPECT_STREQ(SlotOf(snaps, slot).activity, "GET /scoped");
      }
      snaps = lwtest::MustSnapshot(r);
      EXPECT_STREQ(SlotOf(snaps, slot).activity, "");
      EXPECT_TRUE(SlotOf(snaps, slot).ready);
      EXPECT_EQ(SlotOf(snaps, slot).owner_alive, 1);
    }
    snaps = lwtest::MustSnapshot(r);
    EXPECT_EQ(SlotOf(snaps, slot).state, LW_SLOT_CLOSED) << "the destructor closes";
    EXPECT_EQ(SlotOf(snaps, slot).owner_alive, 0);
  });
}

TEST(CppApi, MoveTransfersOwnershipAndAssignmentClosesTheOldLoop) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 4);
    loopwatch::SegmentReader r(path, 4);
    std::error_code ec;
    Loop a = Loop::open("a", 100ms, ec);
    ASSERT_FALSE(ec);
    Loop b = Loop::open("b", 100ms, ec);
    ASSERT_FALSE(ec);
    const int sa = a.slot(), sb = b.slot();
    ASSERT_NE(sa, sb);

    Loop c(std::move(a));
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): inert by contract
    EXPECT_EQ(a.slot(), -1);
    EXPECT_EQ(c.slot(), sa);
    a.beat();  // no-op
    c.beat();
    auto snaps = lwtest::MustSnapshot(r);
    EXPECT_EQ(SlotOf(snaps, sa).beat_count, 1u);

    b = std::move(c);  // b's own loop closes
    EXPECT_FALSE(c);   // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(b.slot(), sa);
    snaps = lwtest::MustSnapshot(r);
    EXPECT_EQ(SlotOf(snaps, sb).state, LW_SLOT_CLOSED);
    EXPECT_EQ(SlotOf(snaps, sa).state, LW_SLOT_ACTIVE);
    EXPECT_EQ(SlotOf(snaps, sa).owner_alive, 1);

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wself-move"
#endif
    b = std::move(b);  // self-move keeps the loop
#if defined(__clang__)
#pragma clang diagnostic pop
#endif
    EXPECT_TRUE(b);
    EXPECT_EQ(b.slot(), sa);
    b.beat();
    snaps = lwtest::MustSnapshot(r);
    EXPECT_EQ(SlotOf(snaps, sa).beat_count, 2u);

    b.reset();
    EXPECT_FALSE(b);
    snaps = lwtest::MustSnapshot(r);
    EXPECT_EQ(SlotOf(snaps, sa).state, LW_SLOT_CLOSED);
    b.reset();  // again: nothing
  });
}

TEST(CppApi, FailuresComeBackAsErrorCodesAndAnInertLoop) {
  TempDir dir;
  RunIsolated([&] {
    std::string path = dir.File("segment");
    lwtest::SetSegmentEnv(path, 1);
    std::error_code ec;
    Loop bad = Loop::open("", 100ms, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    EXPECT_EQ(&ec.category(), &std::generic_category());
    EXPECT_FALSE(ec.message().empty());
    EXPECT_FALSE(loopwatch::last_error().empty());
    EXPECT_FALSE(bad);
    bad.beat();

    bad = Loop::open(std::string(64, 'n'), 100ms, ec);
    EXPECT_EQ(ec, std::errc::filename_too_long);
    EXPECT_FALSE(bad);
    bad = Loop::open("x", 0ns, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument);
    LoopOptions o;
    o.name = "x";
    o.kind = std::string(16, 'k');
    bad = Loop::open(o, ec);
    EXPECT_EQ(ec, std::errc::filename_too_long);

    // A one-slot segment: the second loop finds no room.
    Loop first = Loop::open("first", 100ms, ec);
    ASSERT_FALSE(ec) << loopwatch::last_error();
    Loop second = Loop::open("second", 100ms, ec);
    EXPECT_EQ(ec, std::errc::no_space_on_device);
    EXPECT_NE(loopwatch::last_error().find("LOOPWATCH_SLOTS"), std::string::npos);
    EXPECT_FALSE(second);
    // And success clears the error code.
    first.reset();
    second = Loop::open("second", 100ms, ec);
    EXPECT_FALSE(ec);
    EXPECT_TRUE(second);
    EXPECT_EQ(loopwatch::last_error(), "");
  });
}

TEST(CppApi, MakeErrorMapsReturnCodes) {
  EXPECT_FALSE(loopwatch::make_error(0));
  EXPECT_FALSE(loopwatch::make_error(5));  // not an error code
  EXPECT_EQ(loopwatch::make_error(-EPROTO), std::errc::protocol_error);
  EXPECT_EQ(loopwatch::make_error(-ENOENT), std::errc::no_such_file_or_directory);
}

}  // namespace

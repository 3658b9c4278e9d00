// SPDX-License-Identifier: Apache-2.0
//
// How the sidecar writes values for people: durations, seconds, and text
// from the app's memory made safe for one line or for UTF-8.
#include "format.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace loopwatch {
namespace {

constexpr int64_t kMs = 1000000, kSec = 1000000000;

TEST(Format, HumanDuration) {
  struct {
    int64_t ns;
    const char* text;
  } cases[] = {
      {-1, "-"},
      {0, "0ms"},
      {999999, "0ms"},
      {350 * kMs, "350ms"},
      {kSec - 1, "999ms"},
      {kSec, "1.0s"},
      {6200 * kMs, "6.2s"},
      {59 * kSec, "59.0s"},
      {60 * kSec, "1m00s"},
      {245 * kSec, "4m05s"},
      {3599 * kSec, "59m59s"},
      {3600 * kSec, "1h00m"},
      {7800 * kSec, "2h10m"},
      {INT64_MAX, "2562047h47m"},
  };
  for (const auto& c : cases) EXPECT_EQ(HumanDuration(c.ns), c.text) << c.ns;
}

TEST(Format, SecondsAndDecimalSeconds) {
  EXPECT_DOUBLE_EQ(Seconds(1500 * kMs), 1.5);
  EXPECT_DOUBLE_EQ(Seconds(-kSec), -1.0);
  EXPECT_EQ(DecimalSeconds(0), "0.000");
  EXPECT_EQ(DecimalSeconds(6204 * kMs), "6.204");
  EXPECT_EQ(DecimalSeconds(1), "0.000");
  EXPECT_EQ(DecimalSeconds(1999999), "0.002");
}

TEST(Format, OneLine) {
  EXPECT_EQ(OneLine(""), "");
  EXPECT_EQ(OneLine("GET /orders"), "GET /orders");
  EXPECT_EQ(OneLine("a\nb\r\tc\x7f" "d"), "a?b??c?d");
  EXPECT_EQ(OneLine(std::string("nul\0here", 8)), "nul?here");
  EXPECT_EQ(OneLine("caf\xC3\xA9"), "caf\xC3\xA9");  // UTF-8 is left alone
}

TEST(Format, Utf8) {
  EXPECT_EQ(Utf8SequenceLength("a", 0), 1u);
  EXPECT_EQ(Utf8SequenceLength("\xC3\xA9", 0), 2u);
  EXPECT_EQ(Utf8SequenceLength("\xE2\x82\xAC", 0), 3u);
  EXPECT_EQ(Utf8SequenceLength("\xF0\x9F\x98\x80", 0), 4u);
  for (const char* bad : {"\x80", "\xC3", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80",
                          "\xF4\x90\x80\x80", "\xFF", "\xE2\x82"}) {
    EXPECT_EQ(Utf8SequenceLength(bad, 0), 0u) << bad;
  }
  EXPECT_EQ(ValidUtf8("ok caf\xC3\xA9"), "ok caf\xC3\xA9");
  EXPECT_EQ(ValidUtf8("a\xFF" "b\xC3"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
}

}  // namespace
}  // namespace loopwatch

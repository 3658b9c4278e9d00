// SPDX-License-Identifier: Apache-2.0
//
// Durations as the sidecar reads and writes them: the shared table of the
// project's one grammar (tests/data/durations.tsv) through ParseDuration and
// through every kind of setting, and FormatDuration, which must read back.
#include "duration.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "duration_cases.h"

namespace loopwatch {
namespace {

using std::chrono::nanoseconds;

std::vector<lwtest::DurationCase> Cases() {
  return lwtest::LoadDurationCases(LWTEST_DURATIONS_FILE);
}

TEST(DurationTest, EveryCaseOfTheTable) {
  for (const lwtest::DurationCase& c : Cases()) {
    Duration d{-7};
    const bool ok = ParseDuration(c.text, &d);
    EXPECT_EQ(ok, c.ok) << "line " << c.line << ": \"" << c.text << "\"";
    EXPECT_EQ(d.count(), c.ok ? c.ns : -7) << "line " << c.line << ": \"" << c.text << "\"";
  }
}

// A duration setting takes exactly what the grammar takes, from a flag and
// from the environment (max_hold: 0 and up, no upper bound).
TEST(DurationTest, SettingsReadTheTable) {
  for (const lwtest::DurationCase& c : Cases()) {
    for (bool from_env : {false, true}) {
      Config config;
      std::vector<ConfigError> errors;
      std::vector<std::string> args;
      std::map<std::string, std::string> env;
      if (from_env) {
        env["LOOPWATCH_MAX_HOLD"] = c.text;
      } else {
        args = {"--max-hold=" + c.text};
      }
      const bool loaded = LoadConfig(args, env, &config, &errors, nullptr, nullptr);
      // An empty variable is unset: the default stands.
      const bool unset = from_env && c.text.empty();
      EXPECT_EQ(loaded, c.ok || unset) << "line " << c.line << ": \"" << c.text << "\"";
      if (c.ok) EXPECT_EQ(config.max_hold.count(), c.ns) << "line " << c.line;
    }
  }
}

TEST(DurationTest, Format) {
  struct {
    int64_t ns;
    const char* text;
  } cases[] = {
      {0, "0s"},
      {1, "1ns"},
      {500, "500ns"},
      {1500, "1.5us"},
      {100000, "100us"},
      {250000000, "250ms"},
      {1500000, "1.5ms"},
      {1000000000, "1s"},
      {1500000000, "1.5s"},
      {5000000000, "5s"},
      {90000000000, "1m30s"},
      {60000000000, "1m"},
      {3600000000000, "1h"},
      {3690000000000, "1h1m30s"},
      {3600500000000, "1h500ms"},
      {-250000000, "-250ms"},
  };
  for (auto& c : cases) {
    EXPECT_EQ(FormatDuration(nanoseconds(c.ns)), c.text) << c.ns;
  }
}

TEST(DurationTest, FormatParsesBackExactly) {
  for (int64_t ns : {int64_t{1}, int64_t{999}, int64_t{1001}, int64_t{123456789},
                     int64_t{1000000001}, int64_t{59999999999}, int64_t{86400000000000},
                     int64_t{3723004005006}, INT64_MAX}) {
    Duration d;
    ASSERT_TRUE(ParseDuration(FormatDuration(nanoseconds(ns)), &d)) << ns;
    EXPECT_EQ(d.count(), ns) << FormatDuration(nanoseconds(ns));
  }
}

}  // namespace
}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// The duration grammar (lib/src/parse_duration.h) against the shared table
// tests/data/durations.tsv, and LOOPWATCH_REPORT_AFTER read with it: every
// duration of the table up to an hour is taken (0 included) and reaches the
// slot's report_after_ns; everything else is refused by lw_loop_open with a
// message naming the variable.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "parse_duration.h"
#include "duration_cases.h"
#include "loopwatch/loopwatch.h"
#include "reader.h"
#include "test_support.h"

namespace {

using lwtest::DurationCase;

constexpr int64_t kHourNs = int64_t{3600} * 1000000000;

std::vector<DurationCase> Cases() {
  return lwtest::LoadDurationCases(LWTEST_DURATIONS_FILE);
}

TEST(DurationGrammar, EveryCaseOfTheTable) {
  for (const DurationCase& c : Cases()) {
    int64_t ns = -7;
    const int rc = lw_parse_duration(c.text.data(), c.text.size(), &ns);
    if (c.ok) {
      EXPECT_EQ(rc, 0) << "line " << c.line << ": \"" << c.text << "\"";
      EXPECT_EQ(ns, c.ns) << "line " << c.line << ": \"" << c.text << "\"";
    } else {
      EXPECT_EQ(rc, -EINVAL) << "line " << c.line << ": \"" << c.text << "\"";
      EXPECT_EQ(ns, -7) << "an error leaves the output alone";
    }
  }
}

TEST(DurationGrammar, LengthIsHonoured) {
  int64_t ns = 0;
  // Bytes past the length are not read; a NUL inside is not a terminator.
  EXPECT_EQ(lw_parse_duration("5sXYZ", 2, &ns), 0);
  EXPECT_EQ(ns, 5000000000);
  EXPECT_EQ(lw_parse_duration("5s\0" "1s", 5, &ns), -EINVAL);
}

TEST(ReportAfter, ReadWithTheGrammar) {
  lwtest::TempDir dir;
  const std::string path = dir.File("segment");
  lwtest::RunIsolated([&] {
    lwtest::SetSegmentEnv(path, 4);
    loopwatch::SegmentReader reader(path);
    for (const DurationCase& c : Cases()) {
      if (c.text.empty()) continue;  // unset: the default
      setenv("LOOPWATCH_REPORT_AFTER", c.text.c_str(), 1);
      lw_loop_t* loop = nullptr;
      const int rc = lw_loop_open("report-after", 100000000, &loop);
      const std::string what = "line " + std::to_string(c.line) + ": \"" + c.text + "\"";
      if (c.ok && c.ns <= kHourNs) {
        ASSERT_EQ(rc, 0) << what << ": " << lw_last_error();
        std::vector<loopwatch::SlotSnapshot> slots = lwtest::MustSnapshot(reader);
        const int i = lw_loop_slot(loop);
        ASSERT_GE(i, 0);
        EXPECT_EQ(slots[size_t(i)].report_after_ns, uint64_t(c.ns)) << what;
      } else {
        EXPECT_EQ(rc, -EINVAL) << what;
        EXPECT_NE(strstr(lw_last_error(), "LOOPWATCH_REPORT_AFTER"), nullptr)
            << what << ": " << lw_last_error();
      }
      lw_loop_close(loop);
    }
    unsetenv("LOOPWATCH_REPORT_AFTER");
  });
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
//
// duration_cases.h: reads tests/data/durations.tsv for the C++ suites (the
// library's and the sidecar's); the Python suite reads the same file.
#ifndef LOOPWATCH_TESTS_DATA_DURATION_CASES_H_
#define LOOPWATCH_TESTS_DATA_DURATION_CASES_H_

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lwtest {

struct DurationCase {
  std::string text;
  bool ok = false;
  int64_t ns = 0;  // when ok
  int line = 0;
};

// The cases of `path`; throws std::runtime_error if the file is missing or
// a line is malformed, so that a broken table fails the test loudly.
inline std::vector<DurationCase> LoadDurationCases(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<DurationCase> cases;
  std::string line;
  for (int n = 1; std::getline(in, line); n++) {
    if (line.empty() || line[0] == '#') continue;
    const size_t tab = line.rfind('\t');
    if (tab == std::string::npos) {
      throw std::runtime_error(path + ":" + std::to_string(n) + ": no tab");
    }
    DurationCase c;
    c.text = line.substr(0, tab);
    if (c.text == "<empty>") c.text.clear();
    const std::string value = line.substr(tab + 1);
    c.line = n;
    if (value != "error") {
      size_t used = 0;
      c.ns = std::stoll(value, &used);
      if (used != value.size()) {
        throw std::runtime_error(path + ":" + std::to_string(n) + ": bad value");
      }
      c.ok = true;
    }
    cases.push_back(c);
  }
  if (cases.size() < 10) throw std::runtime_error(path + ": too few cases");
  return cases;
}

}  // namespace lwtest

#endif  // LOOPWATCH_TESTS_DATA_DURATION_CASES_H_

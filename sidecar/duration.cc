// SPDX-License-Identifier: Apache-2.0
#include "duration.h"

#include <cstdint>

#include "parse_duration.h"

namespace loopwatch {

bool ParseDuration(std::string_view text, Duration* out) {
  int64_t ns;
  if (lw_parse_duration(text.data(), text.size(), &ns) != 0) return false;
  *out = Duration(ns);
  return true;
}

std::string FormatDuration(Duration d) {
  int64_t ns = d.count();
  if (ns == 0) return "0s";
  std::string s;
  uint64_t u;
  if (ns < 0) {
    s = "-";
    u = uint64_t(0) - uint64_t(ns);
  } else {
    u = uint64_t(ns);
  }
  const uint64_t kSec = 1000000000, kMin = 60 * kSec, kHour = 60 * kMin;
  if (u >= kHour) {
    s += std::to_string(u / kHour) + "h";
    u %= kHour;
  }
  if (u >= kMin) {
    s += std::to_string(u / kMin) + "m";
    u %= kMin;
  }
  if (u == 0) return s;
  // The rest in the largest unit it reaches, with an exact decimal part.
  auto decimal = [](uint64_t v, uint64_t unit, int width, const char* name) {
    std::string r = std::to_string(v / unit);
    uint64_t f = v % unit;
    if (f) {
      std::string fs = std::to_string(f);
      fs.insert(0, size_t(width) - fs.size(), '0');
      while (fs.back() == '0') fs.pop_back();
      r += "." + fs;
    }
    return r + name;
  };
  if (u >= kSec) return s + decimal(u, kSec, 9, "s");
  if (u >= 1000000) return s + decimal(u, 1000000, 6, "ms");
  if (u >= 1000) return s + decimal(u, 1000, 3, "us");
  return s + std::to_string(u) + "ns";
}

}  // namespace loopwatch

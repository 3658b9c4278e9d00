// SPDX-License-Identifier: Apache-2.0
#include "format.h"

#include <cinttypes>
#include <cstdio>

#include "redact_query.h"

namespace loopwatch {
namespace {

constexpr int64_t kMs = 1000000, kSec = 1000000000;

}  // namespace

std::string HumanDuration(int64_t ns) {
  if (ns < 0) return "-";
  char buf[32];
  if (ns < kSec) {
    snprintf(buf, sizeof buf, "%" PRId64 "ms", ns / kMs);
  } else if (ns < 60 * kSec) {
    snprintf(buf, sizeof buf, "%.1fs", double(ns) / kSec);
  } else if (ns < 3600 * kSec) {
    snprintf(buf, sizeof buf, "%" PRId64 "m%02" PRId64 "s", ns / (60 * kSec),
             ns / kSec % 60);
  } else {
    snprintf(buf, sizeof buf, "%" PRId64 "h%02" PRId64 "m", ns / (3600 * kSec),
             ns / (60 * kSec) % 60);
  }
  return buf;
}

std::string DecimalSeconds(int64_t ns) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.3f", Seconds(ns));
  return buf;
}

std::string OneLine(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) c = '?';
  }
  return out;
}

size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; k++) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and out-of-range code points are invalid.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return n;
}

std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i++;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

std::string RedactQuery(std::string_view s) {
  if (s.find('?') == std::string_view::npos) return std::string(s);
  std::string out(s.size() + 64, '\0');
  size_t n = lw_redact_query(s.data(), s.size(), out.data(), out.size());
  if (n > out.size()) {
    out.resize(n);
    n = lw_redact_query(s.data(), s.size(), out.data(), out.size());
  }
  out.resize(n);
  return out;
}

}  // namespace loopwatch

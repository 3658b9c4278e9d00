// SPDX-License-Identifier: Apache-2.0
//
// format.h: how the sidecar writes values for people and machines, each in
// one place: durations, seconds, and text that came from the app's memory
// (any bytes) made safe for one line or for UTF-8.
#ifndef LOOPWATCH_SIDECAR_FORMAT_H_
#define LOOPWATCH_SIDECAR_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace loopwatch {

// Nanoseconds as seconds, for JSON fields and metrics.
inline double Seconds(int64_t ns) { return double(ns) / 1e9; }

// A duration as people read it in verdicts, logs and tables: "350ms",
// "6.2s", "4m05s", "2h10m"; "-" for a negative one (unknown).
std::string HumanDuration(int64_t ns);

// Seconds with three decimals, "6.204": detail lines and log fields.
std::string DecimalSeconds(int64_t ns);

// Text for a one-line plain body or table cell: control bytes (line feeds
// included) become '?'.
std::string OneLine(std::string_view s);

// Length of the valid UTF-8 sequence starting at s[i], or 0 if the bytes
// there are not one (overlong forms and surrogates are invalid).
size_t Utf8SequenceLength(std::string_view s, size_t i);

// `s` with every invalid UTF-8 byte replaced by U+FFFD.
std::string ValidUtf8(std::string_view s);

// `s` with the value of every query string parameter replaced by REDACTED
// (lib/src/redact_query.h): for activity labels, requests and stacks.
std::string RedactQuery(std::string_view s);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_FORMAT_H_

// SPDX-License-Identifier: Apache-2.0
//
// duration.h: durations as the sidecar's settings, flags, environment and
// the admin port's hold spell them. The grammar is the project's one
// (lib/src/parse_duration.h: "250ms", "1.5s", "1m30s", "0"), shared with the
// library and the Python package.
#ifndef LOOPWATCH_SIDECAR_DURATION_H_
#define LOOPWATCH_SIDECAR_DURATION_H_

#include <chrono>
#include <string>
#include <string_view>

namespace loopwatch {

using Duration = std::chrono::nanoseconds;

// False (and *out unchanged) when `text` is not a duration.
bool ParseDuration(std::string_view text, Duration* out);

// The shortest text ParseDuration reads back as exactly `d`: "250ms", "5s",
// "1m30s", "1h500ms", "0s"; negative durations get a leading '-'.
std::string FormatDuration(Duration d);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_DURATION_H_

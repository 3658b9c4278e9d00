// SPDX-License-Identifier: Apache-2.0
//
// clock.h: the sidecar's clock, CLOCK_MONOTONIC in nanoseconds: the clock the
// library stamps beats with, so the two compare directly. Code that judges
// time takes it as a parameter or an injected function, so that tests never
// sleep to make time pass.
#ifndef LOOPWATCH_SIDECAR_CLOCK_H_
#define LOOPWATCH_SIDECAR_CLOCK_H_

#include <time.h>

#include <cstdint>

namespace loopwatch {

inline int64_t MonotonicNowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_CLOCK_H_

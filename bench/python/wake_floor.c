// SPDX-License-Identifier: Apache-2.0
// wake_floor INTERVAL_NS SECONDS: a C thread that only sleeps and wakes,
// INTERVAL_NS apart (absolute deadlines, clock_nanosleep), for SECONDS.
// Prints one JSON line: wakes, wall and CPU time of the process. The CPU per
// wake is what the kernel (and, in a virtual machine, the hypervisor's timer
// path as the guest accounts it) charges for waking a thread, with no
// interpreter around it: the floor under any heartbeat that wakes an idle
// process. scripts/bench-python compiles it with cc.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long ns(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: wake_floor INTERVAL_NS SECONDS\n");
    return 2;
  }
  long long iv = atoll(argv[1]);
  double secs = atof(argv[2]);
  if (iv <= 0 || secs <= 0) {
    fprintf(stderr, "wake_floor: INTERVAL_NS and SECONDS must be positive\n");
    return 2;
  }
  long long w0 = ns(CLOCK_MONOTONIC), c0 = ns(CLOCK_PROCESS_CPUTIME_ID);
  long long end = w0 + (long long)(secs * 1e9), next = w0, wakes = 0;
  for (;;) {
    next += iv;
    if (next > end) break;
    struct timespec ts = {(time_t)(next / 1000000000LL), (long)(next % 1000000000LL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
    wakes++;
  }
  long long c1 = ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ns(CLOCK_MONOTONIC);
  printf("{\"wall_ns\": %lld, \"cpu_ns\": %lld, \"ticks\": %lld, \"interval_ns\": %lld}\n",
         w1 - w0, c1 - c0, wakes, iv);
  return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loops_app: a load generator for the sidecar benchmarks. It opens N loops
 * through libloopwatch, each on its own thread, and beats each one every
 * INTERVAL_MS from that thread. Optionally the first loop stalls: every
 * STALL_EVERY seconds its thread sleeps STALL_MS in clock_nanosleep (a
 * `blocked` stall, as a time.sleep() in an async handler), or forever.
 *
 *   loops_app N INTERVAL_MS [--stall-every S] [--stall-ms M] [--stalls K]
 *             [--stall-forever] [--no-jitter] [--seed N] [--duration S]
 *             [--name-prefix P] [--report-bytes B]
 *
 *   --stall-every S   seconds between the starts of two stalls (decimal);
 *                     the first stall starts S seconds after the loops open
 *   --stall-ms M      length of each stall (default 3000)
 *   --stalls K        stop stalling after K stalls (default: no limit)
 *   --stall-forever   the first stall never ends (until SIGTERM/SIGINT)
 *   --no-jitter       start each stall right at a regular beat. By default a
 *                     stall starts with one extra beat at a random point of
 *                     the interval (uniform, seeded by --seed, default 1), so
 *                     that stall starts do not keep one phase against the
 *                     sidecar's poll cadence (both run at fixed periods) and
 *                     detection latency is sampled over the whole interval.
 *   --duration S      exit after S seconds (default: run until a signal)
 *   --report-bytes B  the stalling loop's reports carry B bytes of text (a
 *                     made-up stack, as a binding's report hook writes one)
 *
 * Stdout gets one JSON object per line, flushed at once:
 *   {"event":"ready","loops":N,"pid":P,"enabled":1,"first_slot":I}
 *   {"event":"stall","n":1,"loop":"bench-000","start_ns":T,"stall_ms":M}
 *   {"event":"resume","n":1,"loop":"bench-000","end_ns":T}
 *   {"event":"exit","beats":B}
 * start_ns is CLOCK_MONOTONIC: the exact timestamp of the last beat before
 * the sleep (it is passed to lw_beat_at, so the segment holds the same value).
 * Errors go to stderr, exit code 1; bad usage exits 2.
 *
 * The segment comes from LOOPWATCH_SEGMENT; LOOPWATCH_SLOTS sets the slot
 * count when this process creates it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loopwatch/loopwatch.h"

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_SEC INT64_C(1000000000)
#define MAX_LOOPS 4096

static int g_loops;
static int64_t g_interval_ns;
static int64_t g_stall_every_ns;  /* 0: no stalls */
static int64_t g_stall_ns = 3000 * NS_PER_MS;
static long g_stall_limit = -1;   /* -1: no limit */
static int g_stall_forever;
static const char *g_prefix = "bench";
static int g_jitter = 1;
static uint64_t g_seed = 1;
static long g_report_bytes;       /* 0: no report hook */

static atomic_int g_stop;
static atomic_int g_opened;
static atomic_int g_failed;
static atomic_ullong g_beats;
static pthread_mutex_t g_out_mu = PTHREAD_MUTEX_INITIALIZER;

struct worker {
  pthread_t thread;
  int index;
  int slot;
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static struct timespec to_ts(int64_t ns) {
  struct timespec ts = {(time_t)(ns / NS_PER_SEC), (long)(ns % NS_PER_SEC)};
  return ts;
}

/* Sleeps until the absolute CLOCK_MONOTONIC time; returns early (nonzero)
 * when a signal interrupts it and the stop flag is set. */
static int sleep_until(int64_t deadline_ns) {
  struct timespec ts = to_ts(deadline_ns);
  for (;;) {
    if (atomic_load(&g_stop)) return 1;
    int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    if (r == 0) return 0;
    if (r == EINTR && atomic_load(&g_stop)) return 1;
  }
}

/* xorshift64*: reproducible stall phases from --seed. */
static uint64_t next_random(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * UINT64_C(2685821657736338717);
}

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&g_out_mu);
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
  pthread_mutex_unlock(&g_out_mu);
}

/* The report hook of --report-bytes: lines like a Python traceback's. */
static size_t fake_stack(lw_loop_t *loop, void *user, char *buf, size_t size) {
  (void)loop;
  (void)user;
  size_t want = (size_t)g_report_bytes < size ? (size_t)g_report_bytes : size;
  size_t n = 0;
  for (int line = 1; n < want; line++) {
    char frame[96];
    int len = snprintf(frame, sizeof frame,
                       "  File \"/app/handlers.py\", line %d, in handler_%d\n", line, line);
    size_t take = (size_t)len < want - n ? (size_t)len : want - n;
    memcpy(buf + n, frame, take);
    n += take;
  }
  return n;
}

static void *run_loop(void *arg) {
  struct worker *w = arg;
  char name[LW_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s-%03d", g_prefix, w->index);
  lw_loop_t *loop = NULL;
  int rc = lw_loop_open(name, (uint64_t)g_interval_ns, &loop);
  if (rc != 0) {
    fprintf(stderr, "loops_app: lw_loop_open(%s): %s (%s)\n", name,
            lw_strerror(rc), lw_last_error());
    atomic_store(&g_failed, 1);
    atomic_fetch_add(&g_opened, 1);
    return NULL;
  }
  w->slot = lw_loop_slot(loop);
  atomic_fetch_add(&g_opened, 1);

  const int staller = w->index == 0 && g_stall_every_ns > 0;
  if (staller && g_report_bytes > 0) lw_set_report_hook(loop, fake_stack, NULL);
  int64_t t = now_ns();
  lw_beat_at(loop, (uint64_t)t);
  int64_t next = t + g_interval_ns;
  int64_t next_stall = t + g_stall_every_ns;
  long stalls = 0;
  unsigned long long beats = 1;
  uint64_t rng = g_seed ? g_seed : 1;

  while (!atomic_load(&g_stop)) {
    if (sleep_until(next)) break;
    t = now_ns();
    lw_beat_at(loop, (uint64_t)t);
    beats++;
    next += g_interval_ns;
    if (next <= t) next = t + g_interval_ns;  /* never catch up in a burst */

    if (staller && t >= next_stall &&
        (g_stall_limit < 0 || stalls < g_stall_limit)) {
      stalls++;
      if (g_jitter) {
        /* One extra beat at a random point before the next regular one:
         * the stall starts there. */
        int64_t r = (int64_t)(next_random(&rng) % (uint64_t)g_interval_ns);
        if (sleep_until(t + r)) break;
        t = now_ns();
        lw_beat_at(loop, (uint64_t)t);
        beats++;
      }
      emit("{\"event\":\"stall\",\"n\":%ld,\"loop\":\"%s\",\"start_ns\":%" PRId64
           ",\"stall_ms\":%" PRId64 "}",
           stalls, name, t, g_stall_forever ? -1 : g_stall_ns / NS_PER_MS);
      /* The stall: this thread sleeps, its loop does not beat. */
      int interrupted;
      if (g_stall_forever) {
        interrupted = sleep_until(INT64_MAX / 2);
      } else {
        interrupted = sleep_until(t + g_stall_ns);
      }
      int64_t end = now_ns();
      emit("{\"event\":\"resume\",\"n\":%ld,\"loop\":\"%s\",\"end_ns\":%" PRId64 "}",
           stalls, name, end);
      if (interrupted) break;
      lw_beat_at(loop, (uint64_t)end);
      beats++;
      next = end + g_interval_ns;
      /* Stalls start on a fixed cadence from the first one. */
      next_stall += g_stall_every_ns;
      if (next_stall <= end) next_stall = end + g_interval_ns;
    }
  }
  atomic_fetch_add(&g_beats, beats);
  lw_loop_close(loop);
  return NULL;
}

static void on_wake(int sig) { (void)sig; }

/* Stops every loop thread: each closes its own loop. A thread may be asleep
 * (a stall): SIGUSR1 interrupts it, again until it has gone, since the first
 * signal can land just before it goes to sleep. */
static void stop_all(struct worker *workers) {
  atomic_store(&g_stop, 1);
  for (int i = 0; i < g_loops; i++) {
    for (;;) {
      pthread_kill(workers[i].thread, SIGUSR1);
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 20 * NS_PER_MS;
      if (ts.tv_nsec >= NS_PER_SEC) {
        ts.tv_sec++;
        ts.tv_nsec -= NS_PER_SEC;
      }
      if (pthread_timedjoin_np(workers[i].thread, NULL, &ts) == 0) break;
    }
  }
}

static int parse_seconds(const char *s, int64_t *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 1e6) return 0;
  *out = (int64_t)(v * 1e9);
  return 1;
}

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return 0;
  *out = v;
  return 1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: loops_app N INTERVAL_MS [--stall-every S] [--stall-ms M] "
          "[--stalls K] [--stall-forever] [--no-jitter] [--seed N]\n"
          "                 [--duration S] [--name-prefix P] [--report-bytes B]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 3) usage();
  long n, interval_ms;
  if (!parse_long(argv[1], 1, MAX_LOOPS, &n)) usage();
  if (!parse_long(argv[2], 1, 3600 * 1000, &interval_ms)) usage();
  g_loops = (int)n;
  g_interval_ns = interval_ms * NS_PER_MS;
  int64_t duration_ns = 0;
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    long l;
    if (strcmp(a, "--stall-every") == 0 && v) {
      if (!parse_seconds(v, &g_stall_every_ns)) usage();
      i++;
    } else if (strcmp(a, "--stall-ms") == 0 && v) {
      if (!parse_long(v, 1, 86400L * 1000, &l)) usage();
      g_stall_ns = l * NS_PER_MS;
      i++;
    } else if (strcmp(a, "--stalls") == 0 && v) {
      if (!parse_long(v, 0, 1000000, &g_stall_limit)) usage();
      i++;
    } else if (strcmp(a, "--stall-forever") == 0) {
      g_stall_forever = 1;
    } else if (strcmp(a, "--no-jitter") == 0) {
      g_jitter = 0;
    } else if (strcmp(a, "--seed") == 0 && v) {
      long sd;
      if (!parse_long(v, 0, 0x7fffffffL, &sd)) usage();
      g_seed = (uint64_t)sd;
      i++;
    } else if (strcmp(a, "--duration") == 0 && v) {
      if (!parse_seconds(v, &duration_ns)) usage();
      i++;
    } else if (strcmp(a, "--report-bytes") == 0 && v) {
      if (!parse_long(v, 0, 1L << 20, &g_report_bytes)) usage();
      i++;
    } else if (strcmp(a, "--name-prefix") == 0 && v) {
      g_prefix = v;
      i++;
    } else {
      usage();
    }
  }
  if (g_stall_forever && g_stall_every_ns == 0) g_stall_every_ns = NS_PER_SEC;
  if (!lw_enabled()) {
    fprintf(stderr, "loops_app: LOOPWATCH_SEGMENT is not set\n");
    return 1;
  }

  /* SIGUSR1 (no SA_RESTART) interrupts a stalled thread's sleep at exit.
   * SIGTERM and SIGINT are taken by sigtimedwait() below: blocked in every
   * thread, which inherit the mask. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_wake;
  sigaction(SIGUSR1, &sa, NULL);
  sigset_t stop_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGTERM);
  sigaddset(&stop_set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_set, NULL);

  struct worker *workers = calloc((size_t)g_loops, sizeof *workers);
  if (!workers) return 1;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (int i = 0; i < g_loops; i++) {
    workers[i].index = i;
    workers[i].slot = -1;
    int rc = pthread_create(&workers[i].thread, &attr, run_loop, &workers[i]);
    if (rc != 0) {
      fprintf(stderr, "loops_app: pthread_create: %s\n", strerror(rc));
      return 1;
    }
  }
  while (atomic_load(&g_opened) < g_loops) usleep(1000);
  if (atomic_load(&g_failed)) {
    stop_all(workers);
    return 1;
  }
  emit("{\"event\":\"ready\",\"loops\":%d,\"pid\":%d,\"enabled\":%d,"
       "\"first_slot\":%d,\"interval_ms\":%ld}",
       g_loops, (int)getpid(), lw_enabled(), workers[0].slot, interval_ms);

  int64_t end = duration_ns > 0 ? now_ns() + duration_ns : 0;
  for (;;) {
    struct timespec ts = {1, 0};
    if (end) {
      int64_t left = end - now_ns();
      if (left <= 0) break;
      if (left < NS_PER_SEC) ts = to_ts(left);
    }
    int sig = sigtimedwait(&stop_set, NULL, &ts);
    if (sig > 0) break;
  }
  stop_all(workers);
  emit("{\"event\":\"exit\",\"beats\":%llu}", (unsigned long long)atomic_load(&g_beats));
  free(workers);
  return 0;
}

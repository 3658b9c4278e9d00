/* SPDX-License-Identifier: Apache-2.0 */
/*
 * c_api_test.c: the public C API, from C, linked against the shared
 * library (its exported ABI), in the manner of leveldb's db/c_test.c.
 *
 * One process, in phases whose order matters: the library attaches to the
 * segment named by LOOPWATCH_SEGMENT on the first successful lw_loop_open and
 * keeps it for the life of the process, so the disabled mode and the errors
 * that happen before a segment is attached come first.
 *
 * The segment file is checked with pread() at the offsets of
 * lib/src/segment_layout.h, never through the library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loopwatch/loopwatch.h"
#include "segment_layout.h"

#if defined(__SANITIZE_THREAD__)
#define LWTEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LWTEST_TSAN 1
#endif
#endif

static int failures = 0;
static const char *phase = "";

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "%s:%d: [%s] CHECK failed: %s\n", __FILE__,        \
              __LINE__, phase, #cond);                                   \
      failures++;                                                        \
    }                                                                    \
  } while (0)

#define CHECK_EQ(a, b)                                                   \
  do {                                                                   \
    long long a_ = (long long)(a), b_ = (long long)(b);                  \
    if (a_ != b_) {                                                      \
      fprintf(stderr, "%s:%d: [%s] CHECK_EQ failed: %s == %s (%lld vs %lld)" \
              "; lw_last_error: \"%s\"\n",                               \
              __FILE__, __LINE__, phase, #a, #b, a_, b_, lw_last_error()); \
      failures++;                                                        \
    }                                                                    \
  } while (0)

#define CHECK_STREQ(a, b)                                                \
  do {                                                                   \
    const char *a_ = (a), *b_ = (b);                                     \
    if (strcmp(a_, b_) != 0) {                                           \
      fprintf(stderr, "%s:%d: [%s] CHECK_STREQ failed: %s == %s "         \
              "(\"%s\" vs \"%s\")\n",                                    \
              __FILE__, __LINE__, phase, #a, #b, a_, b_);                \
      failures++;                                                        \
    }                                                                    \
  } while (0)

#define CHECK_CONTAINS(hay, needle)                                      \
  do {                                                                   \
    const char *h_ = (hay), *n_ = (needle);                              \
    if (!strstr(h_, n_)) {                                               \
      fprintf(stderr, "%s:%d: [%s] \"%s\" does not contain \"%s\"\n",    \
              __FILE__, __LINE__, phase, h_, n_);                        \
      failures++;                                                        \
    }                                                                    \
  } while (0)

static char dir[64];
static char seg_path[128];

/* A sentinel that a failed open must overwrite with NULL. */
#define NOT_NULL ((lw_loop_t *)(uintptr_t)0x1)

static lw_seg_slot_t read_slot(int index) {
  lw_seg_slot_t s;
  memset(&s, 0xEE, sizeof s);
  int fd = open(seg_path, O_RDONLY | O_CLOEXEC);
  CHECK(fd >= 0);
  if (fd >= 0) {
    off_t off = (off_t)(LW_SEG_HEADER_SIZE + (size_t)index * LW_SEG_SLOT_SIZE);
    CHECK_EQ(pread(fd, &s, sizeof s, off), (ssize_t)sizeof s);
    close(fd);
  }
  return s;
}

static lw_seg_header_t read_header(void) {
  lw_seg_header_t h;
  memset(&h, 0, sizeof h);
  int fd = open(seg_path, O_RDONLY | O_CLOEXEC);
  CHECK(fd >= 0);
  if (fd >= 0) {
    CHECK_EQ(pread(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    close(fd);
  }
  return h;
}

static int thread_count(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  while (f && fgets(line, sizeof line, f)) {
    if (sscanf(line, "Threads: %d", &n) == 1) break;
  }
  if (f) fclose(f);
  return n;
}

static size_t hook_fn(lw_loop_t *loop, void *user, char *buf, size_t size) {
  (void)loop;
  (void)user;
  (void)buf;
  (void)size;
  return 0;
}

static void test_version_and_clock(void) {
  phase = "version";
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", LW_VERSION_MAJOR, LW_VERSION_MINOR,
           LW_VERSION_PATCH);
  CHECK_STREQ(lw_version(), want);
  CHECK_STREQ(lw_last_error(), "");

  phase = "clock";
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t before = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  uint64_t a = lw_now_ns();
  uint64_t b = lw_now_ns();
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t after = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  CHECK(before <= a && a <= b && b <= after);
}

static void test_strerror(void) {
  phase = "strerror";
  const int codes[] = {0, -EINVAL, -ENAMETOOLONG, -ENOSPC, -EPROTO, -ENOENT,
                       -EACCES, -ETIMEDOUT, -ENOMEM};
  size_t n = sizeof codes / sizeof codes[0];
  for (size_t i = 0; i < n; i++) {
    const char *s = lw_strerror(codes[i]);
    CHECK(s != NULL && s[0] != '\0');
    for (size_t j = 0; j < i; j++) CHECK(strcmp(s, lw_strerror(codes[j])) != 0);
  }
  CHECK(lw_strerror(-EBADF)[0] != '\0');  /* any errno has a text */
  CHECK(lw_strerror(12345)[0] != '\0');   /* never NULL */
}

/* LOOPWATCH_SEGMENT unset or empty: every call returns 0, handles are NULL,
 * nothing is created. */
static void test_disabled(void) {
  phase = "disabled";
  const char *values[] = {NULL, ""};
  for (int v = 0; v < 2; v++) {
    if (values[v]) setenv("LOOPWATCH_SEGMENT", values[v], 1);
    else unsetenv("LOOPWATCH_SEGMENT");
    CHECK_EQ(lw_enabled(), 0);
    lw_loop_t *loop = NOT_NULL;
    CHECK_EQ(lw_loop_open("api", 100000000, &loop), 0);
    CHECK(loop == NULL);
    lw_loop_options_t o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.name = "api";
    o.kind = "asyncio";
    o.interval_ns = 100000000;
    loop = NOT_NULL;
    CHECK_EQ(lw_loop_open_ex(&o, &loop), 0);
    CHECK(loop == NULL);
    CHECK_STREQ(lw_last_error(), "");
    CHECK_EQ(lw_beat(loop), 0);
    CHECK_EQ(lw_beat_at(loop, 12345), 0);
    CHECK_EQ(lw_set_ready(loop, 0), 0);
    CHECK_EQ(lw_set_activity(loop, "GET /x"), 0);
    CHECK_EQ(lw_set_report_hook(loop, hook_fn, NULL), 0);
    CHECK_EQ(lw_report_gil_wait(loop), 0);
    CHECK_EQ(lw_loop_slot(loop), -1);
    CHECK_EQ(lw_loop_close(loop), 0);
  }
  /* Argument errors are reported whether or not the library is enabled, so
   * that a bad call shows up on a developer's machine without a sidecar. */
  lw_loop_t *loop = NOT_NULL;
  CHECK_EQ(lw_loop_open("", 100000000, &loop), -EINVAL);
  CHECK(loop == NULL);
  CHECK_EQ(lw_loop_open("api", 100000000, NULL), -EINVAL);
  CHECK_EQ(thread_count() >= 1, 1);
}

static void expect_open_error(const char *name, const char *kind,
                              uint64_t interval_ns, int want,
                              const char *msg_part) {
  lw_loop_options_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.name = name;
  o.kind = kind;
  o.interval_ns = interval_ns;
  lw_loop_t *loop = NOT_NULL;
  int rc = lw_loop_open_ex(&o, &loop);
  CHECK_EQ(rc, want);
  CHECK(loop == NULL);
  CHECK(lw_last_error()[0] != '\0');
  if (msg_part) CHECK_CONTAINS(lw_last_error(), msg_part);
}

/* Errors, with the library enabled but before any segment is attached. */
static void test_errors(void) {
  phase = "errors";
  setenv("LOOPWATCH_SEGMENT", seg_path, 1);
  setenv("LOOPWATCH_SLOTS", "4", 1);
  CHECK_EQ(lw_enabled(), 1);

  CHECK_EQ(lw_loop_open("x", 100000000, NULL), -EINVAL);
  CHECK(lw_last_error()[0] != '\0');
  lw_loop_t *loop = NOT_NULL;
  CHECK_EQ(lw_loop_open(NULL, 100000000, &loop), -EINVAL);
  CHECK(loop == NULL);
  CHECK_EQ(lw_loop_open_ex(NULL, &loop), -EINVAL);

  char name64[65], name63[64], kind16[17];
  memset(name64, 'n', 64);
  name64[64] = '\0';
  memset(name63, 'n', 63);
  name63[63] = '\0';
  memset(kind16, 'k', 16);
  kind16[16] = '\0';
  expect_open_error("", NULL, 100000000, -EINVAL, "name");
  expect_open_error(name64, NULL, 100000000, -ENAMETOOLONG, "63");
  expect_open_error("x", kind16, 100000000, -ENAMETOOLONG, "15");
  expect_open_error("x", NULL, 0, -EINVAL, "interval_ns");
  expect_open_error("x", NULL, UINT64_C(3600000000001), -EINVAL, "interval_ns");

  lw_loop_options_t o;
  memset(&o, 0, sizeof o);
  o.name = "x";
  o.interval_ns = 100000000;
  o.struct_size = 0;
  loop = NOT_NULL;
  CHECK_EQ(lw_loop_open_ex(&o, &loop), -EINVAL);
  CHECK(loop == NULL);
  o.struct_size = offsetof(lw_loop_options_t, report_after_ns);
  CHECK_EQ(lw_loop_open_ex(&o, &loop), -EINVAL);

  /* Bad environment, each named in the message. */
  setenv("LOOPWATCH_REPORT_AFTER", "fast", 1);
  expect_open_error("x", NULL, 100000000, -EINVAL, "LOOPWATCH_REPORT_AFTER");
  setenv("LOOPWATCH_REPORT_AFTER", "61m", 1); /* over an hour */
  expect_open_error("x", NULL, 100000000, -EINVAL, "LOOPWATCH_REPORT_AFTER");
  unsetenv("LOOPWATCH_REPORT_AFTER");
  const char *bad_slots[] = {"abc", "0", "1025", "-3", "4x"};
  for (size_t i = 0; i < sizeof bad_slots / sizeof bad_slots[0]; i++) {
    setenv("LOOPWATCH_SLOTS", bad_slots[i], 1);
    expect_open_error("x", NULL, 100000000, -EINVAL, "LOOPWATCH_SLOTS");
  }
  setenv("LOOPWATCH_SLOTS", "4", 1);
  CHECK(access(seg_path, F_OK) != 0); /* nothing created so far */

  /* A segment path in a missing directory. */
  char missing[160];
  snprintf(missing, sizeof missing, "%s/no/such/dir/segment", dir);
  setenv("LOOPWATCH_SEGMENT", missing, 1);
  expect_open_error("x", NULL, 100000000, -ENOENT, missing);
  setenv("LOOPWATCH_SEGMENT", seg_path, 1);
}

static void test_open_beat_close(void) {
  phase = "open/beat/close";
  int threads_before = thread_count();
  lw_loop_options_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.name = "c-loop";
  o.kind = "libuv";
  o.interval_ns = 50000000;
  o.report_after_ns = 700000000;
  lw_loop_t *a = NULL;
  CHECK_EQ(lw_loop_open_ex(&o, &a), 0);
  CHECK(a != NULL);
  CHECK_STREQ(lw_last_error(), "");
  CHECK_EQ(lw_loop_slot(a), 0);
#if !defined(LWTEST_TSAN)
  CHECK_EQ(thread_count(), threads_before + 1); /* the watchdog */
#endif

  lw_seg_header_t h = read_header();
  CHECK(h.magic == LW_SEG_MAGIC);
  CHECK_EQ(h.slot_count, 4);
  CHECK_EQ(h.creator_pid, getpid());

  const uint64_t t0 = UINT64_C(0x4000000000000000); /* far future: no stall */
  CHECK_EQ(lw_beat_at(a, t0), 0);
  CHECK_EQ(lw_beat_at(a, t0 + 50000000), 0);              /* on time */
  CHECK_EQ(lw_beat_at(a, t0 + 100000000 + 2000000), 0);   /* 2 ms late */
  lw_seg_slot_t s = read_slot(0);
  CHECK_EQ(s.state, LW_SLOT_ACTIVE);
  CHECK_STREQ(s.name, "c-loop");
  CHECK_STREQ(s.kind, "libuv");
  CHECK_EQ(s.pid, getpid());
  CHECK(s.interval_ns == 50000000);
  CHECK(s.report_after_ns == 700000000);
  CHECK(s.beat_count == 3);
  CHECK(s.last_beat_ns == t0 + 102000000);
  CHECK(s.lag_count == 2);
  CHECK(s.lag_sum_ns == 2000000);
  CHECK(s.lag_max_ns == 2000000);
  CHECK(s.lag_bucket[0] == 1 && s.lag_bucket[1] == 1); /* 0 ms; 2 ms */
  CHECK_EQ(s.ready, 1);

  CHECK_EQ(lw_report_gil_wait(a), -EINVAL); /* no report open */

  CHECK_EQ(lw_set_ready(a, 0), 0);
  CHECK_EQ(read_slot(0).ready, 0);
  CHECK_EQ(lw_set_ready(a, 7), 0); /* any nonzero means ready, stored as 1 */
  CHECK_EQ(read_slot(0).ready, 1);

  CHECK_EQ(lw_set_activity(a, "GET /orders"), 0);
  CHECK_STREQ(read_slot(0).activity, "GET /orders");
  CHECK_EQ(lw_set_activity(a, NULL), 0);
  CHECK_STREQ(read_slot(0).activity, "");
  CHECK_EQ(lw_set_activity(a, "x"), 0);
  CHECK_EQ(lw_set_activity(a, ""), 0);
  CHECK_STREQ(read_slot(0).activity, "");
  /* Too long: cut to 63 bytes, never inside a UTF-8 character. 62 ASCII
   * bytes then "é" (2 bytes) would be cut in the middle at 63: keep 62. */
  char label[80];
  memset(label, 'a', 62);
  strcpy(label + 62, "\xc3\xa9 and more");
  CHECK_EQ(lw_set_activity(a, label), 0);
  s = read_slot(0);
  CHECK_EQ(strlen(s.activity), 62);
  memset(label, 'b', 70);
  label[70] = '\0';
  CHECK_EQ(lw_set_activity(a, label), 0);
  CHECK_EQ(strlen(read_slot(0).activity), LW_ACTIVITY_MAX);

  CHECK_EQ(lw_set_report_hook(a, hook_fn, &failures), 0);
  CHECK_EQ(lw_set_report_hook(a, NULL, NULL), 0);

  /* More loops, up to the slot count. */
  lw_loop_t *b = NULL, *c = NULL, *d = NULL;
  CHECK_EQ(lw_loop_open("b", 100000000, &b), 0);
  CHECK_EQ(lw_loop_open("c", 100000000, &c), 0);
  CHECK_EQ(lw_loop_open("d", 100000000, &d), 0);
  CHECK_EQ(lw_loop_slot(b), 1);
  CHECK_EQ(lw_loop_slot(c), 2);
  CHECK_EQ(lw_loop_slot(d), 3);
  CHECK_EQ(read_slot(0).report_after_ns, 700000000);
  CHECK(read_slot(1).report_after_ns == 500000000); /* the default */
  lw_loop_t *e = NOT_NULL;
  CHECK_EQ(lw_loop_open("e", 100000000, &e), -ENOSPC);
  CHECK(e == NULL);
  CHECK_CONTAINS(lw_last_error(), "LOOPWATCH_SLOTS");
  CHECK_CONTAINS(lw_last_error(), seg_path);

  /* Close: CLOSED, and the slot is taken again (generation + 2). */
  uint32_t gen_b = read_slot(1).generation;
  CHECK_EQ(lw_loop_close(b), 0);
  CHECK_EQ(read_slot(1).state, LW_SLOT_CLOSED);
  CHECK_EQ(lw_loop_open("b2", 100000000, &b), 0);
  CHECK_EQ(lw_loop_slot(b), 1);
  s = read_slot(1);
  CHECK_STREQ(s.name, "b2");
  CHECK_EQ(s.generation, gen_b + 2);
  CHECK(s.beat_count == 0);

  CHECK_EQ(lw_loop_close(a), 0);
  CHECK_EQ(lw_loop_close(b), 0);
  CHECK_EQ(lw_loop_close(c), 0);
  CHECK_EQ(lw_loop_close(d), 0);
  for (int i = 0; i < 4; i++) CHECK_EQ(read_slot(i).state, LW_SLOT_CLOSED);
  /* The last loop stops the watchdog. */
#if !defined(LWTEST_TSAN)
  CHECK_EQ(thread_count(), threads_before);
#endif
  CHECK_EQ(lw_loop_close(NULL), 0);

  /* A new loop after all were closed starts it again, same segment. */
  CHECK_EQ(lw_loop_open("again", 100000000, &a), 0);
  CHECK_EQ(lw_loop_slot(a), 0);
  CHECK_STREQ(read_slot(0).name, "again");
  CHECK_EQ(lw_loop_close(a), 0);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/lwctest.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 2;
  }
  snprintf(seg_path, sizeof seg_path, "%s/segment", dir);
  unsetenv("LOOPWATCH_REPORT_AFTER");

  test_version_and_clock();
  test_strerror();
  test_disabled();
  test_errors();
  test_open_beat_close();

  unlink(seg_path);
  rmdir(dir);
  if (failures) {
    fprintf(stderr, "c_api_test: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}

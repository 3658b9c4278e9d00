/* SPDX-License-Identifier: Apache-2.0
 *
 * An app's view of the installed C header, built with nothing but
 *   cc main.c $(pkg-config --cflags --libs loopwatch)
 * Opens a loop, beats, closes, checking every return code. With
 * LOOPWATCH_SEGMENT set it must claim a slot; unset, every call must be a
 * no-op returning 0. Exit 0 on success, 1 with a message otherwise. */
#define _POSIX_C_SOURCE 200809L /* nanosleep, even under -std=c11 */

#include <loopwatch/loopwatch.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__,      \
              __LINE__, #cond, lw_last_error());                        \
      return 1;                                                         \
    }                                                                   \
  } while (0)

int main(void) {
  const char *segment = getenv("LOOPWATCH_SEGMENT");
  const int want = segment != NULL && segment[0] != '\0';
  char header_version[32];
  lw_loop_t *loop = NULL;
  int rc;

  /* The header and the library loaded at run time are the same release. */
  snprintf(header_version, sizeof header_version, "%d.%d.%d", LW_VERSION_MAJOR,
           LW_VERSION_MINOR, LW_VERSION_PATCH);
  CHECK(strcmp(header_version, lw_version()) == 0);
  CHECK(lw_enabled() == want);

  rc = lw_loop_open("consumer-c", 5000000 /* 5 ms */, &loop);
  if (rc != 0) fprintf(stderr, "lw_loop_open: %s\n", lw_strerror(rc));
  CHECK(rc == 0);
  CHECK((loop != NULL) == want);
  CHECK((lw_loop_slot(loop) >= 0) == want);

  CHECK(lw_set_ready(loop, 1) == 0);
  CHECK(lw_set_activity(loop, "consumer test") == 0);
  for (int i = 0; i < 5; ++i) {
    const struct timespec pause = {0, 5000000};
    nanosleep(&pause, NULL);
    CHECK(lw_beat(loop) == 0);
    CHECK(lw_beat_at(loop, lw_now_ns()) == 0);
  }
  CHECK(lw_set_activity(loop, NULL) == 0);
  CHECK(lw_loop_close(loop) == 0);

  if (want) {
    struct stat st;
    CHECK(stat(segment, &st) == 0);
    CHECK(st.st_size > 0);
  }
  printf("consumer (C, pkg-config) ok: loopwatch %s, %s\n", lw_version(),
         want ? segment : "LOOPWATCH_SEGMENT unset: no-op");
  return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * segment.h: opening and creating the segment file, shared by libloopwatch
 * and the sidecar's reader (which may come first and create it). Internal to
 * the project, not exported from the shared library.
 */
#ifndef LOOPWATCH_SEGMENT_H_
#define LOOPWATCH_SEGMENT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct lw_seg_map {
  int fd;             /* read-write, close-on-exec */
  uint8_t *base;      /* MAP_SHARED, read-write */
  size_t size;        /* bytes mapped: the file size when opened */
  uint32_t slot_count;
};

/* Opens the segment at `path`, creating it with `want_slots` slots if it is
 * new (or finishing the initialisation a dead creator left half-way) and
 * validating it otherwise. 0 or -errno; on error lw_last_error() says why
 * (for another major version: the path and both versions). */
int lw_internal_segment_open(const char *path, uint32_t want_slots,
                             struct lw_seg_map *out);

/* Puts a new segment of `slots` slots at `path`, complete, in place of the
 * file there (rename): for a segment of this process's cut short under it.
 * 0 or -errno (with lw_last_error()). */
int lw_internal_segment_replace(const char *path, uint32_t slots);

/* Takes (F_WRLCK) or drops (F_UNLCK) the OFD lock on one byte of the file,
 * without waiting: 0 or -errno (-EAGAIN: another description holds it). */
int lw_internal_lock_byte(int fd, uint64_t byte, short type);

#ifdef __cplusplus
}
#endif

#endif  /* LOOPWATCH_SEGMENT_H_ */

/* SPDX-License-Identifier: Apache-2.0
 *
 * requests.h: the requests in flight of one loop, for its stall reports.
 * Written only by the loop thread (the ASGI middleware runs there); read by
 * the core's watchdog thread through a per-entry seqlock (the project's one,
 * lib/src/segment_access.h), so neither ever waits and the reader never
 * needs the GIL.
 */
#ifndef LOOPWATCH_PYTHON_REQUESTS_H_
#define LOOPWATCH_PYTHON_REQUESTS_H_

#include <stddef.h>
#include <stdint.h>

enum { kRequestSlots = 32, kMethodSize = 16, kPathSize = 240 };
/* Requests shown in a report; more are counted. */
enum { kRequestsShown = 12 };

typedef struct {
  uint64_t seq; /* odd while written */
  uint64_t token; /* 0: free */
  uint64_t start_ns;
  char method[kMethodSize];
  char path[kPathSize];
} request_entry;

typedef struct {
  request_entry entries[kRequestSlots];
  uint64_t next_token;
  uint64_t overflow; /* requests that found no entry (atomic) */
} request_table;

typedef struct {
  uint64_t token;
  uint64_t start_ns;
  char method[kMethodSize];
  char path[kPathSize];
} request_copy;

/* Records a request (method and path cut to their fields); the token for
 * requests_end(), 0 if the table is full (the request is then counted). */
uint64_t requests_begin(request_table *t, const char *method, size_t method_len,
                        const char *path, size_t path_len, uint64_t now_ns);
/* Forgets the request of `token`; 0 uncounts one the table had no room for. */
void requests_end(request_table *t, uint64_t token);
/* Copies up to `max` requests in flight, oldest first; returns how many, and
 * in *more how many others there are. Any thread. */
int requests_read(request_table *t, request_copy *out, int max, uint64_t *more);

/* Copies at most size - 1 bytes of src, cut before a UTF-8 continuation
 * byte (never inside a character), and terminates the copy. */
void copy_utf8_cut(char *dst, size_t size, const char *src, size_t len);

/* Appends the report's "requests in flight" lines to buf at n (n stays
 * below size); the new length. `recorded`: something records requests in
 * this process, so none is 0, not unknown. */
size_t requests_format(request_table *t, int recorded, uint64_t now_ns, char *buf, size_t size,
                       size_t n);

/* snprintf at buf + n; the new length, never past size - 1. */
size_t text_append(char *buf, size_t size, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* LOOPWATCH_PYTHON_REQUESTS_H_ */

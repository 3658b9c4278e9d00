/* SPDX-License-Identifier: Apache-2.0 */
/* The requests in flight; see requests.h. */
#include "requests.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "segment_access.h"

/* Copies at most size - 1 bytes of src, cut before a UTF-8 continuation
 * byte (never inside a character), and terminates the copy. */
void copy_utf8_cut(char *dst, size_t size, const char *src, size_t len) {
  if (len > size - 1) {
    len = size - 1;
    while (len > 0 && ((unsigned char)src[len] & 0xC0u) == 0x80u) len--;
  }
  memcpy(dst, src, len);
  dst[len] = '\0';
}

/* copy_utf8_cut into a field that the watchdog reads concurrently. */
static void store_cut(char *dst, size_t size, const char *src, size_t len) {
  char buf[kPathSize];
  copy_utf8_cut(buf, size, src, len);
  lw_store_field(dst, buf, size);
}

struct request_read {
  const request_entry *e;
  request_copy c;
};

static void copy_request(void *ctx, uint64_t seq) {
  (void)seq;
  struct request_read *r = (struct request_read *)ctx;
  r->c.token = __atomic_load_n(&r->e->token, __ATOMIC_RELAXED);
  r->c.start_ns = __atomic_load_n(&r->e->start_ns, __ATOMIC_RELAXED);
  lw_load_field(r->c.method, r->e->method, sizeof r->c.method);
  lw_load_field(r->c.path, r->e->path, sizeof r->c.path);
}

/* Copies the requests in flight, oldest first; returns how many. */
int requests_read(request_table *t, request_copy *out, int max, uint64_t *more) {
  int n = 0;
  uint64_t skipped = __atomic_load_n(&t->overflow, __ATOMIC_RELAXED);
  for (int i = 0; i < kRequestSlots; i++) {
    struct request_read r = {&t->entries[i], {0}};
    if (!lw_seqlock_read(&r.e->seq, copy_request, &r) || r.c.token == 0) continue;
    if (n < max) {
      int at = n++;
      /* Insertion by start time: oldest (most likely the culprit) first. */
      while (at > 0 && out[at - 1].start_ns > r.c.start_ns) {
        out[at] = out[at - 1];
        at--;
      }
      out[at] = r.c;
    } else {
      skipped++;
    }
  }
  *more = skipped;
  return n;
}

uint64_t requests_begin(request_table *t, const char *method, size_t method_len,
                        const char *path, size_t path_len, uint64_t now_ns) {
  for (int i = 0; i < kRequestSlots; i++) {
    request_entry *e = &t->entries[i];
    if (e->token != 0) continue;
    uint64_t token = ((++t->next_token) << 6) | (uint64_t)i; /* never 0 */
    uint64_t seq = e->seq; /* only this thread writes it */
    lw_seqlock_write_begin(&e->seq, seq);
    store_cut(e->method, sizeof e->method, method, method_len);
    store_cut(e->path, sizeof e->path, path, path_len);
    lw_store64(&e->start_ns, now_ns);
    lw_store64(&e->token, token);
    lw_seqlock_write_end(&e->seq, seq);
    return token;
  }
  __atomic_fetch_add(&t->overflow, 1, __ATOMIC_RELAXED);
  return 0;
}

void requests_end(request_table *t, uint64_t token) {
  if (token == 0) {
    if (__atomic_load_n(&t->overflow, __ATOMIC_RELAXED) > 0) {
      __atomic_fetch_sub(&t->overflow, 1, __ATOMIC_RELAXED);
    }
    return;
  }
  request_entry *e = &t->entries[token & 63u];
  if ((token & 63u) < kRequestSlots && e->token == token) {
    uint64_t seq = e->seq; /* only this thread writes it */
    lw_seqlock_write_begin(&e->seq, seq);
    lw_store64(&e->token, 0);
    lw_seqlock_write_end(&e->seq, seq);
  }
}

size_t text_append(char *buf, size_t size, size_t n, const char *fmt, ...) {
  if (n >= size) return n;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(buf + n, size - n, fmt, ap);
  va_end(ap);
  if (w < 0) return n;
  return n + (size_t)w < size ? n + (size_t)w : size - 1;
}

size_t requests_format(request_table *t, int recorded, uint64_t now_ns, char *buf, size_t size,
                       size_t n) {
  request_copy reqs[kRequestsShown];
  uint64_t more = 0;
  int nreq = requests_read(t, reqs, kRequestsShown, &more);
  if (nreq == 0 && !more && !recorded) {
    n = text_append(buf, size, n,
               "requests in flight: unknown (nothing records them in this process: "
               "loopwatch.asgi.LoopwatchMiddleware or loopwatch.aiohttp.middleware would)\n");
  } else {
    n = text_append(buf, size, n, "requests in flight: %llu\n", (unsigned long long)(nreq + more));
  }
  for (int i = 0; i < nreq; i++) {
    uint64_t age = now_ns > reqs[i].start_ns ? now_ns - reqs[i].start_ns : 0;
    n = text_append(buf, size, n, "  %s %s (%llu.%03llu s)\n", reqs[i].method, reqs[i].path,
               (unsigned long long)(age / 1000000000u),
               (unsigned long long)(age / 1000000u % 1000u));
  }
  if (more) n = text_append(buf, size, n, "  ... and %llu more\n", (unsigned long long)more);
  return n;
}

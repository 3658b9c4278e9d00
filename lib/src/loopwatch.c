/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libloopwatch: the public API (loopwatch.h), the writer side of the slots
 * (see lib/FORMAT.md) and the process-wide state. The segment as this
 * process holds it is in attach.c, the watchdog thread and its stall reports
 * in watchdog.c, the segment file in segment.c. Links only libc and
 * pthreads.
 *
 * Process-wide state lives in lw_proc and is guarded by lw_proc.mu: the
 * segment mapping, the list of open loops, the slots this process owns, the
 * watchdog thread. None of it is touched by lw_beat(), which writes only its
 * own slot through the handle.
 */
#define _GNU_SOURCE
#include "loopwatch/loopwatch.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "parse_duration.h"
#include "loopwatch_internal.h"
#include "segment.h"
#include "segment_access.h"
#include "segment_layout.h"

#define LW_DEFAULT_REPORT_AFTER_NS UINT64_C(500000000)
#define LW_HOUR_NS UINT64_C(3600000000000)

static const uint64_t kLagBounds[LW_LAG_FINITE_BOUNDS] = LW_LAG_BOUNDS_NS_INIT;

struct lw_process lw_proc = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static __thread char tls_error[512];

void lw_internal_set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tls_error, sizeof tls_error, fmt, ap);
  va_end(ap);
}

uint64_t lw_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* ---- environment ------------------------------------------------------ */

static int env_report_after(uint64_t *out) {
  const char *s = getenv("LOOPWATCH_REPORT_AFTER");
  if (!s || !*s) {
    *out = LW_DEFAULT_REPORT_AFTER_NS;
    return 0;
  }
  int64_t ns;
  if (lw_parse_duration(s, strlen(s), &ns) != 0 ||
      (uint64_t)ns > LW_HOUR_NS) {
    lw_internal_set_error("LOOPWATCH_REPORT_AFTER=\"%s\": expected a duration from 0 to "
              "1h, like 500ms, 2s or 1m30s", s);
    return -EINVAL;
  }
  *out = (uint64_t)ns;
  return 0;
}

/* ---- fork ------------------------------------------------------------- */

static void atfork_prepare(void) { pthread_mutex_lock(&lw_proc.mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&lw_proc.mu); }

/* The child inherits the parent's handles, mapping and descriptor. Its
 * handles go inert, and it closes the descriptor: the slot locks belong to
 * the open file description, which must die with the parent, not live on in
 * a child (gunicorn's workers outlive nothing, but their arbiter's slots must
 * not look alive through them). */
static void atfork_child(void) {
  for (lw_loop_t *l = lw_proc.loops; l; l = l->next) {
    l->slot = NULL;
    l->next_slot = NULL;
    l->orphan = 1;
    l->wd_busy = 0;
  }
  lw_proc.loops = NULL;
  lw_proc.nloops = 0;
  lw_proc.wd_running = 0;
  lw_proc.wd_epoch++;
  lw_internal_forget_mappings(); /* the current one among them */
  if (lw_proc.fd >= 0) close(lw_proc.fd);
  lw_proc.lost = 0;
  lw_proc.base = NULL;
  lw_proc.map_size = 0;
  lw_proc.fd = -1;
  memset(lw_proc.owned, 0, sizeof lw_proc.owned);
  pthread_mutex_unlock(&lw_proc.mu);
}

static int ensure_init(void) {
  if (!lw_proc.cond_ready) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lw_proc.cond, &attr);
    pthread_condattr_destroy(&attr);
    lw_proc.cond_ready = 1;
  }
  if (!lw_proc.atfork_registered) {
    int rc = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (rc) return -rc;
    lw_proc.atfork_registered = 1;
  }
  return 0;
}

/* ---- public API ------------------------------------------------------- */

#define LW_STR_(x) #x
#define LW_STR(x) LW_STR_(x)
const char *lw_version(void) {
  return LW_STR(LW_VERSION_MAJOR) "." LW_STR(LW_VERSION_MINOR) "." LW_STR(LW_VERSION_PATCH);
}

const char *lw_strerror(int err) {
  switch (err) {
    case 0: return "success";
    case -EINVAL: return "invalid argument";
    case -ENAMETOOLONG: return "name too long";
    case -ENOSPC: return "no free slot in the segment";
    case -EPROTO: return "segment of another format, or corrupt";
    case -ENOENT: return "no such file or directory";
    case -EACCES: return "permission denied";
    case -ETIMEDOUT: return "timed out waiting for the segment lock";
    case -ENOMEM: return "out of memory";
    default: return err < 0 ? strerror(-err) : "unknown result";
  }
}

const char *lw_last_error(void) { return tls_error; }

int lw_enabled(void) {
  const char *p = getenv("LOOPWATCH_SEGMENT");
  return p && *p;
}

int lw_loop_open(const char *name, uint64_t interval_ns, lw_loop_t **out) {
  lw_loop_options_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.name = name;
  o.interval_ns = interval_ns;
  return lw_loop_open_ex(&o, out);
}

int lw_loop_open_ex(const lw_loop_options_t *opt, lw_loop_t **out) {
  tls_error[0] = '\0';
  if (!out) {
    lw_internal_set_error("out is NULL");
    return -EINVAL;
  }
  *out = NULL;
  if (!opt || opt->struct_size < offsetof(lw_loop_options_t, report_after_ns) +
                                     sizeof opt->report_after_ns) {
    lw_internal_set_error("options are NULL or struct_size is too small");
    return -EINVAL;
  }
  if (!opt->name || !*opt->name) {
    lw_internal_set_error("a loop needs a name");
    return -EINVAL;
  }
  if (strlen(opt->name) > LW_NAME_MAX) {
    lw_internal_set_error("loop name \"%.20s...\" is longer than %d bytes", opt->name,
              LW_NAME_MAX);
    return -ENAMETOOLONG;
  }
  const char *kind = opt->kind && *opt->kind ? opt->kind : "native";
  if (strlen(kind) > LW_KIND_MAX) {
    lw_internal_set_error("loop kind \"%s\" is longer than %d bytes", kind, LW_KIND_MAX);
    return -ENAMETOOLONG;
  }
  if (opt->interval_ns == 0 || opt->interval_ns > LW_HOUR_NS) {
    lw_internal_set_error("interval_ns must be above zero and at most one hour");
    return -EINVAL;
  }
  if (!lw_enabled()) return 0;
  uint64_t report_after = opt->report_after_ns;
  if (report_after == 0) {
    int rc = env_report_after(&report_after);
    if (rc) return rc;
  }

  lw_loop_t *l = calloc(1, sizeof *l);
  if (!l) return -ENOMEM;
  pthread_mutex_lock(&lw_proc.mu);
  int rc = ensure_init();
  if (rc == 0) rc = lw_internal_attach();
  int idx = rc == 0 ? lw_internal_claim_slot() : rc;
  if (idx < 0) {
    if (idx == -ENOSPC) {
      lw_internal_set_error("all %u slots of segment %s are in use by live loops; "
                "create it with more (LOOPWATCH_SLOTS)", lw_proc.slot_count, lw_proc.path);
    }
    pthread_mutex_unlock(&lw_proc.mu);
    free(l);
    return idx;
  }
  l->index = idx;
  l->epoch = lw_proc.epoch;
  l->slot = lw_internal_slot_at((uint32_t)idx);
  snprintf(l->name, sizeof l->name, "%s", opt->name);
  snprintf(l->kind, sizeof l->kind, "%s", kind);
  /* Which container of the pod this is: set by `loopwatch inject`, so that
   * each container's probes judge only its own loops. Cut at the field's
   * size; Kubernetes names are shorter. */
  const char *container = getenv("LOOPWATCH_CONTAINER");
  snprintf(l->container, sizeof l->container, "%s", container ? container : "");
  l->interval_ns = opt->interval_ns;
  l->report_after_ns = report_after;
  l->pid = getpid();
  l->tid = gettid();
  l->opened_ns = lw_now_ns();
  l->wd_seen_wall_ns = l->opened_ns;
  l->wd_seen_cpu_ns = lw_internal_thread_cpu_ns(l->tid);
  lw_internal_fill_slot(l, l->slot, NULL, &l->beat_seq, &l->activity_seq);
  l->next = lw_proc.loops;
  lw_proc.loops = l;
  lw_proc.nloops++;
  rc = lw_internal_watchdog_start();
  pthread_mutex_unlock(&lw_proc.mu);
  if (rc) {
    lw_loop_close(l);
    return rc;
  }
  *out = l;
  return 0;
}

int lw_loop_close(lw_loop_t *l) {
  if (!l) return 0;
  pthread_mutex_lock(&lw_proc.mu);
  if (l->orphan) {
    pthread_mutex_unlock(&lw_proc.mu);
    free(l);
    return 0;
  }
  for (lw_loop_t **p = &lw_proc.loops; *p; p = &(*p)->next) {
    if (*p == l) {
      *p = l->next;
      lw_proc.nloops--;
      break;
    }
  }
  while (l->wd_busy) pthread_cond_wait(&lw_proc.cond, &lw_proc.mu);
  if (l->slot) {
    if (l->stall_open) lw_internal_report_close(l, lw_now_ns());
    /* The slot in the current segment, if it has one (a loop the last
     * re-attach found no room for still beats into an old mapping). */
    if (l->epoch == lw_proc.epoch) {
      __atomic_store_n(&lw_internal_target(l)->state, LW_SLOT_CLOSED, __ATOMIC_RELEASE);
      (void)lw_internal_lock_byte(lw_proc.fd, LW_SEG_LOCK_BASE + (uint64_t)l->index, F_UNLCK);
      lw_proc.owned[l->index] = 0;
    }
  }
  pthread_t join = 0;
  int do_join = 0;
  if (lw_proc.nloops == 0 && lw_proc.wd_running) {
    lw_proc.wd_running = 0;
    join = lw_proc.wd_thread;
    do_join = !pthread_equal(join, pthread_self());
    pthread_cond_broadcast(&lw_proc.cond);
  }
  pthread_mutex_unlock(&lw_proc.mu);
  if (do_join) pthread_join(join, NULL);
  free(l);
  return 0;
}

static inline unsigned lag_bucket(uint64_t lag) {
  unsigned b = 0;
  while (b < LW_LAG_FINITE_BOUNDS && lag > kLagBounds[b]) b++;
  return b;
}

/* The beat itself, into slot `s`. */
static inline __attribute__((always_inline)) int beat_into(lw_loop_t *l, lw_seg_slot_t *s,
                                                         uint64_t now) {
  const uint64_t seq = l->beat_seq; /* kept in a register across the stores */
  lw_seqlock_write_begin(&s->beat_seq, seq);
  if (l->beat_count) {
    uint64_t expected = l->last_beat_ns + l->interval_ns;
    uint64_t lag = now > expected ? now - expected : 0;
    unsigned b = lag_bucket(lag);
    lw_store64(&s->lag_bucket[b], ++l->lag_bucket[b]);
    l->lag_sum_ns += lag;
    lw_store64(&s->lag_sum_ns, l->lag_sum_ns);
    lw_store64(&s->lag_count, ++l->lag_count);
    if (lag > l->lag_max_ns) {
      l->lag_max_ns = lag;
      lw_store64(&s->lag_max_ns, lag);
    }
  }
  lw_store64(&s->beat_count, ++l->beat_count);
  l->last_beat_ns = now;
  lw_store64(&s->last_beat_ns, now);
  l->beat_seq = lw_seqlock_write_end(&s->beat_seq, seq);
  return 0;
}

/* The rare path, out of line so that the common one saves no register for
 * it: the segment was replaced, so move to the slot the watchdog made, then
 * beat there. */
static __attribute__((noinline, cold)) int adopt_and_beat(lw_loop_t *l, uint64_t now) {
  lw_internal_adopt(l);
  return beat_into(l, l->slot, now);
}

int lw_beat_at(lw_loop_t *l, uint64_t now) {
  if (!l) return 0;
  lw_seg_slot_t *s = l->slot;
  if (!s) return 0;
  if (__builtin_expect(__atomic_load_n(&l->next_slot, __ATOMIC_RELAXED) != NULL, 0)) {
    return adopt_and_beat(l, now); /* a tail call */
  }
  return beat_into(l, s, now);
}

int lw_beat(lw_loop_t *l) {
  if (!l || !l->slot) return 0;
  return lw_beat_at(l, lw_now_ns());
}

int lw_set_ready(lw_loop_t *l, int ready) {
  if (!l || !l->slot) return 0;
  __atomic_store_n(&__atomic_load_n(&l->slot, __ATOMIC_ACQUIRE)->ready, ready ? 1u : 0u,
                   __ATOMIC_RELEASE);
  lw_seg_slot_t *next = __atomic_load_n(&l->next_slot, __ATOMIC_ACQUIRE);
  if (next) __atomic_store_n(&next->ready, ready ? 1u : 0u, __ATOMIC_RELEASE);
  return 0;
}

int lw_set_activity(lw_loop_t *l, const char *label) {
  if (!l || !l->slot) return 0;
  char buf[LW_ACTIVITY_SIZE];
  size_t len = label ? strlen(label) : 0;
  if (len > LW_ACTIVITY_MAX) {
    len = LW_ACTIVITY_MAX;
    /* Cut before a UTF-8 continuation byte, never inside a character. */
    while (len > 0 && ((unsigned char)label[len] & 0xC0u) == 0x80u) len--;
  }
  memset(buf, 0, sizeof buf);
  if (len) memcpy(buf, label, len);
  lw_seg_slot_t *s = l->slot;
  lw_seqlock_write_begin(&s->activity_seq, l->activity_seq);
  lw_store_field(s->activity, buf, sizeof s->activity);
  l->activity_seq = lw_seqlock_write_end(&s->activity_seq, l->activity_seq);
  return 0;
}

int lw_set_report_hook(lw_loop_t *l, lw_report_hook_fn fn, void *user) {
  if (!l || !l->slot) return 0;
  pthread_mutex_lock(&lw_proc.mu);
  l->hook = fn;
  l->hook_user = user;
  pthread_mutex_unlock(&lw_proc.mu);
  return 0;
}

int lw_loop_slot(const lw_loop_t *l) { return l && l->slot ? l->index : -1; }

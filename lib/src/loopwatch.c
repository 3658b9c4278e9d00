/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libloopwatch: the writer side of the segment (see lib/FORMAT.md) and the
 * in-process watchdog. Links only libc and pthreads.
 *
 * Process-wide state lives in `g` and is guarded by g.mu: the segment mapping,
 * the list of open loops, the slots this process owns, the watchdog thread.
 * None of it is touched by lw_beat(), which writes only its own slot through
 * the handle.
 */
#define _GNU_SOURCE
#include "loopwatch/loopwatch.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "segment_internal.h"
#include "segment_layout.h"
#include "syscall_names.h"

#define LW_RELAXED __ATOMIC_RELAXED
#define LW_ACQUIRE __ATOMIC_ACQUIRE
#define LW_RELEASE __ATOMIC_RELEASE

#define LW_DEFAULT_REPORT_AFTER_NS UINT64_C(500000000)
#define LW_MIN_TICK_NS UINT64_C(10000000)
#define LW_MAX_TICK_NS UINT64_C(100000000)
#define LW_INIT_LOCK_WAIT_NS UINT64_C(2000000000)

static const uint64_t kLagBounds[LW_LAG_FINITE_BOUNDS] = LW_LAG_BOUNDS_NS_INIT;

struct lw_loop {
  /* Hot: used by lw_beat on the loop thread. slot is NULL in a forked child. */
  lw_seg_slot_t *slot;
  uint64_t interval_ns;
  uint64_t beat_seq;
  uint64_t beat_count;
  uint64_t last_beat_ns;
  uint64_t lag_max_ns;
  uint64_t lag_sum_ns;
  uint64_t lag_count;
  uint64_t lag_bucket[LW_LAG_BUCKETS];
  uint64_t activity_seq;

  /* Cold: identity and watchdog state, under g.mu. */
  int index;
  pid_t tid;
  pid_t pid;
  uint64_t opened_ns;
  uint64_t report_after_ns;
  lw_report_hook_fn hook;
  void *hook_user;
  int orphan;  /* inherited through fork(): inert */
  int wd_busy; /* the watchdog runs this loop's hook without g.mu */
  uint64_t wd_seen_count;
  uint64_t wd_seen_wall_ns;
  int64_t wd_seen_cpu_ns; /* -1: thread CPU clock unreadable */
  int stall_open;
  int hook_pending; /* report opened; the hook has not run yet */
  uint64_t report_seq;
  uint64_t stall_count;
  uint64_t stall_start_ns;
  struct lw_loop *next;
};

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cond; /* CLOCK_MONOTONIC; watchdog wake-ups, hook done */
  int cond_ready;
  int atfork_registered;
  int fd;
  char path[4096];
  lw_seg_header_t *header;
  uint8_t *base;
  size_t map_size;
  uint32_t slot_count;
  uint8_t owned[LW_SEG_MAX_SLOTS];
  struct lw_loop *loops;
  int nloops;
  pthread_t wd_thread;
  int wd_running;
  unsigned wd_epoch;
  char hook_buf[LW_REPORT_TEXT_SIZE];
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static __thread char tls_error[512];

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...) {
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

static uint64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

static uint64_t random_u64(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
    v = lw_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&v;
  }
  return v ? v : 1;
}

/* ---- shared-memory stores --------------------------------------------- */

static inline void st64(uint64_t *p, uint64_t v) {
  __atomic_store_n(p, v, LW_RELAXED);
}
static inline void st32(uint32_t *p, uint32_t v) {
  __atomic_store_n(p, v, LW_RELAXED);
}

/* Copies a NUL-padded string field word by word, so that concurrent readers
 * never race with plain stores. size is a multiple of 8, dst 8-aligned. */
static void store_field(char *dst, const char *src, size_t size) {
  uint64_t word;
  size_t len = src ? strnlen(src, size - 1) : 0;
  for (size_t off = 0; off < size; off += 8) {
    char chunk[8] = {0};
    if (off < len) memcpy(chunk, src + off, len - off < 8 ? len - off : 8);
    memcpy(&word, chunk, 8);
    __atomic_store_n((uint64_t *)(void *)(dst + off), word, LW_RELAXED);
  }
}

static void load_field(char *dst, const char *src, size_t size) {
  for (size_t off = 0; off < size; off += 8) {
    uint64_t word =
        __atomic_load_n((const uint64_t *)(const void *)(src + off), LW_RELAXED);
    memcpy(dst + off, &word, 8);
  }
  dst[size - 1] = '\0';
}

static void zero_words(void *p, size_t size) {
  uint64_t *w = (uint64_t *)p;
  for (size_t i = 0; i < size / 8; i++) st64(&w[i], 0);
}

/* ---- environment ------------------------------------------------------ */

/* Parses "250ms", "1.5s", "100us", "2m", "500000000ns". */
static int parse_duration_ns(const char *s, uint64_t *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0) return -EINVAL;
  double scale;
  if (strcmp(end, "ns") == 0) scale = 1;
  else if (strcmp(end, "us") == 0) scale = 1e3;
  else if (strcmp(end, "ms") == 0) scale = 1e6;
  else if (strcmp(end, "s") == 0) scale = 1e9;
  else if (strcmp(end, "m") == 0) scale = 60e9;
  else return -EINVAL;
  double ns = v * scale;
  if (ns > 3.6e12) return -ERANGE; /* an hour is plenty */
  *out = (uint64_t)ns;
  return 0;
}

static int env_report_after(uint64_t *out) {
  const char *s = getenv("LOOPWATCH_REPORT_AFTER");
  if (!s || !*s) {
    *out = LW_DEFAULT_REPORT_AFTER_NS;
    return 0;
  }
  if (parse_duration_ns(s, out) != 0 || *out == 0) {
    set_error("LOOPWATCH_REPORT_AFTER=\"%s\": expected a duration above zero "
              "and at most 1h, like 500ms or 2s", s);
    return -EINVAL;
  }
  return 0;
}

static int env_slots(uint32_t *out) {
  const char *s = getenv("LOOPWATCH_SLOTS");
  if (!s || !*s) {
    *out = LW_SEG_DEFAULT_SLOTS;
    return 0;
  }
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v < 1 || v > LW_SEG_MAX_SLOTS) {
    set_error("LOOPWATCH_SLOTS=\"%s\": expected a whole number from 1 to %u",
              s, LW_SEG_MAX_SLOTS);
    return -EINVAL;
  }
  *out = (uint32_t)v;
  return 0;
}

/* ---- file locks ------------------------------------------------------- */

static int ofd_lock(int fd, uint64_t byte, short type) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)byte;
  fl.l_len = 1;
  return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

static int lock_init_byte(int fd) {
  uint64_t deadline = lw_now_ns() + LW_INIT_LOCK_WAIT_NS;
  for (;;) {
    int rc = ofd_lock(fd, LW_SEG_INIT_LOCK, F_WRLCK);
    if (rc == 0) return 0;
    if (rc != -EAGAIN && rc != -EACCES && rc != -EINTR) return rc;
    if (lw_now_ns() > deadline) return -ETIMEDOUT;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

/* ---- segment ---------------------------------------------------------- */

static void init_header(lw_seg_header_t *h, uint32_t slots) {
  /* The file is fresh or abandoned half-way; no reader trusts it until the
   * magic is published. */
  st64(&h->magic, 0);
  __atomic_store_n(&h->version_major, (uint16_t)LW_SEG_VERSION_MAJOR, LW_RELAXED);
  __atomic_store_n(&h->version_minor, (uint16_t)LW_SEG_VERSION_MINOR, LW_RELAXED);
  st32(&h->header_size, LW_SEG_HEADER_SIZE);
  st32(&h->slot_size, LW_SEG_SLOT_SIZE);
  st32(&h->slot_count, slots);
  st64(&h->segment_id, random_u64());
  st64(&h->created_mono_ns, lw_now_ns());
  st64(&h->created_real_ns, realtime_ns());
  st32(&h->creator_pid, (uint32_t)getpid());
  st32(&h->reserved0, 0);
  zero_words(h->reserved, sizeof h->reserved);
  __atomic_store_n(&h->magic, LW_SEG_MAGIC, LW_RELEASE);
}

/* Opens the segment at `path` read-write, creating and initialising it with
 * `want_slots` slots if it is empty or was abandoned half-way, and validates
 * an existing one. Shared with the sidecar, which may come first. */
int lw_internal_segment_open(const char *path, uint32_t want_slots,
                             struct lw_seg_map *out) {
  int rc;
  if (want_slots < 1 || want_slots > LW_SEG_MAX_SLOTS) {
    /* A segment no writer would accept must never be created. */
    set_error("cannot create segment %s with %u slots: expected 1 to %u",
              path, want_slots, LW_SEG_MAX_SLOTS);
    return -EINVAL;
  }
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    rc = -errno;
    set_error("cannot open segment %s: %s", path, strerror(-rc));
    return rc;
  }
  rc = lock_init_byte(fd);
  if (rc) {
    set_error("cannot lock segment %s for initialisation: %s", path,
              strerror(-rc));
    close(fd);
    return rc;
  }

  struct stat st;
  uint8_t *base = MAP_FAILED;
  size_t size = 0;
  uint32_t slots = want_slots;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    set_error("cannot stat segment %s: %s", path, strerror(-rc));
    goto fail;
  }
  if (st.st_size == 0) {
    /* First here: make it. Others wait on the init lock meanwhile. */
    size = (size_t)lw_seg_size(slots);
    if (ftruncate(fd, (off_t)size) != 0) {
      rc = -errno;
      set_error("cannot size segment %s to %zu bytes: %s", path, size,
                strerror(-rc));
      goto fail;
    }
    (void)fchmod(fd, 0666); /* the sidecar runs as another user */
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
      rc = -errno;
      set_error("cannot map segment %s: %s", path, strerror(-rc));
      goto fail;
    }
    init_header((lw_seg_header_t *)(void *)base, slots);
  } else {
    if ((uint64_t)st.st_size < LW_SEG_HEADER_SIZE) {
      rc = -EPROTO;
      set_error("segment %s is %lld bytes, smaller than a header (%u); "
                "remove it so that it is created again",
                path, (long long)st.st_size, LW_SEG_HEADER_SIZE);
      goto fail;
    }
    size = (size_t)st.st_size;
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
      rc = -errno;
      set_error("cannot map segment %s: %s", path, strerror(-rc));
      goto fail;
    }
    lw_seg_header_t *h = (lw_seg_header_t *)(void *)base;
    uint64_t magic = __atomic_load_n(&h->magic, LW_ACQUIRE);
    if (magic == 0) {
      /* A creator died between sizing and publishing (we hold the init
       * lock, so nobody is initialising now). Finish its work. */
      uint64_t fit = (size - LW_SEG_HEADER_SIZE) / LW_SEG_SLOT_SIZE;
      if (fit < 1) {
        rc = -EPROTO;
        set_error("segment %s (%zu bytes) is uninitialised and too small "
                  "for one slot; remove it", path, size);
        goto fail;
      }
      slots = fit > LW_SEG_MAX_SLOTS ? LW_SEG_MAX_SLOTS : (uint32_t)fit;
      (void)fchmod(fd, 0666);
      zero_words(base + LW_SEG_HEADER_SIZE, (size_t)slots * LW_SEG_SLOT_SIZE);
      init_header(h, slots);
    } else if (magic != LW_SEG_MAGIC) {
      rc = -EPROTO;
      set_error("%s is not a loopwatch segment (magic 0x%016llx)", path,
                (unsigned long long)magic);
      goto fail;
    } else {
      unsigned major = __atomic_load_n(&h->version_major, LW_RELAXED);
      unsigned minor = __atomic_load_n(&h->version_minor, LW_RELAXED);
      if (major != LW_SEG_VERSION_MAJOR) {
        rc = -EPROTO;
        set_error("segment %s has format version %u.%u; this library "
                  "writes version %u.%u and cannot share it", path, major,
                  minor, LW_SEG_VERSION_MAJOR, LW_SEG_VERSION_MINOR);
        goto fail;
      }
      uint32_t hs = __atomic_load_n(&h->header_size, LW_RELAXED);
      uint32_t ss = __atomic_load_n(&h->slot_size, LW_RELAXED);
      slots = __atomic_load_n(&h->slot_count, LW_RELAXED);
      if (hs != LW_SEG_HEADER_SIZE || ss != LW_SEG_SLOT_SIZE || slots < 1 ||
          slots > LW_SEG_MAX_SLOTS || lw_seg_size(slots) > size) {
        rc = -EPROTO;
        set_error("segment %s is corrupt (header %u, slot %u x %u, file %zu "
                  "bytes); remove it so that it is created again",
                  path, hs, ss, slots, size);
        goto fail;
      }
    }
  }
  (void)ofd_lock(fd, LW_SEG_INIT_LOCK, F_UNLCK);
  out->fd = fd;
  out->base = base;
  out->size = size;
  out->slot_count = slots;
  return 0;

fail:
  if (base != MAP_FAILED) munmap(base, size);
  close(fd); /* also drops the init lock */
  return rc;
}

/* Maps the segment named by LOOPWATCH_SEGMENT. Called with g.mu held. */
static int segment_attach(void) {
  if (g.base) return 0;
  const char *path = getenv("LOOPWATCH_SEGMENT");
  if (!path || !*path) return -ENOENT;
  if (strlen(path) >= sizeof g.path) {
    set_error("LOOPWATCH_SEGMENT is longer than %zu bytes", sizeof g.path - 1);
    return -ENAMETOOLONG;
  }
  uint32_t want_slots;
  int rc = env_slots(&want_slots);
  if (rc) return rc;
  struct lw_seg_map m;
  rc = lw_internal_segment_open(path, want_slots, &m);
  if (rc) return rc;
  g.fd = m.fd;
  g.base = m.base;
  g.map_size = m.size;
  g.header = (lw_seg_header_t *)(void *)m.base;
  g.slot_count = m.slot_count;
  memset(g.owned, 0, sizeof g.owned);
  snprintf(g.path, sizeof g.path, "%s", path);
  return 0;
}

static lw_seg_slot_t *slot_at(uint32_t i) {
  return (lw_seg_slot_t *)(void *)(g.base + LW_SEG_HEADER_SIZE +
                                   (size_t)i * LW_SEG_SLOT_SIZE);
}

/* Takes a slot nobody alive owns: free or closed ones first, so that the
 * sidecar keeps seeing dead owners for as long as there is room. The file
 * lock is the ownership; the state word is only for readers. */
static int claim_slot(void) {
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < g.slot_count; i++) {
      if (g.owned[i]) continue;
      uint32_t state = __atomic_load_n(&slot_at(i)->state, LW_RELAXED);
      if (pass == 0 && state == LW_SLOT_ACTIVE) continue;
      if (ofd_lock(g.fd, LW_SEG_LOCK_BASE + i, F_WRLCK) == 0) {
        g.owned[i] = 1;
        return (int)i;
      }
    }
  }
  return -ENOSPC;
}

static void fill_slot(lw_loop_t *l, const char *name, const char *kind) {
  lw_seg_slot_t *s = l->slot;
  uint32_t gen = __atomic_load_n(&s->generation, LW_RELAXED);
  uint32_t odd = (gen & 1u) ? gen + 2u : gen + 1u;
  st32(&s->generation, odd);
  __atomic_thread_fence(LW_RELEASE);
  /* Everything after the generation word, except the seqlock words, which
   * only ever grow (a reader that saw them must never see them go back). */
  st32(&s->pid, (uint32_t)l->pid);
  st32(&s->tid, (uint32_t)l->tid);
  st64(&s->claim_token, random_u64());
  st64(&s->opened_ns, l->opened_ns);
  st64(&s->interval_ns, l->interval_ns);
  st64(&s->report_after_ns, l->report_after_ns);
  store_field(s->name, name, sizeof s->name);
  store_field(s->kind, kind, sizeof s->kind);

  l->beat_seq = __atomic_load_n(&s->beat_seq, LW_RELAXED);
  if (l->beat_seq & 1u) l->beat_seq++; /* the previous owner died mid-beat */
  st64(&s->beat_seq, l->beat_seq + 1);
  zero_words(&s->beat_count, offsetof(lw_seg_slot_t, ready) -
                                 offsetof(lw_seg_slot_t, beat_count));
  st64(&s->beat_seq, l->beat_seq + 2);
  l->beat_seq += 2;

  st32(&s->ready, 1);
  st32(&s->reserved2, 0);
  l->activity_seq = __atomic_load_n(&s->activity_seq, LW_RELAXED);
  if (l->activity_seq & 1u) l->activity_seq++;
  st64(&s->activity_seq, l->activity_seq + 1);
  store_field(s->activity, "", sizeof s->activity);
  st64(&s->activity_seq, l->activity_seq + 2);
  l->activity_seq += 2;
  zero_words(s->reserved3, sizeof s->reserved3);

  l->report_seq = __atomic_load_n(&s->report_seq, LW_RELAXED);
  if (l->report_seq & 1u) l->report_seq++;
  st64(&s->report_seq, l->report_seq + 1);
  zero_words(&s->stall_count, offsetof(lw_seg_slot_t, syscall_name) -
                                  offsetof(lw_seg_slot_t, stall_count));
  st32((uint32_t *)&s->syscall_nr, (uint32_t)-1);
  zero_words(s->syscall_name, LW_SEG_SLOT_SIZE -
                                  offsetof(lw_seg_slot_t, syscall_name));
  st64(&s->report_seq, l->report_seq + 2);
  l->report_seq += 2;

  st32(&s->state, LW_SLOT_ACTIVE);
  __atomic_store_n(&s->generation, odd + 1u, LW_RELEASE);
}

/* ---- fork ------------------------------------------------------------- */

static void atfork_prepare(void) { pthread_mutex_lock(&g.mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&g.mu); }

/* The child inherits the parent's handles, mapping and descriptor. Its
 * handles go inert, and it closes the descriptor: the slot locks belong to
 * the open file description, which must die with the parent, not live on in
 * a child (gunicorn's workers outlive nothing, but their arbiter's slots must
 * not look alive through them). */
static void atfork_child(void) {
  for (lw_loop_t *l = g.loops; l; l = l->next) {
    l->slot = NULL;
    l->orphan = 1;
    l->wd_busy = 0;
  }
  g.loops = NULL;
  g.nloops = 0;
  g.wd_running = 0;
  g.wd_epoch++;
  if (g.base) munmap(g.base, g.map_size);
  if (g.fd >= 0) close(g.fd);
  g.base = NULL;
  g.header = NULL;
  g.map_size = 0;
  g.fd = -1;
  memset(g.owned, 0, sizeof g.owned);
  pthread_mutex_unlock(&g.mu);
}

static int ensure_init(void) {
  if (!g.cond_ready) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g.cond, &attr);
    pthread_condattr_destroy(&attr);
    g.cond_ready = 1;
  }
  if (!g.atfork_registered) {
    int rc = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (rc) return -rc;
    g.atfork_registered = 1;
  }
  return 0;
}

/* ---- watchdog --------------------------------------------------------- */

/* CPU time of a thread of this process, by the kernel's per-thread CPU
 * clock id (what pthread_getcpuclockid builds), from its tid alone. */
static int64_t thread_cpu_ns(pid_t tid) {
  clockid_t id = (clockid_t)((~(unsigned)tid) << 3) | 6; /* PERTHREAD|SCHED */
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0) return -1;
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static ssize_t read_small_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = '\0';
  return n;
}

struct probe {
  int32_t nr;         /* -1 not in a syscall or unknown */
  int running;        /* /proc says "running" */
  char name[LW_SYSCALL_NAME_SIZE];
  char wchan[LW_WCHAN_SIZE];
};

static void probe_thread(pid_t tid, struct probe *p) {
  char path[64], buf[256];
  memset(p, 0, sizeof *p);
  p->nr = -1;
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
  if (read_small_file(path, buf, sizeof buf) > 0) {
    if (strncmp(buf, "running", 7) == 0) {
      p->running = 1;
    } else {
      long nr = strtol(buf, NULL, 10);
      if (nr >= 0) {
        p->nr = (int32_t)nr;
        const char *name = lw_syscall_name(nr);
        if (name) snprintf(p->name, sizeof p->name, "%s", name);
        else snprintf(p->name, sizeof p->name, "syscall_%ld", nr);
      }
    }
  }
  snprintf(path, sizeof path, "/proc/self/task/%d/wchan", (int)tid);
  if (read_small_file(path, buf, sizeof buf) > 0 && strcmp(buf, "0") != 0) {
    buf[strcspn(buf, "\n")] = '\0';
    snprintf(p->wchan, sizeof p->wchan, "%.*s", (int)sizeof p->wchan - 1, buf);
  }
}

static void report_begin(lw_loop_t *l) {
  st64(&l->slot->report_seq, l->report_seq + 1);
  __atomic_thread_fence(LW_RELEASE);
}
static void report_end(lw_loop_t *l) {
  l->report_seq += 2;
  __atomic_store_n(&l->slot->report_seq, l->report_seq, LW_RELEASE);
}

/* Reads the loop's own activity label through its seqlock. */
static void read_activity(lw_loop_t *l, char out[LW_ACTIVITY_SIZE]) {
  lw_seg_slot_t *s = l->slot;
  for (int tries = 0; tries < 64; tries++) {
    uint64_t s1 = __atomic_load_n(&s->activity_seq, LW_ACQUIRE);
    if (s1 & 1u) continue;
    load_field(out, s->activity, LW_ACTIVITY_SIZE);
    __atomic_thread_fence(LW_ACQUIRE);
    if (__atomic_load_n(&s->activity_seq, LW_RELAXED) == s1) return;
  }
  out[0] = '\0';
}

/* Writes the measured part of an open report: class, syscall, CPU. */
static void report_measure(lw_loop_t *l, uint64_t now, int opening) {
  lw_seg_slot_t *s = l->slot;
  struct probe p;
  probe_thread(l->tid, &p);
  int64_t cpu = thread_cpu_ns(l->tid);
  uint64_t wall = now - l->wd_seen_wall_ns;
  uint64_t cpu_used = 0;
  uint32_t cls = LW_CLASS_UNKNOWN;
  if (cpu >= 0 && l->wd_seen_cpu_ns >= 0 && wall > 0) {
    cpu_used = cpu > l->wd_seen_cpu_ns ? (uint64_t)(cpu - l->wd_seen_cpu_ns) : 0;
    /* A spinning thread starved of CPU (a pod at its CPU limit) gets less
     * than half the wall time but is runnable, not in a syscall. */
    cls = cpu_used * 2 >= wall || p.running ? LW_CLASS_CPU : LW_CLASS_BLOCKED;
  } else if (p.running) {
    cls = LW_CLASS_CPU;
  } else if (p.nr >= 0) {
    cls = LW_CLASS_BLOCKED;
  }
  char activity[LW_ACTIVITY_SIZE];
  if (opening) read_activity(l, activity);

  report_begin(l);
  if (opening) {
    l->stall_count++;
    st64(&s->stall_count, l->stall_count);
    st64(&s->stall_start_ns, l->stall_start_ns);
    st64(&s->stall_end_ns, 0);
    st32(&s->report_state, LW_REPORT_OPEN);
    st32(&s->text_len, 0);
    store_field(s->report_activity, activity, sizeof s->report_activity);
  }
  st64(&s->report_updated_ns, now);
  st64(&s->loop_cpu_ns, cpu_used);
  st32(&s->stall_class, cls);
  st32((uint32_t *)&s->syscall_nr, (uint32_t)p.nr);
  store_field(s->syscall_name, cls == LW_CLASS_CPU && p.nr < 0 ? "" : p.name,
              sizeof s->syscall_name);
  store_field(s->wchan, p.wchan, sizeof s->wchan);
  report_end(l);
}

static void report_text(lw_loop_t *l, const char *text, size_t len) {
  lw_seg_slot_t *s = l->slot;
  if (len > LW_REPORT_TEXT_SIZE - 1) len = LW_REPORT_TEXT_SIZE - 1;
  report_begin(l);
  for (size_t off = 0; off < LW_REPORT_TEXT_SIZE; off += 8) {
    uint64_t word = 0;
    if (off < len) memcpy(&word, text + off, len - off < 8 ? len - off : 8);
    st64((uint64_t *)(void *)(s->text + off), word);
  }
  st32(&s->text_len, (uint32_t)len);
  report_end(l);
}

static void report_close(lw_loop_t *l, uint64_t last_beat_ns) {
  lw_seg_slot_t *s = l->slot;
  report_begin(l);
  st64(&s->stall_end_ns, last_beat_ns);
  st32(&s->report_state, LW_REPORT_CLOSED);
  report_end(l);
  l->stall_open = 0;
}

/* One look at one loop; returns 1 if a new report wants the hook's text.
 * Called with g.mu held. */
static int watch_one(lw_loop_t *l, uint64_t now) {
  lw_seg_slot_t *s = l->slot;
  uint64_t count = 0, last = 0;
  int consistent = 0;
  for (int tries = 0; tries < 64 && !consistent; tries++) {
    uint64_t s1 = __atomic_load_n(&s->beat_seq, LW_ACQUIRE);
    if (s1 & 1u) continue;
    count = __atomic_load_n(&s->beat_count, LW_RELAXED);
    last = __atomic_load_n(&s->last_beat_ns, LW_RELAXED);
    __atomic_thread_fence(LW_ACQUIRE);
    consistent = __atomic_load_n(&s->beat_seq, LW_RELAXED) == s1;
  }
  if (!consistent) return 0; /* the loop is beating right now: not stalled */
  if (count != l->wd_seen_count) {
    if (l->stall_open) report_close(l, last);
    l->wd_seen_count = count;
    l->wd_seen_wall_ns = now;
    l->wd_seen_cpu_ns = thread_cpu_ns(l->tid);
    return 0;
  }
  uint64_t since = count ? last : l->opened_ns;
  if (now <= since) return 0;
  if (l->stall_open) {
    report_measure(l, now, 0);
    return 0;
  }
  if (now - since < l->interval_ns + l->report_after_ns) return 0;
  l->stall_start_ns = since;
  l->stall_open = 1;
  l->hook_pending = l->hook != NULL;
  report_measure(l, now, 1);
  return l->hook_pending;
}

static void *watchdog_main(void *arg) {
  unsigned epoch = (unsigned)(uintptr_t)arg;
  pthread_mutex_lock(&g.mu);
  while (g.wd_running && g.wd_epoch == epoch) {
    uint64_t now = lw_now_ns();
    uint64_t tick = LW_MAX_TICK_NS;
    lw_loop_t *pending[16];
    int npending = 0;
    for (lw_loop_t *l = g.loops; l; l = l->next) {
      uint64_t t = l->report_after_ns / 4;
      if (t < tick) tick = t;
      watch_one(l, now);
      /* More than 16 at once: the rest get their text on the next ticks. */
      if (l->hook_pending && l->stall_open && npending < 16) {
        l->hook_pending = 0;
        l->wd_busy = 1;
        pending[npending++] = l;
      }
    }
    for (int i = 0; i < npending; i++) {
      lw_loop_t *l = pending[i];
      lw_report_hook_fn fn = l->hook;
      void *user = l->hook_user;
      pthread_mutex_unlock(&g.mu);
      size_t n = fn ? fn(l, user, g.hook_buf, sizeof g.hook_buf) : 0;
      pthread_mutex_lock(&g.mu);
      if (l->slot && l->stall_open && n > 0) {
        report_text(l, g.hook_buf, n < sizeof g.hook_buf ? n : sizeof g.hook_buf);
      }
      l->wd_busy = 0;
      pthread_cond_broadcast(&g.cond);
    }
    if (tick < LW_MIN_TICK_NS) tick = LW_MIN_TICK_NS;
    uint64_t wake = lw_now_ns() + tick;
    struct timespec ts = {(time_t)(wake / 1000000000u),
                          (long)(wake % 1000000000u)};
    pthread_cond_timedwait(&g.cond, &g.mu, &ts);
  }
  pthread_mutex_unlock(&g.mu);
  return NULL;
}

/* Called with g.mu held. */
static int watchdog_start(void) {
  if (g.wd_running) return 0;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* app signals never land here */
  g.wd_running = 1;
  g.wd_epoch++;
  int rc = pthread_create(&g.wd_thread, NULL, watchdog_main,
                          (void *)(uintptr_t)g.wd_epoch);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) {
    g.wd_running = 0;
    set_error("cannot start the watchdog thread: %s", strerror(rc));
    return -rc;
  }
  pthread_setname_np(g.wd_thread, "loopwatch-wd");
  return 0;
}

/* ---- public API ------------------------------------------------------- */

const char *lw_version(void) { return "0.1.0"; }

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
    set_error("out is NULL");
    return -EINVAL;
  }
  *out = NULL;
  if (!opt || opt->struct_size < offsetof(lw_loop_options_t, report_after_ns) +
                                     sizeof opt->report_after_ns) {
    set_error("options are NULL or struct_size is too small");
    return -EINVAL;
  }
  if (!opt->name || !*opt->name) {
    set_error("a loop needs a name");
    return -EINVAL;
  }
  if (strlen(opt->name) > LW_NAME_MAX) {
    set_error("loop name \"%.20s...\" is longer than %d bytes", opt->name,
              LW_NAME_MAX);
    return -ENAMETOOLONG;
  }
  const char *kind = opt->kind && *opt->kind ? opt->kind : "native";
  if (strlen(kind) > LW_KIND_MAX) {
    set_error("loop kind \"%s\" is longer than %d bytes", kind, LW_KIND_MAX);
    return -ENAMETOOLONG;
  }
  if (opt->interval_ns == 0 || opt->interval_ns > UINT64_C(3600000000000)) {
    set_error("interval_ns must be above zero and at most one hour");
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
  pthread_mutex_lock(&g.mu);
  int rc = ensure_init();
  if (rc == 0) rc = segment_attach();
  int idx = rc == 0 ? claim_slot() : rc;
  if (idx < 0) {
    if (idx == -ENOSPC) {
      set_error("all %u slots of segment %s are in use by live loops; "
                "create it with more (LOOPWATCH_SLOTS)", g.slot_count, g.path);
    }
    pthread_mutex_unlock(&g.mu);
    free(l);
    return idx;
  }
  l->index = idx;
  l->slot = slot_at((uint32_t)idx);
  l->interval_ns = opt->interval_ns;
  l->report_after_ns = report_after;
  l->pid = getpid();
  l->tid = gettid();
  l->opened_ns = lw_now_ns();
  l->wd_seen_wall_ns = l->opened_ns;
  l->wd_seen_cpu_ns = thread_cpu_ns(l->tid);
  fill_slot(l, opt->name, kind);
  l->next = g.loops;
  g.loops = l;
  g.nloops++;
  rc = watchdog_start();
  pthread_mutex_unlock(&g.mu);
  if (rc) {
    lw_loop_close(l);
    return rc;
  }
  *out = l;
  return 0;
}

int lw_loop_close(lw_loop_t *l) {
  if (!l) return 0;
  pthread_mutex_lock(&g.mu);
  if (l->orphan) {
    pthread_mutex_unlock(&g.mu);
    free(l);
    return 0;
  }
  for (lw_loop_t **p = &g.loops; *p; p = &(*p)->next) {
    if (*p == l) {
      *p = l->next;
      g.nloops--;
      break;
    }
  }
  while (l->wd_busy) pthread_cond_wait(&g.cond, &g.mu);
  if (l->slot) {
    if (l->stall_open) report_close(l, lw_now_ns());
    __atomic_store_n(&l->slot->state, LW_SLOT_CLOSED, LW_RELEASE);
    (void)ofd_lock(g.fd, LW_SEG_LOCK_BASE + (uint64_t)l->index, F_UNLCK);
    g.owned[l->index] = 0;
  }
  pthread_t join = 0;
  int do_join = 0;
  if (g.nloops == 0 && g.wd_running) {
    g.wd_running = 0;
    join = g.wd_thread;
    do_join = !pthread_equal(join, pthread_self());
    pthread_cond_broadcast(&g.cond);
  }
  pthread_mutex_unlock(&g.mu);
  if (do_join) pthread_join(join, NULL);
  free(l);
  return 0;
}

static inline unsigned lag_bucket(uint64_t lag) {
  unsigned b = 0;
  while (b < LW_LAG_FINITE_BOUNDS && lag > kLagBounds[b]) b++;
  return b;
}

int lw_beat_at(lw_loop_t *l, uint64_t now) {
  if (!l) return 0;
  lw_seg_slot_t *s = l->slot;
  if (!s) return 0;
  uint64_t seq = l->beat_seq;
  st64(&s->beat_seq, seq + 1);
  __atomic_thread_fence(LW_RELEASE);
  if (l->beat_count) {
    uint64_t expected = l->last_beat_ns + l->interval_ns;
    uint64_t lag = now > expected ? now - expected : 0;
    unsigned b = lag_bucket(lag);
    st64(&s->lag_bucket[b], ++l->lag_bucket[b]);
    l->lag_sum_ns += lag;
    st64(&s->lag_sum_ns, l->lag_sum_ns);
    st64(&s->lag_count, ++l->lag_count);
    if (lag > l->lag_max_ns) {
      l->lag_max_ns = lag;
      st64(&s->lag_max_ns, lag);
    }
  }
  st64(&s->beat_count, ++l->beat_count);
  l->last_beat_ns = now;
  st64(&s->last_beat_ns, now);
  l->beat_seq = seq + 2;
  __atomic_store_n(&s->beat_seq, seq + 2, LW_RELEASE);
  return 0;
}

int lw_beat(lw_loop_t *l) {
  if (!l || !l->slot) return 0;
  return lw_beat_at(l, lw_now_ns());
}

int lw_set_ready(lw_loop_t *l, int ready) {
  if (!l || !l->slot) return 0;
  __atomic_store_n(&l->slot->ready, ready ? 1u : 0u, LW_RELEASE);
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
  st64(&s->activity_seq, l->activity_seq + 1);
  __atomic_thread_fence(LW_RELEASE);
  store_field(s->activity, buf, sizeof s->activity);
  l->activity_seq += 2;
  __atomic_store_n(&s->activity_seq, l->activity_seq, LW_RELEASE);
  return 0;
}

int lw_set_report_hook(lw_loop_t *l, lw_report_hook_fn fn, void *user) {
  if (!l || !l->slot) return 0;
  pthread_mutex_lock(&g.mu);
  l->hook = fn;
  l->hook_user = user;
  pthread_mutex_unlock(&g.mu);
  return 0;
}

int lw_loop_slot(const lw_loop_t *l) { return l && l->slot ? l->index : -1; }

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The segment as this process holds it: attaching (map the file named by
 * LOOPWATCH_SEGMENT), claiming and filling slots, and keeping the loops
 * attached to whatever file is at the path.
 *
 * The file can change under a running app: someone deletes it, renames
 * another over it, or truncates it. The watchdog checks twice a second that
 * the file it maps is still the one at the path and no shorter than its
 * mapping; if not, it maps the file now there (or creates it) and gives
 * every loop a slot in it, filled with the loop's identity and last beat.
 * The loop thread moves to the new slot at its next beat (lw_internal_adopt,
 * no system call), so lw_beat() never waits and never sees a half-made slot.
 *
 * A truncated file would raise SIGBUS at the next store into a page past its
 * end, before the watchdog has looked. A SIGBUS handler, installed with the
 * first loop and chained to whatever handler was there, catches exactly
 * those faults: it replaces the mapping with anonymous memory, where the
 * store then lands, and flags the segment lost for the watchdog. Any other
 * SIGBUS goes to the previous handler (or the default action) unchanged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loopwatch_internal.h"
#include "segment.h"
#include "segment_access.h"
#include "segment_layout.h"

/* How often the watchdog looks at the path. */
#define LW_CHECK_NS UINT64_C(500000000)
/* A mapping left behind is unmapped once no loop beats into it and this
 * long has passed (a thread inside lw_set_ready() may still hold a slot
 * pointer into it for a moment). */
#define LW_RETIRE_NS UINT64_C(10000000000)

/* ---- the mappings and the SIGBUS guard -------------------------------- */

/* Every mapping of a segment this process holds (the current one and those
 * left behind), for the signal handler: base and size are read there with
 * atomic loads; an entry is free while its size is 0. */
static struct {
  uintptr_t base;
  size_t size;
  uint64_t retired_ns; /* 0: the current mapping */
} maps[LW_MAX_MAPPINGS];

static struct sigaction prev_sigbus;
static int guard_installed;

static int find_mapping(uintptr_t addr) {
  for (int i = 0; i < LW_MAX_MAPPINGS; i++) {
    size_t size = __atomic_load_n(&maps[i].size, __ATOMIC_ACQUIRE);
    uintptr_t base = __atomic_load_n(&maps[i].base, __ATOMIC_RELAXED);
    if (size && addr >= base && addr - base < size) return i;
  }
  return -1;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
  int i = si->si_code == BUS_ADRERR ? find_mapping((uintptr_t)si->si_addr) : -1;
  if (i >= 0) {
    /* A page of a segment cut from under us: anonymous memory takes the
     * mapping's place (mmap is async-signal-safe), and the faulting store
     * or load runs again there. */
    void *base = (void *)__atomic_load_n(&maps[i].base, __ATOMIC_RELAXED);
    size_t size = __atomic_load_n(&maps[i].size, __ATOMIC_RELAXED);
    if (mmap(base, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
             0) != MAP_FAILED) {
      __atomic_store_n(&lw_proc.lost, 1, __ATOMIC_RELEASE);
      __atomic_store_n(&lw_proc.next_check_ns, 0, __ATOMIC_RELEASE); /* look at once */
      return;
    }
  }
  /* Not ours: as if this handler had never been installed. */
  if (prev_sigbus.sa_flags & SA_SIGINFO) {
    prev_sigbus.sa_sigaction(sig, si, uc);
  } else if (prev_sigbus.sa_handler != SIG_DFL && prev_sigbus.sa_handler != SIG_IGN) {
    prev_sigbus.sa_handler(sig);
  } else {
    /* The default action: the fault happens again on return, and kills. */
    signal(sig, SIG_DFL);
  }
}

static void install_guard(void) {
  if (guard_installed) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &prev_sigbus) == 0) guard_installed = 1;
}

static void track_mapping(uint8_t *base, size_t size) {
  for (int i = 0; i < LW_MAX_MAPPINGS; i++) {
    if (__atomic_load_n(&maps[i].size, __ATOMIC_RELAXED) == 0) {
      maps[i].retired_ns = 0;
      __atomic_store_n(&maps[i].base, (uintptr_t)base, __ATOMIC_RELAXED);
      __atomic_store_n(&maps[i].size, size, __ATOMIC_RELEASE);
      return;
    }
  }
  /* Full (16 mappings left behind by loops that never beat again): the
   * newest goes unguarded. */
}

static int mapping_of(const uint8_t *base) {
  for (int i = 0; i < LW_MAX_MAPPINGS; i++) {
    if (__atomic_load_n(&maps[i].size, __ATOMIC_RELAXED) &&
        __atomic_load_n(&maps[i].base, __ATOMIC_RELAXED) == (uintptr_t)base) {
      return i;
    }
  }
  return -1;
}

/* Replaces a mapping whose file may have shrunk by anonymous memory (no
 * store into it can fault any more). */
static void neutralise(uint8_t *base, size_t size) {
  (void)mmap(base, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

/* Whether a loop's thread may still store into [base, base + size). */
static int in_use(uintptr_t base, size_t size) {
  for (lw_loop_t *l = lw_proc.loops; l; l = l->next) {
    uintptr_t s = (uintptr_t)__atomic_load_n(&l->slot, __ATOMIC_ACQUIRE);
    if (s >= base && s - base < size) return 1;
  }
  return 0;
}

/* Unmaps what was left behind long enough ago and is no loop's any more. */
static void reap_retired(uint64_t now) {
  for (int i = 0; i < LW_MAX_MAPPINGS; i++) {
    size_t size = __atomic_load_n(&maps[i].size, __ATOMIC_RELAXED);
    if (!size || !maps[i].retired_ns || now - maps[i].retired_ns < LW_RETIRE_NS) continue;
    uintptr_t base = __atomic_load_n(&maps[i].base, __ATOMIC_RELAXED);
    if (in_use(base, size)) continue;
    __atomic_store_n(&maps[i].size, 0, __ATOMIC_RELEASE);
    munmap((void *)base, size);
  }
}

void lw_internal_forget_mappings(void) {
  for (int i = 0; i < LW_MAX_MAPPINGS; i++) {
    size_t size = __atomic_load_n(&maps[i].size, __ATOMIC_RELAXED);
    if (!size) continue;
    __atomic_store_n(&maps[i].size, 0, __ATOMIC_RELEASE);
    munmap((void *)maps[i].base, size);
  }
}

/* ---- attaching -------------------------------------------------------- */

int lw_internal_env_slots(uint32_t *out) {
  const char *s = getenv("LOOPWATCH_SLOTS");
  if (!s || !*s) {
    *out = LW_SEG_DEFAULT_SLOTS;
    return 0;
  }
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v < 1 || v > LW_SEG_MAX_SLOTS) {
    lw_internal_set_error("LOOPWATCH_SLOTS=\"%s\": expected a whole number from 1 to %u",
                          s, LW_SEG_MAX_SLOTS);
    return -EINVAL;
  }
  *out = (uint32_t)v;
  return 0;
}

/* Makes `m` the current mapping. */
static void take_mapping(const struct lw_seg_map *m) {
  struct stat st;
  lw_proc.fd = m->fd;
  lw_proc.base = m->base;
  lw_proc.map_size = m->size;
  lw_proc.slot_count = m->slot_count;
  memset(lw_proc.owned, 0, sizeof lw_proc.owned);
  if (fstat(m->fd, &st) == 0) {
    lw_proc.dev = st.st_dev;
    lw_proc.ino = st.st_ino;
  }
  lw_proc.epoch++;
  track_mapping(m->base, m->size);
}

int lw_internal_attach(void) {
  if (lw_proc.base) return 0;
  const char *path = getenv("LOOPWATCH_SEGMENT");
  if (!path || !*path) return -ENOENT;
  if (strlen(path) >= sizeof lw_proc.path) {
    lw_internal_set_error("LOOPWATCH_SEGMENT is longer than %zu bytes", sizeof lw_proc.path - 1);
    return -ENAMETOOLONG;
  }
  uint32_t want_slots;
  int rc = lw_internal_env_slots(&want_slots);
  if (rc) return rc;
  struct lw_seg_map m;
  rc = lw_internal_segment_open(path, want_slots, &m);
  if (rc) return rc;
  install_guard();
  snprintf(lw_proc.path, sizeof lw_proc.path, "%s", path);
  take_mapping(&m);
  __atomic_store_n(&lw_proc.next_check_ns, lw_now_ns() + LW_CHECK_NS, __ATOMIC_RELEASE);
  return 0;
}

lw_seg_slot_t *lw_internal_slot_at(uint32_t i) {
  return (lw_seg_slot_t *)(void *)(lw_proc.base + LW_SEG_HEADER_SIZE +
                                   (size_t)i * LW_SEG_SLOT_SIZE);
}

int lw_internal_claim_slot(void) {
  /* Free or closed slots first, so that the sidecar keeps seeing dead
   * owners for as long as there is room. The file lock is the ownership;
   * the state word is only for readers. */
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < lw_proc.slot_count; i++) {
      if (lw_proc.owned[i]) continue;
      uint32_t state = __atomic_load_n(&lw_internal_slot_at(i)->state, __ATOMIC_RELAXED);
      if (pass == 0 && state == LW_SLOT_ACTIVE) continue;
      if (lw_internal_lock_byte(lw_proc.fd, LW_SEG_LOCK_BASE + i, F_WRLCK) == 0) {
        lw_proc.owned[i] = 1;
        return (int)i;
      }
    }
  }
  return -ENOSPC;
}

/* What a loop carries from its slot to the next: the beat group as it
 * stands and the app's status. */
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, last_beat_ns) == offsetof(lw_seg_slot_t, beat_count) + 8,
                 "the beat group starts with beat_count, last_beat_ns");
struct carried {
  const lw_seg_slot_t *from;
  uint64_t beat[offsetof(lw_seg_slot_t, reserved1) / 8 - offsetof(lw_seg_slot_t, beat_count) / 8];
  char activity[LW_ACTIVITY_SIZE];
};

static void copy_beat_group(void *ctx, uint64_t seq) {
  (void)seq;
  struct carried *c = (struct carried *)ctx;
  lw_load_words(c->beat, &c->from->beat_count, sizeof c->beat / 8);
}

static void copy_activity(void *ctx, uint64_t seq) {
  (void)seq;
  struct carried *c = (struct carried *)ctx;
  lw_load_field(c->activity, c->from->activity, sizeof c->activity);
}

void lw_internal_fill_slot(lw_loop_t *l, lw_seg_slot_t *s, const lw_seg_slot_t *from,
                           uint64_t *beat_seq, uint64_t *activity_seq) {
  struct carried c;
  memset(&c, 0, sizeof c);
  uint32_t ready = 1;
  if (from) {
    c.from = from;
    if (!lw_seqlock_read(&from->beat_seq, copy_beat_group, &c)) memset(c.beat, 0, sizeof c.beat);
    if (!lw_seqlock_read(&from->activity_seq, copy_activity, &c)) c.activity[0] = '\0';
    c.activity[sizeof c.activity - 1] = '\0';
    ready = __atomic_load_n(&from->ready, __ATOMIC_RELAXED) ? 1u : 0u;
    /* A slot cut from under us reads zero: the last beat the watchdog saw
     * still tells the sidecar how long the loop has been silent. */
    if (c.beat[0] < l->wd_seen_count) {  /* [0] beat_count, [1] last_beat_ns */
      memset(c.beat, 0, sizeof c.beat);
      c.beat[0] = l->wd_seen_count;
      c.beat[1] = l->wd_seen_last_ns;
    }
  }

  uint32_t odd = lw_generation_claim_begin(&s->generation);
  /* Everything after the generation word, except the seqlock words, which
   * only ever grow (a reader that saw them must never see them go back). */
  lw_store32(&s->pid, (uint32_t)l->pid);
  lw_store32(&s->tid, (uint32_t)l->tid);
  lw_store64(&s->claim_token, lw_internal_random_u64());
  lw_store64(&s->opened_ns, l->opened_ns);
  lw_store64(&s->interval_ns, l->interval_ns);
  lw_store64(&s->report_after_ns, l->report_after_ns);
  lw_store_field(s->name, l->name, sizeof s->name);
  lw_store_field(s->kind, l->kind, sizeof s->kind);
  lw_store_field(s->container, l->container, sizeof s->container);

  uint64_t seq = lw_seqlock_adopt(&s->beat_seq);
  lw_seqlock_write_begin(&s->beat_seq, seq);
  uint64_t *beat = &s->beat_count;
  for (size_t i = 0; i < sizeof c.beat / 8; i++) lw_store64(&beat[i], c.beat[i]);
  *beat_seq = lw_seqlock_write_end(&s->beat_seq, seq);

  lw_store32(&s->ready, ready);
  lw_store32(&s->reserved2, 0);
  seq = lw_seqlock_adopt(&s->activity_seq);
  lw_seqlock_write_begin(&s->activity_seq, seq);
  lw_store_field(s->activity, c.activity, sizeof s->activity);
  *activity_seq = lw_seqlock_write_end(&s->activity_seq, seq);
  lw_zero_words(s->reserved3, sizeof s->reserved3);

  l->report_seq = lw_seqlock_adopt(&s->report_seq);
  lw_seqlock_write_begin(&s->report_seq, l->report_seq);
  lw_zero_words(&s->stall_count, offsetof(lw_seg_slot_t, syscall_name) -
                                     offsetof(lw_seg_slot_t, stall_count));
  lw_store32((uint32_t *)&s->syscall_nr, (uint32_t)-1);
  lw_zero_words(s->syscall_name, LW_SEG_SLOT_SIZE - offsetof(lw_seg_slot_t, syscall_name));
  l->report_seq = lw_seqlock_write_end(&s->report_seq, l->report_seq);

  lw_store32(&s->state, LW_SLOT_ACTIVE);
  lw_generation_claim_end(&s->generation, odd);
}

/* ---- keeping attached -------------------------------------------------- */

/* Gives `l` a slot in the current mapping, filled from the one it beats
 * into; the loop thread moves at its next beat. */
static int move_loop(lw_loop_t *l) {
  int idx = lw_internal_claim_slot();
  if (idx < 0) return idx;
  lw_seg_slot_t *s = lw_internal_slot_at((uint32_t)idx);
  const lw_seg_slot_t *from = __atomic_load_n(&l->slot, __ATOMIC_ACQUIRE);
  uint64_t beat_seq, activity_seq;
  lw_internal_fill_slot(l, s, from, &beat_seq, &activity_seq);
  l->index = idx;
  l->epoch = lw_proc.epoch;
  /* The watchdog's report of a stall in progress opens again in the new
   * slot at its next look. */
  l->stall_open = 0;
  l->hook_pending = 0;
  __atomic_store_n(&l->next_slot, s, __ATOMIC_RELEASE);
  return 0;
}

enum change { SAME, ELSEWHERE, CUT };

/* Whether the file at the path is still the one mapped: SAME; ELSEWHERE
 * when it was deleted or another file took its place; CUT when it is ours
 * but shorter than the mapping (truncated: the SIGBUS guard may have seen
 * it first). */
static enum change changed(void) {
  struct stat at, mine;
  int cut = __atomic_load_n(&lw_proc.lost, __ATOMIC_ACQUIRE) ||
            (fstat(lw_proc.fd, &mine) == 0 && (uint64_t)mine.st_size < lw_proc.map_size);
  if (stat(lw_proc.path, &at) != 0) return errno == ENOENT ? ELSEWHERE : SAME;
  if (at.st_dev != lw_proc.dev || at.st_ino != lw_proc.ino) return ELSEWHERE;
  return cut ? CUT : SAME;
}

void lw_internal_segment_check(uint64_t now) {
  if (!lw_proc.base || now < __atomic_load_n(&lw_proc.next_check_ns, __ATOMIC_ACQUIRE)) return;
  __atomic_store_n(&lw_proc.next_check_ns, now + LW_CHECK_NS, __ATOMIC_RELEASE);
  reap_retired(now);

  const enum change what = changed();
  if (what != SAME) {
    uint32_t want_slots;
    if (lw_internal_env_slots(&want_slots) != 0) want_slots = lw_proc.slot_count;
    if (what == CUT) {
      /* Our own segment, cut short: its next store past the end would
       * fault, so anonymous memory takes the mapping's place at once, and
       * a whole new segment takes the file's (the other processes that
       * map it see it replaced and follow). */
      neutralise(lw_proc.base, lw_proc.map_size);
      __atomic_store_n(&lw_proc.lost, 1, __ATOMIC_RELEASE);
      if (lw_internal_segment_replace(lw_proc.path, want_slots) != 0) return;
    }
    struct lw_seg_map m;
    if (lw_internal_segment_open(lw_proc.path, want_slots, &m) != 0) {
      /* Nothing usable there yet (someone's file, another version): the
       * loops stay where they are, and the next check tries again. */
      return;
    }
    int old = mapping_of(lw_proc.base);
    if (old >= 0) maps[old].retired_ns = now;
    close(lw_proc.fd); /* drops this process's locks in the old file */
    __atomic_store_n(&lw_proc.lost, 0, __ATOMIC_RELEASE);
    lw_proc.reattached++;
    take_mapping(&m);
  }
  /* Every loop that has no slot in the current file gets one (also those
   * the last attempt found no room for). */
  for (lw_loop_t *l = lw_proc.loops; l; l = l->next) {
    if (l->epoch != lw_proc.epoch) (void)move_loop(l);
  }
}

void lw_internal_adopt(lw_loop_t *l) {
  lw_seg_slot_t *next = __atomic_load_n(&l->next_slot, __ATOMIC_ACQUIRE);
  if (!next) return;
  lw_seg_slot_t *old = l->slot;
  /* The beat group as this thread knows it, whole. */
  uint64_t seq = lw_seqlock_adopt(&next->beat_seq);
  lw_seqlock_write_begin(&next->beat_seq, seq);
  lw_store64(&next->beat_count, l->beat_count);
  lw_store64(&next->last_beat_ns, l->last_beat_ns);
  lw_store64(&next->lag_max_ns, l->lag_max_ns);
  lw_store64(&next->lag_sum_ns, l->lag_sum_ns);
  lw_store64(&next->lag_count, l->lag_count);
  for (unsigned b = 0; b < LW_LAG_BUCKETS; b++) lw_store64(&next->lag_bucket[b], l->lag_bucket[b]);
  l->beat_seq = lw_seqlock_write_end(&next->beat_seq, seq);
  /* The activity this thread set since the slot was filled. */
  char activity[LW_ACTIVITY_SIZE];
  lw_load_field(activity, old->activity, sizeof activity);
  activity[sizeof activity - 1] = '\0';
  seq = lw_seqlock_adopt(&next->activity_seq);
  lw_seqlock_write_begin(&next->activity_seq, seq);
  lw_store_field(next->activity, activity, sizeof next->activity);
  l->activity_seq = lw_seqlock_write_end(&next->activity_seq, seq);
  lw_store32(&next->ready, __atomic_load_n(&old->ready, __ATOMIC_RELAXED));
  __atomic_store_n(&l->slot, next, __ATOMIC_RELEASE);
  /* Unless the watchdog has moved the loop again meanwhile. */
  lw_seg_slot_t *expected = next;
  __atomic_compare_exchange_n(&l->next_slot, &expected, NULL, 0, __ATOMIC_ACQ_REL,
                              __ATOMIC_ACQUIRE);
}

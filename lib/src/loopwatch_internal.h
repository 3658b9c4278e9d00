/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loopwatch_internal.h: what the library's own files share: the loop handle,
 * the process-wide state and the watchdog's entry points. loopwatch.c owns
 * the state and the public API; attach.c the segment as this process holds
 * it (attaching, claiming, re-attaching, the SIGBUS guard); watchdog.c the
 * watchdog thread and the stall reports. Nothing here is exported.
 */
#ifndef LOOPWATCH_INTERNAL_H_
#define LOOPWATCH_INTERNAL_H_

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "loopwatch/loopwatch.h"
#include "segment_layout.h"

/* Mappings of segments a process holds at once: the current one and those
 * left behind when the file changed, until no loop beats into them. */
#define LW_MAX_MAPPINGS 16

struct lw_loop {
  /* Hot: used by lw_beat on the loop thread. slot is NULL in a forked child. */
  lw_seg_slot_t *slot;
  /* A slot in a new segment, filled by the watchdog; the loop thread moves
   * to it at its next beat (lw_internal_adopt). NULL: none pending. */
  lw_seg_slot_t *next_slot;
  uint64_t interval_ns;
  uint64_t beat_seq; /* last published value of slot->beat_seq */
  uint64_t beat_count;
  uint64_t last_beat_ns;
  uint64_t lag_max_ns;
  uint64_t lag_sum_ns;
  uint64_t lag_count;
  uint64_t lag_bucket[LW_LAG_BUCKETS];
  uint64_t activity_seq;

  /* Cold: identity and watchdog state, under lw_proc.mu. */
  int index;         /* slot in the current segment, if epoch is current */
  unsigned epoch;    /* lw_proc.epoch of the segment that has its slot */
  char name[LW_SLOT_NAME_SIZE];
  char kind[LW_SLOT_KIND_SIZE];
  char container[LW_SLOT_CONTAINER_SIZE]; /* LOOPWATCH_CONTAINER at open */
  pid_t tid;
  pid_t pid;
  uint64_t opened_ns;
  uint64_t report_after_ns;
  lw_report_hook_fn hook;
  void *hook_user;
  int orphan;  /* inherited through fork(): inert */
  int wd_busy; /* the watchdog runs this loop's hook without lw_proc.mu */
  uint64_t wd_seen_count;
  uint64_t wd_seen_last_ns; /* the last beat's time, as read then */
  uint64_t wd_seen_wall_ns;
  int64_t wd_seen_cpu_ns;   /* -1: thread CPU clock unreadable */
  int64_t wd_seen_delay_ns; /* time runnable but not run; -1: unknown */
  int wd_delay_taken;       /* wd_seen_delay_ns taken since the last progress */
  int stall_open;
  /* Over the open report: /proc samples, and those that read "running"
   * (the class's fallback when the run-queue delay is unknown). */
  uint32_t wd_probes, wd_running_probes;
  int gil_wait;      /* the binding says: waits for the interpreter lock */
  uint32_t wd_class; /* the class last written into the report */
  int hook_pending; /* report opened; the hook has not run yet */
  uint64_t report_seq;
  uint64_t stall_count;
  uint64_t stall_start_ns;
  struct lw_loop *next;
};

/* The process-wide state, guarded by mu: the segment mapping, the open
 * loops, the slots this process owns, the watchdog thread. lw_beat() never
 * touches it. */
struct lw_process {
  pthread_mutex_t mu;
  pthread_cond_t cond; /* CLOCK_MONOTONIC; watchdog wake-ups, hook done */
  int cond_ready;
  int atfork_registered;
  int fd;
  char path[4096];
  uint8_t *base;
  size_t map_size;
  uint32_t slot_count;
  uint8_t owned[LW_SEG_MAX_SLOTS];
  /* The mapped file, to tell when the path names another; the segment's
   * number (+1 per attach); when the watchdog looks at the path next; set by
   * the SIGBUS guard when the file was cut short; re-attaches so far. */
  dev_t dev;
  ino_t ino;
  unsigned epoch;
  uint64_t next_check_ns;
  int lost;
  uint64_t reattached;
  struct lw_loop *loops;
  int nloops;
  pthread_t wd_thread;
  int wd_running;
  unsigned wd_epoch;
  char hook_buf[LW_REPORT_TEXT_SIZE];
};

extern struct lw_process lw_proc;

/* Sets the calling thread's lw_last_error(). */
void lw_internal_set_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* A random nonzero id (segment ids, claim tokens). */
uint64_t lw_internal_random_u64(void);

/* CPU time of a thread of this process, from its tid; -1 if unreadable. */
int64_t lw_internal_thread_cpu_ns(pid_t tid);

/* The slot the sidecar sees for `l`: the one it is moving to, if any. The
 * watchdog reads beats and writes reports there. */
static inline lw_seg_slot_t *lw_internal_target(lw_loop_t *l) {
  lw_seg_slot_t *n = __atomic_load_n(&l->next_slot, __ATOMIC_ACQUIRE);
  return n ? n : __atomic_load_n(&l->slot, __ATOMIC_ACQUIRE);
}

/* attach.c, with lw_proc.mu held unless said otherwise. */
/* LOOPWATCH_SLOTS, or the default. */
int lw_internal_env_slots(uint32_t *out);
/* Maps the segment named by LOOPWATCH_SEGMENT, once. */
int lw_internal_attach(void);
lw_seg_slot_t *lw_internal_slot_at(uint32_t i);
/* Takes a slot nobody alive owns (its file lock); its index or -ENOSPC. */
int lw_internal_claim_slot(void);
/* Claims `s` for `l`: identity, then each seqlocked group, carrying the
 * beat group, readiness and activity over from `from` (NULL: a new loop).
 * Returns the sequence values the loop thread continues from. */
void lw_internal_fill_slot(lw_loop_t *l, lw_seg_slot_t *s, const lw_seg_slot_t *from,
                           uint64_t *beat_seq, uint64_t *activity_seq);
/* The watchdog's look at the path (twice a second, or at once after a
 * SIGBUS): re-attaches every loop if the file changed. */
void lw_internal_segment_check(uint64_t now);
/* On the loop thread, no lock: moves to next_slot. */
void lw_internal_adopt(lw_loop_t *l);
/* In a forked child: unmaps every segment mapping. */
void lw_internal_forget_mappings(void);

/* The signals the library's own threads block: all but those of faults. */
void lw_internal_app_signals(sigset_t *set);

/* Starts the watchdog thread if it is not running. With lw_proc.mu held. */
int lw_internal_watchdog_start(void);

/* Closes the loop's open stall report: the loop beat at `end_ns`, or closed.
 * With lw_proc.mu held. */
void lw_internal_report_close(lw_loop_t *l, uint64_t end_ns);

#endif /* LOOPWATCH_INTERNAL_H_ */

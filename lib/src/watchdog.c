/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The watchdog: a thread of the app's process that never runs on a loop. It
 * looks at every open loop of the process a few times per report_after; a
 * loop silent for longer than its interval plus report_after gets a stall
 * report in its slot: the class (whether the loop thread wanted the CPU over
 * the stall: cpu or blocked; gil when the binding's hook finds it waiting for
 * the interpreter lock), the syscall and wait channel from /proc, the activity
 * label, then the text of the binding's report hook (a stack). The report is
 * measured again at every look while the stall lasts, and closed when the
 * loop beats.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loopwatch_internal.h"
#include "segment_access.h"
#include "syscall_names.h"

#define LW_MIN_TICK_NS UINT64_C(10000000)
#define LW_MAX_TICK_NS UINT64_C(100000000)
/* Hooks run per look; more loops stalled at once get their text later. */
#define LW_MAX_HOOKS_PER_LOOK 16

int64_t lw_internal_thread_cpu_ns(pid_t tid) {
  /* The kernel's per-thread CPU clock id, as pthread_getcpuclockid builds
   * it, from the tid alone (CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED). */
  clockid_t id = (clockid_t)((~(unsigned)tid) << 3) | 6;
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

/* The time the thread was runnable but waited for a CPU, from schedstat
 * ("<time on a CPU> <time runnable, waiting for one> <slices>", in ns;
 * kernels with CONFIG_SCHED_INFO, which distributions enable); -1 if
 * unreadable. Read only once a loop is silent: a /proc open costs some
 * 8 us, too much for every look at every loop. */
static int64_t thread_delay_ns(pid_t tid) {
  char path[64], buf[96];
  unsigned long long run, wait;
  snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)tid);
  if (read_small_file(path, buf, sizeof buf) > 0 &&
      sscanf(buf, "%llu %llu", &run, &wait) == 2 && wait <= INT64_MAX) {
    return (int64_t)wait;
  }
  return -1;
}

/* What /proc says the loop thread is doing. */
struct thread_probe {
  int32_t nr;  /* -1 not in a syscall or unknown */
  int running; /* /proc says "running" */
  char name[LW_SYSCALL_NAME_SIZE];
  char wchan[LW_WCHAN_SIZE];
};

static void probe_thread(pid_t tid, struct thread_probe *p) {
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

/* The loop's own activity label, read through its seqlock. */
struct activity_read {
  const lw_seg_slot_t *slot;
  char *out;
};

static void copy_activity_field(void *ctx, uint64_t seq) {
  (void)seq;
  struct activity_read *a = (struct activity_read *)ctx;
  lw_load_field(a->out, a->slot->activity, LW_ACTIVITY_SIZE);
}

static void read_activity(lw_loop_t *l, char out[LW_ACTIVITY_SIZE]) {
  const lw_seg_slot_t *s = lw_internal_target(l);
  struct activity_read a = {s, out};
  if (!lw_seqlock_read(&s->activity_seq, copy_activity_field, &a)) {
    out[0] = '\0';
  }
}

/* Writes the measured part of an open report: class, syscall, CPU. */
static void report_measure(lw_loop_t *l, uint64_t now, int opening) {
  lw_seg_slot_t *s = lw_internal_target(l);
  struct thread_probe p;
  probe_thread(l->tid, &p);
  int64_t cpu = lw_internal_thread_cpu_ns(l->tid);
  int64_t delay = thread_delay_ns(l->tid);
  if (opening) {
    l->wd_probes = 0;
    l->wd_running_probes = 0;
    l->gil_wait = 0;
  }
  l->wd_probes++;
  if (p.running) l->wd_running_probes++;
  uint64_t wall = now - l->wd_seen_wall_ns;
  uint64_t cpu_used = 0;
  uint32_t cls = LW_CLASS_UNKNOWN;
  if (cpu >= 0 && l->wd_seen_cpu_ns >= 0 && wall > 0) {
    cpu_used = cpu > l->wd_seen_cpu_ns ? (uint64_t)(cpu - l->wd_seen_cpu_ns) : 0;
    /* The class follows the CPU the loop thread wanted: the time it ran
     * plus the time it was runnable but waited for a CPU (a spinner starved
     * by a CPU limit runs less than half the time but waits the rest). One
     * sample of /proc reading "running" proves nothing: a thread that wakes
     * every 5 ms to ask for a lock reads so now and then. Only when the
     * kernel keeps no run-queue delay do the samples decide, by majority. */
    uint64_t wanted = cpu_used;
    int starved;
    if (delay >= 0 && l->wd_seen_delay_ns >= 0) {
      wanted += delay > l->wd_seen_delay_ns ? (uint64_t)(delay - l->wd_seen_delay_ns) : 0;
      starved = 0;
    } else {
      starved = l->wd_running_probes * 2 > l->wd_probes;
    }
    cls = wanted * 2 >= wall || starved ? LW_CLASS_CPU : LW_CLASS_BLOCKED;
  } else if (p.running) {
    cls = LW_CLASS_CPU;
  } else if (p.nr >= 0) {
    cls = LW_CLASS_BLOCKED;
  }
  if (cls == LW_CLASS_BLOCKED && l->gil_wait) cls = LW_CLASS_GIL;
  char activity[LW_ACTIVITY_SIZE];
  if (opening) read_activity(l, activity);

  lw_seqlock_write_begin(&s->report_seq, l->report_seq);
  if (opening) {
    l->stall_count++;
    lw_store64(&s->stall_count, l->stall_count);
    lw_store64(&s->stall_start_ns, l->stall_start_ns);
    lw_store64(&s->stall_end_ns, 0);
    lw_store32(&s->report_state, LW_REPORT_OPEN);
    lw_store32(&s->text_len, 0);
    lw_store_field(s->report_activity, activity, sizeof s->report_activity);
  }
  lw_store64(&s->report_updated_ns, now);
  lw_store64(&s->loop_cpu_ns, cpu_used);
  lw_store32(&s->stall_class, cls);
  l->wd_class = cls;
  lw_store32((uint32_t *)&s->syscall_nr, (uint32_t)p.nr);
  lw_store_field(s->syscall_name, cls == LW_CLASS_CPU && p.nr < 0 ? "" : p.name,
                 sizeof s->syscall_name);
  lw_store_field(s->wchan, p.wchan, sizeof s->wchan);
  l->report_seq = lw_seqlock_write_end(&s->report_seq, l->report_seq);
}

static void report_text(lw_loop_t *l, const char *text, size_t len) {
  lw_seg_slot_t *s = lw_internal_target(l);
  if (len > LW_REPORT_TEXT_SIZE - 1) len = LW_REPORT_TEXT_SIZE - 1;
  lw_seqlock_write_begin(&s->report_seq, l->report_seq);
  for (size_t off = 0; off < LW_REPORT_TEXT_SIZE; off += 8) {
    uint64_t word = 0;
    if (off < len) memcpy(&word, text + off, len - off < 8 ? len - off : 8);
    lw_store64((uint64_t *)(void *)(s->text + off), word);
  }
  lw_store32(&s->text_len, (uint32_t)len);
  l->report_seq = lw_seqlock_write_end(&s->report_seq, l->report_seq);
}

void lw_internal_report_close(lw_loop_t *l, uint64_t end_ns) {
  lw_seg_slot_t *s = lw_internal_target(l);
  lw_seqlock_write_begin(&s->report_seq, l->report_seq);
  lw_store64(&s->stall_end_ns, end_ns);
  lw_store32(&s->report_state, LW_REPORT_CLOSED);
  l->report_seq = lw_seqlock_write_end(&s->report_seq, l->report_seq);
  l->stall_open = 0;
  l->gil_wait = 0;
}

int lw_report_gil_wait(lw_loop_t *loop) {
  if (!loop) return 0;
  pthread_mutex_lock(&lw_proc.mu);
  int rc = -EINVAL;
  if (loop->slot && loop->stall_open) {
    loop->gil_wait = 1;
    lw_seg_slot_t *s = lw_internal_target(loop);
    if (loop->wd_class == LW_CLASS_BLOCKED) {
      loop->wd_class = LW_CLASS_GIL;
      lw_seqlock_write_begin(&s->report_seq, loop->report_seq);
      lw_store32(&s->stall_class, LW_CLASS_GIL);
      loop->report_seq = lw_seqlock_write_end(&s->report_seq, loop->report_seq);
    }
    rc = 0;
  }
  pthread_mutex_unlock(&lw_proc.mu);
  return rc;
}

struct beat_read {
  const lw_seg_slot_t *slot;
  uint64_t count, last;
};

static void copy_beat(void *ctx, uint64_t seq) {
  (void)seq;
  struct beat_read *b = (struct beat_read *)ctx;
  b->count = __atomic_load_n(&b->slot->beat_count, __ATOMIC_RELAXED);
  b->last = __atomic_load_n(&b->slot->last_beat_ns, __ATOMIC_RELAXED);
}

/* One look at one loop; returns 1 if a new report wants the hook's text.
 * With lw_proc.mu held. */
static int watch_one(lw_loop_t *l, uint64_t now) {
  const lw_seg_slot_t *s = lw_internal_target(l);
  struct beat_read b = {s, 0, 0};
  /* Never consistent: the loop is beating right now, so not stalled. */
  if (!lw_seqlock_read(&s->beat_seq, copy_beat, &b)) return 0;
  if (b.count != l->wd_seen_count) {
    if (l->stall_open) lw_internal_report_close(l, b.last);
    l->wd_seen_count = b.count;
    l->wd_seen_last_ns = b.last;
    l->wd_seen_wall_ns = now;
    l->wd_seen_cpu_ns = lw_internal_thread_cpu_ns(l->tid);
    l->wd_delay_taken = 0;
    return 0;
  }
  /* Silent since the last look: the run-queue delay's baseline, at most a
   * tick after the CPU's (the class needs it only if a stall opens). */
  if (!l->wd_delay_taken) {
    l->wd_seen_delay_ns = thread_delay_ns(l->tid);
    l->wd_delay_taken = 1;
  }
  uint64_t since = b.count ? b.last : l->opened_ns;
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
  pthread_mutex_lock(&lw_proc.mu);
  while (lw_proc.wd_running && lw_proc.wd_epoch == epoch) {
    uint64_t now = lw_now_ns();
    lw_internal_segment_check(now);
    uint64_t tick = LW_MAX_TICK_NS;
    lw_loop_t *pending[LW_MAX_HOOKS_PER_LOOK];
    int npending = 0;
    for (lw_loop_t *l = lw_proc.loops; l; l = l->next) {
      uint64_t t = l->report_after_ns / 4;
      if (t < tick) tick = t;
      watch_one(l, now);
      if (l->hook_pending && l->stall_open && npending < LW_MAX_HOOKS_PER_LOOK) {
        l->hook_pending = 0;
        l->wd_busy = 1;
        pending[npending++] = l;
      }
    }
    /* The hooks run without the lock: a binding's hook may take a while
     * (it waits for the Python reporter thread, bounded). */
    for (int i = 0; i < npending; i++) {
      lw_loop_t *l = pending[i];
      lw_report_hook_fn fn = l->hook;
      void *user = l->hook_user;
      pthread_mutex_unlock(&lw_proc.mu);
      size_t n = fn ? fn(l, user, lw_proc.hook_buf, sizeof lw_proc.hook_buf) : 0;
      pthread_mutex_lock(&lw_proc.mu);
      if (l->slot && l->stall_open && n > 0) {
        report_text(l, lw_proc.hook_buf,
                    n < sizeof lw_proc.hook_buf ? n : sizeof lw_proc.hook_buf);
      }
      l->wd_busy = 0;
      pthread_cond_broadcast(&lw_proc.cond);
    }
    if (tick < LW_MIN_TICK_NS) tick = LW_MIN_TICK_NS;
    uint64_t wake = lw_now_ns() + tick;
    struct timespec ts = {(time_t)(wake / 1000000000u), (long)(wake % 1000000000u)};
    pthread_cond_timedwait(&lw_proc.cond, &lw_proc.mu, &ts);
  }
  pthread_mutex_unlock(&lw_proc.mu);
  return NULL;
}

void lw_internal_app_signals(sigset_t *set) {
  /* Every signal but those a fault raises in the faulting thread: blocked,
   * those would kill the process whatever its handlers (the SIGBUS guard's
   * among them, for a segment cut short under the watchdog's reads). */
  static const int faults[] = {SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
  sigfillset(set);
  for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(set, faults[i]);
}

int lw_internal_watchdog_start(void) {
  if (lw_proc.wd_running) return 0;
  sigset_t all, old;
  lw_internal_app_signals(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* app signals never land here */
  lw_proc.wd_running = 1;
  lw_proc.wd_epoch++;
  int rc = pthread_create(&lw_proc.wd_thread, NULL, watchdog_main,
                          (void *)(uintptr_t)lw_proc.wd_epoch);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) {
    lw_proc.wd_running = 0;
    lw_internal_set_error("cannot start the watchdog thread: %s", strerror(rc));
    return -rc;
  }
  pthread_setname_np(lw_proc.wd_thread, "loopwatch-wd");
  return 0;
}

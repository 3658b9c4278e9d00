/* SPDX-License-Identifier: Apache-2.0
 *
 * gil.c: who holds the GIL (see gil.h). Runs on the core's watchdog
 * thread, without the GIL.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "gil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loopwatch/loopwatch.h"
#include "pyruntime.h"

/* The window over which it measures who runs, when it could not measure
 * while it waited (the reporter was still waiting for an earlier request). */
static const uint64_t kHolderWindowNs = 100u * 1000u * 1000u;

/* CPU time of a thread of this process by tid, or -1 (it has ended). */
static int64_t tid_cpu_ns(pid_t tid) {
  if (tid <= 0) return -1;
  clockid_t id = (clockid_t)((~(unsigned)tid) << 3) | 6; /* CPUCLOCK_PERTHREAD | SCHED */
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0) return -1;
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads /proc/self/task/TID/NAME into buf, NUL-terminated; the byte
 * count, or <= 0 if it cannot. */
static ssize_t read_task_file(pid_t tid, const char *name, char *buf, size_t size) {
  if (tid <= 0) return -1;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/%s", (int)tid, name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n > 0) buf[n] = '\0';
  return n;
}

/* How long the thread ran or waited to run (CPU time plus time on a run
 * queue, from schedstat), or -1 where the kernel does not say. A thread
 * that computes holding the GIL wants the CPU the whole window, however
 * many other processes share the machine; its CPU time alone shrinks with
 * every one of them. */
static int64_t tid_busy_ns(pid_t tid) {
  char buf[96];
  unsigned long long run = 0, wait = 0;
  if (read_task_file(tid, "schedstat", buf, sizeof buf) <= 0 ||
      sscanf(buf, "%llu %llu", &run, &wait) != 2) {
    return -1;
  }
  return (int64_t)(run + wait);
}

/* Whether the thread sleeps in futex(), as a thread waiting for the GIL
 * does (woken every switch interval to ask for it, so look a few times). */
static int in_futex(pid_t tid) {
  char buf[64];
  for (int i = 0; i < 5; i++) {
    if (read_task_file(tid, "syscall", buf, sizeof buf) <= 0) return 0;
    if (strncmp(buf, "running", 7) != 0) return strtol(buf, NULL, 10) == SYS_futex;
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  return 0;
}

void take_snapshot(PyThreadState *loop, PyInterpreterState *interp, cpu_snapshot *s) {
  s->n = 0;
  s->loop_tid = tid_of(loop);
  s->loop_cpu = tid_cpu_ns(s->loop_tid);
  for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t && s->n < kMaxThreads;
       t = PyThreadState_Next(t)) {
    if (t == loop) continue;
    s->th[s->n].t = t;
    s->th[s->n].tid = tid_of(t);
    s->th[s->n].cpu = tid_cpu_ns(s->th[s->n].tid);
    s->th[s->n].busy = tid_busy_ns(s->th[s->n].tid);
    if (s->th[s->n].cpu >= 0) s->n++;
  }
  s->at_ns = lw_now_ns();
  s->taken = 1;
}

void find_gil_holder(PyThreadState *loop, PyInterpreterState *interp, cpu_snapshot *s,
                     gil_holder *h) {
  memset(h, 0, sizeof *h);
  if (!s->taken) {
    take_snapshot(loop, interp, s);
    struct timespec w = {0, (long)kHolderWindowNs};
    while (nanosleep(&w, &w) != 0 && errno == EINTR) {
    }
  }
  h->window_ns = lw_now_ns() - s->at_ns;
  int best = -1;
  uint64_t best_cpu = 0;
  for (int i = 0; i < s->n; i++) {
    int64_t c = tid_cpu_ns(s->th[i].tid);
    if (c >= s->th[i].cpu && (uint64_t)(c - s->th[i].cpu) > best_cpu) {
      best_cpu = (uint64_t)(c - s->th[i].cpu);
      best = i;
    }
  }
  int64_t loop_cpu = tid_cpu_ns(s->loop_tid);
  if (s->loop_cpu >= 0 && loop_cpu >= s->loop_cpu) {
    h->loop_cpu_ns = (uint64_t)(loop_cpu - s->loop_cpu);
    h->loop_waits = h->loop_cpu_ns * 4 < h->window_ns && in_futex(s->loop_tid);
  }
  /* The most CPU, and a quarter of the window on the CPU or waiting for it:
   * on a crowded machine a holder that computes gets less than a quarter. */
  uint64_t wait = 0;
  if (best >= 0 && s->th[best].busy >= 0) {
    int64_t busy = tid_busy_ns(s->th[best].tid);
    if (busy >= s->th[best].busy && (uint64_t)(busy - s->th[best].busy) > best_cpu) {
      wait = (uint64_t)(busy - s->th[best].busy) - best_cpu;
    }
    /* The kernel adds a wait when it ends: one begun before the window
     * counts whole. */
    if (best_cpu + wait > h->window_ns) wait = h->window_ns > best_cpu ? h->window_ns - best_cpu : 0;
  }
  if (h->loop_waits && best >= 0 && (best_cpu + wait) * 4 >= h->window_ns) {
    h->tstate = s->th[best].t;
    h->tid = s->th[best].tid;
    h->cpu_ns = best_cpu;
    h->wait_ns = wait;
  }
}

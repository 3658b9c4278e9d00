/* SPDX-License-Identifier: Apache-2.0
 *
 * gil.h: which thread holds the GIL while the loop thread waits for it,
 * measured by the core's watchdog thread without the GIL: by the CPU each
 * thread of the loop's interpreter uses over a window.
 */
#ifndef LOOPWATCH_PYTHON_GIL_H_
#define LOOPWATCH_PYTHON_GIL_H_

#include <Python.h>
#include <stdint.h>
#include <sys/types.h>

/* Threads of the interpreter measured; more are not considered. */
enum { kMaxThreads = 256 };

/* CPU times of the threads of the loop's interpreter at one instant. */
typedef struct {
  int taken;
  uint64_t at_ns;
  pid_t loop_tid;
  int64_t loop_cpu;
  int n;
  struct {
    PyThreadState *t;
    pid_t tid;
    int64_t cpu;
    int64_t busy; /* CPU plus run-queue wait, -1 unknown */
  } th[kMaxThreads];
} cpu_snapshot;

/* Takes s now: the CPU times of the loop thread and of the others of interp. */
void take_snapshot(PyThreadState *loop, PyInterpreterState *interp, cpu_snapshot *s);

typedef struct {
  PyThreadState *tstate; /* NULL: none found */
  pid_t tid;
  uint64_t cpu_ns;      /* its CPU over the window */
  uint64_t wait_ns;     /* its time waiting on a run queue (0 unknown) */
  uint64_t loop_cpu_ns; /* the loop thread's */
  uint64_t window_ns;
  int loop_waits;       /* the loop thread hardly ran, and sleeps in futex() */
} gil_holder;

/* After the reporter could not get the GIL: which other thread of the
 * loop's interpreter holds it, from the CPU each used since `s` was taken
 * (taken now, and kHolderWindowNs waited, if it was not). The holder used
 * the most CPU of all, and ran or waited on a run queue for at least a
 * quarter of the window, while the loop thread used less than a quarter
 * of it and sleeps in futex(). Not found: a holder that waits
 * in C code without using the CPU, and a thread that computes with the GIL
 * released while the loop thread waits for a lock of its own. */
void find_gil_holder(PyThreadState *loop, PyInterpreterState *interp, cpu_snapshot *s,
                     gil_holder *h);

#endif  // LOOPWATCH_PYTHON_GIL_H_

/* SPDX-License-Identifier: Apache-2.0
 *
 * pyruntime.h: what differs between the CPython versions that _native.so
 * serves (3.8 to 3.13), found at run time, and what is read through it: a
 * thread's Python stack and its kernel thread id.
 */
#ifndef LOOPWATCH_PYTHON_PYRUNTIME_H_
#define LOOPWATCH_PYTHON_PYRUNTIME_H_

#include <Python.h>
#include <sys/types.h>

typedef void (*dump_traceback_fn)(int fd, PyThreadState *tstate);
typedef PyInterpreterState *(*interp_get_fn)(void);
typedef PyObject *(*frame_fn)(void *); /* returns a new reference or NULL */

typedef struct {
  int minor; /* of the CPython 3 that runs */
  dump_traceback_fn dump_traceback; /* NULL: not found */
  const char *dump_traceback_from;  /* "exported symbol", "ELF symbol table" */
  interp_get_fn interp_get;
  /* 3.9+: the frame getters, for the stack with the GIL held when there is
   * no _Py_DumpTraceback. */
  frame_fn get_frame, frame_back, frame_code;
  int off_thread_id, off_native_thread_id; /* -1: unknown */
} py_runtime;

/* Filled once, at import, by py_runtime_init(). */
extern py_runtime g_py;

/* Once, at import, with the GIL. */
void py_runtime_init(void);

/* What py_runtime_init found, as a dict: {"minor", "dump_traceback", "thread_ids"}. */
PyObject *py_runtime_describe(void);

/* The frames of tstate as faulthandler prints them ("Stack (most recent
 * call first):" then '  File "f.py", line 3 in g'), into buf; its length.
 * Without the GIL (have_gil 0) only _Py_DumpTraceback can read them. */
size_t dump_stack(PyThreadState *tstate, char *buf, size_t size, int have_gil);

/* Whether tstate is still one of interp's threads (the loop thread may have
 * ended without closing its loop). Without the GIL this walk is the same
 * risk faulthandler takes; with it, exact. */
int thread_alive(PyInterpreterState *interp, PyThreadState *tstate);

/* The kernel's thread id of a Python thread, or 0 when unknown. */
pid_t tid_of(PyThreadState *t);

#endif  // LOOPWATCH_PYTHON_PYRUNTIME_H_

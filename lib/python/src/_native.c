/* SPDX-License-Identifier: Apache-2.0
 *
 * loopwatch._native: the C core of libloopwatch (compiled into this module,
 * see setup.py) and what Python needs on top of it:
 *
 *  - Loop: one slot, beaten by a timer on the asyncio loop (loopwatch/_heartbeat.py);
 *  - the report hook: when the core's watchdog opens a stall report, it asks
 *    the "reporter" thread for the loop thread's Python stack and running task;
 *  - the requests in flight, written by the ASGI middleware on the loop thread
 *    into a table that the hook reads without the GIL.
 *
 * One build serves CPython 3.8 to 3.13: what differs between them is found
 * at import (pyruntime.c).
 *
 * The watchdog must never wait for the stalled loop. So the hook never takes
 * the GIL itself: it hands the work to the reporter thread and waits at most
 * kGilWaitNs. A loop stuck in Python code or in a system call lets the GIL go
 * within a switch interval (5 ms), and the reporter reads the stack with the
 * GIL held. A loop stuck inside a C extension that keeps the GIL (a
 * catastrophic regular expression) never lets it go: the hook then reads the
 * loop thread's frames without the GIL, as faulthandler's watchdog does
 * (_Py_DumpTraceback), and says so in the report; the task is then unknown.
 *
 * The GIL may also be held by another thread: a sync endpoint run in a
 * thread pool that sits in such C code starves the loop thread, which then
 * only waits for the GIL. The hook tells the two apart by CPU: while it
 * waits for the reporter it measures every thread of the interpreter; the
 * thread that ran while the loop thread slept in futex() holds the GIL, and
 * the report carries its stack first and gets the class "gil"
 * (lw_report_gil_wait).
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loopwatch/loopwatch.h"
#include "gil.h"
#include "loopwatch_internal.h"
#include "parse_duration.h"
#include "pyruntime.h"
#include "redact_query.h"
#include "requests.h"

/* How long the watchdog waits for the reporter to get the GIL. */
static const uint64_t kGilWaitNs = 250u * 1000u * 1000u;
/* Text of one report, the stack included: the slot holds less (~7 KiB). */
enum { kStackSize = 8192, kTaskSize = 512 };

/* ---- the Loop object -------------------------------------------------- */

typedef struct {
  PyObject_HEAD
  lw_loop_t *loop;
  /* The thread that opened the loop (the loop thread) and its interpreter:
   * whose frames a report shows. */
  PyThreadState *tstate;
  PyInterpreterState *interp;
  /* Called by the reporter thread, with the GIL, for the "task:" line. */
  PyObject *task_fn;
  int closing; /* under g_rep.mu: no new report requests */
  request_table requests;
  int requests_seen; /* request_begin was called for this loop */
} LoopObject;

static PyTypeObject *LoopType; /* a heap type, made at import */

/* Something records this process's requests (a middleware was installed):
 * a report with none says 0, not unknown. Set once, read by the hook. */
static int g_requests_recorded;

/* ---- the reporter thread ---------------------------------------------- */

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC */
  pthread_t thread;
  int started;
  int shutdown;
  /* The one request: posted by the hook, answered by the reporter. */
  LoopObject *req; /* NULL: none, or cancelled */
  uint64_t req_gen;
  int req_pending; /* posted, not yet answered */
  int req_done;
  char stack[kStackSize];
  size_t stack_len;
  char task[kTaskSize];
} g_rep = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void *reporter_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_rep.mu);
  for (;;) {
    while (!g_rep.shutdown && !(g_rep.req_pending && !g_rep.req_done))
      pthread_cond_wait(&g_rep.cv, &g_rep.mu);
    if (g_rep.shutdown) break;
    uint64_t gen = g_rep.req_gen;
    pthread_mutex_unlock(&g_rep.mu);

    /* No lock of ours is held here: a thread taking the GIL while the
     * interpreter finalises is ended inside PyGILState_Ensure. */
    PyGILState_STATE gil = PyGILState_Ensure();
    pthread_mutex_lock(&g_rep.mu);
    LoopObject *self = g_rep.req_gen == gen && g_rep.req_pending ? g_rep.req : NULL;
    if (self) Py_INCREF(self); /* safe: the GIL is held */
    pthread_mutex_unlock(&g_rep.mu);

    char task[kTaskSize] = "";
    char *stack = NULL;
    size_t stack_len = 0;
    if (self) {
      /* First the stack, before any Python code runs (and lets the GIL go):
       * this is the exact place the loop thread is stuck. */
      stack = PyMem_RawMalloc(kStackSize);
      if (stack) {
        stack_len = thread_alive(self->interp, self->tstate)
                        ? dump_stack(self->tstate, stack, kStackSize, 1)
                        : (size_t)snprintf(stack, kStackSize, "Stack: the loop thread has ended\n");
      }
      if (self->task_fn) {
        PyObject *r = PyObject_CallObject(self->task_fn, NULL);
        const char *s = r && PyUnicode_Check(r) ? PyUnicode_AsUTF8(r) : NULL;
        if (s) copy_utf8_cut(task, sizeof task, s, strlen(s));
        else snprintf(task, sizeof task, "unknown (reading it failed)");
        Py_XDECREF(r);
        PyErr_Clear();
      }
      Py_DECREF(self);
    }

    pthread_mutex_lock(&g_rep.mu);
    if (self && g_rep.req_gen == gen && g_rep.req_pending && g_rep.req) {
      if (stack) memcpy(g_rep.stack, stack, stack_len + 1);
      else g_rep.stack[0] = '\0';
      g_rep.stack_len = stack ? stack_len : 0;
      memcpy(g_rep.task, task, sizeof task);
    }
    if (g_rep.req_gen == gen) g_rep.req_done = 1;
    pthread_cond_broadcast(&g_rep.cv);
    pthread_mutex_unlock(&g_rep.mu);
    PyMem_RawFree(stack);
    PyGILState_Release(gil);
    pthread_mutex_lock(&g_rep.mu);
  }
  pthread_mutex_unlock(&g_rep.mu);
  return NULL;
}

/* Called with g_rep.mu held. */
static int reporter_start(void) {
  if (g_rep.started) return 0;
  sigset_t all, old;
  lw_internal_app_signals(&all); /* all but the signals of faults */
  pthread_sigmask(SIG_SETMASK, &all, &old); /* app signals never land here */
  int rc = pthread_create(&g_rep.thread, NULL, reporter_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) return -rc;
  pthread_setname_np(g_rep.thread, "loopwatch-rep");
  pthread_detach(g_rep.thread);
  g_rep.started = 1;
  return 0;
}

static void rep_atfork_prepare(void) { pthread_mutex_lock(&g_rep.mu); }
static void rep_atfork_parent(void) { pthread_mutex_unlock(&g_rep.mu); }
/* The reporter thread does not exist in the child; a request in flight
 * there belongs to the parent. */
static void rep_atfork_child(void) {
  g_rep.started = 0;
  g_rep.req = NULL;
  g_rep.req_pending = 0;
  g_rep.req_done = 0;
  g_rep.req_gen++;
  pthread_mutex_unlock(&g_rep.mu);
}

/* ---- the report hook (the core's watchdog thread, no GIL) ------------- */

static size_t report_hook(lw_loop_t *loop, void *user, char *buf, size_t size) {
  LoopObject *self = user;
  char task[kTaskSize];
  int with_gil = 0;
  /* The watchdog's thread: may allocate. */
  char *stack = malloc(kStackSize);
  cpu_snapshot *snap = calloc(1, sizeof *snap);
  if (!stack || !snap) {
    free(stack);
    free(snap);
    return 0;
  }

  pthread_mutex_lock(&g_rep.mu);
  if (self->closing || g_rep.shutdown) {
    pthread_mutex_unlock(&g_rep.mu);
    free(stack);
    free(snap);
    return 0;
  }
  int busy = g_rep.req_pending && !g_rep.req_done; /* stuck on the GIL still */
  if (!busy && reporter_start() == 0) {
    g_rep.req = self;
    g_rep.req_gen++;
    g_rep.req_pending = 1;
    g_rep.req_done = 0;
    uint64_t gen = g_rep.req_gen;
    pthread_cond_broadcast(&g_rep.cv);
    const uint64_t start = lw_now_ns();
    const uint64_t deadline = start + kGilWaitNs;
    for (;;) {
      if (g_rep.req_done || g_rep.req_gen != gen || g_rep.req != self) break;
      /* A fifth of the wait without the GIL: someone keeps it. From then
       * on, measure who runs, so that the rest of the wait is the window. */
      const uint64_t until = snap->taken ? deadline : start + kGilWaitNs / 5;
      struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
      if (pthread_cond_timedwait(&g_rep.cv, &g_rep.mu, &ts) != ETIMEDOUT) continue;
      if (snap->taken) break;
      pthread_mutex_unlock(&g_rep.mu);
      take_snapshot(self->tstate, self->interp, snap);
      pthread_mutex_lock(&g_rep.mu);
    }
    if (g_rep.req_done && g_rep.req_gen == gen && g_rep.req == self) {
      with_gil = 1;
      memcpy(stack, g_rep.stack, g_rep.stack_len + 1);
      memcpy(task, g_rep.task, sizeof task);
      g_rep.req_pending = 0;
      g_rep.req = NULL;
    } else {
      /* Left pending: the reporter still waits for the GIL, and answers
       * into nothing once it gets it (the request is withdrawn). */
      g_rep.req = NULL;
    }
  }
  pthread_mutex_unlock(&g_rep.mu);

  if (!with_gil) {
    if (self->closing || g_rep.shutdown) {
      free(stack);
      free(snap);
      return 0;
    }
    gil_holder h = {0};
    int alive = thread_alive(self->interp, self->tstate);
    if (alive) find_gil_holder(self->tstate, self->interp, snap, &h);
    size_t n = 0;
    if (h.tstate && thread_alive(self->interp, h.tstate)) {
      lw_report_gil_wait(loop);
      char waited[64] = "";
      if (h.wait_ns >= 1000000u) {
        snprintf(waited, sizeof waited, " (and waited %llu ms for a CPU)",
                 (unsigned long long)(h.wait_ns / 1000000u));
      }
      snprintf(task, sizeof task,
               "unknown (the loop thread waits for the GIL, which thread %d holds: "
               "it used %llu ms of CPU in %llu ms%s, the loop thread %llu ms)",
               (int)h.tid, (unsigned long long)(h.cpu_ns / 1000000u),
               (unsigned long long)(h.window_ns / 1000000u), waited,
               (unsigned long long)(h.loop_cpu_ns / 1000000u));
      /* The holder's stack first: it is what to fix. At most half the
       * space, so that the loop thread's shows where it was. */
      n = (size_t)snprintf(stack, kStackSize,
                           "Thread %d holds the GIL (stack read without the GIL, as "
                           "faulthandler does):\n",
                           (int)h.tid);
      n += dump_stack(h.tstate, stack + n, kStackSize / 2 - n, 0);
      n += (size_t)snprintf(stack + n, kStackSize - n,
                            "The loop thread, waiting for the GIL:\n");
      dump_stack(self->tstate, stack + n, kStackSize - n, 0);
    } else if (alive) {
      const char *why =
          h.loop_waits ? "; the loop thread sleeps in futex(), waiting for it or for a lock, "
                         "and no other thread used the CPU: whatever holds it waits in C code"
                       : ": the loop thread holds it in C code, e.g. a C extension or a "
                         "regular expression";
      snprintf(task, sizeof task, "unknown (the GIL was not released within %llu ms%s)",
               (unsigned long long)(kGilWaitNs / 1000000u), why);
      n = (size_t)snprintf(stack, kStackSize,
                           "(stack read without the GIL, as faulthandler does)\n");
      dump_stack(self->tstate, stack + n, kStackSize - n, 0);
    } else {
      snprintf(task, sizeof task, "unknown (the GIL was not released within %llu ms)",
               (unsigned long long)(kGilWaitNs / 1000000u));
      snprintf(stack, kStackSize, "Stack: the loop thread has ended\n");
    }
  }

  size_t n = 0;
  n = text_append(buf, size, n, "task: %s\n", task[0] ? task : "none running");
  int recorded = __atomic_load_n(&g_requests_recorded, __ATOMIC_RELAXED) ||
                 __atomic_load_n(&self->requests_seen, __ATOMIC_RELAXED);
  n = requests_format(&self->requests, recorded, lw_now_ns(), buf, size, n);
  n = text_append(buf, size, n, "%s", stack);
  free(stack);
  free(snap);
  return n;
}

/* ---- Loop methods ----------------------------------------------------- */

static int Loop_init(LoopObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"name", "interval_ns", "kind", "task_fn", "report_after_ns", NULL};
  const char *name, *kind = "asyncio";
  unsigned long long interval_ns, report_after_ns = 0;
  PyObject *task_fn = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "sK|sOK", kwlist, &name, &interval_ns, &kind,
                                   &task_fn, &report_after_ns))
    return -1;
  if (self->loop) {
    PyErr_SetString(PyExc_RuntimeError, "Loop already open");
    return -1;
  }
  if (task_fn != Py_None && !PyCallable_Check(task_fn)) {
    PyErr_SetString(PyExc_TypeError, "task_fn must be callable or None");
    return -1;
  }
  lw_loop_options_t opt;
  memset(&opt, 0, sizeof opt);
  opt.struct_size = sizeof opt;
  opt.name = name;
  opt.kind = kind;
  opt.interval_ns = interval_ns;
  opt.report_after_ns = report_after_ns;
  lw_loop_t *loop = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = lw_loop_open_ex(&opt, &loop);
  Py_END_ALLOW_THREADS
  if (rc != 0) {
    const char *detail = lw_last_error();
    PyObject *e = Py_BuildValue("(is)", -rc, detail && *detail ? detail : lw_strerror(rc));
    if (e) {
      PyErr_SetObject(PyExc_OSError, e);
      Py_DECREF(e);
    }
    return -1;
  }
  self->loop = loop;
  self->tstate = PyThreadState_Get();
  self->interp = g_py.interp_get ? g_py.interp_get() : NULL;
  Py_XSETREF(self->task_fn, task_fn == Py_None ? NULL : Py_NewRef(task_fn));
  if (loop) lw_set_report_hook(loop, report_hook, self);
  return 0;
}

static void Loop_do_close(LoopObject *self) {
  lw_loop_t *loop = self->loop;
  if (!loop) return;
  /* With the GIL held, so the reporter (which checks the request with the
   * GIL, under g_rep.mu) never takes a reference to a Loop being freed. */
  pthread_mutex_lock(&g_rep.mu);
  self->closing = 1;
  if (g_rep.req == self) g_rep.req = NULL;
  pthread_mutex_unlock(&g_rep.mu);
  /* lw_loop_close waits for a hook running on this loop, which may wait
   * (bounded) for the reporter, which needs the GIL: let it go. */
  Py_BEGIN_ALLOW_THREADS
  lw_loop_close(loop);
  Py_END_ALLOW_THREADS
  self->loop = NULL;
}

static PyObject *Loop_close(LoopObject *self, PyObject *unused) {
  (void)unused;
  Loop_do_close(self);
  Py_RETURN_NONE;
}

static PyObject *Loop_beat(LoopObject *self, PyObject *unused) {
  (void)unused;
  lw_beat(self->loop);
  Py_RETURN_NONE;
}

static PyObject *Loop_set_ready(LoopObject *self, PyObject *arg) {
  int ready = PyObject_IsTrue(arg);
  if (ready < 0) return NULL;
  lw_set_ready(self->loop, ready);
  Py_RETURN_NONE;
}

static PyObject *Loop_set_activity(LoopObject *self, PyObject *arg) {
  const char *label = NULL;
  if (arg != Py_None) {
    if (!PyUnicode_Check(arg)) {
      PyErr_SetString(PyExc_TypeError, "activity label must be str or None");
      return NULL;
    }
    label = PyUnicode_AsUTF8(arg);
    if (!label) return NULL;
  }
  lw_set_activity(self->loop, label);
  Py_RETURN_NONE;
}

/* request_begin(method: str, path: str) -> token (0: not recorded). */
static PyObject *Loop_request_begin(LoopObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "request_begin(method: str, path: str)");
    return NULL;
  }
  Py_ssize_t mlen, plen;
  const char *method = PyUnicode_AsUTF8AndSize(args[0], &mlen);
  const char *path = method ? PyUnicode_AsUTF8AndSize(args[1], &plen) : NULL;
  if (!path) return NULL;
  __atomic_store_n(&self->requests_seen, 1, __ATOMIC_RELAXED);
  return PyLong_FromUnsignedLongLong(
      requests_begin(&self->requests, method, (size_t)mlen, path, (size_t)plen, lw_now_ns()));
}

static PyObject *Loop_request_end(LoopObject *self, PyObject *arg) {
  unsigned long long token = PyLong_AsUnsignedLongLong(arg);
  if (token == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  requests_end(&self->requests, token);
  Py_RETURN_NONE;
}

/* The report text the hook would write now (tests; no watchdog involved). */
static PyObject *Loop_requests(LoopObject *self, PyObject *unused) {
  (void)unused;
  request_copy reqs[kRequestSlots];
  uint64_t more = 0;
  int n = requests_read(&self->requests, reqs, kRequestSlots, &more);
  PyObject *list = PyList_New(0);
  if (!list) return NULL;
  uint64_t now = lw_now_ns();
  for (int i = 0; i < n; i++) {
    double age = (double)(now - reqs[i].start_ns) / 1e9;
    PyObject *item = Py_BuildValue("(ssd)", reqs[i].method, reqs[i].path, age);
    if (!item || PyList_Append(list, item) < 0) {
      Py_XDECREF(item);
      Py_DECREF(list);
      return NULL;
    }
    Py_DECREF(item);
  }
  return list;
}

static PyObject *Loop_get_slot(LoopObject *self, void *closure) {
  (void)closure;
  return PyLong_FromLong(lw_loop_slot(self->loop));
}

static PyObject *Loop_get_closed(LoopObject *self, void *closure) {
  (void)closure;
  return PyBool_FromLong(self->loop == NULL);
}

static int Loop_traverse(LoopObject *self, visitproc visit, void *arg) {
  /* Instances hold their heap type (3.8+); traverse visits it from 3.9 on
   * (3.8's GC does not expect it). */
  if (g_py.minor >= 9) Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->task_fn);
  return 0;
}

static int Loop_clear(LoopObject *self) {
  Py_CLEAR(self->task_fn);
  return 0;
}

static void Loop_dealloc(LoopObject *self) {
  PyTypeObject *type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  Loop_do_close(self);
  Loop_clear(self);
  freefunc free_fn = (freefunc)PyType_GetSlot(type, Py_tp_free);
  free_fn(self);
  Py_DECREF(type); /* instances of heap types hold their type */
}

static PyMethodDef Loop_methods[] = {
    {"beat", (PyCFunction)Loop_beat, METH_NOARGS,
     "Publish a heartbeat and record the lag since the expected one."},
    {"set_ready", (PyCFunction)Loop_set_ready, METH_O, "Set the slot's ready flag."},
    {"set_activity", (PyCFunction)Loop_set_activity, METH_O,
     "Set the slot's activity label (None clears it)."},
    {"request_begin", (PyCFunction)(void (*)(void))Loop_request_begin, METH_FASTCALL,
     "Record a request in flight (method, path); returns a token for request_end()."},
    {"request_end", (PyCFunction)Loop_request_end, METH_O,
     "Forget the request of a token from request_begin()."},
    {"requests", (PyCFunction)Loop_requests, METH_NOARGS,
     "The requests in flight as (method, path, age in seconds), oldest first."},
    {"close", (PyCFunction)Loop_close, METH_NOARGS,
     "Release the slot (the sidecar sees the loop leave cleanly)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Loop_getset[] = {
    {"slot", (getter)Loop_get_slot, NULL, "Slot index in the segment (-1: closed or inert).", NULL},
    {"closed", (getter)Loop_get_closed, NULL, "Whether close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Loop_slots[] = {
    {Py_tp_doc, (void *)"Loop(name, interval_ns, kind='asyncio', task_fn=None, report_after_ns=0)\n\n"
                        "One slot of the segment. Raises OSError(errno, detail) when it cannot "
                        "be opened."},
    {Py_tp_new, (void *)PyType_GenericNew},
    {Py_tp_init, (void *)Loop_init},
    {Py_tp_dealloc, (void *)Loop_dealloc},
    {Py_tp_traverse, (void *)Loop_traverse},
    {Py_tp_clear, (void *)Loop_clear},
    {Py_tp_methods, Loop_methods},
    {Py_tp_getset, Loop_getset},
    {0, NULL},
};

/* A heap type: a static PyTypeObject has a different size in 3.8, 3.9-3.11
 * and 3.12+, so one build cannot declare it. */
static PyType_Spec Loop_spec = {
    "loopwatch._native.Loop", sizeof(LoopObject), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    Loop_slots,
};

/* ---- module functions ------------------------------------------------- */

static PyObject *mod_enabled(PyObject *m, PyObject *unused) {
  (void)m, (void)unused;
  return PyBool_FromLong(lw_enabled());
}

static PyObject *mod_set_requests_recorded(PyObject *m, PyObject *unused) {
  (void)m, (void)unused;
  __atomic_store_n(&g_requests_recorded, 1, __ATOMIC_RELAXED);
  Py_RETURN_NONE;
}

static PyObject *mod_version(PyObject *m, PyObject *unused) {
  (void)m, (void)unused;
  return PyUnicode_FromString(lw_version());
}

static PyObject *mod_now_ns(PyObject *m, PyObject *unused) {
  (void)m, (void)unused;
  return PyLong_FromUnsignedLongLong(lw_now_ns());
}

/* Stops the reporter before the interpreter finalises (atexit). */
static PyObject *mod_shutdown(PyObject *m, PyObject *unused) {
  (void)m, (void)unused;
  pthread_mutex_lock(&g_rep.mu);
  g_rep.shutdown = 1;
  g_rep.req = NULL;
  pthread_cond_broadcast(&g_rep.cv);
  pthread_mutex_unlock(&g_rep.mu);
  Py_RETURN_NONE;
}

/* The report text for `loop` as the hook would build it now, on this thread
 * (tests of the formatting; the GIL is released while it waits). */
static PyObject *mod_report_now(PyObject *m, PyObject *arg) {
  (void)m;
  if (!PyObject_TypeCheck(arg, LoopType)) {
    PyErr_SetString(PyExc_TypeError, "report_now(loop: Loop)");
    return NULL;
  }
  LoopObject *self = (LoopObject *)arg;
  char *buf = PyMem_RawMalloc(kStackSize * 2);
  if (!buf) return PyErr_NoMemory();
  size_t n;
  Py_BEGIN_ALLOW_THREADS
  n = report_hook(self->loop, self, buf, kStackSize * 2);
  Py_END_ALLOW_THREADS
  PyObject *r = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)n, "replace");
  PyMem_RawFree(buf);
  return r;
}

/* The UTF-8 of a str argument, or NULL with TypeError naming `usage`. */
static const char *str_arg(PyObject *arg, Py_ssize_t *len, const char *usage) {
  const char *text = PyUnicode_Check(arg) ? PyUnicode_AsUTF8AndSize(arg, len) : NULL;
  if (!text && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, usage);
  return text;
}

/* parse_duration(text: str) -> int: nanoseconds, by the project's one
 * duration grammar (lib/src/parse_duration.h); ValueError if not one. */
static PyObject *mod_parse_duration(PyObject *m, PyObject *arg) {
  (void)m;
  Py_ssize_t len;
  const char *text = str_arg(arg, &len, "parse_duration(text: str)");
  if (!text) return NULL;
  int64_t ns;
  if (lw_parse_duration(text, (size_t)len, &ns) != 0) {
    return PyErr_Format(PyExc_ValueError,
                        "%R: expected a duration with a unit, like 100ms, 1.5s or 1m30s", arg);
  }
  return PyLong_FromLongLong(ns);
}

/* redact_query(text: str) -> str: query string values become REDACTED
 * (lib/src/redact_query.h), as the sidecar does. */
static PyObject *mod_redact_query(PyObject *m, PyObject *arg) {
  (void)m;
  Py_ssize_t len;
  const char *text = str_arg(arg, &len, "redact_query(text: str)");
  if (!text) return NULL;
  char stack_buf[512];
  size_t cap = sizeof stack_buf;
  char *out = stack_buf;
  size_t n = lw_redact_query(text, (size_t)len, out, cap);
  if (n > cap) {
    out = PyMem_Malloc(n);
    if (!out) return PyErr_NoMemory();
    lw_redact_query(text, (size_t)len, out, n);
  }
  PyObject *r = PyUnicode_DecodeUTF8(out, (Py_ssize_t)n, "surrogateescape");
  if (out != stack_buf) PyMem_Free(out);
  return r;
}

/* What this build found in the running Python (tests, `loopwatch doctor`-like
 * diagnostics): {"minor", "dump_traceback", "thread_ids"}. */
static PyObject *mod_runtime(PyObject *m, PyObject *unused) {
  (void)m, (void)unused;
  return py_runtime_describe();
}

static PyMethodDef module_methods[] = {
    {"redact_query", mod_redact_query, METH_O,
     "The text with every query string value replaced by REDACTED."},
    {"parse_duration", mod_parse_duration, METH_O,
     "Nanoseconds of a duration such as 100ms or 1m30s; ValueError if not one."},
    {"enabled", mod_enabled, METH_NOARGS, "Whether LOOPWATCH_SEGMENT is set."},
    {"set_requests_recorded", mod_set_requests_recorded, METH_NOARGS,
     "A middleware records this process's requests: reports with none say 0."},
    {"version", mod_version, METH_NOARGS, "Version of the C core."},
    {"now_ns", mod_now_ns, METH_NOARGS, "CLOCK_MONOTONIC now, in nanoseconds."},
    {"shutdown", mod_shutdown, METH_NOARGS, "Stop the reporter thread (at exit)."},
    {"report_now", mod_report_now, METH_O,
     "The text a stall report would carry for this loop, built now."},
    {"runtime", mod_runtime, METH_NOARGS,
     "What this build found in the running Python: minor, stack reader, thread ids."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "loopwatch._native",
    "The C core of loopwatch (libloopwatch) for the Python binding.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
  py_runtime_init();
  if (!LoopType) {
    LoopType = (PyTypeObject *)PyType_FromSpec(&Loop_spec);
    if (!LoopType) return NULL;
  }
  PyObject *m = PyModule_Create(&module_def);
  if (!m) return NULL;
  Py_INCREF(LoopType);
  if (PyModule_AddObject(m, "Loop", (PyObject *)LoopType) < 0) {
    Py_DECREF(LoopType);
    Py_DECREF(m);
    return NULL;
  }
  static int atfork_done;
  if (!atfork_done) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_destroy(&g_rep.cv);
    pthread_cond_init(&g_rep.cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_atfork(rep_atfork_prepare, rep_atfork_parent, rep_atfork_child);
    atfork_done = 1;
  }
  return m;
}

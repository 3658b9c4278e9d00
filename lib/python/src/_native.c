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
 * One build serves CPython 3.8 to 3.13 (glibc, x86-64, the default GIL
 * build). It is compiled against one version's headers but uses only what
 * those six share: object headers, reference counts, functions whose
 * signatures never changed, and a heap type made by PyType_FromSpec. What
 * differs by version is found at run time (py_runtime_init): the running
 * minor from Py_GetVersion(), functions that only some versions export by
 * dlsym(), the faulthandler's _Py_DumpTraceback (exported by 3.8, 3.11 and
 * 3.12, a local symbol of 3.9, 3.10 and 3.13) from the ELF symbol table of
 * libpython, and the one struct field read (the thread id in PyThreadState)
 * from a table of its offset per minor. loopwatch/_compat.py refuses any
 * other Python before this module is loaded.
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

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loopwatch/loopwatch.h"
#include "loopwatch_internal.h"
#include "parse_duration.h"
#include "redact_query.h"
#include "requests.h"

/* How long the watchdog waits for the reporter to get the GIL. */
static const uint64_t kGilWaitNs = 250u * 1000u * 1000u;
/* The window over which it measures who runs, when it could not measure
 * while it waited (the reporter was still waiting for an earlier request). */
static const uint64_t kHolderWindowNs = 100u * 1000u * 1000u;
/* Threads of the interpreter measured; more are not considered. */
enum { kMaxThreads = 256 };
/* Requests shown in a report; more are counted. */
enum { kRequestsShown = 12 };
/* Text of one report, the stack included: the slot holds less (~7 KiB). */
enum { kStackSize = 8192, kTaskSize = 512 };

/* ---- what differs between CPython versions (found at run time) -------- */

typedef void (*dump_traceback_fn)(int fd, PyThreadState *tstate);
typedef PyInterpreterState *(*interp_get_fn)(void);
typedef PyObject *(*frame_fn)(void *); /* returns a new reference or NULL */

/* Offsets of the thread ids in PyThreadState, per minor (from each
 * version's Include/cpython/pystate.h; the struct is fixed within a minor).
 * 3.8-3.10 have only thread_id (a pthread_t); 3.11+ also native_thread_id. */
static const struct {
  int minor;
  int thread_id, native_thread_id;
} kThreadIdOffsets[] = {
    {8, 176, -1}, {9, 176, -1}, {10, 176, -1}, {11, 152, 160}, {12, 136, 144}, {13, 152, 160},
};

static struct {
  int minor; /* of the CPython 3 that runs */
  dump_traceback_fn dump_traceback; /* NULL: not found */
  const char *dump_traceback_from;  /* "exported symbol", "ELF symbol table" */
  interp_get_fn interp_get;
  /* 3.9+: the frame getters, for the stack with the GIL held when there is
   * no _Py_DumpTraceback. */
  frame_fn get_frame, frame_back, frame_code;
  int off_thread_id, off_native_thread_id; /* -1: unknown */
} g_py = {0, NULL, NULL, NULL, NULL, NULL, NULL, -1, -1};

/* The address of a function by name from the symbol table (.symtab) of the
 * ELF object that contains `inside`, for functions a version builds but does
 * not export. NULL when the object is stripped or anything looks wrong. */
typedef struct {
  const void *inside;
  const char *path;
  uintptr_t bias;
} find_object;

static int find_object_cb(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  find_object *f = data;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD) continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    if ((uintptr_t)f->inside >= lo && (uintptr_t)f->inside < lo + ph->p_memsz) {
      f->path = info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : "/proc/self/exe";
      f->bias = info->dlpi_addr;
      return 1;
    }
  }
  return 0;
}

/* Looks `name` up in the symbol table of the file of the object that holds
 * `anchor`, a function whose address is known; the answer is used only if
 * the same table puts `anchor_name` exactly there, so a file replaced on
 * disk since it was loaded (an upgrade in place) is never trusted. */
static void *elf_symtab_lookup(const void *anchor, const char *anchor_name, const char *name) {
  const void *inside = anchor;
  find_object f = {inside, NULL, 0};
  if (!dl_iterate_phdr(find_object_cb, &f) || !f.path) return NULL;
  int fd = open(f.path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  void *map = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size > (off_t)sizeof(ElfW(Ehdr)))
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return NULL;
  const size_t len = (size_t)st.st_size;
  const unsigned char *base = map;
  const ElfW(Ehdr) *eh = map;
  void *found = NULL;
  int anchor_ok = 0;
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_shentsize != sizeof(ElfW(Shdr)) || eh->e_shoff >= len ||
      eh->e_shnum > (len - eh->e_shoff) / sizeof(ElfW(Shdr)))
    goto out;
  const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(base + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum && !(found && anchor_ok); i++) {
    if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
    const ElfW(Shdr) *strs = &sh[sh[i].sh_link];
    if (sh[i].sh_offset > len || sh[i].sh_size > len - sh[i].sh_offset ||
        strs->sh_offset > len || strs->sh_size > len - strs->sh_offset)
      continue;
    const ElfW(Sym) *sym = (const ElfW(Sym) *)(base + sh[i].sh_offset);
    const char *str = (const char *)(base + strs->sh_offset);
    size_t nsym = sh[i].sh_size / sizeof(ElfW(Sym));
    size_t name_len = strlen(name), anchor_len = strlen(anchor_name);
    for (size_t k = 0; k < nsym && !(found && anchor_ok); k++) {
      if (ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC || sym[k].st_value == 0) continue;
      if (sym[k].st_name >= strs->sh_size) continue;
      const size_t room = strs->sh_size - sym[k].st_name;
      const char *sname = str + sym[k].st_name;
      if (room > name_len && memcmp(sname, name, name_len + 1) == 0)
        found = (void *)(f.bias + sym[k].st_value);
      else if (room > anchor_len && memcmp(sname, anchor_name, anchor_len + 1) == 0)
        anchor_ok = (const void *)(f.bias + sym[k].st_value) == anchor;
    }
  }
out:
  munmap(map, len);
  return anchor_ok ? found : NULL;
}

/* Once, at import, with the GIL. */
static void py_runtime_init(void) {
  const char *v = Py_GetVersion(); /* "3.12.1 (main, ...)" */
  g_py.minor = v[0] == '3' && v[1] == '.' ? atoi(v + 2) : 0;
  for (size_t i = 0; i < sizeof kThreadIdOffsets / sizeof kThreadIdOffsets[0]; i++) {
    if (kThreadIdOffsets[i].minor == g_py.minor) {
      g_py.off_thread_id = kThreadIdOffsets[i].thread_id;
      g_py.off_native_thread_id = kThreadIdOffsets[i].native_thread_id;
    }
  }
  g_py.interp_get = (interp_get_fn)dlsym(RTLD_DEFAULT, "PyInterpreterState_Get");
  if (!g_py.interp_get) g_py.interp_get = (interp_get_fn)dlsym(RTLD_DEFAULT, "_PyInterpreterState_Get");
  g_py.get_frame = (frame_fn)dlsym(RTLD_DEFAULT, "PyThreadState_GetFrame");
  g_py.frame_back = (frame_fn)dlsym(RTLD_DEFAULT, "PyFrame_GetBack");
  g_py.frame_code = (frame_fn)dlsym(RTLD_DEFAULT, "PyFrame_GetCode");
  const char *no_dump = getenv("LOOPWATCH_PY_NO_DUMP_TRACEBACK"); /* tests of the fallback */
  if (no_dump && no_dump[0] == '1') return;
  g_py.dump_traceback = (dump_traceback_fn)dlsym(RTLD_DEFAULT, "_Py_DumpTraceback");
  if (g_py.dump_traceback) {
    g_py.dump_traceback_from = "exported symbol";
    return;
  }
  g_py.dump_traceback = (dump_traceback_fn)elf_symtab_lookup(
      (const void *)&PyThreadState_Next, "PyThreadState_Next", "_Py_DumpTraceback");
  if (g_py.dump_traceback) g_py.dump_traceback_from = "ELF symbol table";
}

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

/* The frames of tstate, with the GIL held, by the frame getters of 3.9+, in
 * the faulthandler's format. No Python code runs (the GIL is kept). */
static size_t walk_stack(PyThreadState *tstate, char *buf, size_t size) {
  size_t n = (size_t)snprintf(buf, size, "Stack (most recent call first):\n");
  PyObject *f = g_py.get_frame(tstate);
  for (int depth = 0; f && depth < 100 && n < size - 1; depth++) {
    PyObject *code = g_py.frame_code(f);
    int line = PyFrame_GetLineNumber((PyFrameObject *)f);
    PyObject *file = code ? PyObject_GetAttrString(code, "co_filename") : NULL;
    PyObject *name = code ? PyObject_GetAttrString(code, "co_name") : NULL;
    const char *file_s = file && PyUnicode_Check(file) ? PyUnicode_AsUTF8(file) : NULL;
    const char *name_s = name && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    int w = snprintf(buf + n, size - n, "  File \"%s\", line %d in %s\n", file_s ? file_s : "???",
                     line, name_s ? name_s : "???");
    n = w < 0 ? n : (n + (size_t)w < size ? n + (size_t)w : size - 1);
    Py_XDECREF(file);
    Py_XDECREF(name);
    Py_XDECREF(code);
    PyErr_Clear();
    PyObject *back = g_py.frame_back(f);
    Py_DECREF(f);
    f = back;
  }
  Py_XDECREF(f);
  if (n >= size - 1 && n > 16) {
    while (n > 0 && buf[n - 1] != '\n') n--;
    n += (size_t)snprintf(buf + n, size - n, "  ... (cut)\n");
  }
  buf[n < size ? n : size - 1] = '\0';
  return strlen(buf);
}

/* The frames of tstate as faulthandler prints them ("Stack (most recent call
 * first):" then '  File "f.py", line 3 in g'), into buf. Without the GIL
 * only _Py_DumpTraceback can read them (it reads, as faulthandler's
 * watchdog does, what may change under it). */
static size_t dump_stack(PyThreadState *tstate, char *buf, size_t size, int have_gil) {
  if (!tstate) return (size_t)snprintf(buf, size, "Stack: unavailable (no thread)\n");
  if (!g_py.dump_traceback) {
    if (have_gil && g_py.get_frame && g_py.frame_back && g_py.frame_code)
      return walk_stack(tstate, buf, size);
    if (have_gil)
      return (size_t)snprintf(buf, size,
                              "Stack: unavailable (this Python 3.%d has neither "
                              "_Py_DumpTraceback nor the frame functions of 3.9+)\n",
                              g_py.minor);
    return (size_t)snprintf(buf, size,
                            "Stack: unavailable without the GIL (this Python 3.%d neither "
                            "exports _Py_DumpTraceback nor has it in a symbol table)\n",
                            g_py.minor);
  }
  int fd = memfd_create("loopwatch-stack", MFD_CLOEXEC);
  if (fd < 0) return (size_t)snprintf(buf, size, "Stack: unavailable (memfd_create: %s)\n", strerror(errno));
  g_py.dump_traceback(fd, tstate);
  size_t n = 0;
  ssize_t r;
  while (n < size - 1 && (r = pread(fd, buf + n, size - 1 - n, (off_t)n)) > 0) n += (size_t)r;
  off_t total = lseek(fd, 0, SEEK_END);
  close(fd);
  if (total > (off_t)n && n > 16) {
    /* Cut: end on a whole line, and say so. */
    while (n > 0 && buf[n - 1] != '\n') n--;
    n += (size_t)snprintf(buf + n, size - n, "  ... (cut)\n");
  }
  buf[n < size ? n : size - 1] = '\0';
  return strlen(buf);
}

/* Whether tstate is still one of interp's threads (the loop thread may have
 * ended without closing its loop). Without the GIL this walk is the same
 * risk faulthandler takes; with it, exact. */
static int thread_alive(PyInterpreterState *interp, PyThreadState *tstate) {
  if (!interp || !tstate) return 0;
  for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t))
    if (t == tstate) return 1;
  return 0;
}

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

/* ---- who holds the GIL (the watchdog's thread, no GIL) ---------------- */

/* The kernel's thread id of a Python thread. Without the GIL, as
 * thread_alive() walks: a thread state in the list belongs to a thread
 * that has not ended, since a thread removes its own, with the GIL, before
 * it ends, and the GIL is held elsewhere while this runs. */
static pid_t tid_of(PyThreadState *t) {
  if (g_py.off_native_thread_id >= 0) {
    unsigned long tid;
    memcpy(&tid, (const char *)t + g_py.off_native_thread_id, sizeof tid);
    return (pid_t)tid;
  }
  if (g_py.off_thread_id < 0) return 0; /* a minor not in the table */
  unsigned long thread_id;
  memcpy(&thread_id, (const char *)t + g_py.off_thread_id, sizeof thread_id);
  /* The per-thread CPU clock id encodes the tid: ~(id >> 3) (Linux ABI). */
  clockid_t c;
  if (pthread_getcpuclockid((pthread_t)thread_id, &c) != 0) return 0;
  return (pid_t) ~(c >> 3);
}

/* CPU time of a thread of this process by tid, or -1 (it has ended). */
static int64_t tid_cpu_ns(pid_t tid) {
  if (tid <= 0) return -1;
  clockid_t id = (clockid_t)((~(unsigned)tid) << 3) | 6; /* CPUCLOCK_PERTHREAD | SCHED */
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0) return -1;
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether the thread sleeps in futex(), as a thread waiting for the GIL
 * does (woken every switch interval to ask for it, so look a few times). */
static int in_futex(pid_t tid) {
  char path[64], buf[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
  for (int i = 0; i < 5; i++) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    if (strncmp(buf, "running", 7) != 0) return strtol(buf, NULL, 10) == SYS_futex;
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  return 0;
}

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
  } th[kMaxThreads];
} cpu_snapshot;

static void take_snapshot(LoopObject *self, cpu_snapshot *s) {
  s->n = 0;
  s->loop_tid = tid_of(self->tstate);
  s->loop_cpu = tid_cpu_ns(s->loop_tid);
  for (PyThreadState *t = PyInterpreterState_ThreadHead(self->interp); t && s->n < kMaxThreads;
       t = PyThreadState_Next(t)) {
    if (t == self->tstate) continue;
    s->th[s->n].t = t;
    s->th[s->n].tid = tid_of(t);
    s->th[s->n].cpu = tid_cpu_ns(s->th[s->n].tid);
    if (s->th[s->n].cpu >= 0) s->n++;
  }
  s->at_ns = lw_now_ns();
  s->taken = 1;
}

typedef struct {
  PyThreadState *tstate; /* NULL: none found */
  pid_t tid;
  uint64_t cpu_ns;      /* its CPU over the window */
  uint64_t loop_cpu_ns; /* the loop thread's */
  uint64_t window_ns;
  int loop_waits;       /* the loop thread hardly ran, and sleeps in futex() */
} gil_holder;

/* After the reporter could not get the GIL: which other thread of the
 * loop's interpreter holds it, from the CPU each used since `s` was taken
 * (taken now, and kHolderWindowNs waited, if it was not). The holder used
 * at least a quarter of a CPU, the most of all, while the loop thread used
 * less than a quarter and sleeps in futex(). Not found: a holder that waits
 * in C code without using the CPU, and a thread that computes with the GIL
 * released while the loop thread waits for a lock of its own. */
static void find_gil_holder(LoopObject *self, cpu_snapshot *s, gil_holder *h) {
  memset(h, 0, sizeof *h);
  if (!s->taken) {
    take_snapshot(self, s);
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
  if (h->loop_waits && best >= 0 && best_cpu * 4 >= h->window_ns) {
    h->tstate = s->th[best].t;
    h->tid = s->th[best].tid;
    h->cpu_ns = best_cpu;
  }
}

/* ---- the report hook (the core's watchdog thread, no GIL) ------------- */

static size_t append(char *buf, size_t size, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t append(char *buf, size_t size, size_t n, const char *fmt, ...) {
  if (n >= size) return n;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(buf + n, size - n, fmt, ap);
  va_end(ap);
  if (w < 0) return n;
  return n + (size_t)w < size ? n + (size_t)w : size - 1;
}

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
      take_snapshot(self, snap);
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
    if (alive) find_gil_holder(self, snap, &h);
    size_t n = 0;
    if (h.tstate && thread_alive(self->interp, h.tstate)) {
      lw_report_gil_wait(loop);
      snprintf(task, sizeof task,
               "unknown (the loop thread waits for the GIL, which thread %d holds: "
               "it used %llu ms of CPU in %llu ms, the loop thread %llu ms)",
               (int)h.tid, (unsigned long long)(h.cpu_ns / 1000000u),
               (unsigned long long)(h.window_ns / 1000000u),
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
    } else if (alive && h.loop_waits) {
      snprintf(task, sizeof task,
               "unknown (the GIL was not released within %llu ms; the loop thread sleeps "
               "in futex(), waiting for it or for a lock, and no other thread used the CPU: "
               "whatever holds it waits in C code)",
               (unsigned long long)(kGilWaitNs / 1000000u));
      n = (size_t)snprintf(stack, kStackSize,
                           "(stack read without the GIL, as faulthandler does)\n");
      dump_stack(self->tstate, stack + n, kStackSize - n, 0);
    } else if (alive) {
      snprintf(task, sizeof task,
               "unknown (the GIL was not released within %llu ms: the loop thread "
               "holds it in C code, e.g. a C extension or a regular expression)",
               (unsigned long long)(kGilWaitNs / 1000000u));
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
  n = append(buf, size, n, "task: %s\n", task[0] ? task : "none running");
  request_copy reqs[kRequestsShown];
  uint64_t more = 0;
  int nreq = requests_read(&self->requests, reqs, kRequestsShown, &more);
  uint64_t now = lw_now_ns();
  if (nreq == 0 && !more && !__atomic_load_n(&g_requests_recorded, __ATOMIC_RELAXED) &&
      !__atomic_load_n(&self->requests_seen, __ATOMIC_RELAXED)) {
    n = append(buf, size, n,
               "requests in flight: unknown (nothing records them in this process: "
               "loopwatch.asgi.LoopwatchMiddleware or loopwatch.aiohttp.middleware would)\n");
  } else {
    n = append(buf, size, n, "requests in flight: %llu\n", (unsigned long long)(nreq + more));
  }
  for (int i = 0; i < nreq; i++) {
    uint64_t age = now > reqs[i].start_ns ? now - reqs[i].start_ns : 0;
    n = append(buf, size, n, "  %s %s (%llu.%03llu s)\n", reqs[i].method, reqs[i].path,
               (unsigned long long)(age / 1000000000u),
               (unsigned long long)(age / 1000000u % 1000u));
  }
  if (more) n = append(buf, size, n, "  ... and %llu more\n", (unsigned long long)more);
  n = append(buf, size, n, "%s", stack);
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

/* parse_duration(text: str) -> int: nanoseconds, by the project's one
 * duration grammar (lib/src/parse_duration.h); ValueError if not one. */
static PyObject *mod_parse_duration(PyObject *m, PyObject *arg) {
  (void)m;
  Py_ssize_t len;
  const char *text = PyUnicode_Check(arg) ? PyUnicode_AsUTF8AndSize(arg, &len) : NULL;
  if (!text) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "parse_duration(text: str)");
    return NULL;
  }
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
  const char *text = PyUnicode_Check(arg) ? PyUnicode_AsUTF8AndSize(arg, &len) : NULL;
  if (!text) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "redact_query(text: str)");
    return NULL;
  }
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
  return Py_BuildValue("{s:i,s:s,s:s}", "minor", g_py.minor, "dump_traceback",
                       g_py.dump_traceback_from ? g_py.dump_traceback_from
                       : g_py.get_frame        ? "none: frame getters, with the GIL only"
                                               : "none",
                       "thread_ids",
                       g_py.off_native_thread_id >= 0 ? "native_thread_id"
                       : g_py.off_thread_id >= 0      ? "thread_id"
                                                      : "unknown");
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

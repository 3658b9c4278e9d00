/* SPDX-License-Identifier: Apache-2.0
 *
 * pyruntime.c: one build of _native.so serves CPython 3.8 to 3.13 (glibc,
 * x86-64, the default GIL build). It is compiled against one version's
 * headers but uses only what those six share: object headers, reference
 * counts, functions whose signatures never changed, and a heap type made by
 * PyType_FromSpec. What differs by version is found here, at import: the
 * running minor from Py_GetVersion(), functions that only some versions
 * export by dlsym(), the faulthandler's _Py_DumpTraceback (exported by 3.8,
 * 3.11 and 3.12, a local symbol of 3.9, 3.10 and 3.13) from the ELF symbol
 * table of libpython, and the one struct field read (the thread id in
 * PyThreadState) from a table of its offset per minor.
 * loopwatch/_compat.py refuses any other Python before the module is loaded.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pyruntime.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Offsets of the thread ids in PyThreadState, per minor (from each
 * version's Include/cpython/pystate.h; the struct is fixed within a minor).
 * 3.8-3.10 have only thread_id (a pthread_t); 3.11+ also native_thread_id. */
static const struct {
  int minor;
  int thread_id, native_thread_id;
} kThreadIdOffsets[] = {
    {8, 176, -1}, {9, 176, -1}, {10, 176, -1}, {11, 152, 160}, {12, 136, 144}, {13, 152, 160},
};

py_runtime g_py = {0, NULL, NULL, NULL, NULL, NULL, NULL, -1, -1};

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

void py_runtime_init(void) {
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

PyObject *py_runtime_describe(void) {
  return Py_BuildValue("{s:i,s:s,s:s}", "minor", g_py.minor, "dump_traceback",
                       g_py.dump_traceback_from ? g_py.dump_traceback_from
                       : g_py.get_frame        ? "none: frame getters, with the GIL only"
                                               : "none",
                       "thread_ids",
                       g_py.off_native_thread_id >= 0 ? "native_thread_id"
                       : g_py.off_thread_id >= 0      ? "thread_id"
                                                      : "unknown");
}

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
size_t dump_stack(PyThreadState *tstate, char *buf, size_t size, int have_gil) {
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
int thread_alive(PyInterpreterState *interp, PyThreadState *tstate) {
  if (!interp || !tstate) return 0;
  for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t))
    if (t == tstate) return 1;
  return 0;
}

/* The kernel's thread id of a Python thread. Without the GIL, as
 * thread_alive() walks: a thread state in the list belongs to a thread
 * that has not ended, since a thread removes its own, with the GIL, before
 * it ends, and the GIL is held elsewhere while this runs. */
pid_t tid_of(PyThreadState *t) {
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

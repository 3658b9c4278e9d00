/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loopwatch.h: the public C ABI of libloopwatch.
 *
 * An event loop calls lw_beat() from a timer on the loop itself. Each beat
 * stamps the time and the loop's lag (how late the timer fired) into a slot of
 * a shared-memory segment that the loopwatch sidecar reads from another
 * container. A watchdog thread in this process, never on the loop, notices when
 * a loop stops beating and writes a stall report into the slot: how long, what
 * class (cpu or blocked, or gil from a Python binding), the syscall the loop
 * thread sleeps in, and text that a language binding adds (a Python stack). The segment layout is in lib/FORMAT.md.
 *
 * Conventions:
 *  1. Handles are opaque. A NULL lw_loop_t* is a valid handle on which every
 *     call is a no-op returning 0.
 *  2. Functions return 0 on success or a negative errno value. lw_strerror()
 *     names a code; lw_last_error() adds detail for the calling thread.
 *  3. Nothing returned is owned by the caller; there is nothing to free except
 *     what lw_loop_close() closes.
 *  4. If the environment variable LOOPWATCH_SEGMENT is unset or empty, the
 *     library is disabled: lw_loop_open() stores NULL in *out and returns 0, so
 *     every later call is a cheap no-op. Callers never test for the sidecar.
 *     (Invalid arguments are still refused, so that a bug shows up before
 *     the app meets a sidecar.) A process uses the path named when it opened
 *     its first loop, for its whole life; a forked child may name another.
 *     If the file at that path is deleted, replaced or truncated, the
 *     watchdog notices within a second and moves every loop to a slot in the
 *     file now there (creating it if need be); a file that is not a segment
 *     is left alone, and tried again twice a second. To survive truncation,
 *     the library installs a SIGBUS handler with the first loop: a fault in a
 *     segment mapping is turned into anonymous memory, any other SIGBUS goes
 *     to the handler that was there before (or the default action). An app
 *     that installs its own SIGBUS handler later, without chaining to the
 *     previous one, loses that protection, not its own handling.
 *  5. Thread safety: lw_loop_open() and lw_loop_close() are thread-safe. The
 *     per-loop calls (lw_beat, lw_beat_at, lw_set_ready, lw_set_activity) must
 *     be made by one thread at a time for a given loop, normally the loop's
 *     own thread; different loops may be driven concurrently. lw_beat() and
 *     lw_beat_at() are wait-free: no lock, no allocation, no system call
 *     (lw_beat reads CLOCK_MONOTONIC, a vDSO call on Linux). The library's
 *     own threads block every signal but those of faults.
 *  6. After fork(), handles inherited by the child are inert: the child never
 *     writes into its parent's slots. The child opens loops of its own.
 *  7. Times are CLOCK_MONOTONIC nanoseconds; every duration's unit is in its
 *     name (interval_ns).
 *  8. The ABI only grows: new functions are added, none changes or goes away.
 *     Option structs start with their own size so that they can grow too.
 */
#ifndef LOOPWATCH_LOOPWATCH_H_
#define LOOPWATCH_LOOPWATCH_H_

#include <stddef.h>
#include <stdint.h>

#if defined(LOOPWATCH_STATIC_DEFINE)
#define LW_EXPORT
#elif defined(__GNUC__)
#define LW_EXPORT __attribute__((visibility("default")))
#else
#define LW_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define LW_VERSION_MAJOR 0
#define LW_VERSION_MINOR 1
#define LW_VERSION_PATCH 0

/* Longest loop name, kind and activity label, in bytes, without the NUL.
 * Longer strings are refused with -ENAMETOOLONG (names, kinds) or cut at a
 * UTF-8 character boundary (activity labels, which change at run time). */
#define LW_NAME_MAX 63
#define LW_KIND_MAX 15
#define LW_ACTIVITY_MAX 63

typedef struct lw_loop lw_loop_t;

/* Options for lw_loop_open_ex(). Zero every field you do not set, and set
 * struct_size = sizeof(lw_loop_options_t). */
typedef struct lw_loop_options {
  uint32_t struct_size;
  uint32_t reserved0;
  /* Loop name as shown by the sidecar, e.g. "uvicorn-7" (1..LW_NAME_MAX). */
  const char *name;
  /* Loop kind, e.g. "asyncio", "uvloop", "asio" (NULL: "native"). */
  const char *kind;
  /* Period of the heartbeat timer; lag is measured against it. > 0. */
  uint64_t interval_ns;
  /* Silence, beyond one interval, after which the watchdog writes a stall
   * report. 0: LOOPWATCH_REPORT_AFTER from the environment, else 500 ms. */
  uint64_t report_after_ns;
} lw_loop_options_t;

/* Text a language binding adds to a stall report (e.g. the Python stack of the
 * loop thread). Called on the watchdog thread when a stall report opens; it
 * must write at most buf_size bytes into buf and return how many it wrote. It
 * must not wait for the stalled loop. lw_loop_close() waits for a hook that is
 * running on that loop, so the hook must not need a lock that the closing
 * thread holds. */
typedef size_t (*lw_report_hook_fn)(lw_loop_t *loop, void *user, char *buf,
                                    size_t buf_size);

/* Library version as "MAJOR.MINOR.PATCH"; static storage. */
LW_EXPORT const char *lw_version(void);

/* Static English text for a return code of this library (0 or -errno). */
LW_EXPORT const char *lw_strerror(int err);

/* Detail about the last failure on this thread ("" if none), e.g. the path
 * and both format versions when a segment of another major version is found.
 * Valid until the next library call on this thread. */
LW_EXPORT const char *lw_last_error(void);

/* Whether the library is enabled (LOOPWATCH_SEGMENT set): 1 or 0. */
LW_EXPORT int lw_enabled(void);

/* Claims a slot for a loop named `name` that beats every `interval_ns`.
 * Creates and initialises the segment if this process is the first.
 * Errors: -EINVAL (NULL out or name, interval 0), -ENAMETOOLONG, -ENOSPC (no
 * free slot), -EPROTO (segment of another format or corrupt), or an errno from
 * opening or mapping the file. On error *out is NULL, so the app may go on
 * calling lw_beat(NULL) without checks. Starts this process's watchdog thread
 * with its first loop. */
LW_EXPORT int lw_loop_open(const char *name, uint64_t interval_ns,
                           lw_loop_t **out);

/* lw_loop_open() with options (kind, report_after_ns). */
LW_EXPORT int lw_loop_open_ex(const lw_loop_options_t *options,
                              lw_loop_t **out);

/* Releases the slot (the sidecar sees the loop leave cleanly, not die) and
 * frees the handle. Stops the watchdog thread with the last loop. */
LW_EXPORT int lw_loop_close(lw_loop_t *loop);

/* The heartbeat. Reads CLOCK_MONOTONIC once, records the lag since the
 * expected beat (previous beat + interval) in the slot's histogram, and
 * publishes the beat. Wait-free; no system call on Linux. */
LW_EXPORT int lw_beat(lw_loop_t *loop);

/* lw_beat() for loops that already hold the current CLOCK_MONOTONIC time
 * (asio, libuv and asyncio keep one per iteration): no clock read at all. */
LW_EXPORT int lw_beat_at(lw_loop_t *loop, uint64_t now_ns);

/* The app's own readiness (1 ready, the default; 0 not ready). The sidecar's
 * /readyz fails while any loop says 0. */
LW_EXPORT int lw_set_ready(lw_loop_t *loop, int ready);

/* What the loop is doing now, e.g. "GET /orders" (NULL or "" clears). Copied
 * into a stall report when one opens. */
LW_EXPORT int lw_set_activity(lw_loop_t *loop, const char *label);

/* Installs (fn != NULL) or removes the report hook of a loop. */
LW_EXPORT int lw_set_report_hook(lw_loop_t *loop, lw_report_hook_fn fn,
                                 void *user);

/* For the report hook of a binding whose interpreter has a global lock
 * (Python's GIL): the loop thread is not stuck in its own code but waits for
 * that lock, which another thread of the process holds while it runs. The
 * open report's class becomes "gil" for as long as the loop thread itself
 * wants less than half the CPU; the hook's text should name the thread that
 * holds the lock. Returns 0, or -EINVAL if no report is open. */
LW_EXPORT int lw_report_gil_wait(lw_loop_t *loop);

/* Slot index of the loop in the segment, or -1 for a NULL handle. */
LW_EXPORT int lw_loop_slot(const lw_loop_t *loop);

/* CLOCK_MONOTONIC now, in nanoseconds (the clock lw_beat_at expects). */
LW_EXPORT uint64_t lw_now_ns(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // LOOPWATCH_LOOPWATCH_H_

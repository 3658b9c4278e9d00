/* SPDX-License-Identifier: Apache-2.0 */
/*
 * segment_layout.h: the one definition of the shared-memory segment, format
 * v1. lib/FORMAT.md draws it byte by byte and states the compatibility rules;
 * keep the two in step. Included from C (the writer, libloopwatch) and C++
 * (the reader, used by the sidecar).
 *
 * Rules for the layout: fixed-width types only, no pointers, no bool, no
 * size_t, natural alignment so that no packing is needed, every offset and
 * size checked below. Shared words are accessed only through the __atomic
 * builtins (both GCC and Clang, C and C++), never as plain loads and stores.
 *
 * Seqlocks. A seqlock guards a group of fields with a counter that is odd
 * while a writer is inside. The single writer does
 *
 *     s = seq; store(seq, s + 1, relaxed); fence(release);
 *     ...store the fields (relaxed)...
 *     store(seq, s + 2, release);
 *
 * and a reader, which may be in another process and must never wait on the
 * writer, does
 *
 *     for (tries = 0; tries < N; tries++) {
 *       s1 = load(seq, acquire);
 *       if (s1 & 1) continue;              // writer inside: try again
 *       ...copy the fields (relaxed loads)...
 *       fence(acquire);
 *       if (load(seq, relaxed) == s1) return copy;   // consistent
 *     }
 *     return "inconsistent" (keep the previous snapshot)
 *
 * The slot's generation is such a counter for the slot's identity: odd while
 * a process claims the slot, bumped by two per claim.
 */
#ifndef LOOPWATCH_SEGMENT_LAYOUT_H_
#define LOOPWATCH_SEGMENT_LAYOUT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define LW_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define LW_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* The bytes "LOOPWTCH" read as a little-endian u64. Written last, with a
 * release store, by the process that initialises the segment. */
#define LW_SEG_MAGIC UINT64_C(0x48435457504F4F4C)
#define LW_SEG_VERSION_MAJOR 1
#define LW_SEG_VERSION_MINOR 1

#define LW_SEG_HEADER_SIZE 256u
#define LW_SEG_SLOT_SIZE 8192u
#define LW_SEG_DEFAULT_SLOTS 64u
#define LW_SEG_MAX_SLOTS 1024u

/* Slot states. */
#define LW_SLOT_FREE 0u    /* never claimed */
#define LW_SLOT_ACTIVE 1u  /* owned; liveness is the owner's file lock */
#define LW_SLOT_CLOSED 2u  /* closed cleanly by its owner */

/* Stall classes written by the library. The sidecar adds "host" itself. */
#define LW_CLASS_UNKNOWN 0u
#define LW_CLASS_CPU 1u      /* the loop thread burned CPU during the stall */
#define LW_CLASS_BLOCKED 2u  /* the loop thread slept, mostly in a syscall */
#define LW_CLASS_GIL 3u      /* it waited for the interpreter lock another thread held */
#define LW_CLASS_LAST LW_CLASS_GIL /* readers map anything above to UNKNOWN */

/* Report states. */
#define LW_REPORT_NONE 0u
#define LW_REPORT_OPEN 1u    /* stall under way, updated while it lasts */
#define LW_REPORT_CLOSED 2u  /* the loop beat again; stall_end_ns is set */

/* Lag histogram: buckets[i] counts beats whose lag was <= lw_lag_bounds_ns[i]
 * and greater than the bound before it; the last bucket counts the rest
 * (> 30 s). Counts only grow over the slot's life: a reader exports the
 * running sum of buckets as Prometheus "le" buckets. */
#define LW_LAG_BUCKETS 15u
#define LW_LAG_BUCKET_SLOTS 16u  /* stored; the 16th is reserved, zero */

/* File lock bytes. The owner of slot i holds an OFD write lock on the byte at
 * LW_SEG_LOCK_BASE + i; the kernel drops it when the owner's last descriptor
 * closes, which is how a reader in another PID namespace tells a dead owner
 * from a stalled one. Byte LW_SEG_INIT_LOCK serialises initialisation. The
 * locked bytes lie past any segment's end: locks need no file content. */
#define LW_SEG_INIT_LOCK UINT64_C(0x40000000)
#define LW_SEG_LOCK_BASE UINT64_C(0x40000001)

#define LW_SLOT_NAME_SIZE 64u
#define LW_SLOT_KIND_SIZE 16u
#define LW_SLOT_CONTAINER_SIZE 64u /* a Kubernetes container name is at most 63 */
#define LW_ACTIVITY_SIZE 64u
#define LW_SYSCALL_NAME_SIZE 32u
#define LW_WCHAN_SIZE 32u
#define LW_REPORT_TEXT_OFFSET 768u
#define LW_REPORT_TEXT_SIZE (LW_SEG_SLOT_SIZE - LW_REPORT_TEXT_OFFSET)

typedef struct lw_seg_header {
  uint64_t magic;            /*   0 LW_SEG_MAGIC, published last */
  uint16_t version_major;    /*   8 */
  uint16_t version_minor;    /*  10 */
  uint32_t header_size;      /*  12 LW_SEG_HEADER_SIZE; slots start here */
  uint32_t slot_size;        /*  16 LW_SEG_SLOT_SIZE */
  uint32_t slot_count;       /*  20 1..LW_SEG_MAX_SLOTS */
  uint64_t segment_id;       /*  24 random, nonzero; changes if re-created */
  uint64_t created_mono_ns;  /*  32 CLOCK_MONOTONIC at creation */
  uint64_t created_real_ns;  /*  40 CLOCK_REALTIME at creation */
  uint32_t creator_pid;      /*  48 in the creator's PID namespace */
  uint32_t reserved0;        /*  52 */
  uint8_t reserved[200];     /*  56..255 zero; minor versions carve here */
} lw_seg_header_t;

typedef struct lw_seg_slot {
  /* Identity: written while claiming, guarded by `generation`. */
  uint32_t state;            /*   0 LW_SLOT_* */
  uint32_t generation;       /*   4 odd while claiming; +2 per claim */
  uint32_t pid;              /*   8 owner pid, in the owner's namespace */
  uint32_t tid;              /*  12 loop thread id, same namespace */
  uint64_t claim_token;      /*  16 random per claim */
  uint64_t opened_ns;        /*  24 when the loop opened */
  uint64_t interval_ns;      /*  32 configured beat period */
  uint64_t report_after_ns;  /*  40 watchdog threshold beyond one interval */
  char name[LW_SLOT_NAME_SIZE]; /* 48 NUL-terminated, NUL-padded */
  char kind[LW_SLOT_KIND_SIZE]; /* 112 NUL-terminated, NUL-padded */

  /* Beat: written by the loop thread on every beat, guarded by beat_seq. */
  uint64_t beat_seq;         /* 128 */
  uint64_t beat_count;       /* 136 beats since the claim */
  uint64_t last_beat_ns;     /* 144 time of the last beat */
  uint64_t lag_max_ns;       /* 152 */
  uint64_t lag_sum_ns;       /* 160 */
  uint64_t lag_count;        /* 168 beats with a lag (all but the first) */
  uint64_t lag_bucket[LW_LAG_BUCKET_SLOTS]; /* 176..303 */
  uint8_t reserved1[16];     /* 304..319 */

  /* Status set by the app. */
  uint32_t ready;            /* 320 1 ready, 0 not ready */
  uint32_t reserved2;        /* 324 */
  uint64_t activity_seq;     /* 328 guards activity */
  char activity[LW_ACTIVITY_SIZE]; /* 336 */
  char container[LW_SLOT_CONTAINER_SIZE]; /* 400 since 1.1: the pod's container
                                  (LOOPWATCH_CONTAINER), written with the
                                  identity at claim, under `generation` */
  uint8_t reserved3[48];     /* 464..511 */

  /* Stall report: written by the watchdog thread, guarded by report_seq. */
  uint64_t report_seq;       /* 512 */
  uint64_t stall_count;      /* 520 stalls reported since the claim */
  uint64_t stall_start_ns;   /* 528 last beat before the stall */
  uint64_t stall_end_ns;     /* 536 a beat after it (the latest seen within
                                  one watchdog tick), or the close time if
                                  the loop closed mid-stall; 0 while open */
  uint64_t report_updated_ns;/* 544 */
  uint64_t loop_cpu_ns;      /* 552 loop-thread CPU time during the stall */
  uint32_t report_state;     /* 560 LW_REPORT_* */
  uint32_t stall_class;      /* 564 LW_CLASS_* */
  int32_t syscall_nr;        /* 568 -1: not in a syscall or unknown */
  uint32_t text_len;         /* 572 bytes used in text */
  char syscall_name[LW_SYSCALL_NAME_SIZE]; /* 576 */
  char wchan[LW_WCHAN_SIZE]; /* 608 kernel wait channel, if readable */
  char report_activity[LW_ACTIVITY_SIZE]; /* 640 activity at the stall */
  uint8_t reserved4[64];     /* 704..767 */
  char text[LW_REPORT_TEXT_SIZE]; /* 768..8191 text from the report hook */
} lw_seg_slot_t;

LW_STATIC_ASSERT(sizeof(lw_seg_header_t) == LW_SEG_HEADER_SIZE, "header size");
LW_STATIC_ASSERT(offsetof(lw_seg_header_t, version_major) == 8, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_header_t, slot_count) == 20, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_header_t, segment_id) == 24, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_header_t, creator_pid) == 48, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_header_t, reserved) == 56, "layout");

LW_STATIC_ASSERT(sizeof(lw_seg_slot_t) == LW_SEG_SLOT_SIZE, "slot size");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, claim_token) == 16, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, report_after_ns) == 40, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, name) == 48, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, kind) == 112, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, beat_seq) == 128, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, last_beat_ns) == 144, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, lag_count) == 168, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, lag_bucket) == 176, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, ready) == 320, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, activity_seq) == 328, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, activity) == 336, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, container) == 400, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, report_seq) == 512, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, loop_cpu_ns) == 552, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, report_state) == 560, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, syscall_nr) == 568, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, syscall_name) == 576, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, wchan) == 608, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, report_activity) == 640, "layout");
LW_STATIC_ASSERT(offsetof(lw_seg_slot_t, text) == LW_REPORT_TEXT_OFFSET,
                 "layout");
LW_STATIC_ASSERT(LW_REPORT_TEXT_SIZE == 7424, "report text size");
LW_STATIC_ASSERT(__atomic_always_lock_free(sizeof(uint64_t), 0),
                 "64-bit atomics must be lock-free for a cross-process seqlock");
LW_STATIC_ASSERT(__atomic_always_lock_free(sizeof(uint32_t), 0),
                 "32-bit atomics must be lock-free");

/* Upper bounds of the lag buckets, in ns: 1, 2.5, 5, 10, 25, 50, 100, 250,
 * 500 ms, 1, 2.5, 5, 10, 30 s; the 15th bucket is everything above. */
#define LW_LAG_BOUNDS_NS_INIT                                              \
  {                                                                        \
    UINT64_C(1000000), UINT64_C(2500000), UINT64_C(5000000),               \
        UINT64_C(10000000), UINT64_C(25000000), UINT64_C(50000000),        \
        UINT64_C(100000000), UINT64_C(250000000), UINT64_C(500000000),     \
        UINT64_C(1000000000), UINT64_C(2500000000), UINT64_C(5000000000),  \
        UINT64_C(10000000000), UINT64_C(30000000000)                       \
  }
#define LW_LAG_FINITE_BOUNDS 14u

/* Total file size of a segment with `slots` slots. */
static inline uint64_t lw_seg_size(uint32_t slots) {
  return (uint64_t)LW_SEG_HEADER_SIZE + (uint64_t)slots * LW_SEG_SLOT_SIZE;
}

#endif  /* LOOPWATCH_SEGMENT_LAYOUT_H_ */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * segment_access.h: how both sides touch the shared words of the segment.
 * The writer (libloopwatch: loopwatch.c, watchdog.c) and the readers (the
 * library's own watchdog, the sidecar's SegmentReader) use these and nothing
 * else, so the seqlock protocol of segment_layout.h exists once. Internal to
 * the project; C and C++.
 *
 * Every shared word is accessed with the __atomic builtins, never with plain
 * loads and stores: a reader in another process may read while the writer
 * writes, and tearing is what the seqlocks detect, not what they allow.
 */
#ifndef LOOPWATCH_SEGMENT_ACCESS_H_
#define LOOPWATCH_SEGMENT_ACCESS_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- words and fixed-size string fields ------------------------------- */

static inline void lw_store64(uint64_t *p, uint64_t v) {
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline void lw_store32(uint32_t *p, uint32_t v) {
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* Stores `src` (at most size - 1 bytes of it; NULL is "") into the
 * NUL-padded field `dst` word by word. size is a multiple of 8 and dst is
 * 8-aligned, as every string field of the layout is. */
static inline void lw_store_field(char *dst, const char *src, size_t size) {
  size_t len = src ? strnlen(src, size - 1) : 0;
  for (size_t off = 0; off < size; off += 8) {
    char chunk[8] = {0};
    uint64_t word;
    if (off < len) memcpy(chunk, src + off, len - off < 8 ? len - off : 8);
    memcpy(&word, chunk, 8);
    __atomic_store_n((uint64_t *)(void *)(dst + off), word, __ATOMIC_RELAXED);
  }
}

/* Copies `words` 8-byte words from shared memory. */
static inline void lw_load_words(void *dst, const void *src, size_t words) {
  for (size_t i = 0; i < words; i++) {
    uint64_t w = __atomic_load_n((const uint64_t *)src + i, __ATOMIC_RELAXED);
    memcpy((char *)dst + i * 8, &w, 8);
  }
}

/* Copies the string field `src` (size a multiple of 8) and terminates the
 * copy, whatever bytes the field held. */
static inline void lw_load_field(char *dst, const char *src, size_t size) {
  lw_load_words(dst, src, size / 8);
  dst[size - 1] = '\0';
}

/* Zeroes `size` bytes (a multiple of 8, 8-aligned) word by word. */
static inline void lw_zero_words(void *p, size_t size) {
  uint64_t *w = (uint64_t *)p;
  for (size_t i = 0; i < size / 8; i++) lw_store64(&w[i], 0);
}

/* ---- the seqlock ------------------------------------------------------ */
/*
 * A group of fields is guarded by a sequence word that is odd while its one
 * writer is inside. The writer keeps the even value it last published
 * (`mine`); readers never wait for it and give up after a bounded number of
 * tries. Sequence words only grow: a reader that saw a value must never see
 * an older one, so a new owner of a slot continues from lw_seqlock_adopt().
 */

#define LW_SEQLOCK_READ_TRIES 64

/* The even value to continue from: one past an odd word a writer left
 * behind when it died inside. */
static inline uint64_t lw_seqlock_adopt(const uint64_t *seq) {
  uint64_t v = __atomic_load_n(seq, __ATOMIC_RELAXED);
  return (v & 1u) ? v + 1 : v;
}

static inline void lw_seqlock_write_begin(uint64_t *seq, uint64_t mine) {
  __atomic_store_n(seq, mine + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

/* Publishes the write; returns the value to keep as `mine`. */
static inline uint64_t lw_seqlock_write_end(uint64_t *seq, uint64_t mine) {
  __atomic_store_n(seq, mine + 2, __ATOMIC_RELEASE);
  return mine + 2;
}

/* Copies a guarded group: calls copy(ctx, seq) with the (even) sequence
 * value it reads under, until one copy was not overlapped by a write, at
 * most LW_SEQLOCK_READ_TRIES times. 1: the last copy is consistent; 0: it
 * is not (keep what you had). `copy` uses relaxed loads only. */
typedef void (*lw_seqlock_copy_fn)(void *ctx, uint64_t seq);

/* The reader's loop, for sequence words of either width. */
#define LW_SEQLOCK_READ_LOOP(type, seq, copy, ctx)                 \
  for (int t_ = 0; t_ < LW_SEQLOCK_READ_TRIES; t_++) {             \
    type s1_ = __atomic_load_n((seq), __ATOMIC_ACQUIRE);           \
    if (s1_ & 1u) continue;                                        \
    (copy)((ctx), s1_);                                            \
    __atomic_thread_fence(__ATOMIC_ACQUIRE);                       \
    if (__atomic_load_n((seq), __ATOMIC_RELAXED) == s1_) return 1; \
  }                                                                \
  return 0

static inline int lw_seqlock_read(const uint64_t *seq, lw_seqlock_copy_fn copy,
                                  void *ctx) {
  LW_SEQLOCK_READ_LOOP(uint64_t, seq, copy, ctx);
}

/* The slot's 32-bit generation is a sequence word of the same protocol for
 * the slot's identity: odd while a process claims the slot, +2 a claim. */
static inline int lw_generation_read(const uint32_t *gen,
                                     lw_seqlock_copy_fn copy, void *ctx) {
  LW_SEQLOCK_READ_LOOP(uint32_t, gen, copy, ctx);
}

/* Claiming: the generation's write, from whatever value a previous owner
 * left (odd if it died mid-claim). Returns the odd value to pass to
 * lw_generation_claim_end(). */
static inline uint32_t lw_generation_claim_begin(uint32_t *gen) {
  uint32_t g = __atomic_load_n(gen, __ATOMIC_RELAXED);
  uint32_t odd = (g & 1u) ? g + 2u : g + 1u;
  __atomic_store_n(gen, odd, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  return odd;
}

static inline void lw_generation_claim_end(uint32_t *gen, uint32_t odd) {
  __atomic_store_n(gen, odd + 1u, __ATOMIC_RELEASE);
}

#ifdef __cplusplus
}  /* extern "C" */

/* For C++ readers: the copy is a lambda, e.g.
 *   LwSeqlockRead(lw_seqlock_read, &slot->beat_seq, [&](uint64_t) {...}). */
template <typename Seq, typename F>
inline bool LwSeqlockRead(int (*read)(const Seq *, lw_seqlock_copy_fn, void *),
                          const Seq *seq, F copy) {
  return read(seq, [](void *ctx, uint64_t s) { (*static_cast<F *>(ctx))(s); },
              &copy) != 0;
}
#endif

#endif /* LOOPWATCH_SEGMENT_ACCESS_H_ */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening, creating and validating the segment file (see segment.h and
 * lib/FORMAT.md, "Creating and opening"). Shared by the library and the
 * sidecar's reader, either of which may come first.
 */
#define _GNU_SOURCE
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loopwatch_internal.h"
#include "segment_access.h"
#include "segment_layout.h"

/* How long an opener waits for another process that is initialising. */
#define LW_INIT_LOCK_WAIT_NS UINT64_C(2000000000)

static uint64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

uint64_t lw_internal_random_u64(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
    v = clock_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32) ^
        (uint64_t)(uintptr_t)&v;
  }
  return v ? v : 1;
}

int lw_internal_lock_byte(int fd, uint64_t byte, short type) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)byte;
  fl.l_len = 1;
  return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

static int lock_init_byte(int fd) {
  uint64_t deadline = clock_ns(CLOCK_MONOTONIC) + LW_INIT_LOCK_WAIT_NS;
  for (;;) {
    int rc = lw_internal_lock_byte(fd, LW_SEG_INIT_LOCK, F_WRLCK);
    if (rc == 0) return 0;
    if (rc != -EAGAIN && rc != -EACCES && rc != -EINTR) return rc;
    if (clock_ns(CLOCK_MONOTONIC) > deadline) return -ETIMEDOUT;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static void init_header(lw_seg_header_t *h, uint32_t slots) {
  /* The file is fresh or abandoned half-way; no reader trusts it until the
   * magic is published. */
  lw_store64(&h->magic, 0);
  __atomic_store_n(&h->version_major, (uint16_t)LW_SEG_VERSION_MAJOR, __ATOMIC_RELAXED);
  __atomic_store_n(&h->version_minor, (uint16_t)LW_SEG_VERSION_MINOR, __ATOMIC_RELAXED);
  lw_store32(&h->header_size, LW_SEG_HEADER_SIZE);
  lw_store32(&h->slot_size, LW_SEG_SLOT_SIZE);
  lw_store32(&h->slot_count, slots);
  lw_store64(&h->segment_id, lw_internal_random_u64());
  lw_store64(&h->created_mono_ns, clock_ns(CLOCK_MONOTONIC));
  lw_store64(&h->created_real_ns, clock_ns(CLOCK_REALTIME));
  lw_store32(&h->creator_pid, (uint32_t)getpid());
  lw_store32(&h->reserved0, 0);
  lw_zero_words(h->reserved, sizeof h->reserved);
  __atomic_store_n(&h->magic, LW_SEG_MAGIC, __ATOMIC_RELEASE);
}

/* Validates the header of an existing, published segment; the slot count
 * on success. */
static int check_header(const char *path, const lw_seg_header_t *h,
                        uint64_t magic, size_t size, uint32_t *slots) {
  if (magic != LW_SEG_MAGIC) {
    lw_internal_set_error("%s is not a loopwatch segment (magic 0x%016llx)",
                          path, (unsigned long long)magic);
    return -EPROTO;
  }
  unsigned major = __atomic_load_n(&h->version_major, __ATOMIC_RELAXED);
  unsigned minor = __atomic_load_n(&h->version_minor, __ATOMIC_RELAXED);
  if (major != LW_SEG_VERSION_MAJOR) {
    lw_internal_set_error("segment %s has format version %u.%u; this library "
                          "writes version %u.%u and cannot share it",
                          path, major, minor, LW_SEG_VERSION_MAJOR,
                          LW_SEG_VERSION_MINOR);
    return -EPROTO;
  }
  uint32_t hs = __atomic_load_n(&h->header_size, __ATOMIC_RELAXED);
  uint32_t ss = __atomic_load_n(&h->slot_size, __ATOMIC_RELAXED);
  uint32_t n = __atomic_load_n(&h->slot_count, __ATOMIC_RELAXED);
  if (hs != LW_SEG_HEADER_SIZE || ss != LW_SEG_SLOT_SIZE || n < 1 ||
      n > LW_SEG_MAX_SLOTS || lw_seg_size(n) > size) {
    lw_internal_set_error("segment %s is corrupt (header %u, slot %u x %u, "
                          "file %zu bytes); remove it so that it is created "
                          "again",
                          path, hs, ss, n, size);
    return -EPROTO;
  }
  *slots = n;
  return 0;
}

/* The mode of a segment this process creates: 0660 in a setgid directory
 * (an emptyDir of a pod with an fsGroup: both containers are in the group),
 * else 0666, since the app and the sidecar may run as different users with
 * no group in common. lib/FORMAT.md, "Creation". */
static mode_t creation_mode(const char *dir) {
  struct stat st;
  return stat(dir, &st) == 0 && (st.st_mode & S_ISGID) ? 0660 : 0666;
}

/* The directory part of `path` ("." for none). */
static void dir_of(const char *path, char *dir, size_t size) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(dir, size, ".");
  } else if (slash == path) {
    snprintf(dir, size, "/");
  } else {
    snprintf(dir, size, "%.*s", (int)(slash - path), path);
  }
}

/* Sizes and initialises a new segment file, then publishes it (magic last).
 * Returns the mapping in *base. */
static int init_new(int fd, const char *path, uint32_t slots, mode_t mode, uint8_t **base) {
  const size_t size = (size_t)lw_seg_size(slots);
  if (ftruncate(fd, (off_t)size) != 0) {
    int rc = -errno;
    lw_internal_set_error("cannot size segment %s to %zu bytes: %s", path, size, strerror(-rc));
    return rc;
  }
  (void)fchmod(fd, mode); /* past the umask: the other container must get in */
  *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (*base == MAP_FAILED) {
    int rc = -errno;
    lw_internal_set_error("cannot map segment %s: %s", path, strerror(-rc));
    return rc;
  }
  init_header((lw_seg_header_t *)(void *)*base, slots);
  return 0;
}

/* Creates the segment at `path` complete or not at all: a file made in the
 * same directory without a name (O_TMPFILE; else a name of its own), fully
 * initialised, then linked to `path`, which fails if someone else's is
 * there by then, or with `replace`, renamed over whatever is there. 0 when
 * ours is in place; -EEXIST when another was first; another -errno on
 * failure (with lw_last_error()). */
static int create_complete(const char *path, uint32_t slots, int replace) {
  char dir[4096], tmp[4200];
  dir_of(path, dir, sizeof dir);
  const mode_t mode = creation_mode(dir);
  int named = 0;
  int fd = open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, mode);
  if (fd < 0) { /* no O_TMPFILE on this file system */
    snprintf(tmp, sizeof tmp, "%s.new-%d-%08x", path, (int)getpid(),
             (unsigned)lw_internal_random_u64());
    fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    named = 1;
  }
  if (fd < 0) {
    int rc = -errno;
    lw_internal_set_error("cannot create segment %s: %s", path, strerror(-rc));
    return rc;
  }
  uint8_t *base = MAP_FAILED;
  int rc = init_new(fd, path, slots, mode, &base);
  if (rc == 0 && replace) {
    if (!named) { /* a name to rename from */
      char self[64];
      snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
      snprintf(tmp, sizeof tmp, "%s.new-%d-%08x", path, (int)getpid(),
               (unsigned)lw_internal_random_u64());
      named = linkat(AT_FDCWD, self, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) == 0;
      if (!named) rc = -errno;
    }
    if (rc == 0) rc = rename(tmp, path) == 0 ? 0 : -errno;
    if (rc != 0) lw_internal_set_error("cannot replace segment %s: %s", path, strerror(-rc));
  } else if (rc == 0) {
    if (named) {
      rc = link(tmp, path) == 0 ? 0 : -errno;
    } else {
      char self[64];
      snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
      rc = linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0 ? 0 : -errno;
    }
    if (rc != 0 && rc != -EEXIST) {
      lw_internal_set_error("cannot create segment %s: %s", path, strerror(-rc));
    }
  }
  if (base != MAP_FAILED) munmap(base, (size_t)lw_seg_size(slots));
  if (named) unlink(tmp);
  close(fd);
  return rc;
}

int lw_internal_segment_open(const char *path, uint32_t want_slots,
                             struct lw_seg_map *out) {
  int rc;
  if (want_slots < 1 || want_slots > LW_SEG_MAX_SLOTS) {
    /* A segment no writer would accept must never be created. */
    lw_internal_set_error("cannot create segment %s with %u slots: expected "
                          "1 to %u",
                          path, want_slots, LW_SEG_MAX_SLOTS);
    return -EINVAL;
  }
  /* Never through a symbolic link, never anything but a regular file (a
   * FIFO must not block the open: O_NONBLOCK, cleared below). */
  const int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
  int fd = open(path, flags);
  if (fd < 0 && errno == ENOENT) {
    rc = create_complete(path, want_slots, 0);
    if (rc != 0 && rc != -EEXIST) return rc;
    fd = open(path, flags);
  }
  if (fd < 0) {
    rc = -errno;
    if (rc == -ELOOP) {
      lw_internal_set_error("segment %s is a symbolic link; loopwatch does not follow "
                            "one: give the path of the file itself",
                            path);
    } else {
      lw_internal_set_error("cannot open segment %s: %s", path, strerror(-rc));
    }
    return rc;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    lw_internal_set_error("segment %s is not a regular file; expected the segment "
                          "file (or nothing there yet)",
                          path);
    close(fd);
    return -EPROTO;
  }
  (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  rc = lock_init_byte(fd);
  if (rc) {
    lw_internal_set_error("cannot lock segment %s for initialisation: %s",
                          path, strerror(-rc));
    close(fd);
    return rc;
  }

  uint8_t *base = MAP_FAILED;
  size_t size = 0;
  uint32_t slots = want_slots;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    lw_internal_set_error("cannot stat segment %s: %s", path, strerror(-rc));
    goto fail;
  }
  if (st.st_size == 0) {
    /* An empty file (made by someone else, or left by a creator of an
     * earlier version): the one kind of existing file we initialise, under
     * the init lock. */
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    size = (size_t)lw_seg_size(slots);
    rc = init_new(fd, path, slots, creation_mode(dir), &base);
    if (rc) goto fail;
  } else if ((uint64_t)st.st_size < LW_SEG_HEADER_SIZE) {
    rc = -EPROTO;
    lw_internal_set_error("segment %s is %lld bytes, smaller than a header "
                          "(%u): not a loopwatch segment; remove it if it is a "
                          "leftover",
                          path, (long long)st.st_size, LW_SEG_HEADER_SIZE);
    goto fail;
  } else {
    size = (size_t)st.st_size;
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
      rc = -errno;
      lw_internal_set_error("cannot map segment %s: %s", path, strerror(-rc));
      goto fail;
    }
    const lw_seg_header_t *h = (const lw_seg_header_t *)(const void *)base;
    const uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    if (magic == 0) {
      /* Segments are created complete (create_complete): a file here that
       * is not empty and has no magic is someone's data, and stays as it
       * is. */
      rc = -EPROTO;
      lw_internal_set_error("%s is not a loopwatch segment (%zu bytes that do not start "
                            "with its magic); it is left as it is: check "
                            "LOOPWATCH_SEGMENT, or remove the file if it is a leftover",
                            path, size);
      goto fail;
    }
    rc = check_header(path, h, magic, size, &slots);
    if (rc) goto fail;
  }
  (void)lw_internal_lock_byte(fd, LW_SEG_INIT_LOCK, F_UNLCK);
  out->fd = fd;
  out->base = base;
  out->size = size;
  out->slot_count = slots;
  return 0;

fail:
  if (base != MAP_FAILED) munmap(base, size);
  close(fd); /* also drops the init lock */
  return rc;
}

int lw_internal_segment_replace(const char *path, uint32_t slots) {
  return create_complete(path, slots, 1);
}

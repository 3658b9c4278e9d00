// SPDX-License-Identifier: Apache-2.0
//
// memory.h: keeping the sidecar small, since it runs in every pod.
//
// Two things made its memory grow or sit idle (bench/sidecar/README.md has
// the figures):
//   - glibc's allocator keeps an arena per thread and, after a large block
//     is freed, raises the size from which blocks are mmapped: every HTTP
//     worker then kept a /metrics body (200 KB for 64 loops, 800 KB for 256)
//     in its own heap for good;
//   - Debian's cpp-httplib links OpenSSL (and brotli) for TLS, which the
//     sidecar's HTTP never uses, yet their start-up code touches some 3 MB
//     of their pages.
#ifndef LOOPWATCH_SIDECAR_MEMORY_H_
#define LOOPWATCH_SIDECAR_MEMORY_H_

#include <cstddef>

namespace loopwatch {

// Before any thread starts: at most two malloc arenas, and blocks of 64 KiB
// and more (a /metrics body) mmapped, so returned to the kernel when freed.
// Leaves glibc alone, and returns false, when GLIBC_TUNABLES sets any
// glibc.malloc tunable.
bool TuneAllocator();

// Drops this process's resident pages of the libraries it maps but never
// calls (libssl, libcrypto, brotli): only their code and other mappings
// that hold no page of ours (clean in smaps), so that nothing is lost; a
// page used after all is read back from the file. Returns the bytes
// released.
size_t ReleaseUnusedLibraryPages();

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_MEMORY_H_

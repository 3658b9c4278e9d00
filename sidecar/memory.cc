// SPDX-License-Identifier: Apache-2.0
#include "memory.h"

#include <malloc.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace loopwatch {
namespace {

// The libraries of TLS and compression that cpp-httplib links and the
// sidecar's plain HTTP never calls. (zlib is left alone: httplib gzips
// a /metrics body when the scraper asks for it.)
bool Unused(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  for (const char* prefix : {"libssl.so", "libcrypto.so", "libbrotlienc.so", "libbrotlidec.so",
                             "libbrotlicommon.so"}) {
    if (name.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

}  // namespace

bool TuneAllocator() {
  // An operator's own glibc.malloc tunables win (and let the bench measure
  // glibc's defaults against these).
  const char* tunables = getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && strstr(tunables, "glibc.malloc.") != nullptr) return false;
  // Measured on 256 loops after 2,000 scrapes (bench/sidecar/README.md,
  // "Memory"): glibc's defaults 17.4 MB; two arenas alone 12.3 MB; bodies
  // kept on the heap with its top returned above 256 KiB 11.9 MB, and
  // growing with the scrapes (fragments); every block of 64 KiB and more
  // mmapped 10.8 MB, flat. The price is a body faulted in anew at each
  // scrape: /metrics renders in 1.2 ms instead of 0.55 ms for 256 loops, a
  // cost paid once per scrape interval.
  mallopt(M_ARENA_MAX, 2);
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);  // fixed: glibc's dynamic one only grows
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  return true;
}

size_t ReleaseUnusedLibraryPages() {
  // /proc/self/smaps: a header line per mapping ("start-end perms offset dev
  // inode path"), then "Key: value kB" lines, among them Private_Dirty.
  std::ifstream smaps("/proc/self/smaps");
  struct Mapping {
    uintptr_t start = 0, end = 0;
    bool candidate = false;
    size_t dirty_kb = 0;
  };
  size_t released = 0;
  Mapping m;
  auto finish = [&](const Mapping& x) {
    if (!x.candidate || x.dirty_kb != 0) return;
    if (madvise(reinterpret_cast<void*>(x.start), x.end - x.start, MADV_DONTNEED) == 0) {
      released += x.end - x.start;
    }
  };
  for (std::string line; std::getline(smaps, line);) {
    unsigned long start, end;
    char perms[8] = {};
    if (sscanf(line.c_str(), "%lx-%lx %7s", &start, &end, perms) == 3 && line.find('-') < 17) {
      finish(m);
      m = Mapping{};
      m.start = start;
      m.end = end;
      std::istringstream in(line);
      std::string range, p, offset, dev, inode, path;
      in >> range >> p >> offset >> dev >> inode >> path;
      // Read-only or code, never written: dropping a page loses nothing.
      m.candidate = !path.empty() && Unused(path) && perms[1] == '-';
      continue;
    }
    size_t kb;
    if (sscanf(line.c_str(), "Private_Dirty: %zu kB", &kb) == 1) m.dirty_kb = kb;
  }
  finish(m);
  return released;
}

}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// Runs the fuzz harness over the seed corpus (tests/fuzz/corpus/), and over
// a few thousand deterministic mutations of each seed (byte flips,
// truncations, extensions), so that the harness is built and exercised by
// ctest with any compiler, not only with clang's libFuzzer.
//
//   segment_reader_corpus_test DIR
//
// Seeds named valid-* must read as valid segments.
#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "segment_reader_harness.h"

namespace {

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// xorshift64*: deterministic mutations, the same on every run.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * UINT64_C(2685821657736338717);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  if (names.size() < 6) {
    fprintf(stderr, "%s: expected at least 6 seeds, found %zu\n", dir.c_str(),
            names.size());
    return 1;
  }
  int failures = 0, runs = 0, valid = 0;
  Rng rng{UINT64_C(0x9E3779B97F4A7C15)};
  for (const std::string& name : names) {
    std::vector<uint8_t> seed = ReadFile(dir + "/" + name);
    loopwatch::SegmentStatus st = lwfuzz::RunSegmentReader(seed.data(), seed.size());
    runs++;
    printf("%-28s %6zu bytes  %s\n", name.c_str(), seed.size(),
           loopwatch::SegmentStatusName(st));
    if (name.rfind("valid-", 0) == 0) {
      valid++;
      if (st != loopwatch::SegmentStatus::kOk) {
        fprintf(stderr, "seed %s should read as a valid segment\n", name.c_str());
        failures++;
      }
    }
    for (int m = 0; m < 300; m++) {
      std::vector<uint8_t> b = seed;
      switch (rng.Next() % 4) {
        case 0:  // flip a few bytes, mostly in the header and slot fields
          for (int k = 0, n = 1 + rng.Next() % 8; k < n && !b.empty(); k++) {
            size_t at = rng.Next() % 2 ? rng.Next() % std::min<size_t>(b.size(), 1024)
                                       : rng.Next() % b.size();
            b[at] ^= static_cast<uint8_t>(1 + rng.Next() % 255);
          }
          break;
        case 1:  // truncate
          b.resize(b.empty() ? 0 : rng.Next() % b.size());
          break;
        case 2:  // extend with noise
          for (int k = 0, n = rng.Next() % 9000; k < n; k++) {
            b.push_back(static_cast<uint8_t>(rng.Next()));
          }
          break;
        default:  // overwrite a 32-bit word with an edge value
          if (b.size() >= 4) {
            const uint32_t edges[] = {0, 1, 2, 3, 0x7FFFFFFF, 0x80000000u,
                                      0xFFFFFFFFu, 1024, 1025, 7423, 7424};
            uint32_t v = edges[rng.Next() % (sizeof edges / sizeof edges[0])];
            size_t at = (rng.Next() % (b.size() / 4)) * 4;
            memcpy(b.data() + at, &v, 4);
          }
      }
      lwfuzz::RunSegmentReader(b.data(), b.size());
      runs++;
    }
  }
  if (valid < 2) {
    fprintf(stderr, "expected at least 2 valid-* seeds, found %d\n", valid);
    failures++;
  }
  printf("%d runs over %zu seeds, %d failure(s)\n", runs, names.size(), failures);
  return failures ? 1 : 0;
}

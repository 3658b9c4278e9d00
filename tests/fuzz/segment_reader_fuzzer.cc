// SPDX-License-Identifier: Apache-2.0
//
// libFuzzer entry point: the segment reader fed the fuzz input as a segment
// file. Built only with clang (see CMakeLists.txt, which also says how to
// run it).
#include <cstddef>
#include <cstdint>

#include "segment_reader_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lwfuzz::RunSegmentReader(data, size);
  return 0;
}

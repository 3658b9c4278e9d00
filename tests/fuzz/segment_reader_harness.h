// SPDX-License-Identifier: Apache-2.0
//
// The segment reader fed arbitrary bytes as a segment file: the one harness
// behind the libFuzzer target (segment_reader_fuzzer) and the corpus test
// that ctest runs with any compiler (segment_reader_corpus_test).
#ifndef LOOPWATCH_TESTS_FUZZ_SEGMENT_READER_HARNESS_H_
#define LOOPWATCH_TESTS_FUZZ_SEGMENT_READER_HARNESS_H_

#include <cstddef>
#include <cstdint>

#include "reader.h"

namespace lwfuzz {

// Writes `data` to a scratch segment file, snapshots it with a fresh
// SegmentReader (twice: the second pass takes the reader's reuse paths), and
// checks every invariant the reader promises: the status the validation
// rules of lib/FORMAT.md section 9 predict, no slots unless ok, strings
// NUL-terminated within their arrays, report text within 7423 bytes, enums in
// range, free slots empty. Aborts on a violation (that is what a fuzzer
// reports). Returns the status.
loopwatch::SegmentStatus RunSegmentReader(const uint8_t* data, size_t size);

// The status the validation rules predict for these bytes.
loopwatch::SegmentStatus ExpectedStatus(const uint8_t* data, size_t size);

}  // namespace lwfuzz

#endif  // LOOPWATCH_TESTS_FUZZ_SEGMENT_READER_HARNESS_H_

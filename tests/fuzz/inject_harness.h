// SPDX-License-Identifier: Apache-2.0
//
// inject_harness.h: the patcher (sidecar/inject) fed arbitrary bytes as a
// manifest. Whatever the bytes, parsing and patching must not crash or
// throw, and for every object the patcher's promises must hold:
//
//   - inject(inject(x)) == inject(x), and the second reports no change;
//   - uninject(inject(x)) == uninject(x) (x itself when x was not injected);
//   - a refused or skipped object is left exactly as it was;
//   - the result can be written back out (YAML and JSON).
//
// A broken promise aborts with a message, which libFuzzer reports.
#ifndef LOOPWATCH_TESTS_FUZZ_INJECT_HARNESS_H_
#define LOOPWATCH_TESTS_FUZZ_INJECT_HARNESS_H_

#include <cstddef>
#include <cstdint>

namespace lwfuzz {

void RunInject(const uint8_t* data, size_t size);

}  // namespace lwfuzz

#endif  // LOOPWATCH_TESTS_FUZZ_INJECT_HARNESS_H_

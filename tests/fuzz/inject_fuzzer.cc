// SPDX-License-Identifier: Apache-2.0
//
// libFuzzer entry point: the patcher of `loopwatch inject` and the webhook
// fed the fuzz input as a manifest (inject_harness.h says what is checked).
#include <cstddef>
#include <cstdint>

#include "inject_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lwfuzz::RunInject(data, size);
  return 0;
}

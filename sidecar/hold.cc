// SPDX-License-Identifier: Apache-2.0
#include "hold.h"

#include <utility>

namespace loopwatch {

void Hold::Set(int64_t now_ns, int64_t until_ns, std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  reason_ = std::move(reason);
  set_ns_ = now_ns;
  count_.fetch_add(1, std::memory_order_relaxed);
  until_ns_.store(until_ns, std::memory_order_release);
}

void Hold::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  until_ns_.store(0, std::memory_order_release);
  reason_.clear();
  set_ns_ = 0;
}

Hold::State Hold::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  State s;
  s.until_ns = until_ns_.load(std::memory_order_acquire);
  s.set_ns = set_ns_;
  s.reason = reason_;
  s.count = count_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace loopwatch

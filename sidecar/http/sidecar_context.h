// SPDX-License-Identifier: Apache-2.0
//
// sidecar_context.h: what the sidecar's route sets (public and admin)
// answer from. Handlers copy the View pointer and answer from memory; they
// never wait on the poll thread.
#ifndef LOOPWATCH_SIDECAR_HTTP_SIDECAR_CONTEXT_H_
#define LOOPWATCH_SIDECAR_HTTP_SIDECAR_CONTEXT_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "app_probes.h"
#include "config.h"
#include "hold.h"
#include "http/routing.h"
#include "metrics.h"
#include "model.h"

namespace loopwatch {

struct SidecarContext {
  const Config* config = nullptr;
  // The latest View; never null (an empty View before the first poll).
  std::function<std::shared_ptr<const View>()> view;
  Hold* hold = nullptr;
  // The containers' own probes (config app_probes); never null.
  const AppProbes* app_probes = nullptr;
  SidecarMetrics* metrics = nullptr;
  RouteLog log;                   // holds set and cleared, handler exceptions
  std::function<int64_t()> clock;  // CLOCK_MONOTONIC ns
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_SIDECAR_CONTEXT_H_

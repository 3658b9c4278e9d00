// SPDX-License-Identifier: Apache-2.0
//
// public_routes.h: the public port (`listen`, default 0.0.0.0:9321), which
// any pod of the cluster may reach. GET and HEAD only:
//   /livez /readyz /startupz  the verdicts (?verbose, ?format=json,
//                             Accept: application/json), also on the gate's
//                             fast path
//   /healthz                  the sidecar itself, also on the fast path
//   /metrics                  Prometheus text format
//   /                         an index
// Nothing here carries stacks or other detail of the app's code (those are
// on the admin port). Requests to the five endpoints are counted by code.
#ifndef LOOPWATCH_SIDECAR_HTTP_PUBLIC_ROUTES_H_
#define LOOPWATCH_SIDECAR_HTTP_PUBLIC_ROUTES_H_

#include "http/gate.h"
#include "http/sidecar_context.h"

namespace loopwatch {

void AddPublicRoutes(GatedServer* server, const SidecarContext& ctx);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_PUBLIC_ROUTES_H_

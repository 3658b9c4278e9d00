// SPDX-License-Identifier: Apache-2.0
//
// admin_routes.h: the admin port (`admin_listen`, default 127.0.0.1:9322,
// "off" for none), for someone in `kubectl exec` or a port-forward:
//   GET /debug/loops           every loop in detail (JSON)
//   GET /debug/stalls          recent stall reports with stacks (JSON)
//   GET|POST|DELETE /hold      the liveness hold (hold.h)
//   GET /                      an index
// A body is refused over kMaxPayloadBytes (413) or chunked (411) before it
// is read; a POST or DELETE without Content-Length (`curl -X POST`) is
// bodiless.
#ifndef LOOPWATCH_SIDECAR_HTTP_ADMIN_ROUTES_H_
#define LOOPWATCH_SIDECAR_HTTP_ADMIN_ROUTES_H_

#include "http/gate.h"
#include "http/sidecar_context.h"

namespace loopwatch {

void AddAdminRoutes(GatedServer* server, const SidecarContext& ctx);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_ADMIN_ROUTES_H_

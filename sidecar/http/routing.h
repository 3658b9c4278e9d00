// SPDX-License-Identifier: Apache-2.0
//
// routing.h: what every route set on a GatedServer shares: replies, the
// short error bodies, the keep-alive header, handler exceptions turned into
// 500, and the request helpers. A route set (public_routes.h,
// admin_routes.h) adds its own handlers and refusals on top.
#ifndef LOOPWATCH_SIDECAR_HTTP_ROUTING_H_
#define LOOPWATCH_SIDECAR_HTTP_ROUTING_H_

#include <httplib.h>

#include <functional>
#include <string>

#include "http/gate.h"

namespace loopwatch {

inline constexpr const char kTextType[] = "text/plain; charset=utf-8";
inline constexpr const char kJsonType[] = "application/json";

// Told of handler exceptions (and, by route sets, of what they change).
using RouteLog = std::function<void(const std::string& event, const std::string& detail)>;

// Sets status, body (moved, never copied: /metrics is large) and type.
void Reply(httplib::Response& res, int status, std::string body,
           const char* type = kTextType);

// Content-Length per RFC 9112 6.3: one value (repeats must agree), digits
// only. False if absent or invalid.
bool ParseContentLength(const httplib::Request& req, unsigned long long* n);

// Installs on `server` what every route set has: short text bodies for the
// errors httplib raises itself (404 names `hint`, the routes to try),
// handler exceptions as a logged 500 that closes the connection, and the
// Keep-Alive header the gate keeps its promise with.
void InstallCommonHandlers(GatedServer* server, const char* hint, RouteLog log);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_ROUTING_H_

// SPDX-License-Identifier: Apache-2.0
#include "http/admin_routes.h"

#include "format.h"
#include "probes.h"

namespace loopwatch {
namespace {

const char kAdminHint[] = "try /debug/loops /debug/stalls /hold";

void ClearHold(const SidecarContext& ctx, httplib::Response& res) {
  const int64_t now = ctx.clock();
  const bool was = ctx.hold->Active(now);
  ctx.hold->Clear();
  if (was && ctx.log) ctx.log("hold cleared", "liveness probes judged again");
  Reply(res, 200, HoldJson(*ctx.hold, *ctx.config, now), kJsonType);
}

// POST /hold?for=DURATION&reason=TEXT; for=0 ends it.
void SetHold(const SidecarContext& ctx, const httplib::Request& req, httplib::Response& res) {
  const Config& config = *ctx.config;
  const std::string usage =
      "expected POST /hold?for=DURATION&reason=TEXT, e.g. for=10m (at most " +
      FormatDuration(config.max_hold) + "); for=0 or DELETE /hold ends it\n";
  if (!req.has_param("for")) {
    Reply(res, 400, "missing for=; " + usage);
    return;
  }
  const std::string text = req.get_param_value("for");
  Duration d{};
  if (!ParseDuration(text, &d)) {
    Reply(res, 400, "bad duration \"" + OneLine(text.substr(0, 64)) + "\"; " + usage);
    return;
  }
  if (d.count() == 0) {
    ClearHold(ctx, res);
    return;
  }
  if (d > config.max_hold) {
    Reply(res, 400, "for=" + OneLine(text.substr(0, 64)) + " is longer than max_hold (" +
                        FormatDuration(config.max_hold) + "); " + usage);
    return;
  }
  std::string reason = OneLine(req.get_param_value("reason").substr(0, 200));
  if (reason.empty()) reason = "no reason given";
  const int64_t now = ctx.clock();
  ctx.hold->Set(now, now + d.count(), reason);
  if (ctx.log) {
    ctx.log("hold set", "for " + FormatDuration(d) + " from " + req.remote_addr + ": " + reason);
  }
  Reply(res, 200, HoldJson(*ctx.hold, config, now), kJsonType);
}

}  // namespace

void AddAdminRoutes(GatedServer* server, const SidecarContext& ctx) {
  InstallCommonHandlers(server, kAdminHint, ctx.log);
  server->set_pre_routing_handler([ctx](const httplib::Request& req, httplib::Response& res) {
    const std::string& m = req.method;
    if (m != "GET" && m != "HEAD" && m != "POST" && m != "DELETE") {
      CloseAfterResponse(res);
      res.set_header("Allow", "GET, HEAD, POST, DELETE");
      Reply(res, 405, "method not allowed\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.has_header("Transfer-Encoding")) {
      CloseAfterResponse(res);
      Reply(res, 411, "a body needs Content-Length\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!req.has_header("Content-Length")) {
      if (m == "POST" || m == "DELETE") {
        // No length, no body (RFC 9112 6.3), as `curl -X POST URL` sends it;
        // httplib would wait for the client to close instead. Answered here.
        if (req.path != "/hold") {
          Reply(res, 404, std::string("not found; ") + kAdminHint + "\n");
        } else if (m == "POST") {
          SetHold(ctx, req, res);
        } else {
          ClearHold(ctx, res);
        }
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    }
    unsigned long long n = 0;
    if (!ParseContentLength(req, &n)) {
      CloseAfterResponse(res);
      Reply(res, 400, "bad request: invalid Content-Length\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (n > kMaxPayloadBytes) {
      CloseAfterResponse(res);
      Reply(res, 413,
            "payload too large (at most " + std::to_string(kMaxPayloadBytes) + " bytes)\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (n > 0 && m != "POST" && m != "DELETE") CloseAfterResponse(res);  // never read
    return httplib::Server::HandlerResponse::Unhandled;
  });

  server->Get("/", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200,
          "loopwatch " LOOPWATCH_VERSION " admin\n"
          "GET    /debug/loops              every loop, in detail (JSON)\n"
          "GET    /debug/stalls             recent stall reports with stacks (JSON)\n"
          "GET    /hold                     the liveness hold\n"
          "POST   /hold?for=10m&reason=...  make /livez pass for a while\n"
          "DELETE /hold                     end the hold\n");
  });
  server->Get("/debug/loops", [ctx](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, LoopsJson(*ctx.view(), ctx.clock()), kJsonType);
  });
  server->Get("/debug/stalls", [ctx](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, StallsJson(*ctx.view(), ctx.clock()), kJsonType);
  });
  server->Get("/hold", [ctx](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, HoldJson(*ctx.hold, *ctx.config, ctx.clock()), kJsonType);
  });
  server->Post("/hold", [ctx](const httplib::Request& req, httplib::Response& res) {
    SetHold(ctx, req, res);
  });
  server->Delete("/hold", [ctx](const httplib::Request&, httplib::Response& res) {
    ClearHold(ctx, res);
  });
}

}  // namespace loopwatch

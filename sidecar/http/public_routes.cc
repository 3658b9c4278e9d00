// SPDX-License-Identifier: Apache-2.0
#include "http/public_routes.h"

#include <string_view>

#include "app_probes.h"
#include "probes.h"

namespace loopwatch {
namespace {

bool WantsJson(const httplib::Request& req) {
  if (req.has_param("format")) return req.get_param_value("format") == "json";
  return req.get_header_value("Accept").find("application/json") != std::string::npos;
}

bool Flag(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return false;
  const std::string v = req.get_param_value(name);
  return v != "0" && v != "false" && v != "no";
}

// The counted endpoint of a path, if it is one.
bool CountedEndpoint(std::string_view path, Endpoint* e) {
  if (path == "/livez") *e = Endpoint::kLivez;
  else if (path == "/readyz") *e = Endpoint::kReadyz;
  else if (path == "/startupz") *e = Endpoint::kStartupz;
  else if (path == "/healthz") *e = Endpoint::kHealthz;
  else if (path == "/metrics") *e = Endpoint::kMetrics;
  else return false;
  return true;
}

// The probe of a path; false for /healthz and everything else.
bool ProbeOf(std::string_view path, Probe* p) {
  if (path == "/livez") *p = Probe::kLive;
  else if (path == "/readyz") *p = Probe::kReady;
  else if (path == "/startupz") *p = Probe::kStartup;
  else return false;
  return true;
}

void ReplyProbe(httplib::Response& res, ProbeResponse r) {
  res.set_header("Cache-Control", "no-store");
  Reply(res, r.status, std::move(r.body), r.content_type.c_str());
}

}  // namespace

void AddPublicRoutes(GatedServer* server, const SidecarContext& ctx) {
  const char* const kHint = "try /livez /readyz /startupz /healthz /metrics";
  InstallCommonHandlers(server, kHint, ctx.log);
  server->set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    if (req.method != "GET" && req.method != "HEAD") {
      // Answered without reading any body, so the connection must close.
      CloseAfterResponse(res);
      res.set_header("Allow", "GET, HEAD");
      Reply(res, 405, "method not allowed: the probe port serves GET only\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    unsigned long long n = 0;
    if (req.has_header("Content-Length") && !ParseContentLength(req, &n)) {
      CloseAfterResponse(res);
      Reply(res, 400, "bad request: invalid Content-Length\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.has_header("Transfer-Encoding") ||
        (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0")) {
      CloseAfterResponse(res);  // a GET body is never read
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server->set_logger([ctx](const httplib::Request& req, const httplib::Response& res) {
    Endpoint e;
    if (CountedEndpoint(req.path, &e)) ctx.metrics->CountProbe(e, res.status);
  });

  // The probes and /healthz: the same functions on the gate's fast path and
  // in a worker. In memory and in microseconds, as the gate requires: a
  // pointer copy of the View, formatting, an atomic add for the count.
  server->SetFastPath(
      [ctx](const FastRequest& req, FastResponse* out) {
        Probe p;
        ProbeResponse r;
        if (req.path == "/healthz") {
          r = HealthzResponse(*ctx.view(), ctx.clock(), *ctx.config);
        } else if (ProbeOf(req.path, &p)) {
          std::shared_ptr<const View> view = ctx.view();
          if (req.has_container) {
            // A bad name, or a container whose own probe is to be asked
            // (I/O, with its timeout): a worker answers.
            if (!ValidContainerName(req.container)) return false;
            if (ContainerAwaitsLoops(*view, req.container) &&
                ctx.app_probes->Find(std::string(req.container), p))
              return false;
          }
          r = AnswerProbe(p, *view, *ctx.config, *ctx.hold, ctx.clock(), req.json,
                          req.verbose, req.container);
        } else {
          return false;
        }
        out->status = r.status;
        out->content_type = std::move(r.content_type);
        out->body = std::move(r.body);
        return true;
      },
      [ctx](const FastRequest& req, int status) {
        Endpoint e;
        if (CountedEndpoint(req.path, &e)) ctx.metrics->CountProbe(e, status);
      });
  for (Probe p : {Probe::kLive, Probe::kReady, Probe::kStartup}) {
    server->Get(std::string("/") + ProbeName(p),
                [ctx, p](const httplib::Request& req, httplib::Response& res) {
                  std::shared_ptr<const View> view = ctx.view();
                  std::string container;
                  if (req.has_param("container")) {
                    container = req.get_param_value("container");
                    if (!ValidContainerName(container)) {
                      Reply(res, 400,
                            "bad request: ?container= must be a container name (1 to 63 "
                            "of a-z, 0-9 and -)\n");
                      return;
                    }
                    const AppProbe* own = ctx.app_probes->Find(container, p);
                    if (own && ContainerAwaitsLoops(*view, container)) {
                      // No loop of it has beaten: its own probe answers,
                      // so an app that does not use the library is judged
                      // as it was before loopwatch came.
                      ReplyProbe(res, ForwardProbe(*own, p, container));
                      return;
                    }
                  }
                  ReplyProbe(res, AnswerProbe(p, *view, *ctx.config, *ctx.hold, ctx.clock(),
                                              WantsJson(req), Flag(req, "verbose"),
                                              container));
                });
  }
  server->Get("/healthz", [ctx](const httplib::Request&, httplib::Response& res) {
    ReplyProbe(res, HealthzResponse(*ctx.view(), ctx.clock(), *ctx.config));
  });
  server->Get("/metrics", [ctx](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, ctx.metrics->Render(*ctx.view(), *ctx.hold, ctx.clock()),
          kMetricsContentType);
  });
  server->Get("/", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200,
          "loopwatch " LOOPWATCH_VERSION "\n"
          "/livez     liveness: fails when a loop is stalled or dead\n"
          "/readyz    readiness: fails on lag, a stall, or the app's own flag\n"
          "/startupz  startup: passes once the expected loops have beaten\n"
          "           (?verbose: a line per loop; ?format=json or "
          "Accept: application/json: JSON)\n"
          "/healthz   the sidecar itself\n"
          "/metrics   Prometheus metrics\n");
  });
}

}  // namespace loopwatch

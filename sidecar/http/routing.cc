// SPDX-License-Identifier: Apache-2.0
#include "http/routing.h"

#include <cstdlib>

namespace loopwatch {

void Reply(httplib::Response& res, int status, std::string body, const char* type) {
  res.status = status;
  res.body = std::move(body);
  res.headers.erase("Content-Type");
  res.set_header("Content-Type", type);
}

bool ParseContentLength(const httplib::Request& req, unsigned long long* n) {
  const size_t count = req.get_header_value_count("Content-Length");
  if (count == 0) return false;
  const std::string v = req.get_header_value("Content-Length");
  for (size_t i = 1; i < count; i++) {
    if (req.get_header_value("Content-Length", i) != v) return false;
  }
  if (v.empty() || v.size() > 19) return false;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
  }
  *n = strtoull(v.c_str(), nullptr, 10);
  return true;
}

namespace {

// Short bodies for errors httplib raises itself (its own are empty).
httplib::Server::HandlerResponse ErrorBody(const httplib::Request& req,
                                           httplib::Response& res, const char* hint) {
  if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
  std::string body;
  switch (res.status) {
    case 400: body = "bad request\n"; break;
    case 404: body = std::string("not found; ") + hint + "\n"; break;
    case 405: body = "method not allowed\n"; break;
    case 413:
      body = "payload too large (at most " + std::to_string(kMaxPayloadBytes) + " bytes)\n";
      break;
    case 414: body = "request line too long\n"; break;
    case 416: body = "range not satisfiable\n"; break;
    case 500: body = "internal error\n"; break;
    default: body = "error " + std::to_string(res.status) + "\n"; break;
  }
  // After a malformed request the stream is out of step (an unread body, a
  // half-parsed head): answer, then close.
  if (res.status == 400 || res.status == 413 || res.status == 414 || res.status >= 500 ||
      req.method.empty()) {
    CloseAfterResponse(res);
  }
  res.set_content(body, kTextType);
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

void InstallCommonHandlers(GatedServer* server, const char* hint, RouteLog log) {
  server->set_error_handler(httplib::Server::HandlerWithResponse(
      [hint](const httplib::Request& req, httplib::Response& res) {
        return ErrorBody(req, res, hint);
      }));
  server->set_exception_handler([log](const httplib::Request& req, httplib::Response& res,
                                      std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    if (log) log("http handler exception", req.method + " " + req.path + ": " + what);
    CloseAfterResponse(res);
    Reply(res, 500, "internal error\n");
  });
  // httplib adds "Keep-Alive: timeout=..., max=..." unless it closes the
  // connection itself; drop it where the gate closes it instead, and the
  // "max=" elsewhere (the gate sets no cap on requests per connection).
  server->set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    const bool had = res.has_header("Keep-Alive");
    res.headers.erase("Keep-Alive");
    if (had && !ClosingAfterResponse() &&
        !(req.version == "HTTP/1.0" && req.get_header_value("Connection") != "Keep-Alive")) {
      res.set_header("Keep-Alive", kKeepAliveHeader);
    }
  });
}

}  // namespace loopwatch

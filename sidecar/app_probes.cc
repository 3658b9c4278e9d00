// SPDX-License-Identifier: Apache-2.0
#include "app_probes.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "format.h"
#include "settings.h"  // Quote

namespace loopwatch {
namespace {

using Json = nlohmann::json;

bool ReadProbe(const std::string& container, const std::string& key, const Json& j,
               AppProbe* out, std::string* error) {
  auto bad = [&](const std::string& what) {
    *error = "app_probes: " + container + "." + key + ": " + what;
    return false;
  };
  if (!j.is_object()) return bad("not an object");
  if (j.contains("timeoutSeconds")) {
    const Json& t = j["timeoutSeconds"];
    if (!t.is_number_integer() || t.get<int64_t>() < 1 || t.get<int64_t>() > 600)
      return bad("timeoutSeconds must be a whole number of seconds, 1 to 600");
    out->timeout_seconds = t.get<int>();
  }
  const char* handler = j.contains("httpGet") ? "httpGet" : j.contains("tcpSocket") ? "tcpSocket" : nullptr;
  if (!handler) return bad("neither httpGet nor tcpSocket");
  const Json& h = j[handler];
  if (!h.is_object()) return bad(std::string(handler) + " is not an object");
  out->kind = std::string(handler) == "httpGet" ? AppProbe::Kind::kHttpGet
                                                : AppProbe::Kind::kTcpSocket;
  if (!h.contains("port") || !h["port"].is_number_integer() || h["port"].get<int64_t>() < 1 ||
      h["port"].get<int64_t>() > 65535)
    return bad(std::string(handler) + ".port must be a port number (named ports resolved)");
  out->port = h["port"].get<int>();
  if (h.contains("host")) {
    if (!h["host"].is_string() || h["host"].get<std::string>().empty())
      return bad("host must be a non-empty string");
    out->host = h["host"];
  }
  if (out->kind == AppProbe::Kind::kTcpSocket) return true;
  if (h.contains("path")) {
    if (!h["path"].is_string()) return bad("httpGet.path must be a string");
    out->path = h["path"];
    if (out->path.empty() || out->path[0] != '/') out->path = "/" + out->path;
  }
  if (h.contains("scheme")) {
    if (h["scheme"] == "HTTPS") out->https = true;
    else if (h["scheme"] != "HTTP") return bad("httpGet.scheme must be HTTP or HTTPS");
  }
  if (h.contains("httpHeaders")) {
    if (!h["httpHeaders"].is_array()) return bad("httpGet.httpHeaders must be a list");
    for (const Json& e : h["httpHeaders"]) {
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string() ||
          !e.contains("value") || !e["value"].is_string())
        return bad("httpGet.httpHeaders entries need a name and a value");
      out->headers.emplace_back(e["name"], e["value"]);
    }
  }
  return true;
}

// Connects to host:port within `timeout_s`; "" on success, else why not.
std::string TcpConnect(const std::string& host, int port, int timeout_s) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0)
    return std::string("cannot resolve ") + host + ": " + gai_strerror(rc);
  std::string why = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int rc = connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = poll(&p, 1, timeout_s * 1000);
      if (rc == 0) {
        why = "timed out after " + std::to_string(timeout_s) + "s";
        close(fd);
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc == 0) {
      close(fd);
      freeaddrinfo(res);
      return "";
    }
    why = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(res);
  return why;
}

}  // namespace

bool AppProbes::Parse(const std::string& json, AppProbes* out, std::string* error) {
  out->probes_.clear();
  if (json.empty()) return true;
  Json j = Json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = "app_probes: not a JSON object of containers";
    return false;
  }
  for (const auto& c : j.items()) {
    const std::string container = c.key();
    if (!ValidContainerName(container)) {
      *error = "app_probes: " + Quote(container) + " is not a container name";
      return false;
    }
    if (!c.value().is_object()) {
      *error = "app_probes: " + container + ": not an object of probes";
      return false;
    }
    for (const auto& p : c.value().items()) {
      Probe kind;
      if (p.key() == "livenessProbe") kind = Probe::kLive;
      else if (p.key() == "readinessProbe") kind = Probe::kReady;
      else if (p.key() == "startupProbe") kind = Probe::kStartup;
      else {
        *error = "app_probes: " + container + ": " + Quote(p.key()) +
                 " is not livenessProbe, readinessProbe or startupProbe";
        return false;
      }
      AppProbe probe;
      if (!ReadProbe(container, p.key(), p.value(), &probe, error)) return false;
      out->probes_[{container, kind}] = probe;
    }
  }
  return true;
}

const AppProbe* AppProbes::Find(const std::string& container, Probe p) const {
  auto it = probes_.find({container, p});
  return it == probes_.end() ? nullptr : &it->second;
}

ProbeResponse ForwardProbe(const AppProbe& probe, Probe p, std::string_view container) {
  ProbeResponse r;
  r.content_type = "text/plain; charset=utf-8";
  const std::string lead = "container " + std::string(container) + "'s own " + ProbeName(p) +
                           " probe (no loop of it has beaten yet): ";
  const auto start = std::chrono::steady_clock::now();
  auto took = [&] {
    return HumanDuration(std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - start)
                             .count());
  };
  if (probe.kind == AppProbe::Kind::kTcpSocket) {
    const std::string why = TcpConnect(probe.host, probe.port, probe.timeout_seconds);
    const std::string what = "TCP " + probe.host + ":" + std::to_string(probe.port);
    r.status = why.empty() ? 200 : 503;
    r.body = (why.empty() ? "ok: " : "") + lead + what +
             (why.empty() ? " connected in " + took() : ": " + why) + "\n";
    return r;
  }
  const std::string what = std::string("GET ") + (probe.https ? "https" : "http") + "://" +
                           probe.host + ":" + std::to_string(probe.port) + probe.path;
  httplib::Headers headers;
  for (const auto& [k, v] : probe.headers) headers.emplace(k, v);
  auto ask = [&](httplib::ClientImpl& cli) {
    cli.set_connection_timeout(probe.timeout_seconds, 0);
    cli.set_read_timeout(probe.timeout_seconds, 0);
    cli.set_write_timeout(probe.timeout_seconds, 0);
    cli.set_keep_alive(false);
    return cli.Get(probe.path, headers);
  };
  httplib::Result res = [&] {
    if (probe.https) {
      httplib::SSLClient cli(probe.host, probe.port);
      cli.enable_server_certificate_verification(false);  // as the kubelet
      return ask(cli);
    }
    httplib::ClientImpl cli(probe.host, probe.port);
    return ask(cli);
  }();
  if (!res) {
    r.status = 503;
    r.body = lead + what + ": " + httplib::to_string(res.error()) + " after " + took() + "\n";
    return r;
  }
  const bool pass = res->status >= 200 && res->status < 400;
  r.status = pass ? 200 : 503;
  r.body = (pass ? "ok: " : "") + lead + what + " answered " + std::to_string(res->status) +
           " in " + took() + "\n";
  return r;
}

}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// http_server.h: the sidecar's two HTTP servers (cpp-httplib).
//
//   public (`listen`, default 0.0.0.0:9321): GET /livez /readyz /startupz
//     (?verbose, ?format=json, Accept: application/json), /healthz, /metrics,
//     and / (an index). Nothing with stacks or other detail of the app's code.
//   admin (`admin_listen`, default 127.0.0.1:9322, "off" for none):
//     GET /debug/loops, GET /debug/stalls, GET|POST|DELETE /hold.
//
// What keeps /livez fast whatever other clients do. Stock httplib hands each
// accepted connection to a worker thread, which then blocks reading the
// request: its per-read timeout does not bound a client that trickles a byte
// at a time, and its thread pool queues connections without limit, so 64
// slow clients starve 4 workers (measured: /livez then times out). Here:
//   - a gate thread (epoll) owns every connection while its request head is
//     incomplete, and between keep-alive requests; the workers (a fixed pool:
//     config.http_threads on the public port, at most 2 on the admin port)
//     only ever get connections whose request head has fully arrived, so a
//     slow client costs a file descriptor, never a worker;
//   - a head must complete within http_timeout of its first byte (of the
//     accept, for a new connection), else 408 and close; an idle kept-alive
//     connection is closed after 5 s (no cap on requests per connection:
//     the gate, not a worker, holds it between requests); a head over
//     16 KiB is refused (414/431) by the gate itself;
//   - a plain bodiless GET/HEAD of /livez /readyz /startupz /healthz
//     (?verbose, ?format=json, Accept: application/json, Connection) is
//     answered by the gate itself, from memory, with a non-blocking send
//     (the rest, rarely, on EPOLLOUT): the same functions, headers, counting
//     and keep-alive rules as a worker, without waking one; anything unusual
//     in such a request goes to a worker as any other request;
//   - in a worker, reading the body and writing the response each have
//     http_timeout, so a worker is held at most that long by any client;
//   - at most 256 connections per server: a new one evicts the gate's
//     longest-waiting connection instead of queueing behind it;
//   - the public port serves GET/HEAD only; the admin port refuses bodies
//     over 4 KiB (413) or chunked (411) before reading them, and answers a
//     POST/DELETE without Content-Length (`curl -X POST`) as bodiless; a
//     response that leaves a body unread closes the connection, so a body is
//     never parsed as the next request;
//   - malformed requests get short text errors (400/404/405/413/414/431) and
//     the connection is closed after 400, 413, 414 and 5xx; exceptions in a
//     handler become 500 and are logged.
// Handlers copy the View pointer (the Monitor's mutex, for a pointer copy)
// and answer from memory; they never wait on the poll thread. Requests to
// /livez, /readyz, /startupz, /healthz and /metrics are counted by code.
#ifndef LOOPWATCH_SIDECAR_HTTP_SERVER_H_
#define LOOPWATCH_SIDECAR_HTTP_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "config.h"
#include "health.h"
#include "metrics.h"
#include "probes.h"

namespace loopwatch {

// Splits "HOST:PORT" ("0.0.0.0:9321", "[::1]:0", ":9321" = all IPv4
// interfaces) into a host for bind() and a port (0: ephemeral). On error,
// *error says what was wrong and the expected form.
bool ParseListenAddress(const std::string& text, std::string* host, int* port,
                        std::string* error);

class HttpServers {
 public:
  using ViewSource = std::function<std::shared_ptr<const View>()>;
  // Called for holds set or cleared and for handler exceptions.
  using LogFn = std::function<void(const std::string& event,
                                   const std::string& detail)>;
  using Clock = std::function<int64_t()>;  // CLOCK_MONOTONIC ns

  // `hold` and `metrics` must outlive the servers. `clock` defaults to
  // MonotonicNowNs (tests inject one).
  HttpServers(const Config& config, ViewSource view_source, Hold& hold,
              SidecarMetrics& metrics, LogFn log, Clock clock = nullptr);
  ~HttpServers();
  HttpServers(const HttpServers&) = delete;
  HttpServers& operator=(const HttpServers&) = delete;

  // Binds both addresses, then serves on background threads. False with
  // *error (naming the setting and the address) if an address is malformed
  // or cannot be bound; nothing is left running then.
  bool Start(std::string* error);
  // Stops both servers and closes every connection; returns within about a
  // second (in-flight requests are cut off). Idempotent.
  void Stop();

  int port() const { return port_; }              // actual port once started
  int admin_port() const { return admin_port_; }  // -1 when admin is off

 private:
  class Gated;  // an httplib::Server behind the gate; http_server.cc
  void AddRoutes(Gated* public_server, Gated* admin_server);

  Config config_;
  ViewSource view_source_;
  Hold& hold_;
  SidecarMetrics& metrics_;
  LogFn log_;
  Clock clock_;
  std::unique_ptr<Gated> public_;
  std::unique_ptr<Gated> admin_;
  int port_ = -1;
  int admin_port_ = -1;
  bool started_ = false;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_SERVER_H_

// SPDX-License-Identifier: Apache-2.0
//
// servers.h: the sidecar's HTTP servers, each a GatedServer (gate.h) with
// its route set: the public port (public_routes.h; `http_threads` workers),
// with `probe_peers` a second socket on it that only they reach (the probe
// lane, probe_lane.h; one worker), and the admin port (admin_routes.h; at
// most 2 workers), unless `admin_listen` is off. Reads and writes of a
// connection time out after `http_timeout`.
#ifndef LOOPWATCH_SIDECAR_HTTP_SERVERS_H_
#define LOOPWATCH_SIDECAR_HTTP_SERVERS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "app_probes.h"
#include "config.h"
#include "hold.h"
#include "http/gate.h"
#include "http/routing.h"
#include "metrics.h"
#include "model.h"

namespace loopwatch {

class HttpServers {
 public:
  using ViewSource = std::function<std::shared_ptr<const View>()>;
  using Clock = std::function<int64_t()>;  // CLOCK_MONOTONIC ns

  // `hold` and `metrics` must outlive the servers. `log` is told of holds
  // set or cleared and of handler exceptions. `clock` defaults to
  // MonotonicNowNs (tests inject one).
  HttpServers(const Config& config, ViewSource view_source, Hold& hold,
              SidecarMetrics& metrics, RouteLog log, Clock clock = nullptr);
  ~HttpServers();
  HttpServers(const HttpServers&) = delete;
  HttpServers& operator=(const HttpServers&) = delete;

  // Binds both addresses, then serves on background threads. False with
  // *error (naming the setting and the address) if an address cannot be
  // bound; nothing is left running then.
  bool Start(std::string* error);
  // Stops both servers and closes every connection; returns within about a
  // second (requests in flight are cut off). Idempotent.
  void Stop();

  int port() const { return port_; }              // the bound port once started
  int admin_port() const { return admin_port_; }  // -1 when admin is off

 private:
  Config config_;
  AppProbes app_probes_;  // parsed from config_.app_probes at Start
  ViewSource view_source_;
  Hold& hold_;
  SidecarMetrics& metrics_;
  RouteLog log_;
  Clock clock_;
  std::unique_ptr<GatedServer> public_;
  std::unique_ptr<GatedServer> probe_lane_;  // with probe_peers
  std::unique_ptr<GatedServer> admin_;
  int port_ = -1;
  int admin_port_ = -1;
  bool started_ = false;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_SERVERS_H_

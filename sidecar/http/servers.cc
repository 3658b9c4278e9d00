// SPDX-License-Identifier: Apache-2.0
#include "http/servers.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "clock.h"
#include "http/admin_routes.h"
#include "http/probe_lane.h"
#include "http/public_routes.h"

namespace loopwatch {
namespace {

// Whether `at` can be bound by a socket that is in no SO_REUSEPORT group
// (port 0 always can).
bool PortIsFree(const ListenAddress& at, std::string* why) {
  if (at.port == 0) return true;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(at.port);
  if (getaddrinfo(at.host.c_str(), port.c_str(), &hints, &res) != 0 || !res) {
    *why = "cannot bind " + at.ToString() + ": no such address (is the host name right?)";
    return false;
  }
  int err = 0;
  for (addrinfo* r = res; r; r = r->ai_next) {
    const int fd = socket(r->ai_family, r->ai_socktype | SOCK_CLOEXEC, r->ai_protocol);
    if (fd < 0) continue;
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    const bool ok = bind(fd, r->ai_addr, r->ai_addrlen) == 0;
    err = ok ? 0 : errno;
    close(fd);
    if (ok) break;
  }
  freeaddrinfo(res);
  if (err != 0) {
    *why = "cannot bind " + at.ToString() + ": " + strerror(err);
    return false;
  }
  return true;
}

}  // namespace

HttpServers::HttpServers(const Config& config, ViewSource view_source, Hold& hold,
                         SidecarMetrics& metrics, RouteLog log, Clock clock)
    : config_(config),
      view_source_(std::move(view_source)),
      hold_(hold),
      metrics_(metrics),
      log_(std::move(log)),
      clock_(clock ? std::move(clock) : Clock(MonotonicNowNs)) {}

HttpServers::~HttpServers() { Stop(); }

bool HttpServers::Start(std::string* error) {
  if (started_) return true;
  const int64_t timeout_ns = std::max<int64_t>(config_.http_timeout.count(), 1000000);
  const size_t threads = std::max<uint32_t>(config_.http_threads, 1);

  if (!AppProbes::Parse(config_.app_probes, &app_probes_, error)) return false;
  SidecarContext ctx;
  ctx.config = &config_;
  ctx.app_probes = &app_probes_;
  ctx.view = [source = view_source_]() -> std::shared_ptr<const View> {
    std::shared_ptr<const View> v = source ? source() : nullptr;
    if (v) return v;
    static const auto kEmpty = std::make_shared<const View>();
    return kEmpty;
  };
  ctx.hold = &hold_;
  ctx.metrics = &metrics_;
  ctx.log = log_;
  ctx.clock = clock_;

  auto counted = [this](Listener l) { return [this, l] { metrics_.CountConnection(l); }; };
  public_ = std::make_unique<GatedServer>("lw-pub", threads, timeout_ns);
  public_->SetOnAccept(counted(Listener::kPublic));
  AddPublicRoutes(public_.get(), ctx);
  const bool lanes = !config_.probe_peers.empty();
  if (lanes) {
    // One thread answers from memory; a second when containers' own probes
    // may be asked (network I/O, up to their timeouts).
    probe_lane_ = std::make_unique<GatedServer>("lw-prb", app_probes_.empty() ? 1 : 2,
                                                timeout_ns);
    probe_lane_->SetOnAccept(counted(Listener::kProbeLane));
    AddPublicRoutes(probe_lane_.get(), ctx);
  }
  if (config_.admin_listen) {
    admin_ = std::make_unique<GatedServer>("lw-adm", std::min<size_t>(threads, 2), timeout_ns);
    admin_->SetOnAccept(counted(Listener::kAdmin));
    AddAdminRoutes(admin_.get(), ctx);
  }

  std::string why;
  auto fail = [&](const std::string& message) {
    *error = message;
    public_.reset();
    probe_lane_.reset();
    admin_.reset();
    port_ = admin_port_ = -1;
    return false;
  };
  if (lanes) {
    // The lanes share the port in an SO_REUSEPORT group, which a second
    // sidecar could join without an error: make sure the port is free
    // first. The probe lane binds first, so that it is the group's index 0.
    if (!PortIsFree(config_.listen, &why)) return fail("listen: " + why);
    if (!probe_lane_->Bind(config_.listen, true, &port_, &why)) return fail("listen: " + why);
    ListenAddress same = config_.listen;
    same.port = port_;
    if (!public_->Bind(same, true, &port_, &why)) return fail("listen: " + why);
    if (!SteerProbePeers(probe_lane_->listening_fd(), config_.probe_peers, &why)) {
      return fail("probe_peers: " + why);
    }
  } else if (!public_->Bind(config_.listen, false, &port_, &why)) {
    return fail("listen: " + why);
  }
  if (admin_ && !admin_->Bind(*config_.admin_listen, false, &admin_port_, &why)) {
    return fail("admin_listen: " + why);
  }
  if (!public_->Run(&why) || (probe_lane_ && !probe_lane_->Run(&why)) ||
      (admin_ && !admin_->Run(&why))) {
    *error = "cannot start the HTTP servers: " + why;
    Stop();
    return false;
  }
  started_ = true;
  return true;
}

void HttpServers::Stop() {
  // Both at once: each waits at most for its workers' current requests,
  // which Shutdown() cuts short.
  std::thread a, p;
  if (admin_) a = std::thread([this] { admin_->Shutdown(); });
  if (probe_lane_) p = std::thread([this] { probe_lane_->Shutdown(); });
  if (public_) public_->Shutdown();
  if (a.joinable()) a.join();
  if (p.joinable()) p.join();
  started_ = false;
}

}  // namespace loopwatch

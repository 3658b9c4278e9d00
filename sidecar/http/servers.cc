// SPDX-License-Identifier: Apache-2.0
#include "http/servers.h"

#include <algorithm>
#include <thread>

#include "clock.h"
#include "http/admin_routes.h"
#include "http/public_routes.h"

namespace loopwatch {

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

  SidecarContext ctx;
  ctx.config = &config_;
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

  public_ = std::make_unique<GatedServer>("lw-pub", threads, timeout_ns);
  AddPublicRoutes(public_.get(), ctx);
  if (config_.admin_listen) {
    admin_ = std::make_unique<GatedServer>("lw-adm", std::min<size_t>(threads, 2), timeout_ns);
    AddAdminRoutes(admin_.get(), ctx);
  }

  std::string why;
  if (!public_->Bind(config_.listen, &port_, &why)) {
    *error = "listen: " + why;
    public_.reset();
    admin_.reset();
    return false;
  }
  if (admin_ && !admin_->Bind(*config_.admin_listen, &admin_port_, &why)) {
    *error = "admin_listen: " + why;
    public_.reset();
    admin_.reset();
    port_ = -1;
    return false;
  }
  if (!public_->Run(&why) || (admin_ && !admin_->Run(&why))) {
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
  std::thread a;
  if (admin_) a = std::thread([this] { admin_->Shutdown(); });
  if (public_) public_->Shutdown();
  if (a.joinable()) a.join();
  started_ = false;
}

}  // namespace loopwatch

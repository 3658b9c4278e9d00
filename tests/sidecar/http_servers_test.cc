// SPDX-License-Identifier: Apache-2.0
//
// The HTTP servers over real sockets on 127.0.0.1 (port 0), with a
// hand-made View: httplib::Client for well-formed requests, raw sockets for
// malformed, oversized and slow ones.
#include "http/servers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "clock.h"

namespace loopwatch {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kMs = 1000000;
constexpr int64_t kSec = 1000000000;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---- raw sockets

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// Reads one response (head + Content-Length body), or until EOF/timeout.
std::string ReadResponse(int fd, int timeout_ms = 3000, std::string* rest = nullptr) {
  std::string buf = rest ? *rest : "";
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t head_end = buf.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      size_t len = 0;
      size_t cl = buf.find("Content-Length: ");
      if (cl != std::string::npos && cl < head_end) len = strtoul(buf.c_str() + cl + 16, nullptr, 10);
      if (buf.size() >= head_end + 4 + len) {
        if (rest) *rest = buf.substr(head_end + 4 + len);
        return buf.substr(0, head_end + 4 + len);
      }
    }
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) return buf;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) return buf;
    char tmp[65536];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return buf;
    buf.append(tmp, size_t(n));
  }
}

// Sends `request` on a fresh connection and returns the response.
std::string Raw(int port, const std::string& request) {
  int fd = Connect(port);
  if (fd < 0) return "connect failed";
  SendAll(fd, request);
  std::string r = ReadResponse(fd);
  close(fd);
  return r;
}

int StatusOf(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0) return -1;
  return atoi(response.c_str() + 9);
}

// True when the server closed the connection (EOF) within `timeout_ms`.
bool ClosedBy(int fd, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) return false;
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return true;
  }
}

// ---- views

LoopView Loop(uint32_t slot, const std::string& name) {
  LoopView l;
  l.slot = slot;
  l.name = name;
  l.kind = "asyncio";
  l.pid = 300 + slot;
  l.state = LoopState::kLive;
  l.interval_ns = 100 * kMs;
  l.heartbeat_age_ns = 30 * kMs;
  l.beats = 10;
  return l;
}

View HealthyView() {
  View v;
  v.poll = 1;
  v.segment = SegmentStatus::kOk;
  v.slot_count = 8;
  v.loops = {Loop(0, "app-1"), Loop(1, "app-2")};
  v.live = {true, "ok: 2 loops, 2 live"};
  v.ready = {true, "ok: 2 loops ready"};
  v.startup = {true, "ok: started"};
  v.started = true;
  return v;
}

View StalledView() {
  View v = HealthyView();
  LoopView& l = v.loops[1];
  l.state = LoopState::kStalled;
  l.failing_liveness = true;
  l.stall_open = true;
  l.stall.id = 1;
  l.stall.loop = l.name;
  l.stall.stall_class = StallClass::kBlocked;
  l.stall.syscall = "clock_nanosleep";
  l.stall.text = "File \"app.py\", line 9, in handler\n    time.sleep(30)\n";
  l.stall.duration_ns = 6 * kSec;
  l.stall.has_report = true;
  v.recent_stalls = std::make_shared<StallHistory>(StallHistory{std::make_shared<StallRecord>(l.stall)});
  v.live = {false, "loop app-2 stalled 6.0s (blocked in clock_nanosleep)"};
  v.ready = {false, "loop app-2 stalled 6.0s"};
  return v;
}

Config TestConfig() {
  Config c;
  c.listen = {"127.0.0.1", 0};
  c.admin_listen = ListenAddress{"127.0.0.1", 0};
  c.http_timeout = std::chrono::seconds(1);
  c.http_threads = 4;
  c.max_hold = std::chrono::hours(1);
  return c;
}

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override { StartWith(TestConfig()); }
  void TearDown() override {
    if (servers_) servers_->Stop();
  }

  void StartWith(const Config& c) {
    if (servers_) servers_->Stop();
    config_ = c;
    servers_ = std::make_unique<HttpServers>(
        config_, [this] { return CurrentView(); }, hold_, metrics_,
        [this](const std::string& event, const std::string& detail) {
          std::lock_guard<std::mutex> lock(mu_);
          logs_.push_back(event + ": " + detail);
        });
    std::string error;
    ASSERT_TRUE(servers_->Start(&error)) << error;
    ASSERT_GT(servers_->port(), 0);
  }

  // A fresh copy taken "now", as the poll thread would publish it.
  std::shared_ptr<const View> CurrentView() {
    std::lock_guard<std::mutex> lock(mu_);
    if (throw_) throw std::runtime_error("view source failed");
    auto v = std::make_shared<View>(view_);
    v->taken_ns = MonotonicNowNs();
    return v;
  }
  void SetView(const View& v) {
    std::lock_guard<std::mutex> lock(mu_);
    view_ = v;
  }
  std::vector<std::string> Logs() {
    std::lock_guard<std::mutex> lock(mu_);
    return logs_;
  }

  httplib::Result Get(const std::string& path, const httplib::Headers& h = {}) {
    httplib::Client c("127.0.0.1", servers_->port());
    c.set_connection_timeout(2);
    c.set_read_timeout(2);
    return c.Get(path.c_str(), h);
  }
  httplib::Client Admin() {
    httplib::Client c("127.0.0.1", servers_->admin_port());
    c.set_connection_timeout(2);
    c.set_read_timeout(2);
    return c;
  }

  Config config_;
  Hold hold_;
  SidecarMetrics metrics_;
  std::unique_ptr<HttpServers> servers_;
  std::mutex mu_;
  View view_ = HealthyView();
  bool throw_ = false;
  std::vector<std::string> logs_;
};

TEST_F(HttpTest, ProbeCodesAndBodies) {
  auto r = Get("/livez");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok: 2 loops, 2 live\n");
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r->get_header_value("Cache-Control"), "no-store");
  EXPECT_EQ(Get("/readyz")->status, 200);
  EXPECT_EQ(Get("/startupz")->status, 200);

  SetView(StalledView());
  r = Get("/livez");
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "loop app-2 stalled 6.0s (blocked in clock_nanosleep)\n");
  r = Get("/readyz");
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "loop app-2 stalled 6.0s\n");
  EXPECT_EQ(Get("/startupz")->status, 200);

  r = Get("/livez?verbose");
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("\nloop app-2 slot=1 pid=301"), std::string::npos) << r->body;

  r = Get("/livez", {{"Accept", "application/json"}});
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(r->body.rfind("{\"status\":\"fail\",\"code\":503,\"probe\":\"livez\"", 0), 0u)
      << r->body;
  r = Get("/readyz?format=json");
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  EXPECT_NE(r->body.find("\"probe\":\"readyz\""), std::string::npos);

  // HEAD answers like GET, without a body.
  httplib::Client c("127.0.0.1", servers_->port());
  r = c.Head("/livez");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
}

TEST_F(HttpTest, ObserveModePasses) {
  Config c = TestConfig();
  c.mode = Mode::kObserve;
  StartWith(c);
  SetView(StalledView());
  auto r = Get("/livez");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body,
            "ok (observe mode; would fail: loop app-2 stalled 6.0s (blocked in "
            "clock_nanosleep))\n");
}

TEST_F(HttpTest, HealthzMetricsAndIndex) {
  auto r = Get("/healthz");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.rfind("ok: poll 1 ", 0), 0u) << r->body;
  r = Get("/metrics");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r->body.find("loopwatch_loop_up{loop=\"app-1\",slot=\"0\",kind=\"asyncio\",pid=\"300\"} 1\n"),
            std::string::npos);
  r = Get("/");
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("/livez"), std::string::npos);
  r = Get("/nope");
  EXPECT_EQ(r->status, 404);
  EXPECT_LT(r->body.size(), 200u);
  EXPECT_NE(r->body.find("not found"), std::string::npos);
}

TEST_F(HttpTest, EveryProbeRequestIsCounted) {
  for (int i = 0; i < 5; i++) Get("/livez");
  Get("/readyz");
  SetView(StalledView());
  Get("/livez");
  Get("/healthz");
  httplib::Client c("127.0.0.1", servers_->port());
  auto p = c.Post("/livez", "", "text/plain");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 405);
  std::string m = Get("/metrics")->body;
  EXPECT_NE(m.find("loopwatch_probe_requests_total{code=\"200\",handler=\"livez\"} 5\n"),
            std::string::npos);
  EXPECT_NE(m.find("loopwatch_probe_requests_total{code=\"503\",handler=\"livez\"} 1\n"),
            std::string::npos);
  EXPECT_NE(m.find("loopwatch_probe_requests_total{code=\"405\",handler=\"livez\"} 1\n"),
            std::string::npos);
  EXPECT_NE(m.find("loopwatch_probe_requests_total{code=\"200\",handler=\"readyz\"} 1\n"),
            std::string::npos);
  EXPECT_NE(m.find("loopwatch_probe_requests_total{code=\"200\",handler=\"healthz\"} 1\n"),
            std::string::npos);
}

TEST_F(HttpTest, AdminEndpointsAreNotOnThePublicPort) {
  for (const char* path : {"/debug/loops", "/debug/stalls", "/hold"}) {
    auto r = Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_EQ(r->body.find("time.sleep"), std::string::npos);
  }
  httplib::Client c("127.0.0.1", servers_->port());
  auto r = c.Post("/hold?for=10m", "", "text/plain");
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Allow"), "GET, HEAD");
  EXPECT_FALSE(hold_.Active(MonotonicNowNs()));
  // And the probes are not on the admin port.
  auto a = Admin().Get("/livez");
  EXPECT_EQ(a->status, 404);
}

TEST_F(HttpTest, AdminDebugEndpoints) {
  SetView(StalledView());
  auto c = Admin();
  auto r = c.Get("/debug/loops");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  EXPECT_NE(r->body.find("\"name\":\"app-2\""), std::string::npos);
  EXPECT_NE(r->body.find("\"lag_histogram\""), std::string::npos);
  r = c.Get("/debug/stalls");
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("time.sleep(30)"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"syscall\":\"clock_nanosleep\""), std::string::npos);
  r = c.Get("/");
  EXPECT_NE(r->body.find("/debug/stalls"), std::string::npos);
}

TEST_F(HttpTest, HoldViaAdminPassesLivenessAndExpires) {
  SetView(StalledView());
  EXPECT_EQ(Get("/livez")->status, 503);
  auto c = Admin();

  auto r = c.Post("/hold", "", "text/plain");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("expected POST /hold?for=DURATION&reason=TEXT"), std::string::npos)
      << r->body;
  r = c.Post("/hold?for=soon", "", "text/plain");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("bad duration \"soon\""), std::string::npos) << r->body;
  r = c.Post("/hold?for=2h", "", "text/plain");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("longer than max_hold"), std::string::npos) << r->body;
  EXPECT_EQ(hold_.Snapshot().count, 0u);

  r = c.Post("/hold?for=400ms&reason=INC-9%20debugging", "", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("\"active\":true"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"reason\":\"INC-9 debugging\""), std::string::npos) << r->body;
  auto t0 = Clock::now();
  auto l = Get("/livez");
  EXPECT_EQ(l->status, 200);
  EXPECT_NE(l->body.find("ok (held for another "), std::string::npos) << l->body;
  EXPECT_NE(l->body.find("INC-9 debugging; would fail: loop app-2 stalled"), std::string::npos);
  EXPECT_EQ(Get("/readyz")->status, 503);  // readiness is not held
  auto g = c.Get("/hold");
  EXPECT_NE(g->body.find("\"active\":true"), std::string::npos);
  std::string m = Get("/metrics")->body;
  EXPECT_NE(m.find("loopwatch_holds_total 1\n"), std::string::npos);
  EXPECT_NE(m.find("loopwatch_hold_active 1\n"), std::string::npos);
  auto logs = Logs();
  ASSERT_FALSE(logs.empty());
  EXPECT_EQ(logs.back().rfind("hold set: for 400ms", 0), 0u) << logs.back();
  EXPECT_NE(logs.back().find("INC-9 debugging"), std::string::npos);

  // It expires by itself.
  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(500));
  EXPECT_EQ(Get("/livez")->status, 503);
  g = c.Get("/hold");
  EXPECT_NE(g->body.find("\"active\":false"), std::string::npos);

  // Form body, then DELETE.
  r = c.Post("/hold", "for=10m&reason=form", "application/x-www-form-urlencoded");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Get("/livez")->status, 200);
  r = c.Delete("/hold");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Get("/livez")->status, 503);
  EXPECT_EQ(Logs().back(), "hold cleared: liveness probes judged again");
  // for=0 also ends a hold.
  c.Post("/hold?for=10m", "", "text/plain");
  EXPECT_EQ(Get("/livez")->status, 200);
  r = c.Post("/hold?for=0", "", "text/plain");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Get("/livez")->status, 503);
  EXPECT_EQ(hold_.Snapshot().count, 3u);
}

TEST_F(HttpTest, HoldWithoutABodyAnswersAtOnce) {
  // `curl -X POST URL` sends neither Content-Length nor a body.
  const int admin = servers_->admin_port();
  auto t0 = Clock::now();
  std::string r = Raw(admin, "POST /hold?for=1m&reason=curl HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_LT(MsSince(t0), 500);
  EXPECT_TRUE(hold_.Active(MonotonicNowNs()));
  EXPECT_EQ(hold_.Snapshot().reason, "curl");
  r = Raw(admin, "DELETE /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_FALSE(hold_.Active(MonotonicNowNs()));
  r = Raw(admin, "POST /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 404) << r;
  EXPECT_LT(MsSince(t0), 500);
}

TEST_F(HttpTest, ExpectContinueIsAnsweredBeforeTheBody) {
  int fd = Connect(servers_->admin_port());
  ASSERT_GE(fd, 0);
  auto t0 = Clock::now();
  SendAll(fd,
          "POST /hold HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
          "Content-Length: 16\r\nExpect: 100-continue\r\n\r\n");
  std::string rest;
  std::string cont = ReadResponse(fd, 900, &rest);
  EXPECT_EQ(cont.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u) << cont;
  EXPECT_LT(MsSince(t0), 500);
  SendAll(fd, "for=1m&reason=ec");
  std::string r = ReadResponse(fd, 2000, &rest);
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_EQ(hold_.Snapshot().reason, "ec");
  close(fd);
}

TEST_F(HttpTest, MalformedRequestsGetShortErrorsAndTheServerKeepsServing) {
  const int port = servers_->port();
  for (const std::string& bad :
       {std::string("GARBAGE\r\n\r\n"), std::string("GET\r\n\r\n"),
        std::string("\x01\x02\x03 / HTTP/1.1\r\n\r\n"),
        std::string("GET /livez HTTP/1.1 extra\r\n\r\n")}) {
    std::string r = Raw(port, bad);
    EXPECT_EQ(StatusOf(r), 400) << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
    EXPECT_EQ(r.find("Keep-Alive"), std::string::npos) << r;
    EXPECT_LT(r.size(), 400u);
    EXPECT_EQ(Get("/livez")->status, 200);
  }
}

TEST_F(HttpTest, OversizedRequestsAreRefused) {
  const int port = servers_->port();
  // URI over httplib's 8 KiB: 414.
  std::string r = Raw(port, "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 414) << r.substr(0, 200);
  // A request line longer than the whole head limit: 414 from the gate.
  r = Raw(port, "GET /" + std::string(20000, 'a'));
  EXPECT_EQ(StatusOf(r), 414) << r.substr(0, 200);
  // One header over 8 KiB: 400.
  r = Raw(port, "GET /livez HTTP/1.1\r\nX-Big: " + std::string(10000, 'b') + "\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 400) << r.substr(0, 200);
  // A head over 16 KiB: 431.
  std::string many = "GET /livez HTTP/1.1\r\n";
  for (int i = 0; i < 40; i++) many += "X-H" + std::to_string(i) + ": " + std::string(500, 'c') + "\r\n";
  r = Raw(port, many + "\r\n");
  EXPECT_EQ(StatusOf(r), 431) << r.substr(0, 200);
  EXPECT_EQ(Get("/livez")->status, 200);
}

TEST_F(HttpTest, BodiesTooBigAre413WithoutBeingRead) {
  const int admin = servers_->admin_port();
  auto t0 = Clock::now();
  // Declares 100 kB and sends none of it: refused at once, not after a read.
  std::string r = Raw(admin,
                      "POST /hold?for=1m HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 413) << r;
  EXPECT_LT(MsSince(t0), 500);
  EXPECT_NE(r.find("Connection: close"), std::string::npos);
  // Sent in full: the same.
  r = Raw(admin, "POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" +
                     std::string(5000, 'x'));
  EXPECT_EQ(StatusOf(r), 413) << r;
  EXPECT_FALSE(hold_.Active(MonotonicNowNs()));
  // Chunked bodies are not taken.
  r = Raw(admin, "POST /hold HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 411) << r;
  // Public port: POST is 405 and the body is never parsed as a request.
  r = Raw(servers_->port(),
          "POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\nGET /debug HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 405) << r;
  EXPECT_NE(r.find("Connection: close"), std::string::npos);
  EXPECT_EQ(Get("/livez")->status, 200);
}

TEST_F(HttpTest, KeepAliveAndPipelining) {
  httplib::Client c("127.0.0.1", servers_->port());
  c.set_keep_alive(true);
  for (int i = 0; i < 20; i++) {
    auto r = c.Get("/livez");
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200);
  }
  // Two requests in one write, two responses in order on one connection.
  int fd = Connect(servers_->port());
  ASSERT_GE(fd, 0);
  SendAll(fd, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string rest;
  std::string a = ReadResponse(fd, 3000, &rest);
  std::string b = ReadResponse(fd, 3000, &rest);
  EXPECT_EQ(StatusOf(a), 200) << a;
  EXPECT_EQ(StatusOf(b), 404) << b;
  // Then a third, later, on the same connection.
  SendAll(fd, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadResponse(fd, 3000, &rest)), 200);
  close(fd);
}

TEST_F(HttpTest, HandlerExceptionIs500AndLogged) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    throw_ = true;
  }
  auto r = Get("/livez");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->body, "internal error\n");
  EXPECT_NE(Logs().back().find("view source failed"), std::string::npos);
  {
    std::lock_guard<std::mutex> lock(mu_);
    throw_ = false;
  }
  EXPECT_EQ(Get("/livez")->status, 200);
}

TEST_F(HttpTest, SlowHeadIsCutOffAfterTheTimeout) {
  int fd = Connect(servers_->port());
  ASSERT_GE(fd, 0);
  auto t0 = Clock::now();
  SendAll(fd, "GET /livez HTTP/1.1\r\nHost: x\r\n");
  std::string r = ReadResponse(fd, 3000);
  double ms = MsSince(t0);
  EXPECT_EQ(StatusOf(r), 408) << r;
  EXPECT_GT(ms, 900);
  EXPECT_LT(ms, 1600);
  close(fd);
  // A connection that never sends anything is closed after the timeout too.
  fd = Connect(servers_->port());
  t0 = Clock::now();
  EXPECT_TRUE(ClosedBy(fd, 3000));
  EXPECT_LT(MsSince(t0), 1600);
  close(fd);
}

TEST_F(HttpTest, SlowlorisClientsDoNotDelayLivez) {
  constexpr int kSlow = 64;
  const int port = servers_->port();
  std::atomic<bool> stop{false};
  std::atomic<int> reconnects{0};
  std::atomic<int> connected{0};
  // 64 clients that send a partial head, then one byte every 100 ms, and
  // reconnect when the server gives up on them.
  std::thread loris([&] {
    std::vector<int> fds(kSlow, -1);
    const std::string start = "GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for (int& fd : fds) {
      fd = Connect(port);
      if (fd >= 0 && SendAll(fd, start)) connected++;
    }
    while (!stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      for (int& fd : fds) {
        char c = 'a';
        pollfd p{fd, POLLIN, 0};
        bool gone = fd < 0 || (poll(&p, 1, 0) > 0) || send(fd, &c, 1, MSG_NOSIGNAL) != 1;
        if (gone) {
          if (fd >= 0) close(fd);
          reconnects++;
          fd = Connect(port);
          if (fd >= 0) SendAll(fd, start);
        }
      }
    }
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
  });
  while (connected.load() < kSlow) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  std::vector<double> ms;
  int ok = 0;
  auto until = Clock::now() + std::chrono::milliseconds(2500);  // past 2 cut-offs
  while (Clock::now() < until) {
    auto t0 = Clock::now();
    auto r = Get("/livez");  // a new connection each time, like the kubelet
    ms.push_back(MsSince(t0));
    if (r && r->status == 200) ok++;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  loris.join();
  std::sort(ms.begin(), ms.end());
  printf("[ SLOWLORIS] %d slow clients (%d cut off and reconnected); %zu /livez: "
         "p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
         kSlow, reconnects.load(), ms.size(), ms[ms.size() / 2],
         ms[std::min(ms.size() - 1, ms.size() * 99 / 100)], ms.back());
  EXPECT_EQ(ok, int(ms.size()));
  EXPECT_LT(ms.back(), 200.0);
  // The server did cut the slow heads off (each after about 1 s).
  EXPECT_GE(reconnects.load(), kSlow);
}

TEST_F(HttpTest, ManyIdleConnectionsDoNotLockOutProbes) {
  // More connections than the server keeps (256), all sending partial heads
  // while new ones arrive: the oldest waiting ones are evicted, even while
  // their bytes are arriving, and probes still get through.
  std::vector<int> fds;
  for (int i = 0; i < 320; i++) {
    int fd = Connect(servers_->port());
    if (fd < 0) continue;
    SendAll(fd, "GET /livez HTTP/1.1\r\n");
    fds.push_back(fd);
    if (i % 16 == 0) {
      for (int f : fds) (void)!send(f, "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  }
  auto t0 = Clock::now();
  auto r = Get("/livez");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(MsSince(t0), 200);
  // Answered 503 and closed, once the gate has taken them all in.
  const int want = int(fds.size()) - 256;
  int evicted = 0;
  for (auto until = Clock::now() + std::chrono::seconds(3); Clock::now() < until;) {
    evicted = 0;
    for (int fd : fds) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 0) > 0) evicted++;
    }
    if (evicted >= want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(evicted, want);
  for (int fd : fds) close(fd);
}

TEST_F(HttpTest, StopsWithinASecondWithClientsConnected) {
  std::vector<int> fds;
  for (int i = 0; i < 32; i++) {
    int fd = Connect(servers_->port());
    SendAll(fd, "GET /livez HTTP/1.1\r\n");
    fds.push_back(fd);
  }
  int ka = Connect(servers_->port());
  SendAll(ka, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadResponse(ka)), 200);  // now idle, kept alive
  int admin_body = Connect(servers_->admin_port());
  // A body that never comes: a worker waits on it.
  SendAll(admin_body, "POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nfor=");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const int port = servers_->port();
  auto t0 = Clock::now();
  servers_->Stop();
  double ms = MsSince(t0);
  printf("[ STOP     ] stopped in %.1f ms\n", ms);
  EXPECT_LT(ms, 1000);
  for (int fd : fds) EXPECT_TRUE(ClosedBy(fd, 500));
  EXPECT_TRUE(ClosedBy(ka, 500));
  for (int fd : fds) close(fd);
  close(ka);
  close(admin_body);
  EXPECT_LT(Connect(port), 0);  // the port is closed
}

// ---- the gate's fast path (bodiless GET/HEAD of the four probes, answered
// without a worker). httplib::Client sends Accept-Encoding, which the fast
// path leaves to a worker, so these use raw sockets.

// The head of a response, and the value of one of its headers ("" if none).
std::string HeaderOf(const std::string& response, const std::string& name) {
  size_t end = response.find("\r\n\r\n");
  std::string head = response.substr(0, end);
  size_t at = head.find("\r\n" + name + ": ");
  if (at == std::string::npos) return "";
  at += name.size() + 4;
  return head.substr(at, head.find("\r\n", at) - at);
}

// Reads the head of a response to HEAD (no body follows), keeping the rest.
std::string ReadHeadOnly(int fd, std::string* rest) {
  std::string buf = *rest;
  auto deadline = Clock::now() + std::chrono::seconds(3);
  while (buf.find("\r\n\r\n") == std::string::npos && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) break;
    buf.append(tmp, size_t(n));
  }
  size_t end = buf.find("\r\n\r\n");
  if (end == std::string::npos) {
    rest->clear();
    return buf;
  }
  *rest = buf.substr(end + 4);
  return buf.substr(0, end + 4);
}

std::string BodyOf(const std::string& response) {
  size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

TEST_F(HttpTest, FastPathAnswersLikeTheWorkerPathByteForByte) {
  // A duplicated Accept header is one of the things the fast path leaves to a
  // worker (httplib would take the first); with the same value twice, the
  // worker's answer must be the fast path's, byte for byte.
  SetView(StalledView());
  const int port = servers_->port();
  int compared = 0;
  for (const char* method : {"GET", "HEAD"}) {
    for (const char* target : {"/livez", "/readyz", "/startupz", "/livez?verbose",
                               "/readyz?verbose=1&x=y", "/livez?verbose=no"}) {
      for (const char* version_and_conn :
           {" HTTP/1.1\r\n", " HTTP/1.1\r\nConnection: close\r\n", " HTTP/1.0\r\n",
            " HTTP/1.0\r\nConnection: Keep-Alive\r\n", " HTTP/1.0\r\nConnection: keep-alive\r\n"}) {
        const std::string start = std::string(method) + " " + target + version_and_conn +
                                  "Host: x\r\nAccept: text/plain\r\n";
        auto send = [&](const std::string& request) {
          if (std::string(method) == "GET") return Raw(port, request);
          // HEAD: the head, and whatever else arrives within 20 ms (nothing).
          int fd = Connect(port);
          SendAll(fd, request);
          std::string rest;
          std::string r = ReadHeadOnly(fd, &rest);
          pollfd p{fd, POLLIN, 0};
          char tmp[4096];
          if (poll(&p, 1, 20) > 0) {
            ssize_t n = recv(fd, tmp, sizeof tmp, 0);
            if (n > 0) rest.append(tmp, size_t(n));
          }
          close(fd);
          return r + rest;
        };
        std::string fast = send(start + "\r\n");
        std::string worker = send(start + "Accept: text/plain\r\n\r\n");
        EXPECT_EQ(fast, worker) << start;
        if (std::string(method) == "HEAD") EXPECT_EQ(BodyOf(fast), "") << fast;
        EXPECT_TRUE(StatusOf(fast) == 200 || StatusOf(fast) == 503) << fast;
        compared++;
      }
    }
  }
  EXPECT_EQ(compared, 60);
  // The same for a JSON body, up to the view's age.
  auto strip_age = [](std::string s) {
    size_t a = s.find("\"view_age_seconds\":");
    size_t b = s.find(',', a);
    if (a != std::string::npos) s.erase(a, b - a);
    return s;
  };
  std::string start = "GET /livez HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n";
  std::string fast = Raw(port, start + "\r\n");
  std::string worker = Raw(port, start + "Accept: application/json\r\n\r\n");
  EXPECT_EQ(HeaderOf(fast, "Content-Type"), "application/json");
  EXPECT_EQ(strip_age(BodyOf(fast)), strip_age(BodyOf(worker)));
  EXPECT_EQ(StatusOf(fast), 503);
}

TEST_F(HttpTest, FastPathCodesBodiesJsonAndHead) {
  const int port = servers_->port();
  std::string r = Raw(port, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_EQ(BodyOf(r), "ok: 2 loops, 2 live\n");
  EXPECT_EQ(HeaderOf(r, "Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(HeaderOf(r, "Content-Length"), "20");
  EXPECT_EQ(HeaderOf(r, "Cache-Control"), "no-store");
  EXPECT_EQ(HeaderOf(r, "Keep-Alive"), "timeout=5");
  r = Raw(port, "GET /healthz HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_EQ(BodyOf(r).rfind("ok: poll 1 ", 0), 0u) << r;

  SetView(StalledView());
  r = Raw(port, "GET /livez HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 503) << r;
  EXPECT_EQ(BodyOf(r), "loop app-2 stalled 6.0s (blocked in clock_nanosleep)\n");
  r = Raw(port, "GET /readyz HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 503) << r;
  EXPECT_EQ(BodyOf(r), "loop app-2 stalled 6.0s\n");
  EXPECT_EQ(StatusOf(Raw(port, "GET /startupz HTTP/1.1\r\n\r\n")), 200);
  r = Raw(port, "GET /livez?verbose HTTP/1.1\r\n\r\n");
  EXPECT_NE(BodyOf(r).find("\nloop app-2 slot=1 pid=301"), std::string::npos) << r;
  r = Raw(port, "GET /livez?verbose=0 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(BodyOf(r), "loop app-2 stalled 6.0s (blocked in clock_nanosleep)\n");

  // JSON: by Accept, by ?format=json; ?format= other than json wins over Accept.
  r = Raw(port, "GET /livez HTTP/1.1\r\nAccept: text/html, application/json;q=0.9\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 503);
  EXPECT_EQ(HeaderOf(r, "Content-Type"), "application/json");
  EXPECT_EQ(BodyOf(r).rfind("{\"status\":\"fail\",\"code\":503,\"probe\":\"livez\"", 0), 0u) << r;
  EXPECT_EQ(HeaderOf(r, "Content-Length"), std::to_string(BodyOf(r).size()));
  r = Raw(port, "GET /readyz?format=json HTTP/1.1\r\n\r\n");
  EXPECT_EQ(HeaderOf(r, "Content-Type"), "application/json");
  EXPECT_NE(BodyOf(r).find("\"probe\":\"readyz\""), std::string::npos);
  r = Raw(port, "GET /startupz?format=text HTTP/1.1\r\nAccept: application/json\r\n\r\n");
  EXPECT_EQ(HeaderOf(r, "Content-Type"), "text/plain; charset=utf-8");

  // HEAD: the headers of GET, no body: the next bytes on the connection are
  // the next response.
  int fd = Connect(port);
  ASSERT_GE(fd, 0);
  SendAll(fd, "HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string head;
  for (auto until = Clock::now() + std::chrono::seconds(3);
       head.find("\r\n\r\n") == std::string::npos && Clock::now() < until;) {
    char tmp[4096];
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) break;
    head.append(tmp, size_t(n));
  }
  EXPECT_EQ(StatusOf(head), 503) << head;
  EXPECT_EQ(head.size(), head.find("\r\n\r\n") + 4) << head;  // nothing after it
  EXPECT_EQ(HeaderOf(head, "Content-Length"),
            std::to_string(strlen("loop app-2 stalled 6.0s (blocked in clock_nanosleep)\n")));
  EXPECT_EQ(HeaderOf(head, "Accept-Ranges"), "bytes");
  SendAll(fd, "GET /startupz HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string next = ReadResponse(fd);
  EXPECT_EQ(StatusOf(next), 200) << next;
  EXPECT_EQ(BodyOf(next), "ok: started\n");
  close(fd);
}

TEST_F(HttpTest, FastPathKeepsAliveBeyondTheOldCapOf100) {
  int fd = Connect(servers_->port());
  ASSERT_GE(fd, 0);
  std::string rest;
  for (int i = 0; i < 250; i++) {
    ASSERT_TRUE(SendAll(fd, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")) << i;
    std::string r = ReadResponse(fd, 3000, &rest);
    ASSERT_EQ(StatusOf(r), 200) << i << ": " << r;
    ASSERT_EQ(HeaderOf(r, "Connection"), "") << i;
  }
  // Requests a worker answers count no more: the connection stays open.
  httplib::Client c("127.0.0.1", servers_->port());
  c.set_keep_alive(true);
  for (int i = 0; i < 150; i++) {
    auto r = c.Get("/metrics");
    ASSERT_TRUE(r) << i;
    ASSERT_EQ(r->status, 200);
    ASSERT_EQ(r->get_header_value("Keep-Alive"), "timeout=5") << i;
  }
  SendAll(fd, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadResponse(fd, 3000, &rest)), 200);
  close(fd);
}

TEST_F(HttpTest, FastPathConnectionCloseAndHttp10) {
  const int port = servers_->port();
  // Connection: close: said and done.
  int fd = Connect(port);
  SendAll(fd, "GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string r = ReadResponse(fd);
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_EQ(HeaderOf(r, "Connection"), "close");
  EXPECT_EQ(HeaderOf(r, "Keep-Alive"), "");
  EXPECT_TRUE(ClosedBy(fd, 1000));
  close(fd);
  // HTTP/1.0: closed, without Keep-Alive.
  fd = Connect(port);
  SendAll(fd, "GET /readyz HTTP/1.0\r\n\r\n");
  r = ReadResponse(fd);
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_EQ(HeaderOf(r, "Keep-Alive"), "");
  EXPECT_TRUE(ClosedBy(fd, 1000));
  close(fd);
  // HTTP/1.0 with Connection: Keep-Alive: kept open.
  fd = Connect(port);
  std::string rest;
  for (int i = 0; i < 3; i++) {
    SendAll(fd, "GET /livez HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    r = ReadResponse(fd, 3000, &rest);
    EXPECT_EQ(StatusOf(r), 200) << i << ": " << r;
    EXPECT_EQ(HeaderOf(r, "Keep-Alive"), "timeout=5");
  }
  close(fd);
  // An idle kept-alive connection is still closed after 5 s... (not waited
  // for here); a kept-alive one closes on Connection: close later.
  fd = Connect(port);
  SendAll(fd, "GET /livez HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadResponse(fd, 3000, &rest)), 200);
  SendAll(fd, "HEAD /livez HTTP/1.1\r\nConnection: close\r\n\r\n");
  r = ReadResponse(fd, 3000, &rest);
  EXPECT_EQ(HeaderOf(r, "Connection"), "close");
  EXPECT_TRUE(ClosedBy(fd, 1000));
  close(fd);
}

TEST_F(HttpTest, FastPathPipelinedRequestsInOrder) {
  int fd = Connect(servers_->port());
  ASSERT_GE(fd, 0);
  SetView(StalledView());
  // Two fast ones in one write.
  SendAll(fd, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGET /startupz HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string rest;
  std::string a = ReadResponse(fd, 3000, &rest);
  std::string b = ReadResponse(fd, 3000, &rest);
  EXPECT_EQ(StatusOf(a), 503) << a;
  EXPECT_EQ(BodyOf(a), "loop app-2 stalled 6.0s (blocked in clock_nanosleep)\n");
  EXPECT_EQ(StatusOf(b), 200) << b;
  EXPECT_EQ(BodyOf(b), "ok: started\n");
  // Fast, worker (/metrics), HEAD fast, worker (404), fast JSON, then HEAD
  // with Connection: close: in order, then closed.
  SendAll(fd,
          "GET /readyz HTTP/1.1\r\n\r\n"
          "GET /metrics HTTP/1.1\r\n\r\n"
          "HEAD /startupz HTTP/1.1\r\n\r\n"
          "GET /nope HTTP/1.1\r\n\r\n"
          "GET /livez?format=json HTTP/1.1\r\n\r\n"
          "HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
  std::string r1 = ReadResponse(fd, 3000, &rest);
  std::string r2 = ReadResponse(fd, 3000, &rest);
  std::string r3 = ReadHeadOnly(fd, &rest);
  std::string r4 = ReadResponse(fd, 3000, &rest);
  std::string r5 = ReadResponse(fd, 3000, &rest);
  std::string r6 = ReadHeadOnly(fd, &rest);
  EXPECT_EQ(StatusOf(r1), 503) << r1;
  EXPECT_EQ(BodyOf(r1), "loop app-2 stalled 6.0s\n");
  EXPECT_EQ(StatusOf(r2), 200) << r2;
  EXPECT_EQ(HeaderOf(r2, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(StatusOf(r3), 200) << r3;
  EXPECT_EQ(HeaderOf(r3, "Content-Length"), "12") << r3;  // "ok: started\n"
  EXPECT_EQ(StatusOf(r4), 404) << r4;
  EXPECT_EQ(StatusOf(r5), 503) << r5;
  EXPECT_EQ(HeaderOf(r5, "Content-Type"), "application/json") << r5;
  EXPECT_EQ(StatusOf(r6), 200) << r6;
  EXPECT_EQ(HeaderOf(r6, "Connection"), "close") << r6;
  EXPECT_EQ(rest, "");
  EXPECT_TRUE(ClosedBy(fd, 1000));
  close(fd);
}

TEST_F(HttpTest, FastPathRequestsAreCounted) {
  int fd = Connect(servers_->port());
  ASSERT_GE(fd, 0);
  std::string rest;
  for (int i = 0; i < 7; i++) {
    SendAll(fd, "GET /livez HTTP/1.1\r\n\r\n");
    ASSERT_EQ(StatusOf(ReadResponse(fd, 3000, &rest)), 200);
  }
  SendAll(fd, "HEAD /readyz HTTP/1.1\r\n\r\nGET /startupz?format=json HTTP/1.1\r\n\r\n");
  ReadResponse(fd, 3000, &rest);
  ReadResponse(fd, 3000, &rest);
  SetView(StalledView());
  for (int i = 0; i < 3; i++) {
    SendAll(fd, "GET /livez?verbose HTTP/1.1\r\n\r\n");
    ASSERT_EQ(StatusOf(ReadResponse(fd, 3000, &rest)), 503);
  }
  SendAll(fd, "GET /healthz HTTP/1.1\r\n\r\n");
  ASSERT_EQ(StatusOf(ReadResponse(fd, 3000, &rest)), 200);
  close(fd);
  std::string m = Get("/metrics")->body;
  for (const char* line : {"loopwatch_probe_requests_total{code=\"200\",handler=\"livez\"} 7\n",
                           "loopwatch_probe_requests_total{code=\"503\",handler=\"livez\"} 3\n",
                           "loopwatch_probe_requests_total{code=\"200\",handler=\"readyz\"} 1\n",
                           "loopwatch_probe_requests_total{code=\"200\",handler=\"startupz\"} 1\n",
                           "loopwatch_probe_requests_total{code=\"200\",handler=\"healthz\"} 1\n"}) {
    EXPECT_NE(m.find(line), std::string::npos) << line << m;
  }
}

TEST_F(HttpTest, UnusualProbeRequestsGoToAWorkerAsBefore) {
  const int port = servers_->port();
  // A GET with a body is answered, and the connection closed (the body is
  // never read), as the worker path does.
  std::string r = Raw(port, "GET /livez HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_EQ(HeaderOf(r, "Connection"), "close");
  r = Raw(port, "GET /livez HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(HeaderOf(r, "Connection"), "close") << r;
  r = Raw(port, "GET /livez HTTP/1.1\r\nContent-Length: x\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 400) << r;
  // Escapes, odd spacing, other methods and versions: httplib's rules.
  EXPECT_EQ(StatusOf(Raw(port, "GET /%6civez HTTP/1.1\r\n\r\n")), 200);
  EXPECT_EQ(StatusOf(Raw(port, "GET  /livez  HTTP/1.1\r\n\r\n")), 200);
  EXPECT_EQ(StatusOf(Raw(port, "GET /livez/ HTTP/1.1\r\n\r\n")), 404);
  EXPECT_EQ(StatusOf(Raw(port, "POST /livez HTTP/1.1\r\nContent-Length: 0\r\n\r\n")), 405);
  EXPECT_EQ(StatusOf(Raw(port, "GET /livez HTTP/2.0\r\n\r\n")), 400);
  // Accept-Encoding: httplib compresses; so the worker answers.
  r = Raw(port, "GET /livez HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 200);
  EXPECT_EQ(HeaderOf(r, "Content-Encoding"), "gzip") << r;
  // A view source that throws: 500 from a worker, logged.
  {
    std::lock_guard<std::mutex> lock(mu_);
    throw_ = true;
  }
  r = Raw(port, "GET /livez HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusOf(r), 500) << r;
  EXPECT_EQ(BodyOf(r), "internal error\n");
  EXPECT_NE(Logs().back().find("view source failed"), std::string::npos);
  {
    std::lock_guard<std::mutex> lock(mu_);
    throw_ = false;
  }
  EXPECT_EQ(StatusOf(Raw(port, "GET /livez HTTP/1.1\r\n\r\n")), 200);
}

TEST_F(HttpTest, FastPathLargeResponseToASlowReader) {
  // A verbose body far larger than the socket takes at once: the gate sends
  // the rest as the client reads, and then the pipelined next request.
  View v = StalledView();
  // About 8 MB: more than loopback's send buffer grows to (4 MB).
  for (uint32_t i = 2; i < 30000; i++) {
    v.loops.push_back(Loop(i, std::string(200, 'w') + "-" + std::to_string(i)));
  }
  SetView(v);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(servers_->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  SendAll(fd, "GET /livez?verbose HTTP/1.1\r\n\r\nGET /startupz HTTP/1.1\r\n\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let it fill up
  // Meanwhile other connections are served.
  EXPECT_EQ(StatusOf(Raw(servers_->port(), "GET /healthz HTTP/1.1\r\n\r\n")), 200);
  std::string rest;
  std::string big = ReadResponse(fd, 5000, &rest);
  std::string next = ReadResponse(fd, 3000, &rest);
  close(fd);
  EXPECT_EQ(StatusOf(big), 503);
  const std::string body = BodyOf(big);
  EXPECT_GT(body.size(), 6000000u) << body.size();
  EXPECT_EQ(HeaderOf(big, "Content-Length"), std::to_string(body.size()));
  EXPECT_NE(body.find("w-29999 slot=29999"), std::string::npos);
  EXPECT_EQ(StatusOf(next), 200) << next.substr(0, 300);
  EXPECT_EQ(BodyOf(next), "ok: started\n");
}

TEST(HttpServersStart, AdminOffAndBindErrors) {
  Hold hold;
  SidecarMetrics metrics;
  auto source = [] { return std::make_shared<const View>(); };
  Config c = TestConfig();
  c.admin_listen.reset();
  HttpServers a(c, source, hold, metrics, nullptr);
  std::string error;
  ASSERT_TRUE(a.Start(&error)) << error;
  EXPECT_EQ(a.admin_port(), -1);
  EXPECT_GT(a.port(), 0);

  // The port is taken: an error, not a silently shared port.
  Config taken = TestConfig();
  taken.listen = {"127.0.0.1", a.port()};
  HttpServers b(taken, source, hold, metrics, nullptr);
  EXPECT_FALSE(b.Start(&error));
  EXPECT_NE(error.find("listen: cannot bind 127.0.0.1:" + std::to_string(a.port())),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("in use"), std::string::npos) << error;

  // The admin port taken: the public one is released again.
  Config admin_taken = TestConfig();
  admin_taken.admin_listen = ListenAddress{"127.0.0.1", a.port()};
  HttpServers d(admin_taken, source, hold, metrics, nullptr);
  EXPECT_FALSE(d.Start(&error));
  EXPECT_NE(error.find("admin_listen: cannot bind 127.0.0.1:" + std::to_string(a.port())),
            std::string::npos)
      << error;
  EXPECT_EQ(d.port(), -1);
  a.Stop();
}

TEST(HttpServersStart, Ipv6Loopback) {
  Hold hold;
  SidecarMetrics metrics;
  Config c = TestConfig();
  c.listen = {"::1", 0};
  c.admin_listen.reset();
  HttpServers s(c, [] { return std::make_shared<const View>(); }, hold, metrics, nullptr);
  std::string error;
  if (!s.Start(&error)) GTEST_SKIP() << "no IPv6 loopback here: " << error;
  httplib::Client cli("::1", s.port());
  auto r = cli.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);  // the empty view is from time 0: stale
}

}  // namespace
}  // namespace loopwatch

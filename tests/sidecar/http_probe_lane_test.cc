// SPDX-License-Identifier: Apache-2.0
//
// The probe lane (http/probe_lane.h): the peer list's grammar, and real
// connections from different loopback source addresses landing in the lane
// their address says, counted by loopwatch_http_connections_total.
#include "http/probe_lane.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "http/servers.h"

namespace loopwatch {
namespace {

TEST(ProbePeers, Grammar) {
  std::vector<PeerAddress> p;
  std::string why;
  ASSERT_TRUE(ParsePeerList("", &p, &why));
  EXPECT_TRUE(p.empty());
  ASSERT_TRUE(ParsePeerList("10.0.0.5", &p, &why)) << why;
  EXPECT_EQ(FormatPeerList(p), "10.0.0.5");
  ASSERT_TRUE(ParsePeerList(" 10.0.0.5 , fd00::5,10.0.0.5", &p, &why)) << why;
  EXPECT_EQ(FormatPeerList(p), "10.0.0.5,fd00::5") << "spaces taken, duplicates dropped";
  ASSERT_TRUE(ParsePeerList("::ffff:192.168.1.2", &p, &why)) << why;
  EXPECT_EQ(FormatPeerList(p), "192.168.1.2") << "an IPv4-mapped address is IPv4";
  EXPECT_EQ(p[0].family, AF_INET);

  for (const char* bad : {"10.0.0", "node-1", "10.0.0.5,", ",10.0.0.5", "10.0.0.5;10.0.0.6",
                          "[::1]", "10.0.0.5:80", "1,2,3,4,5,6,7,8,9"}) {
    std::vector<PeerAddress> keep = p;
    EXPECT_FALSE(ParsePeerList(bad, &keep, &why)) << bad;
    EXPECT_NE(why.find("expected IP addresses"), std::string::npos) << why;
    EXPECT_EQ(FormatPeerList(keep), "192.168.1.2") << "a refused list leaves the output alone";
  }
  EXPECT_FALSE(ParsePeerList("127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,"
                             "127.0.0.7,127.0.0.8,127.0.0.9", &p, &why));
  EXPECT_NE(why.find("more than 8"), std::string::npos) << why;
}

// Connects from `src` to `dst`:`port` and closes at once; true if connected.
bool ConnectFrom(int family, const char* src, const char* dst, int port) {
  const int fd = socket(family, SOCK_STREAM, 0);
  sockaddr_storage s{}, d{};
  socklen_t len;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&s);
    auto* b = reinterpret_cast<sockaddr_in*>(&d);
    a->sin_family = b->sin_family = AF_INET;
    inet_pton(AF_INET, src, &a->sin_addr);
    inet_pton(AF_INET, dst, &b->sin_addr);
    b->sin_port = htons(uint16_t(port));
    len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&s);
    auto* b = reinterpret_cast<sockaddr_in6*>(&d);
    a->sin6_family = b->sin6_family = AF_INET6;
    inet_pton(AF_INET6, src, &a->sin6_addr);
    inet_pton(AF_INET6, dst, &b->sin6_addr);
    b->sin6_port = htons(uint16_t(port));
    len = sizeof(sockaddr_in6);
  }
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&s), len) == 0 &&
                  connect(fd, reinterpret_cast<sockaddr*>(&d), len) == 0;
  close(fd);
  return ok;
}

// The accepted-connection count of a listener, from the registry's text.
double Accepted(SidecarMetrics& m, const char* listener) {
  const std::string text = m.Render(View{}, Hold{}, 0);
  const std::string key =
      std::string("loopwatch_http_connections_total{listener=\"") + listener + "\"} ";
  const size_t at = text.find(key);
  return at == std::string::npos ? -1 : std::stod(text.substr(at + key.size()));
}

class ProbeLaneTest : public ::testing::Test {
 protected:
  bool Start(const char* listen_host, const char* peers, std::string* error) {
    Config c;
    c.listen = {listen_host, 0};
    c.admin_listen.reset();
    std::string why;
    EXPECT_TRUE(ParsePeerList(peers, &c.probe_peers, &why)) << why;
    servers_ = std::make_unique<HttpServers>(
        c, [] { return std::make_shared<const View>(); }, hold_, metrics_, nullptr);
    return servers_->Start(error);
  }
  // Waits (bounded) until the two counters reach the expected values.
  void ExpectCounts(double probe_lane, double general) {
    for (int i = 0; i < 500; i++) {
      if (Accepted(metrics_, "probe_lane") == probe_lane &&
          Accepted(metrics_, "public") == general) {
        break;
      }
      usleep(2000);
    }
    EXPECT_EQ(Accepted(metrics_, "probe_lane"), probe_lane);
    EXPECT_EQ(Accepted(metrics_, "public"), general);
  }
  void TearDown() override {
    if (servers_) servers_->Stop();
  }

  Hold hold_;
  SidecarMetrics metrics_;
  std::unique_ptr<HttpServers> servers_;
};

TEST_F(ProbeLaneTest, ProbePeersLandInTheirLaneOthersDoNot) {
  std::string error;
  ASSERT_TRUE(Start("127.0.0.1", "127.0.0.1,127.0.0.3", &error)) << error;
  const int port = servers_->port();
  for (int i = 0; i < 5; i++) ASSERT_TRUE(ConnectFrom(AF_INET, "127.0.0.1", "127.0.0.1", port));
  ExpectCounts(5, 0);
  for (int i = 0; i < 4; i++) ASSERT_TRUE(ConnectFrom(AF_INET, "127.0.0.2", "127.0.0.1", port));
  ExpectCounts(5, 4);
  ASSERT_TRUE(ConnectFrom(AF_INET, "127.0.0.3", "127.0.0.1", port));
  ASSERT_TRUE(ConnectFrom(AF_INET, "127.0.0.4", "127.0.0.1", port));
  ExpectCounts(6, 5);
}

TEST_F(ProbeLaneTest, WithoutProbePeersEverythingIsPublic) {
  std::string error;
  ASSERT_TRUE(Start("127.0.0.1", "", &error)) << error;
  ASSERT_TRUE(ConnectFrom(AF_INET, "127.0.0.1", "127.0.0.1", servers_->port()));
  ExpectCounts(0, 1);
}

TEST_F(ProbeLaneTest, Ipv6PeersAndIpv4OnADualStackSocket) {
  std::string error;
  if (!Start("::", "::1,127.0.0.5", &error)) GTEST_SKIP() << "no IPv6 here: " << error;
  const int port = servers_->port();
  if (!ConnectFrom(AF_INET6, "::1", "::1", port)) GTEST_SKIP() << "no IPv6 loopback";
  ExpectCounts(1, 0);
  ASSERT_TRUE(ConnectFrom(AF_INET, "127.0.0.5", "127.0.0.1", port));
  ExpectCounts(2, 0);
  ASSERT_TRUE(ConnectFrom(AF_INET, "127.0.0.6", "127.0.0.1", port));
  ExpectCounts(2, 1);
}

TEST_F(ProbeLaneTest, ATakenPortIsAnErrorNotASharedGroup) {
  std::string error;
  ASSERT_TRUE(Start("127.0.0.1", "127.0.0.1", &error)) << error;
  Config c;
  c.listen = {"127.0.0.1", servers_->port()};
  c.admin_listen.reset();
  ParsePeerList("127.0.0.1", &c.probe_peers, &error);
  Hold hold;
  SidecarMetrics metrics;
  HttpServers second(c, [] { return std::make_shared<const View>(); }, hold, metrics, nullptr);
  EXPECT_FALSE(second.Start(&error));
  EXPECT_NE(error.find("in use"), std::string::npos) << error;
}

}  // namespace
}  // namespace loopwatch

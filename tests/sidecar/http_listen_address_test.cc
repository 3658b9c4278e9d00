// SPDX-License-Identifier: Apache-2.0
//
// The one listen-address grammar (http/listen_address.h): the forms taken,
// the forms refused, and the text it writes back (which it reads again).
#include "http/listen_address.h"

#include <gtest/gtest.h>

#include <string>

namespace loopwatch {
namespace {

TEST(ListenAddress, AcceptedForms) {
  struct {
    const char* text;
    const char* host;
    int port;
    const char* back;
  } cases[] = {
      {"0.0.0.0:9321", "0.0.0.0", 9321, "0.0.0.0:9321"},
      {"127.0.0.1:9322", "127.0.0.1", 9322, "127.0.0.1:9322"},
      {":9321", "0.0.0.0", 9321, "0.0.0.0:9321"},
      {"localhost:80", "localhost", 80, "localhost:80"},
      {"my-pod.ns.svc.cluster.local.:0", "my-pod.ns.svc.cluster.local.", 0,
       "my-pod.ns.svc.cluster.local.:0"},
      {"[::]:9321", "::", 9321, "[::]:9321"},
      {"[::1]:0", "::1", 0, "[::1]:0"},
      {"[fe80::1%2]:65535", "fe80::1%2", 65535, "[fe80::1%2]:65535"},
      {"[::ffff:10.0.0.1]:1", "::ffff:10.0.0.1", 1, "[::ffff:10.0.0.1]:1"},
  };
  for (const auto& c : cases) {
    ListenAddress a{"unchanged", -1};
    std::string why;
    ASSERT_TRUE(ParseListenAddress(c.text, &a, &why)) << c.text << ": " << why;
    EXPECT_EQ(a.host, c.host) << c.text;
    EXPECT_EQ(a.port, c.port) << c.text;
    EXPECT_EQ(a.ToString(), c.back) << c.text;
    ListenAddress again;
    ASSERT_TRUE(ParseListenAddress(a.ToString(), &again, &why)) << a.ToString();
    EXPECT_EQ(again, a);
  }
}

TEST(ListenAddress, RefusedForms) {
  struct {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "is not HOST:PORT (no port)"},
      {"9321", "is not HOST:PORT (no port)"},
      {"localhost", "is not HOST:PORT (no port)"},
      {"*:9321", "has an invalid host name"},
      {"bad host:80", "has an invalid host name"},
      {"a..b:80", "has an invalid host name"},
      {".:80", "has an invalid host name"},
      {"::1:9321", "has an IPv6 address without brackets"},
      {"[::1]9321", "is not HOST:PORT"},
      {"[::1]", "is not HOST:PORT"},
      {"[::1:80", "is not HOST:PORT"},
      {"[]:80", "has an invalid IPv6 address"},
      {"[nothex]:80", "has an invalid IPv6 address"},
      {"[127.0.0.1]:80", "has an invalid IPv6 address"},
      {"host:", "has an invalid port (0 to 65535)"},
      {":", "has an invalid port (0 to 65535)"},
      {"host:65536", "has an invalid port (0 to 65535)"},
      {"host:-1", "has an invalid port (0 to 65535)"},
      {"host:12a", "has an invalid port (0 to 65535)"},
      {"host:http", "has an invalid port (0 to 65535)"},
      {"host:123456", "has an invalid port (0 to 65535)"},
  };
  for (const auto& c : cases) {
    ListenAddress a{"unchanged", 7};
    std::string why;
    EXPECT_FALSE(ParseListenAddress(c.text, &a, &why)) << c.text;
    EXPECT_EQ(why.rfind(c.why, 0), 0u) << c.text << ": " << why;
    EXPECT_NE(why.find(kListenAddressForm), std::string::npos) << why;
    EXPECT_EQ(a.host, "unchanged") << "a refused address leaves the output alone";
    EXPECT_EQ(a.port, 7);
  }
}

}  // namespace
}  // namespace loopwatch

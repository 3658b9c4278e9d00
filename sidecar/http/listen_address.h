// SPDX-License-Identifier: Apache-2.0
//
// listen_address.h: the one grammar of the addresses the sidecar listens on
// (the `listen` and `admin_listen` settings):
//
//   HOST:PORT     an IPv4 address or a host name: 0.0.0.0:9321, localhost:9321
//   [IPV6]:PORT   an IPv6 address in brackets: [::]:9321, [::1]:9322
//   :PORT         every IPv4 interface, the same as 0.0.0.0:PORT
//
// PORT is 0 to 65535 in decimal; 0 binds any free port (tests). Nothing else
// is taken: no bare port, no "*", no IPv6 address without brackets. It is
// parsed once, when the configuration is loaded.
#ifndef LOOPWATCH_SIDECAR_HTTP_LISTEN_ADDRESS_H_
#define LOOPWATCH_SIDECAR_HTTP_LISTEN_ADDRESS_H_

#include <string>
#include <string_view>

namespace loopwatch {

struct ListenAddress {
  std::string host = "0.0.0.0";  // for bind(): an address or a host name
  int port = 0;

  // As the grammar reads it back: "0.0.0.0:9321", "[::1]:9322".
  std::string ToString() const;
  bool operator==(const ListenAddress& o) const { return host == o.host && port == o.port; }
  bool operator!=(const ListenAddress& o) const { return !(*this == o); }
};

// The expected form, for error messages and --help.
extern const char kListenAddressForm[];

// Parses `text`; on failure returns false, leaves *out alone and sets *why
// to what is wrong, ending with kListenAddressForm: "has no port; expected
// HOST:PORT, ...".
bool ParseListenAddress(std::string_view text, ListenAddress* out, std::string* why);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_LISTEN_ADDRESS_H_

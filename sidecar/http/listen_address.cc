// SPDX-License-Identifier: Apache-2.0
#include "http/listen_address.h"

#include <cctype>

namespace loopwatch {
namespace {

bool ValidHostName(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  size_t label = 0;
  for (char ch : h) {
    if (ch == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    const bool ok = isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
    if (!ok || ++label > 63) return false;
  }
  return label > 0 || h.size() > 1;  // "example.com." is fine, "." is not
}

bool ValidIpv6(std::string_view h) {
  if (h.empty() || h.size() > 45 || h.find(':') == std::string_view::npos) return false;
  for (char ch : h) {
    if (!isxdigit(static_cast<unsigned char>(ch)) && ch != ':' && ch != '.' && ch != '%') {
      return false;
    }
  }
  return true;
}

bool ParsePort(std::string_view s, int* port) {
  if (s.empty() || s.size() > 5) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v > 65535) return false;
  *port = v;
  return true;
}

}  // namespace

const char kListenAddressForm[] =
    "expected HOST:PORT, e.g. 0.0.0.0:9321, :9321 (every IPv4 interface), "
    "localhost:9321 or [::1]:9321; port 0 takes any free port";

std::string ListenAddress::ToString() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool ParseListenAddress(std::string_view text, ListenAddress* out, std::string* why) {
  auto fail = [&](const char* what) {
    *why = std::string(what) + "; " + kListenAddressForm;
    return false;
  };
  std::string_view host, port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      return fail("is not HOST:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (!ValidIpv6(host)) return fail("has an invalid IPv6 address");
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("is not HOST:PORT (no port)");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail("has an IPv6 address without brackets");
    }
    if (host.empty()) {
      host = "0.0.0.0";
    } else if (!ValidHostName(host)) {
      return fail("has an invalid host name");
    }
  }
  int p;
  if (!ParsePort(port, &p)) return fail("has an invalid port (0 to 65535)");
  out->host = std::string(host);
  out->port = p;
  return true;
}

}  // namespace loopwatch

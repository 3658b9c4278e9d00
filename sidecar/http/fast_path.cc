// SPDX-License-Identifier: Apache-2.0
#include "http/fast_path.h"

#include <algorithm>
#include <cstring>

namespace loopwatch {
namespace {

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         strchr("!#$&'*+-.^_`|~", c) != nullptr;
}

bool IsQueryChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '~' || c == '-';
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Query parameters as httplib parses them, for the plain form only: false
// (use a worker) for anything else, or for a parameter we read given twice
// with different values (httplib's multimap would pick one of them).
bool ParseFastQuery(std::string_view q, FastRequest* r) {
  bool has_format = false, has_verbose = false, has_container = false;
  std::string_view format, verbose, container;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (kv.empty()) continue;  // "a&&b", a trailing '&': httplib skips them
    size_t eq = kv.find('=');
    std::string_view key = kv.substr(0, eq);
    std::string_view val = eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
    if (key.empty()) return false;
    for (char c : key) {
      if (!IsQueryChar(c)) return false;
    }
    for (char c : val) {
      if (!IsQueryChar(c)) return false;  // also a second '='
    }
    if (key == "format") {
      if (has_format && format != val) return false;
      has_format = true;
      format = val;
    } else if (key == "verbose") {
      if (has_verbose && verbose != val) return false;
      has_verbose = true;
      verbose = val;
    } else if (key == "container") {
      if (has_container && container != val) return false;
      has_container = true;
      container = val;
    }
  }
  r->container = container;
  r->has_container = has_container;
  if (has_format) r->json = format == "json";  // as WantsJson: the query wins
  r->verbose = has_verbose && verbose != "0" && verbose != "false" && verbose != "no";
  return true;
}

}  // namespace

bool ParseFastHead(std::string_view h, FastRequest* r) {
  // Every '\n' ends a "\r\n"; no other control bytes anywhere.
  for (size_t i = 0; i < h.size(); i++) {
    const unsigned char c = static_cast<unsigned char>(h[i]);
    if (c == '\r') {
      if (i + 1 >= h.size() || h[i + 1] != '\n') return false;
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      return false;  // a bare '\n', a tab, NUL...
    }
  }
  if (h.size() < 4 || h.substr(h.size() - 4) != "\r\n\r\n") return false;
  constexpr size_t kMaxFastLine = 1024;
  constexpr int kMaxFastHeaders = 32;

  size_t eol = h.find("\r\n");
  if (eol > kMaxFastLine) return false;
  std::string_view line = h.substr(0, eol);
  std::string_view rest = h.substr(eol + 2);
  if (line.rfind("GET ", 0) == 0) {
    line.remove_prefix(4);
  } else if (line.rfind("HEAD ", 0) == 0) {
    r->head = true;
    line.remove_prefix(5);
  } else {
    return false;
  }
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return false;
  std::string_view target = line.substr(0, sp);
  std::string_view version = line.substr(sp + 1);
  bool http10;
  if (version == "HTTP/1.1") {
    http10 = false;
  } else if (version == "HTTP/1.0") {
    http10 = true;
  } else {
    return false;
  }
  size_t qm = target.find('?');
  std::string_view path = target.substr(0, qm);
  if (path.empty() || path[0] != '/' || path.find('%') != std::string_view::npos) return false;
  r->path = path;

  bool content_length = false, accept_seen = false, connection_seen = false;
  std::string_view accept, connection;
  int headers = 0;
  while (!rest.empty()) {
    eol = rest.find("\r\n");
    if (eol > kMaxFastLine || ++headers > kMaxFastHeaders + 1) return false;
    line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    if (line.empty()) break;  // the blank line: the head's end
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return false;
    std::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (!IsTokenChar(c)) return false;  // also "Name :" and folded lines
    }
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (value.empty()) return false;
    if (EqualsNoCase(name, "Transfer-Encoding") || EqualsNoCase(name, "Accept-Encoding") ||
        EqualsNoCase(name, "Range") || EqualsNoCase(name, "Expect")) {
      return false;
    }
    if (EqualsNoCase(name, "Content-Length")) {
      if (content_length || value != "0") return false;
      content_length = true;
    } else if (EqualsNoCase(name, "Accept")) {
      if (accept_seen || value.find('%') != std::string_view::npos) return false;
      accept_seen = true;
      accept = value;
    } else if (EqualsNoCase(name, "Connection")) {
      if (connection_seen) return false;
      if (value != "close" && value != "Keep-Alive" && value != "keep-alive") return false;
      connection_seen = true;
      connection = value;
    }
  }
  if (!rest.empty()) return false;  // cannot happen: h is one head

  r->json = accept.find("application/json") != std::string_view::npos;
  if (qm != std::string_view::npos && !ParseFastQuery(target.substr(qm + 1), r)) {
    return false;
  }
  // httplib: "Connection: close" closes and says so; HTTP/1.0 closes unless
  // "Connection: Keep-Alive" (exactly; httplib compares case-sensitively),
  // without a Connection header in the response.
  r->close_header = connection == "close";
  r->close = r->close_header || (http10 && connection != "Keep-Alive");
  return true;
}

bool FormatFastResponse(const FastRequest& req, const FastResponse& r,
                        std::string_view keep_alive, std::string* out) {
  const char* reason;
  switch (r.status) {
    case 200: reason = "OK"; break;
    case 503: reason = "Service Unavailable"; break;
    default: return false;
  }
  out->clear();
  out->reserve(200 + r.content_type.size() + r.body.size());
  out->append("HTTP/1.1 ").append(std::to_string(r.status)).append(" ").append(reason);
  out->append("\r\n");
  if (req.head) out->append("Accept-Ranges: bytes\r\n");
  out->append("Cache-Control: no-store\r\n");
  if (req.close_header) out->append("Connection: close\r\n");
  out->append("Content-Length: ").append(std::to_string(r.body.size())).append("\r\n");
  out->append("Content-Type: ").append(r.content_type).append("\r\n");
  if (!req.close) out->append("Keep-Alive: ").append(keep_alive).append("\r\n");
  out->append("\r\n");
  if (!req.head) out->append(r.body);
  return true;
}

size_t HeadLength(std::string_view v) {
  const size_t crlf = v.find("\r\n\r\n");
  const size_t lf = v.find("\n\n");
  const size_t end = std::min(crlf == std::string_view::npos ? crlf : crlf + 4,
                              lf == std::string_view::npos ? lf : lf + 2);
  return end == std::string_view::npos ? 0 : end;
}

}  // namespace loopwatch

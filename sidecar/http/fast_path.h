// SPDX-License-Identifier: Apache-2.0
//
// fast_path.h: the request parser and response formatter of the gate's fast
// path, as pure functions. A plain bodiless GET or HEAD whose answer is in
// memory (the probes) is answered by the gate thread itself, without waking
// a worker: on a kept-alive connection that saves two thread wake-ups per
// probe. The fast path takes only requests whose answer it can write byte
// for byte as the worker path (cpp-httplib 0.11) would; anything else, or
// anything it is unsure of, goes to a worker.
#ifndef LOOPWATCH_SIDECAR_HTTP_FAST_PATH_H_
#define LOOPWATCH_SIDECAR_HTTP_FAST_PATH_H_

#include <string>
#include <string_view>

namespace loopwatch {

struct FastRequest {
  std::string_view path;      // without the query; points into the head
  bool head = false;          // HEAD: no body
  bool json = false;          // ?format=json, or Accept: application/json
  bool verbose = false;       // ?verbose (not 0, false, no)
  bool has_container = false; // ?container=NAME given (perhaps empty)
  std::string_view container; // its value; points into the head
  bool close = false;         // close the connection after the response
  bool close_header = false;  // "Connection: close" in the response
};

// The response to a fast request.
struct FastResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

// Length of the request head at the start of `v` (through its blank line),
// or 0 while incomplete.
size_t HeadLength(std::string_view v);

// Parses a complete request head (request line and headers through the
// blank line) for the fast path. False: not for it; a worker answers it.
// Any plain path is taken here; the route set's answer function decides
// which paths it answers on the fast path (the public routes: the probes
// and /healthz) and leaves the others to a worker.
// Taken are only:
//   - the request line "GET|HEAD SP path[?query] SP HTTP/1.1|HTTP/1.0", the
//     path without %-escapes, the query plain name[=value] pairs of
//     [A-Za-z0-9._~-] (a parameter read here given twice must agree);
//   - lines that end in CRLF, at most 1 KiB each and 32 header lines, with
//     no control bytes; headers "token: value" with a non-empty value;
//   - no Transfer-Encoding, Content-Length absent or "0", no Accept-Encoding
//     (a worker would compress), Range or Expect; at most one Accept and one
//     Connection, the latter exactly "close", "Keep-Alive" or "keep-alive".
bool ParseFastHead(std::string_view head, FastRequest* req);

// Writes the response as the worker path would: the status line, then the
// headers sorted by name (cpp-httplib's order), then the body unless HEAD.
// `keep_alive` is the Keep-Alive header's value on a connection that stays
// open. False for a status this does not know the reason phrase of.
bool FormatFastResponse(const FastRequest& req, const FastResponse& res,
                        std::string_view keep_alive, std::string* out);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_FAST_PATH_H_

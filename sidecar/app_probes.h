// SPDX-License-Identifier: Apache-2.0
//
// app_probes.h: the watched containers' own probes, as `loopwatch inject`
// kept them when it pointed their probes at the sidecar (the setting
// app_probes, LOOPWATCH_APP_PROBES):
//
//   {"app": {"livenessProbe": {"httpGet": {"path": "/health", "port": 8000}},
//            "readinessProbe": {"tcpSocket": {"port": 8000}, "timeoutSeconds": 2}}}
//
// Until a loop of a container has beaten, a probe with ?container=NAME is
// answered by asking that container's own probe, as the kubelet would have:
// an app that does not use the library is judged as before it was injected.
// Named ports are already numbers here (the patcher resolves them).
#ifndef LOOPWATCH_SIDECAR_APP_PROBES_H_
#define LOOPWATCH_SIDECAR_APP_PROBES_H_

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "probes.h"

namespace loopwatch {

struct AppProbe {
  enum class Kind { kHttpGet, kTcpSocket };
  Kind kind = Kind::kHttpGet;
  bool https = false;                // httpGet scheme HTTPS (not verified, as the kubelet)
  std::string host = "127.0.0.1";    // httpGet host, else the pod's own network
  int port = 0;
  std::string path = "/";
  std::vector<std::pair<std::string, std::string>> headers;
  int timeout_seconds = 1;           // the kubelet's default
};

class AppProbes {
 public:
  // Parses the JSON form above. False with *error ("app_probes: ...") on
  // anything that is not it, so a bad value stops the sidecar at start.
  static bool Parse(const std::string& json, AppProbes* out, std::string* error);
  // Container `container`'s own probe of kind `p`; null if it had none.
  const AppProbe* Find(const std::string& container, Probe p) const;
  bool empty() const { return probes_.empty(); }

 private:
  std::map<std::pair<std::string, Probe>, AppProbe> probes_;
};

// Asks `probe` (an HTTP GET, or a TCP connect) within its timeout and turns
// the outcome into the sidecar's answer: 200 when it passed (2xx or 3xx, or
// connected), 503 when not, with a line saying so.
ProbeResponse ForwardProbe(const AppProbe& probe, Probe p, std::string_view container);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_APP_PROBES_H_

// SPDX-License-Identifier: Apache-2.0
//
// webhook.h: `loopwatch webhook`, the mutating admission server. HTTPS only
// (cpp-httplib's OpenSSL server):
//
//   POST /inject    an AdmissionReview v1 in, one with a JSONPatch out
//                   (review.h); never a rejection
//   GET  /healthz   200 while it serves, with the certificate's expiry
//   GET  /metrics   reviews by result, review latency, certificate reloads
//
// The certificate and key are read again when either file changes (as
// cert-manager rotates them): each new TLS connection checks, at most once
// a second, and takes the new pair if it loads and matches; a pair that does
// not is logged and the old one kept. No restart, no dropped connection.
//
// Injector settings (image, resources, ...) come from --config, a flat YAML
// mapping (InjectorSettingsFromYaml).
#ifndef LOOPWATCH_SIDECAR_INJECT_WEBHOOK_H_
#define LOOPWATCH_SIDECAR_INJECT_WEBHOOK_H_

#include <iosfwd>
#include <string>
#include <vector>

#include "inject/patcher.h"

namespace loopwatch::inject {

// The largest review body accepted; a larger one gets 413. The API server
// sends at most the object and its old version, each under etcd's 1.5 MiB.
constexpr size_t kMaxReviewBytes = 6 * 1024 * 1024;

// Reads the injector's settings file: keys image, image_pull_policy,
// cpu_request, cpu_limit, memory_request, memory_limit, volume_size,
// native_sidecar, run_as_user, and defaults of the sidecar's own settings
// that a pod may set (stall_after, lag_above, ...: PodSettableKeys()),
// checked by the sidecar's parsers. Errors are "file:line:column: what".
bool InjectorSettingsFromYaml(const std::string& path, InjectorSettings* out,
                              std::vector<std::string>* errors);

// Runs `loopwatch webhook ARGS` until SIGTERM or SIGINT. Exit status: 0
// stopped by a signal, 1 could not serve (port, certificate), 2 usage or
// configuration.
int WebhookCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_WEBHOOK_H_

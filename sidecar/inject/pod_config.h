// SPDX-License-Identifier: Apache-2.0
//
// pod_config.h: a pod's own loopwatch settings, from its annotations
// config.loopwatch.io/<key> (internal to sidecar/inject; the keys are listed
// in docs/inject.md). Every key is checked, so that a typo is reported and
// never silently ignored; the sidecar's settings are checked with the
// sidecar's own parsers.
#ifndef LOOPWATCH_SIDECAR_INJECT_POD_CONFIG_H_
#define LOOPWATCH_SIDECAR_INJECT_POD_CONFIG_H_

#include <string>
#include <utility>
#include <vector>

#include "inject/manifest.h"
#include "inject/patcher.h"

namespace loopwatch::inject {

struct PodConfig {
  std::vector<std::string> containers;  // empty: the default choice
  bool liveness = true, readiness = true, startup = true;
  bool native_sidecar = true;
  bool python = false;          // config.loopwatch.io/python: "true"
  bool python_path_set = false; // config.loopwatch.io/python-path given
  std::string python_path;      // the PYTHONPATH the image's ENV sets
  std::string cpu_request, cpu_limit, memory_request, memory_limit;
  std::vector<std::pair<std::string, std::string>> sidecar_env;  // LOOPWATCH_X, value
};

// "config.loopwatch.io/" + key.
std::string AnnotationName(const std::string& key);

// The sidecar settings (its config keys, stall_after, ...) that a pod's
// annotations, and the injector's settings file, may set.
const std::vector<std::string>& PodSettableKeys();

// Checks `value` for the sidecar setting `key` (one of PodSettableKeys())
// with the sidecar's own parser; sets *env to its environment variable.
bool CheckSidecarSetting(const std::string& key, const std::string& value, std::string* env,
                         std::string* why);

// Reads the annotations of the pod's metadata `meta` over the injector's
// defaults. False with *why ("config.loopwatch.io/x: ...") on the first bad
// one.
bool ReadPodConfig(const Json& meta, const InjectorSettings& s, PodConfig* pc, std::string* why);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_POD_CONFIG_H_

// SPDX-License-Identifier: Apache-2.0
#include "inject/pod_config.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <regex>

#include "config.h"
#include "inject/json_access.h"
#include "settings.h"

namespace loopwatch::inject {

bool ParseQuantity(const std::string& s, double* value) {
  static const std::regex re(
      R"(([+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+)?)");
  std::smatch m;
  if (!std::regex_match(s, m, re)) return false;
  double v = std::strtod(m[1].str().c_str(), nullptr);  // never throws, unlike stod
  const std::string suffix = m[2].str();
  static const std::pair<const char*, double> kSuffixes[] = {
      {"m", 1e-3}, {"k", 1e3},  {"M", 1e6},  {"G", 1e9},  {"T", 1e12},
      {"P", 1e15}, {"E", 1e18}, {"Ki", 1024.0}, {"Mi", 1048576.0},
      {"Gi", 1073741824.0}, {"Ti", 1099511627776.0}, {"Pi", 1125899906842624.0},
      {"Ei", 1152921504606846976.0}};
  if (!suffix.empty()) {
    if (suffix[0] == 'e' || suffix[0] == 'E') {
      v *= std::pow(10.0, std::strtod(suffix.c_str() + 1, nullptr));
    } else {
      for (const auto& [name, scale] : kSuffixes)
        if (suffix == name) v *= scale;
    }
  }
  *value = v;
  return std::isfinite(v);
}

const std::vector<std::string>& PodSettableKeys() {
  static const std::vector<std::string> keys = {
      "stall_after",     "lag_above",     "expect_loops",   "startup_grace",
      "liveness_policy", "mode",          "host_stall_fails_liveness",
      "redact_query",    "report_limit",  "report_window",  "log_format",
      "log_level"};
  return keys;
}

bool CheckSidecarSetting(const std::string& key, const std::string& value, std::string* env,
                         std::string* why) {
  const auto& keys = PodSettableKeys();
  const Setting* setting =
      std::find(keys.begin(), keys.end(), key) != keys.end() ? FindByKey(key) : nullptr;
  if (!setting) {
    *why = "not a sidecar setting a pod may set";
    return false;
  }
  Config scratch;
  if (!setting->parse(value, &scratch, why)) return false;
  *env = setting->env();
  return true;
}

namespace {

const std::vector<std::string>& InjectorKeys() {
  static const std::vector<std::string> keys = {
      "containers", "probes", "native-sidecar", "cpu-request", "cpu-limit",
      "memory-request", "memory-limit", "python", "python-path"};
  return keys;
}

}  // namespace

std::string AnnotationName(const std::string& key) { return kConfigPrefix + key; }

// Reads the config.loopwatch.io/ annotations. False with *why on the first
// bad one; every key is checked, so a typo is never silently ignored.
bool ReadPodConfig(const Json& meta, const InjectorSettings& s, PodConfig* pc,
                   std::string* why) {
  pc->native_sidecar = s.native_sidecar;
  pc->cpu_request = s.cpu_request;
  pc->cpu_limit = s.cpu_limit;
  pc->memory_request = s.memory_request;
  pc->memory_limit = s.memory_limit;
  // The injector's defaults first; an annotation of the same setting
  // replaces its entry.
  for (const auto& [key, value] : s.sidecar_settings) {
    std::string env, reason;
    if (CheckSidecarSetting(key, value, &env, &reason)) pc->sidecar_env.emplace_back(env, value);
  }
  if (!meta.contains("annotations") || !meta["annotations"].is_object()) return true;
  const std::string prefix = kConfigPrefix;
  for (const auto& item : meta["annotations"].items()) {
    const std::string name = item.key();  // not a binding: lambdas capture it
    const Json& value = item.value();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string key = name.substr(prefix.size());
    if (!value.is_string()) {
      *why = name + ": the value must be a string";
      return false;
    }
    const std::string v = value.get<std::string>();
    auto bad = [&](const std::string& what) {
      *why = name + ": " + Quote(v) + " " + what;
      return false;
    };
    if (key == "containers") {
      pc->containers = SplitList(v);
      if (pc->containers.empty()) return bad("names no container; expected a comma list");
    } else if (key == "probes") {
      pc->liveness = pc->readiness = pc->startup = false;
      if (v != "none") {
        for (const auto& p : SplitList(v)) {
          if (p == "liveness") pc->liveness = true;
          else if (p == "readiness") pc->readiness = true;
          else if (p == "startup") pc->startup = true;
          else return bad("is not a probe list; expected none, or some of liveness,readiness,startup");
        }
        if (!pc->liveness && !pc->readiness && !pc->startup)
          return bad("names no probe; expected none, or some of liveness,readiness,startup");
      }
    } else if (key == "python") {
      if (v != "true" && v != "false") return bad("is not true or false");
      pc->python = v == "true";
    } else if (key == "python-path") {
      // The image's ENV PYTHONPATH, which no webhook can see: kept after
      // the bootstrap. Entries are paths; an empty one would mean the
      // working directory to Python, so none is allowed.
      if (v.empty()) return bad("is empty; expected the image's PYTHONPATH, e.g. /app/src:/app/lib");
      if (v.front() == ':' || v.back() == ':' || v.find("::") != std::string::npos)
        return bad("has an empty entry (\"::\" or a ':' at an end), which Python reads as "
                   "the working directory");
      pc->python_path = v;
      pc->python_path_set = true;
    } else if (key == "native-sidecar") {
      if (v != "true" && v != "false") return bad("is not true or false");
      pc->native_sidecar = v == "true";
    } else if (key == "cpu-request" || key == "cpu-limit" || key == "memory-request" ||
               key == "memory-limit") {
      double q;
      if (!ParseQuantity(v, &q)) return bad("is not a resource quantity (e.g. 10m, 16Mi)");
      (key == "cpu-request"      ? pc->cpu_request
       : key == "cpu-limit"      ? pc->cpu_limit
       : key == "memory-request" ? pc->memory_request
                                 : pc->memory_limit) = v;
    } else {
      std::string setting_key = key;
      std::replace(setting_key.begin(), setting_key.end(), '-', '_');
      const auto& keys = PodSettableKeys();
      if (std::find(keys.begin(), keys.end(), setting_key) == keys.end()) {
        std::vector<std::string> known = InjectorKeys();
        for (std::string k : keys) {
          std::replace(k.begin(), k.end(), '_', '-');
          known.push_back(k);
        }
        std::string hint = Suggest(key, known);
        *why = name + ": not a loopwatch setting" +
               (hint.empty() ? "; the settings are " + Join(known)
                             : "; did you mean " + AnnotationName(hint) + "?");
        return false;
      }
      std::string env, reason;
      if (!CheckSidecarSetting(setting_key, v, &env, &reason)) return bad(reason);
      auto same = [&](const auto& e) { return e.first == env; };
      pc->sidecar_env.erase(std::remove_if(pc->sidecar_env.begin(), pc->sidecar_env.end(), same),
                            pc->sidecar_env.end());
      pc->sidecar_env.emplace_back(env, v);
    }
  }
  auto check_pair = [&](const std::string& req, const std::string& lim, const char* what) {
    double a, b;
    if (req.empty() || lim.empty() || !ParseQuantity(req, &a) || !ParseQuantity(lim, &b))
      return true;
    if (a <= b) return true;
    *why = std::string("the sidecar's ") + what + " request " + req + " is above its limit " +
           lim + " (" + AnnotationName(std::string(what) + "-request") + ", " +
           AnnotationName(std::string(what) + "-limit") + ")";
    return false;
  };
  if (pc->python_path_set && !pc->python) {
    *why = AnnotationName("python-path") + " is set without " + AnnotationName("python") +
           ": \"true\"; it only tells the Python payload which PYTHONPATH to keep";
    return false;
  }
  return check_pair(pc->cpu_request, pc->cpu_limit, "cpu") &&
         check_pair(pc->memory_request, pc->memory_limit, "memory");
}

}  // namespace loopwatch::inject

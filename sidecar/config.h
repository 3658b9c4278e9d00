// SPDX-License-Identifier: Apache-2.0
//
// config.h: the sidecar's settings. Every setting has one name in three
// spellings: YAML key `stall_after`, flag `--stall-after`, environment
// variable `LOOPWATCH_STALL_AFTER`. Precedence: flags > environment > file >
// defaults. The YAML file is a flat mapping.
#ifndef LOOPWATCH_SIDECAR_CONFIG_H_
#define LOOPWATCH_SIDECAR_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "duration.h"
#include "http/listen_address.h"
#include "http/probe_lane.h"

namespace loopwatch {

enum class LivenessPolicy { kAny, kAll };
enum class Mode { kEnforce, kObserve };
enum class LogFormat { kJson, kText };
enum class LogLevel { kDebug, kInfo, kWarn, kError };

struct Config {
  std::string segment = "/run/loopwatch/segment";
  ListenAddress listen{"0.0.0.0", 9321};
  // nullopt: off, no admin port.
  std::optional<ListenAddress> admin_listen = ListenAddress{"127.0.0.1", 9322};
  // Addresses whose connections to `listen` get a lane of their own (the
  // kubelet's: the node's address, status.hostIP); empty: one lane for all.
  std::vector<PeerAddress> probe_peers;
  Duration poll_interval = std::chrono::milliseconds(100);
  // A loop silent this long is stalled: /livez fails.
  Duration stall_after = std::chrono::seconds(5);
  // A loop lagging more than this is not ready: /readyz fails.
  Duration lag_above = std::chrono::seconds(1);
  // /startupz succeeds once this many loops have beaten.
  uint32_t expect_loops = 1;
  // A loop that opened but never beat is "starting", not stalled, this long.
  Duration startup_grace = std::chrono::seconds(60);
  LivenessPolicy liveness_policy = LivenessPolicy::kAny;
  Mode mode = Mode::kEnforce;
  // Query string values in activity labels, requests and stacks become
  // REDACTED before anything logs or serves them.
  bool redact_query = true;
  // Whether a stall classed `host` (the whole pod was paused) fails /livez.
  bool host_stall_fails_liveness = false;
  // Stall reports logged per loop per report_window; the rest are counted.
  uint32_t report_limit = 5;
  Duration report_window = std::chrono::minutes(10);
  // Stall reports kept for /debug/stalls.
  uint32_t stall_history = 32;
  // How long a dead or departed loop stays listed.
  Duration forget_after = std::chrono::minutes(5);
  // Longest hold the admin port accepts.
  Duration max_hold = std::chrono::hours(1);
  // Create the segment (with this many slots) if the app has not yet; 0: never.
  uint32_t create_slots = 64;
  uint32_t http_threads = 4;
  // Read and write timeout of an HTTP connection.
  Duration http_timeout = std::chrono::seconds(1);
  LogFormat log_format = LogFormat::kJson;
  LogLevel log_level = LogLevel::kInfo;
  // The watched containers' own probes, JSON (app_probes.h); set by
  // `loopwatch inject`. "": none.
  std::string app_probes;
};

// One problem found while loading; exit code 2.
struct ConfigError {
  std::string source;  // "config.yaml:3:14", "--stall-after", "LOOPWATCH_MODE"
  std::string message; // what was wrong and the expected form
  std::string ToString() const { return source + ": " + message; }
};

// Loads defaults, then the file (`--config FILE` or LOOPWATCH_CONFIG), then
// the environment, then flags. `args` are the arguments after `run`. Returns
// false with every error found in *errors. Flags that are not settings
// (--config, --print-config, --help) are handled too: *print_config and
// *help are set when given.
bool LoadConfig(const std::vector<std::string>& args,
                const std::map<std::string, std::string>& env, Config* out,
                std::vector<ConfigError>* errors, bool* print_config,
                bool* help);

// The process's environment, read once: the only place the sidecar reads
// `environ`. Settings come from it through LoadConfig().
std::map<std::string, std::string> ProcessEnvironment();

// The effective configuration as YAML, one key per line, keys in a fixed
// order, loadable again as a config file.
std::string ConfigToYaml(const Config& c);

// Help text for `loopwatch run --help`: every setting with its three
// spellings, default and meaning.
std::string ConfigHelp();

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_CONFIG_H_

// SPDX-License-Identifier: Apache-2.0
//
// metrics.h: the Prometheus exposition of /metrics (text format 0.0.4), in
// base units (seconds).
//
// Each family has one encoder:
//   - the per-loop families (loopwatch_loop_*, 33 lines a loop) are written
//     straight from the View by a text writer of this file: nothing is kept
//     between scrapes, and a departed loop's series simply disappear;
//   - the sidecar-wide families (loops by state, totals, the hold, the
//     segment, build info) and the request counters of the registry are
//     prometheus-cpp MetricFamily values, written by its TextSerializer.
// Series per loop carry {loop, slot, kind, pid}; gone loops are not exported,
// so the label values are bounded by the segment's slot count.
#ifndef LOOPWATCH_SIDECAR_METRICS_H_
#define LOOPWATCH_SIDECAR_METRICS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "hold.h"
#include "model.h"

namespace prometheus {
class Counter;
template <typename T>
class Family;
class Registry;
}  // namespace prometheus

namespace loopwatch {

// Endpoints whose requests are counted, by code.
enum class Endpoint { kLivez, kReadyz, kStartupz, kHealthz, kMetrics };
constexpr int kEndpoints = 5;
const char* EndpointName(Endpoint e);

// The sockets the sidecar accepts connections on.
enum class Listener { kPublic, kProbeLane, kAdmin };
constexpr int kListeners = 3;
// "public", "probe_lane", "admin".
const char* ListenerName(Listener l);

// The states a loop is exported in (gone loops are not exported), in order.
inline constexpr LoopState kExportedStates[] = {LoopState::kStarting, LoopState::kLive,
                                                LoopState::kLagging, LoopState::kStalled,
                                                LoopState::kDead};

// The per-loop families, in exposition order.
struct LoopFamilyDef {
  const char* name;
  const char* help;
  prometheus::MetricType type;
};
constexpr int kLoopFamilyCount = 10;
extern const LoopFamilyDef kLoopFamilyDefs[kLoopFamilyCount];

class SidecarMetrics {
 public:
  SidecarMetrics();
  ~SidecarMetrics();
  SidecarMetrics(const SidecarMetrics&) = delete;
  SidecarMetrics& operator=(const SidecarMetrics&) = delete;

  // Counts one answered request in loopwatch_probe_requests_total{endpoint,
  // code}. Thread-safe. 200 and 503 hit pre-created series (an array index
  // and an atomic add, so a probe never waits); other codes look their
  // series up under the family's mutex.
  void CountProbe(Endpoint endpoint, int code);

  // Counts one accepted connection in loopwatch_http_connections_total
  // {listener}. Thread-safe, an atomic add.
  void CountConnection(Listener listener);

  // The whole exposition: the per-loop families, then SidecarWide().
  // Thread-safe.
  std::string Render(const View& view, const Hold& hold, int64_t now_ns) const;

  // The families after the per-loop ones, as prometheus-cpp objects: loops
  // by state, the sidecar-wide totals, the hold, the segment, build info and
  // the registry's.
  std::vector<prometheus::MetricFamily> SidecarWide(const View& view, const Hold& hold,
                                                    int64_t now_ns) const;

  // For tests and for adding sidecar-wide collectables.
  prometheus::Registry& registry() { return *registry_; }

 private:
  static constexpr int kFixedCodes = 2;  // 200, 503
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  std::array<std::array<prometheus::Counter*, kFixedCodes>, kEndpoints> fixed_{};
  std::array<prometheus::Counter*, kListeners> connections_{};
};

// Content-Type of the text exposition.
inline constexpr const char* kMetricsContentType =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_METRICS_H_

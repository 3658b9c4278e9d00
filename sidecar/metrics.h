// SPDX-License-Identifier: Apache-2.0
//
// metrics.h: the Prometheus exposition of /metrics, in base units (seconds).
//
// Loop metrics are not kept in prometheus-cpp objects: at each scrape they are
// produced straight from the current View (which already holds the segment's
// lag histogram and the health totals), so nothing is spent between scrapes
// and a departed loop's series simply disappear. The sidecar's own request
// counters live in a prometheus-cpp Registry and are collected alongside.
//
// Render() writes the per-loop families (33 lines a loop, over 8,000 for 256
// loops) as text directly: each loop's escaped label block is formatted once
// and reused for all its lines, numbers go through std::to_chars, and the
// output is sized once. The sidecar-wide families (some 80 lines) and the
// registry's are prometheus::MetricFamily values written by WriteText().
// Collect() builds every family, the per-loop ones included, as
// prometheus-cpp objects from the same tables; a test holds Render() byte for
// byte equal to prometheus::TextSerializer's text of Collect(). (Building
// those objects and serializing them took 5 ms for 256 loops; TextSerializer
// itself, streaming every character through std::ostream, 10 ms.)
//
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

#include "health.h"
#include "probes.h"

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

class SidecarMetrics {
 public:
  SidecarMetrics();
  ~SidecarMetrics();
  SidecarMetrics(const SidecarMetrics&) = delete;
  SidecarMetrics& operator=(const SidecarMetrics&) = delete;

  // Counts one answered request in loopwatch_probe_requests_total{endpoint,
  // code}. Thread-safe. 200 and 503 hit pre-created series (an array index
  // and an atomic add); other codes look their series up under the family's
  // mutex.
  void CountProbe(Endpoint endpoint, int code);

  // Every metric family: the View's, the hold's and the registry's, as
  // prometheus-cpp objects. Render() does not use it for the per-loop
  // families; it is the reference Render() is tested against, and the way to
  // hand the families to another prometheus-cpp serializer.
  std::vector<prometheus::MetricFamily> Collect(const View& view, const Hold& hold,
                                                int64_t now_ns) const;

  // The full text exposition (format 0.0.4): the same bytes as
  // prometheus::TextSerializer().Serialize(Collect(...)). Thread-safe.
  std::string Render(const View& view, const Hold& hold, int64_t now_ns) const;

  // For tests and for adding sidecar-wide collectables.
  prometheus::Registry& registry() { return *registry_; }

 private:
  // The families after the per-loop ones: loops by state, the sidecar-wide
  // totals, the hold, the segment, build info and the registry's.
  std::vector<prometheus::MetricFamily> CollectSidecarWide(const View& view,
                                                           const Hold& hold,
                                                           int64_t now_ns) const;

  static constexpr int kFixedCodes = 2;  // 200, 503
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  std::array<std::array<prometheus::Counter*, kFixedCodes>, kEndpoints> fixed_{};
};

// Appends the text exposition of `families` to *out: the same bytes as
// prometheus::TextSerializer.
void WriteText(const std::vector<prometheus::MetricFamily>& families,
               std::string* out);

// Content-Type of the text exposition.
inline constexpr const char* kMetricsContentType =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_METRICS_H_

// SPDX-License-Identifier: Apache-2.0
//
// patcher.h: the one transformation behind `loopwatch inject`, `loopwatch
// uninject` and the admission webhook. It takes a Pod or a workload with a
// pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet,
// ReplicationController, Job, CronJob) and adds loopwatch to the pod:
//
//   - the sidecar, as a native sidecar (an initContainers entry with
//     restartPolicy: Always, after the user's own init containers) or, with
//     config.loopwatch.io/native-sidecar: "false", as a last plain container;
//   - the memory emptyDir `loopwatch`, mounted at /run/loopwatch in the
//     sidecar and in the watched app containers, with LOOPWATCH_SEGMENT and
//     LOOPWATCH_CONTAINER set in those;
//   - the watched containers' httpGet/tcpSocket probes pointed at the
//     sidecar (timings kept); the originals are kept in the status and in
//     the sidecar's LOOPWATCH_APP_PROBES, for the sidecar to forward to
//     until the container's loops have beaten;
//   - the labels loopwatch.io/injected: "true" and loopwatch.io/sidecar:
//     "true" (the PodMonitor selects the second, as on hand-made pods), and the annotation
//     kubectl.kubernetes.io/default-container when the pod has none;
//   - the annotation loopwatch.io/status: what was added and what it
//     replaced, so that Uninject restores the object exactly and a second
//     Inject can take the first one out before it puts itself in again.
//
// The input is never half-changed: a refusal leaves it as it was.
#ifndef LOOPWATCH_SIDECAR_INJECT_PATCHER_H_
#define LOOPWATCH_SIDECAR_INJECT_PATCHER_H_

#include <string>
#include <vector>

#include "inject/manifest.h"

namespace loopwatch::inject {

// Names the patcher writes; the PodMonitor, the chart and the docs use them.
inline constexpr const char* kInjectLabel = "loopwatch.io/inject";
inline constexpr const char* kInjectedLabel = "loopwatch.io/injected";
inline constexpr const char* kSidecarLabel = "loopwatch.io/sidecar";  // the PodMonitor's
inline constexpr const char* kStatusAnnotation = "loopwatch.io/status";
inline constexpr const char* kConfigPrefix = "config.loopwatch.io/";
inline constexpr const char* kDefaultContainerAnnotation =
    "kubectl.kubernetes.io/default-container";
inline constexpr const char* kSidecarName = "loopwatch";
inline constexpr const char* kVolumeName = "loopwatch";
inline constexpr const char* kMountPath = "/run/loopwatch";
inline constexpr const char* kSegmentPath = "/run/loopwatch/segment";
// config.loopwatch.io/python: "true": the Python payload, copied by an init
// container of the sidecar's image into a volume the app mounts read-only.
inline constexpr const char* kPythonName = "loopwatch-python";  // init container, volume
inline constexpr const char* kPythonMountPath = "/loopwatch-python";
inline constexpr const char* kPythonBootstrap = "/loopwatch-python/loopwatch/_bootstrap";

// The injector's own settings: what every injected sidecar gets unless the
// pod's annotations say otherwise.
struct InjectorSettings {
  std::string image;               // default "loopwatch:<version>"
  std::string image_pull_policy;   // empty: not set (the cluster's default)
  int port = 9321;                 // the sidecar's probe port
  std::string cpu_request = "10m";
  std::string cpu_limit;           // empty: none
  std::string memory_request = "16Mi";
  std::string memory_limit = "32Mi";
  std::string volume_size = "1Mi";  // sizeLimit of the memory emptyDir
  int64_t run_as_user = 65532;      // the sidecar's user and group
  bool native_sidecar = true;
  // The sidecar's own settings for every injected pod (stall_after: 5s,
  // ...), keys of PodSettableKeys(), each already checked by the sidecar's
  // parser; a pod's config.loopwatch.io/<key> annotation overrides one.
  std::vector<std::pair<std::string, std::string>> sidecar_settings;
  // The webhook's namespace selector already chose this pod: a pod with no
  // loopwatch.io/inject label is injected. The CLI needs the label.
  bool namespace_enabled = false;

  InjectorSettings();
};

enum class Outcome {
  kInjected,     // changed: loopwatch added (or put in again, see `reason`)
  kUnchanged,    // already injected as these settings would inject it
  kSkipped,      // left as it is, on purpose (`reason`)
  kRefused,      // left as it is because something is wrong (`reason`)
  kUninjected,   // Uninject: loopwatch taken out
  kNotWorkload,  // a kind with no pod template: passed through
};

struct Report {
  std::string kind;       // "Deployment"
  std::string name;       // metadata.name, or generateName + "*"
  std::string namespace_;  // metadata.namespace, may be empty
  Outcome outcome = Outcome::kNotWorkload;
  std::string reason;     // skipped/refused: why; injected: "" or "re-injected"
  // Skipped: why, as a metric label (disabled, not_enabled, host_network,
  // no_container, sidecar_present); empty otherwise.
  std::string code;
  std::vector<std::string> containers;  // the watched containers
  std::vector<std::string> notes;       // things left alone and why

  // "Deployment/orders: injected (containers: app)", the CLI's report line.
  std::string Line() const;
  // "injected", "unchanged", "skipped", "refused", "uninjected", "passed".
  const char* OutcomeName() const;
};

// A resource quantity as Kubernetes writes it ("100m", "16Mi", "1.5"), in
// base units; false if `s` is not one.
bool ParseQuantity(const std::string& s, double* value);

// Adds loopwatch to *object where its labels and annotations ask for it.
// *object is changed only when the outcome is kInjected.
Report Inject(Json* object, const InjectorSettings& settings);

// Takes out what loopwatch.io/status lists, restoring what it replaced.
// *object is changed only when the outcome is kUninjected.
Report Uninject(Json* object);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_PATCHER_H_

// SPDX-License-Identifier: Apache-2.0
//
// probes.h: the answers of the HTTP endpoints, as pure functions of a View,
// the Config, the Hold and the time. The public answers (the probes,
// /healthz) carry no text from the app's memory but the loops' names and
// kinds: activity labels, requests and stacks are for the admin port. No I/O, no clock, no locks held while
// formatting: the HTTP layer copies the View pointer and calls these, and
// tests call them with hand-made Views and times.
//
// Probe semantics (the status code is the verdict):
//   - enforce mode: 200 when the verdict passes, 503 when it fails;
//   - observe mode: always 200, the body says what would have failed;
//   - a hold (admin port) makes /livez answer 200 until it expires; the body
//     says so and what would have failed. /readyz and /startupz ignore holds.
// A view older than 3 poll intervals + 1 s (the poll thread stopped) is still
// answered from, with "(view is Ns old)" in the body; /healthz is the probe
// for the sidecar itself and fails then.
#ifndef LOOPWATCH_SIDECAR_PROBES_H_
#define LOOPWATCH_SIDECAR_PROBES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "config.h"
#include "hold.h"
#include "json.h"
#include "model.h"

namespace loopwatch {

struct ProbeResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

enum class Probe { kLive, kReady, kStartup };
// "livez", "readyz", "startupz".
const char* ProbeName(Probe p);

// The answer to /livez, /readyz or /startupz. `detail_json`: the JSON form
// (Accept: application/json or ?format=json); `verbose`: text with one line
// per loop after the verdict line. `container` (?container=NAME): the
// verdict on that container's loops only, and only they are listed; while
// no loop of it has beaten, the probe passes (a container with a probe of
// its own gets that one's answer instead: ContainerAwaitsLoops and
// forward.h, in the HTTP layer).
ProbeResponse AnswerProbe(Probe probe, const View& view, const Config& config,
                          const Hold& hold, int64_t now_ns, bool detail_json,
                          bool verbose, std::string_view container = {});

// The verdicts of container `name`, null if no loop has named it.
const ContainerVerdicts* FindContainer(const View& view, std::string_view name);
// True while no loop of container `name` has beaten: its probes are not
// judged on loops yet.
bool ContainerAwaitsLoops(const View& view, std::string_view name);
// A container name as Kubernetes allows it (an RFC 1123 label: 1..63 of
// a-z, 0-9 and '-', alphanumeric at both ends).
bool ValidContainerName(std::string_view name);

// /healthz: the sidecar itself. 200 while the poll thread publishes views
// (the view is younger than 3 poll intervals + 1 s), else 503.
ProbeResponse HealthzResponse(const View& view, int64_t now_ns,
                              const Config& config);

// /debug/loops: everything known per loop (activity, stalls by class, the
// current stall, the lag histogram), as JSON.
std::string LoopsJson(const View& view, int64_t now_ns);

// /debug/stalls: the recent stall reports, newest first, with class,
// syscall, wait channel, CPU time, activity, duration and the full text
// (stack, requests in flight), as JSON.
std::string StallsJson(const View& view, int64_t now_ns);

// The hold as JSON (GET/POST/DELETE /hold on the admin port).
std::string HoldJson(const Hold& hold, const Config& config, int64_t now_ns);

// The fields that name a loop in every JSON answer (the probes' detail,
// /debug/loops, `loopwatch status --json`): slot, name, kind, container
// (when the loop names one), pid, state.
void LoopIdentityJson(const LoopView& l, JsonWriter* w);

// True when the view is older than the poll thread's deadline.
bool ViewIsStale(const View& view, int64_t now_ns, const Config& config);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_PROBES_H_

// SPDX-License-Identifier: Apache-2.0
//
// The pod inside an object (a Pod, or a workload's pod template), and the
// record loopwatch leaves on it (the loopwatch.io/status annotation): what
// was added and what it replaced, so that it can be taken out again exactly.
#ifndef LOOPWATCH_SIDECAR_INJECT_POD_TEMPLATE_H_
#define LOOPWATCH_SIDECAR_INJECT_POD_TEMPLATE_H_

#include <string>

#include "inject/json_access.h"

namespace loopwatch::inject {

struct PodTemplate {
  Json* holder = nullptr;    // the object with metadata and spec
  Json* metadata = nullptr;  // created when missing
  bool metadata_created = false;
  std::string problem;  // set (and nothing else) when it cannot be patched
  Json* spec = nullptr;
  bool job = false;  // Job or CronJob: its pods must complete
};

// Finds the pod of `obj`. False: not an object with a pod (template) in it.
// True with t->problem set: it has one that cannot be patched.
bool Locate(Json* obj, PodTemplate* t);

// The status annotation of `meta`: null when absent; an empty object (and
// *why) when present but not one loopwatch wrote.
Json ReadStatus(const Json& meta, std::string* why);

// Takes out what `status` lists. Returns false (and *why) if the object does
// not hold what the status says it should; `obj` may then be half-restored,
// so callers work on a copy.
bool Remove(PodTemplate& t, const Json& status, std::string* why);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_POD_TEMPLATE_H_

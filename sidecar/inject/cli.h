// SPDX-License-Identifier: Apache-2.0
//
// cli.h: `loopwatch inject` and `loopwatch uninject`, the patcher as a
// filter for manifests (GitOps, `kubectl get -o yaml | ... | kubectl apply`).
#ifndef LOOPWATCH_SIDECAR_INJECT_CLI_H_
#define LOOPWATCH_SIDECAR_INJECT_CLI_H_

#include <iosfwd>
#include <string>
#include <vector>

namespace loopwatch::inject {

// Runs `loopwatch inject ARGS` (uninject: `loopwatch uninject ARGS`),
// reading stdin when the file is "-". Returns the exit status: 0 done,
// 1 something refused or unreadable (nothing written), 2 usage.
int InjectCommand(const std::vector<std::string>& args, bool uninject, std::istream& in,
                  std::ostream& out, std::ostream& err);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_CLI_H_

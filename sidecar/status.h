// SPDX-License-Identifier: Apache-2.0
//
// status.h: `loopwatch status`, a table of the loops in the segment for an
// engineer in `kubectl exec`.
//
// It reads the segment file itself, like the daemon's poll thread, and never
// asks the daemon over HTTP: it answers even when the sidecar is stuck or not
// running. Two snapshots ~150 ms apart go through the same Health state
// machine as the daemon's, so the states and lag mean the same thing.
#ifndef LOOPWATCH_SIDECAR_STATUS_H_
#define LOOPWATCH_SIDECAR_STATUS_H_

#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace loopwatch {

// `loopwatch status [--segment PATH] [--json] [--SETTING VALUE]...`; `args`
// are the arguments after `status`, `env` the environment
// (ProcessEnvironment()). Settings (--stall-after, ...) are read as
// `loopwatch run` reads them, environment and LOOPWATCH_CONFIG included, so
// that in the sidecar's container the verdicts match the daemon's. Exit
// code: 0 with a table (or --json object) on `out`; 1 if the segment cannot
// be read (missing, not initialised, another version, corrupt), 2 for bad
// flags; messages go to `err`.
int RunStatus(const std::vector<std::string>& args,
              const std::map<std::string, std::string>& env, std::ostream& out,
              std::ostream& err);

// Help text for `loopwatch status --help`.
std::string StatusHelp();

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_STATUS_H_

// SPDX-License-Identifier: Apache-2.0
//
// `loopwatch python-payload DEST`: copies the Python package and its start-up
// hook, which the image carries, into DEST (an emptyDir the injector's init
// container shares with the app), so a Python app is watched without an image
// rebuild. See docs/python.md, "No rebuild".
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace loopwatch::inject {

// Where the image keeps the payload: <dir of the binary>/../share/loopwatch/python.
std::string DefaultPayloadSource();

int PythonPayloadCommand(const std::vector<std::string>& args, std::ostream& out,
                         std::ostream& err);

}  // namespace loopwatch::inject

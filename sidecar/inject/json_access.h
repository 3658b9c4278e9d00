// SPDX-License-Identifier: Apache-2.0
//
// json_access.h: reads and edits of manifest JSON that never throw, for the
// patcher (internal to sidecar/inject). The input is whatever a user, a
// webhook or a fuzzer wrote: a value of the wrong type reads as absent, and
// lists are matched by their entries' names.
#ifndef LOOPWATCH_SIDECAR_INJECT_JSON_ACCESS_H_
#define LOOPWATCH_SIDECAR_INJECT_JSON_ACCESS_H_

#include <string>
#include <vector>

#include "inject/manifest.h"

namespace loopwatch::inject {

// o[key] if it is a string, else "".
std::string Str(const Json& o, const char* key);
// o[key] is the boolean true.
bool IsTrue(const Json& o, const char* key);
// o[key] is the integer `want`.
bool IsInt(const Json& o, const char* key, int64_t want);
// o[key] is absent or an array: a list the patcher may append to.
bool ListOrAbsent(const Json& o, const char* key);
// Every string and key of `v` is valid UTF-8 (as the API server's objects
// always are; a YAML file may not be).
bool ValidUtf8(const Json& v);
// Compact JSON; invalid UTF-8 becomes U+FFFD instead of throwing.
std::string Dump(const Json& v);
// meta[map][key] (labels, annotations) if it is a string, else null.
const Json* MapString(const Json& meta, const char* map, const std::string& key);
// The first entry of `list` named `name`, or null.
Json* FindNamed(Json& list, const std::string& name);
// Erases the last entry named `name` (what the patcher added is appended,
// so the last one is its own when someone added a namesake later), and of
// those, one with every field of `also` if there is one.
bool EraseNamed(Json& list, const std::string& name, const Json& also = Json::object());
// `list` is an array holding the string `what`.
bool Contains(const Json& list, const char* what);
// "a, b,c" -> {"a", "b", "c"}; empty items dropped.
std::vector<std::string> SplitList(const std::string& s);
std::string Join(const std::vector<std::string>& v, const char* sep = ", ");

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_JSON_ACCESS_H_

// SPDX-License-Identifier: Apache-2.0
//
// manifest.h: Kubernetes manifests in and out, for `loopwatch inject`. A
// stream is either JSON (one value, as `kubectl get -o json` prints) or
// YAML (one or more `---`-separated documents); objects are read into
// nlohmann::ordered_json, keeping the order of keys, and written back in the
// form they came in. Parse errors name the place: file:line:column.
#ifndef LOOPWATCH_SIDECAR_INJECT_MANIFEST_H_
#define LOOPWATCH_SIDECAR_INJECT_MANIFEST_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace loopwatch::inject {

using Json = nlohmann::ordered_json;

enum class Form { kJson, kYaml };

struct Manifest {
  Form form = Form::kYaml;
  std::vector<Json> documents;  // YAML: empty documents are dropped
};

// Parses `text`, named `source` in errors ("-" for stdin, else the path).
// The form is JSON when the first non-blank character is `{` or `[`.
// Returns false and sets *error ("source:line:column: what") on bad input.
bool ParseManifest(const std::string& text, const std::string& source, Manifest* out,
                   std::string* error);

// The documents in `form`: JSON pretty-printed with two spaces (several
// documents as a kind: List is not made up; they are written one after the
// other), YAML as block documents separated by `---`. Strings that YAML
// would read back as something else (true, 42, null, ...) are quoted.
std::string WriteManifest(const Manifest& m);

// One value as YAML (a block document, no `---`).
std::string ToYaml(const Json& value);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_MANIFEST_H_

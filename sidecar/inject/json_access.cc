// SPDX-License-Identifier: Apache-2.0
#include "inject/json_access.h"

#include <algorithm>

namespace loopwatch::inject {

bool ValidUtf8(const Json& v) {
  try {
    (void)v.dump();  // throws type_error 316 on invalid UTF-8
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

// Typed reads that never throw: the input is whatever the user (or a
// fuzzer) wrote, and a wrong type is the same as absent.
std::string Str(const Json& o, const char* key) {
  if (!o.is_object()) return "";
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : "";
}
bool IsTrue(const Json& o, const char* key) {
  if (!o.is_object()) return false;
  auto it = o.find(key);
  return it != o.end() && it->is_boolean() && it->get<bool>();
}
bool IsInt(const Json& o, const char* key, int64_t want) {
  if (!o.is_object()) return false;
  auto it = o.find(key);
  return it != o.end() && it->is_number_integer() && it->get<int64_t>() == want;
}
// A list the patcher appends to: absent (created) or an array; anything
// else is refused, never overwritten.
bool ListOrAbsent(const Json& o, const char* key) {
  return !o.contains(key) || o[key].is_array();
}
std::string Dump(const Json& v) { return v.dump(-1, ' ', false, Json::error_handler_t::replace); }

// A string-valued entry of a string map (labels, annotations); null if
// absent or not a string.
const Json* MapString(const Json& meta, const char* map, const std::string& key) {
  if (!meta.contains(map) || !meta[map].is_object()) return nullptr;
  const Json& m = meta[map];
  auto it = m.find(key);
  if (it == m.end() || !it->is_string()) return nullptr;
  return &*it;
}

Json* FindNamed(Json& list, const std::string& name) {
  if (!list.is_array()) return nullptr;
  for (Json& item : list)
    if (item.is_object() && item.contains("name") && item["name"] == name) return &item;
  return nullptr;
}

// Erases the last entry named `name` (what the patcher added is appended,
// so the last one is its own when someone added a namesake later), and of
// those, one with `also` among its fields if there is one.
bool EraseNamed(Json& list, const std::string& name, const Json& also) {
  if (!list.is_array()) return false;
  for (int pass = also.empty() ? 1 : 0; pass < 2; pass++) {
    for (size_t i = list.size(); i-- > 0;) {
      const Json& item = list[i];
      if (!item.is_object() || !item.contains("name") || item["name"] != name) continue;
      bool match = true;
      if (pass == 0)
        for (const auto& [k, v] : also.items()) match = match && item.contains(k) && item[k] == v;
      if (!match) continue;
      list.erase(list.begin() + long(i));
      return true;
    }
  }
  return false;
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    std::string item = s.substr(start, comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

bool Contains(const Json& list, const char* what) {
  return list.is_array() && std::find(list.begin(), list.end(), what) != list.end();
}

}  // namespace loopwatch::inject

// SPDX-License-Identifier: Apache-2.0
//
// settings.h: the table of the sidecar's settings, internal to config.cc
// and settings.cc. One row describes a setting once: its key, the form of
// its value, a line of help, how to parse and range-check it and how to
// print it. The three spellings (YAML key, flag, environment variable), the
// help text and the YAML output are all derived from it, so a new setting is
// one row.
#ifndef LOOPWATCH_SIDECAR_SETTINGS_H_
#define LOOPWATCH_SIDECAR_SETTINGS_H_

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "config.h"

namespace loopwatch {

// What kind of value a setting takes: for the YAML type errors and quoting.
enum class Kind { kString, kDuration, kCount, kBool, kChoice };

struct Setting {
  std::string key;      // stall_after
  std::string metavar;  // DURATION, HOST:PORT, any|all, ...
  std::string help;     // one line
  Kind kind;
  // Parses `text` into *c. On failure returns false and sets *why to what
  // follows the quoted value in an error: "is not a duration; expected ...".
  std::function<bool(const std::string& text, Config* c, std::string* why)>
      parse;
  // The value as a flag would take it (unquoted).
  std::function<std::string(const Config& c)> format;

  std::string flag() const {
    std::string f = "--" + key;
    std::replace(f.begin(), f.end(), '_', '-');
    return f;
  }
  std::string env() const {
    std::string e = "LOOPWATCH_" + key;
    for (char& ch : e) ch = char(toupper(static_cast<unsigned char>(ch)));
    return e;
  }
};

// Every setting, in the order of --help and --print-config.
const std::vector<Setting>& Settings();
// The setting of a YAML key or a flag ("--stall-after"); null if none.
const Setting* FindByKey(const std::string& key);
const Setting* FindByFlag(const std::string& flag);

// `s` as a quoted, escaped string, for error messages.
std::string Quote(const std::string& s);
// The candidate closest to `word` if it is close enough to be a typo ("" if
// none), for "did you mean". Dashes and underscores count as the same.
std::string Suggest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_SETTINGS_H_

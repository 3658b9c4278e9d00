// SPDX-License-Identifier: Apache-2.0
//
// args.h: the option reading of the inject commands, `--name=value` and
// `--name value` alike:
//
//   ArgReader r(args);
//   while (r.Next()) {
//     if (r.name() == "--ca-file") { if (!r.Value(&ca_file)) ... }
//     else if (r.name() == "-h") ...
//   }
#ifndef LOOPWATCH_SIDECAR_INJECT_ARGS_H_
#define LOOPWATCH_SIDECAR_INJECT_ARGS_H_

#include <string>
#include <vector>

namespace loopwatch::inject {

class ArgReader {
 public:
  explicit ArgReader(const std::vector<std::string>& args) : args_(args) {}

  // Moves to the next argument; false past the last.
  bool Next() {
    if (++i_ >= args_.size()) return false;
    name_ = args_[i_];
    value_.clear();
    has_value_ = false;
    if (size_t eq = name_.find('='); name_.compare(0, 2, "--") == 0 && eq != std::string::npos) {
      value_ = name_.substr(eq + 1);
      name_ = name_.substr(0, eq);
      has_value_ = true;
    }
    return true;
  }
  // The argument, or the option's name without "=value".
  const std::string& name() const { return name_; }
  // Whether it came as --name=value.
  bool has_value() const { return has_value_; }
  // The option's value, from after '=' or else the next argument (which is
  // then consumed); false when there is none.
  bool Value(std::string* out) {
    if (!has_value_) {
      if (i_ + 1 >= args_.size()) return false;
      value_ = args_[++i_];
      has_value_ = true;
    }
    *out = value_;
    return true;
  }

 private:
  const std::vector<std::string>& args_;
  size_t i_ = static_cast<size_t>(-1);
  std::string name_, value_;
  bool has_value_ = false;
};

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_ARGS_H_

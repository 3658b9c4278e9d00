// SPDX-License-Identifier: Apache-2.0
#include "json.h"

#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "format.h"

namespace loopwatch {

void JsonQuote(std::string_view s, std::string* out) {
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': *out += "\\\""; i++; continue;
      case '\\': *out += "\\\\"; i++; continue;
      case '\n': *out += "\\n"; i++; continue;
      case '\r': *out += "\\r"; i++; continue;
      case '\t': *out += "\\t"; i++; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      *out += buf;
      i++;
      continue;
    }
    size_t n = Utf8SequenceLength(s, i);
    if (n == 0) {
      *out += "\\ufffd";
      i++;
    } else {
      out->append(s.substr(i, n));
      i += n;
    }
  }
  out->push_back('"');
}

void JsonWriter::Comma() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_.push_back(',');
    first_.back() = false;
  }
}

JsonWriter& JsonWriter::BeginObject() {
  Comma();
  out_.push_back('{');
  first_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndObject() {
  out_.push_back('}');
  first_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::BeginArray() {
  Comma();
  out_.push_back('[');
  first_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndArray() {
  out_.push_back(']');
  first_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::Key(std::string_view k) {
  Comma();
  JsonQuote(k, &out_);
  out_.push_back(':');
  after_key_ = true;
  return *this;
}
JsonWriter& JsonWriter::String(std::string_view s) {
  Comma();
  JsonQuote(s, &out_);
  return *this;
}
JsonWriter& JsonWriter::Int(int64_t v) {
  Comma();
  out_ += std::to_string(v);
  return *this;
}
JsonWriter& JsonWriter::Uint(uint64_t v) {
  Comma();
  out_ += std::to_string(v);
  return *this;
}
JsonWriter& JsonWriter::Double(double v) {
  Comma();
  if (!std::isfinite(v)) {
    out_ += "null";
    return *this;
  }
  // Shortest text that reads back as the same double, whatever the locale.
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, res.ptr);
  return *this;
}
JsonWriter& JsonWriter::Bool(bool v) {
  Comma();
  out_ += v ? "true" : "false";
  return *this;
}
JsonWriter& JsonWriter::Null() {
  Comma();
  out_ += "null";
  return *this;
}

}  // namespace loopwatch

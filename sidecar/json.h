// SPDX-License-Identifier: Apache-2.0
//
// json.h: a minimal streaming JSON writer (objects, arrays, strings, numbers,
// booleans) for probe details, /debug endpoints and log lines. Strings are
// escaped per RFC 8259; invalid UTF-8 bytes become U+FFFD so that any bytes a
// segment holds still give valid JSON.
#ifndef LOOPWATCH_SIDECAR_JSON_H_
#define LOOPWATCH_SIDECAR_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loopwatch {

// Appends `s` to *out as a quoted, escaped JSON string.
void JsonQuote(std::string_view s, std::string* out);

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // Inside an object: the next value's key.
  JsonWriter& Key(std::string_view k);
  JsonWriter& String(std::string_view s);
  JsonWriter& Int(int64_t v);
  JsonWriter& Uint(uint64_t v);
  JsonWriter& Double(double v);  // non-finite values are written as null
  JsonWriter& Bool(bool v);
  JsonWriter& Null();

  // Key + value shorthands.
  JsonWriter& Field(std::string_view k, std::string_view v) { return Key(k).String(v); }
  JsonWriter& Field(std::string_view k, const char* v) { return Key(k).String(v); }
  JsonWriter& Field(std::string_view k, int64_t v) { return Key(k).Int(v); }
  JsonWriter& Field(std::string_view k, uint64_t v) { return Key(k).Uint(v); }
  JsonWriter& Field(std::string_view k, uint32_t v) { return Key(k).Uint(v); }
  JsonWriter& Field(std::string_view k, int v) { return Key(k).Int(v); }
  JsonWriter& Field(std::string_view k, double v) { return Key(k).Double(v); }
  JsonWriter& Field(std::string_view k, bool v) { return Key(k).Bool(v); }

  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }
  // The document and a line feed: a response body.
  std::string TakeLine() {
    out_.push_back('\n');
    return std::move(out_);
  }

 private:
  void Comma();
  std::string out_;
  std::vector<bool> first_;  // per open container: no value yet
  bool after_key_ = false;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_JSON_H_

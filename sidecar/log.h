// SPDX-License-Identifier: Apache-2.0
//
// log.h: the sidecar's log. One JSON object per line by default (or
// `ts level msg key=value ...` text), through spdlog to stderr. Health events
// become lines: a stall's start, its report (stack included) once, its end.
#ifndef LOOPWATCH_SIDECAR_LOG_H_
#define LOOPWATCH_SIDECAR_LOG_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config.h"
#include "model.h"

namespace spdlog {
class logger;
}

namespace loopwatch {

// One log line under construction: a message and typed fields.
class LogLine {
 public:
  explicit LogLine(std::string_view msg) : msg_(msg) {}
  LogLine& Str(std::string_view key, std::string_view value);
  LogLine& Int(std::string_view key, int64_t value);
  LogLine& Seconds(std::string_view key, int64_t ns);  // as seconds, 3 decimals
  // Multi-line text (a stack): a JSON field, or indented lines in text mode.
  LogLine& Block(std::string_view key, std::string_view text);

  std::string ToJson(std::string_view ts, std::string_view level) const;
  std::string ToText() const;

 private:
  struct Field {
    std::string key;
    std::string value;
    enum Kind { kString, kNumber, kBlock } kind;
  };
  std::string msg_;
  std::vector<Field> fields_;
};

class EventLog {
 public:
  // Logs to stderr, or to `sink_path` if given (tests).
  explicit EventLog(const Config& config, const std::string& sink_path = "");
  ~EventLog();

  void Info(const LogLine& line) { Write(LogLevel::kInfo, line); }
  void Warn(const LogLine& line) { Write(LogLevel::kWarn, line); }
  void Error(const LogLine& line) { Write(LogLevel::kError, line); }
  void Debug(const LogLine& line) { Write(LogLevel::kDebug, line); }

  // The lines for one poll's health events.
  void Events(const std::vector<Event>& events);

  void Flush();

 private:
  void Write(LogLevel level, const LogLine& line);
  LogFormat format_;
  LogLevel level_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_LOG_H_

// SPDX-License-Identifier: Apache-2.0
#include "log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "format.h"
#include "json.h"

namespace loopwatch {
namespace {

spdlog::level::level_enum ToSpd(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

// RFC 3339 UTC with milliseconds.
std::string Timestamp() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                now.time_since_epoch()).count();
  time_t secs = time_t(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
           tm.tm_sec, int(ms % 1000));
  return buf;
}

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) {
      return true;
    }
  }
  return false;
}

}  // namespace

LogLine& LogLine::Str(std::string_view key, std::string_view value) {
  fields_.push_back({std::string(key), std::string(value), Field::kString});
  return *this;
}

LogLine& LogLine::Int(std::string_view key, int64_t value) {
  fields_.push_back({std::string(key), std::to_string(value), Field::kNumber});
  return *this;
}

LogLine& LogLine::Seconds(std::string_view key, int64_t ns) {
  fields_.push_back({std::string(key), DecimalSeconds(ns), Field::kNumber});
  return *this;
}

LogLine& LogLine::Block(std::string_view key, std::string_view text) {
  if (text.empty()) return *this;  // native apps have no stack text
  fields_.push_back({std::string(key), std::string(text), Field::kBlock});
  return *this;
}

std::string LogLine::ToJson(std::string_view ts, std::string_view level) const {
  std::string out = "{\"ts\":";
  JsonQuote(ts, &out);
  out += ",\"level\":";
  JsonQuote(level, &out);
  out += ",\"msg\":";
  JsonQuote(msg_, &out);
  for (const Field& f : fields_) {
    out.push_back(',');
    JsonQuote(f.key, &out);
    out.push_back(':');
    if (f.kind == Field::kNumber) {
      out += f.value;
    } else {
      JsonQuote(f.value, &out);
    }
  }
  out.push_back('}');
  return out;
}

std::string LogLine::ToText() const {
  std::string out = msg_;
  std::string blocks;
  for (const Field& f : fields_) {
    if (f.kind == Field::kBlock) {
      blocks += "\n  " + f.key + ":";
      size_t start = 0;
      while (start <= f.value.size()) {
        size_t nl = f.value.find('\n', start);
        if (nl == std::string::npos) nl = f.value.size();
        if (nl > start) blocks += "\n    " + f.value.substr(start, nl - start);
        start = nl + 1;
      }
      continue;
    }
    out += ' ';
    out += f.key;
    out += '=';
    if (f.kind == Field::kString && NeedsQuotes(f.value)) {
      JsonQuote(f.value, &out);
    } else {
      out += f.value;
    }
  }
  return out + blocks;
}

EventLog::EventLog(const Config& config, const std::string& sink_path)
    : format_(config.log_format), level_(config.log_level) {
  spdlog::sink_ptr sink;
  if (sink_path.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(sink_path);
  }
  logger_ = std::make_shared<spdlog::logger>("loopwatch", sink);
  // We format the whole line (JSON needs escaping spdlog cannot do).
  logger_->set_pattern("%v");
  logger_->set_level(ToSpd(level_));
  logger_->flush_on(spdlog::level::debug);
}

EventLog::~EventLog() { Flush(); }

void EventLog::Flush() { logger_->flush(); }

void EventLog::Write(LogLevel level, const LogLine& line) {
  if (level < level_) return;
  std::string ts = Timestamp();
  std::string text = format_ == LogFormat::kJson
                         ? line.ToJson(ts, LevelName(level))
                         : ts + " " + LevelName(level) + " " + line.ToText();
  logger_->log(ToSpd(level), "{}", text);
}

namespace {

// A line about one loop: the message, then the loop's name, slot and pid.
LogLine AboutLoop(std::string_view msg, const LoopView& l) {
  LogLine line(msg);
  line.Str("loop", l.name).Int("slot", l.slot).Int("pid", l.pid);
  return line;
}

// A line about one stall: AboutLoop, then its class.
LogLine AboutStall(std::string_view msg, const LoopView& l, const StallRecord& s) {
  LogLine line = AboutLoop(msg, l);
  line.Str("class", StallClassName(s.stall_class));
  return line;
}

}  // namespace

void EventLog::Events(const std::vector<Event>& events) {
  for (const Event& e : events) {
    const LoopView& l = e.loop;
    const StallRecord& s = e.stall;
    const auto id = int64_t(s.id);
    switch (e.kind) {
      case Event::Kind::kLoopAppeared:
        Info(AboutLoop("loop appeared", l)
                 .Str("kind", l.kind)
                 .Seconds("interval_seconds", l.interval_ns));
        break;
      case Event::Kind::kStallStarted:
        Warn(AboutStall("stall started", l, s)
                 .Str("syscall", s.syscall)
                 .Seconds("silent_seconds", s.duration_ns)
                 .Int("stall_id", id));
        break;
      case Event::Kind::kStallReport:
        Warn(AboutStall("stall report", l, s)
                 .Str("syscall", s.syscall)
                 .Str("wchan", s.wchan)
                 .Seconds("silent_seconds", s.duration_ns)
                 .Seconds("loop_cpu_seconds", s.loop_cpu_ns)
                 .Str("activity", s.activity)
                 .Int("stall_id", id)
                 .Block("stack", s.text));
        break;
      case Event::Kind::kStallReportSuppressed:
        Info(AboutStall("stall report suppressed by the rate limit", l, s).Int("stall_id", id));
        break;
      case Event::Kind::kStallEnded:
        Info(AboutStall("stall ended", l, s)
                 .Seconds("duration_seconds", s.duration_ns)
                 .Int("stall_id", id));
        break;
      case Event::Kind::kLoopDied:
        Error(AboutLoop("loop died: its process is gone without closing it", l)
                  .Seconds("last_beat_seconds_ago", l.heartbeat_age_ns));
        break;
      case Event::Kind::kLoopGone:
        Info(AboutLoop("loop gone", l).Str("reason", e.message));
        break;
      case Event::Kind::kSegmentProblem:
        Warn(LogLine("segment unreadable").Str("error", e.message));
        break;
      case Event::Kind::kSegmentOk:
        Info(LogLine("segment readable"));
        break;
      case Event::Kind::kSegmentLost:
        Error(LogLine("segment lost: /livez fails").Str("reason", e.message));
        break;
    }
  }
}

}  // namespace loopwatch

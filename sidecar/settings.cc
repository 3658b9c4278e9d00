// SPDX-License-Identifier: Apache-2.0
#include "settings.h"

#include <cctype>
#include <utility>

#include "app_probes.h"
#include "json.h"
#include "segment_layout.h"  // LW_SEG_MAX_SLOTS

namespace loopwatch {

std::string Quote(const std::string& s) {
  std::string out;
  JsonQuote(s, &out);
  return out;
}

namespace {

// Levenshtein distance, for "did you mean" suggestions.
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); j++) row[j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); j++) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

// `stall-after` in a file suggests `stall_after`, and `--stall_after`
// suggests `--stall-after`.
std::string Suggest(const std::string& word,
                    const std::vector<std::string>& candidates) {
  auto norm = [](std::string s) {
    std::replace(s.begin(), s.end(), '-', '_');
    for (char& ch : s) ch = char(tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  std::string w = norm(word), best;
  size_t best_d = std::max<size_t>(2, w.size() / 3) + 1;
  for (const std::string& c : candidates) {
    size_t d = EditDistance(w, norm(c));
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// --- value parsers -------------------------------------------------------

constexpr const char* kDurationForm = "expected a number with a unit: 250ms, 5s, 1m";

Setting DurationSetting(const char* key, Duration Config::*field, Duration min,
                        Duration max, const char* help) {
  Setting s;
  s.key = key;
  s.metavar = "DURATION";
  s.help = help;
  s.kind = Kind::kDuration;
  s.parse = [field, min, max](const std::string& text, Config* c,
                              std::string* why) {
    Duration d;
    if (!ParseDuration(text, &d)) {
      *why = std::string("is not a duration; ") + kDurationForm;
      return false;
    }
    if (d < min || (max.count() > 0 && d > max)) {
      if (max.count() > 0) {
        *why = "is out of range; expected a duration from " +
               FormatDuration(min) + " to " + FormatDuration(max);
      } else if (min.count() == 1) {
        *why = "must be above zero; expected a duration such as 5s";
      } else {
        *why = "is out of range; expected at least " + FormatDuration(min);
      }
      return false;
    }
    c->*field = d;
    return true;
  };
  s.format = [field](const Config& c) { return FormatDuration(c.*field); };
  return s;
}

bool ParseCount(const std::string& text, uint64_t* out) {
  if (text.empty() || text.size() > 19) return false;
  uint64_t v = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + uint64_t(ch - '0');
  }
  *out = v;
  return true;
}

Setting CountSetting(const char* key, uint32_t Config::*field, uint32_t min,
                     uint32_t max, const char* help) {
  Setting s;
  s.key = key;
  s.metavar = "N";
  s.help = help;
  s.kind = Kind::kCount;
  std::string range = "expected a whole number from " + std::to_string(min) +
                      " to " + std::to_string(max);
  s.parse = [field, min, max, range](const std::string& text, Config* c,
                                     std::string* why) {
    uint64_t v;
    if (!ParseCount(text, &v)) {
      *why = "is not a whole number; " + range;
      return false;
    }
    if (v < min || v > max) {
      *why = "is out of range; " + range;
      return false;
    }
    c->*field = uint32_t(v);
    return true;
  };
  s.format = [field](const Config& c) { return std::to_string(c.*field); };
  return s;
}

Setting BoolSetting(const char* key, bool Config::*field, const char* help) {
  Setting s;
  s.key = key;
  s.metavar = "true|false";
  s.help = help;
  s.kind = Kind::kBool;
  s.parse = [field](const std::string& text, Config* c, std::string* why) {
    if (text == "true" || text == "True" || text == "TRUE") {
      c->*field = true;
    } else if (text == "false" || text == "False" || text == "FALSE") {
      c->*field = false;
    } else {
      *why = "is not a boolean; expected true or false";
      return false;
    }
    return true;
  };
  s.format = [field](const Config& c) {
    return std::string(c.*field ? "true" : "false");
  };
  return s;
}

template <typename E>
Setting ChoiceSetting(const char* key, E Config::*field,
                      std::vector<std::pair<std::string, E>> choices,
                      const char* help) {
  Setting s;
  s.key = key;
  s.help = help;
  s.kind = Kind::kChoice;
  std::vector<std::string> names;
  for (auto& [name, value] : choices) names.push_back(name);
  for (size_t i = 0; i < names.size(); i++) {
    s.metavar += (i ? "|" : "") + names[i];
  }
  std::string expected = "expected ";
  for (size_t i = 0; i < names.size(); i++) {
    if (i) expected += i + 1 == names.size() ? " or " : ", ";
    expected += names[i];
  }
  s.parse = [field, choices, names, expected](const std::string& text,
                                               Config* c, std::string* why) {
    for (auto& [name, value] : choices) {
      if (text == name) {
        c->*field = value;
        return true;
      }
    }
    *why = "is not a valid choice; " + expected;
    std::string guess = Suggest(text, names);
    if (!guess.empty()) *why += " (did you mean \"" + guess + "\"?)";
    return false;
  };
  s.format = [field, choices](const Config& c) {
    for (auto& [name, value] : choices) {
      if (c.*field == value) return name;
    }
    return std::string("?");
  };
  return s;
}

// A setting of kind string with its own parse and format.
Setting StringSetting(const char* key, const char* metavar, const char* help,
                      decltype(Setting::parse) parse, decltype(Setting::format) format) {
  Setting s;
  s.key = key;
  s.metavar = metavar;
  s.help = help;
  s.kind = Kind::kString;
  s.parse = std::move(parse);
  s.format = std::move(format);
  return s;
}

Setting PathSetting(const char* key, std::string Config::*field, const char* help) {
  return StringSetting(
      key, "PATH", help,
      [field](const std::string& text, Config* c, std::string* why) {
        if (text.empty()) {
          *why = "is empty; expected a file path";
          return false;
        }
        c->*field = text;
        return true;
      },
      [field](const Config& c) { return c.*field; });
}

// The containers' own probes (app_probes.h), as `loopwatch inject` writes
// them; checked whole at start.
Setting AppProbesSetting() {
  return StringSetting(
      "app_probes", "JSON",
      "the watched containers' own probes, asked until their loops beat (set by inject)",
      [](const std::string& text, Config* c, std::string* why) {
        AppProbes probes;
        std::string error;
        if (!AppProbes::Parse(text, &probes, &error)) {
          *why = "is not valid: " + error;
          return false;
        }
        c->app_probes = text;
        return true;
      },
      [](const Config& c) { return c.app_probes; });
}

Setting AddressSetting(const char* key, ListenAddress Config::*field, const char* help) {
  return StringSetting(
      key, "HOST:PORT", help,
      [field](const std::string& text, Config* c, std::string* why) {
        return ParseListenAddress(text, &(c->*field), why);
      },
      [field](const Config& c) { return (c.*field).ToString(); });
}

// Addresses of peers, comma-separated; "" for none.
Setting PeersSetting(const char* key, std::vector<PeerAddress> Config::*field, const char* help) {
  return StringSetting(
      key, "IP[,IP...]", help,
      [field](const std::string& text, Config* c, std::string* why) {
        return ParsePeerList(text, &(c->*field), why);
      },
      [field](const Config& c) { return FormatPeerList(c.*field); });
}

// An address, or "off" for none.
Setting OptionalAddressSetting(const char* key, std::optional<ListenAddress> Config::*field,
                               const char* help) {
  return StringSetting(
      key, "HOST:PORT|off", help,
      [field](const std::string& text, Config* c, std::string* why) {
        if (text == "off") {
          (c->*field).reset();
          return true;
        }
        ListenAddress a;
        if (!ParseListenAddress(text, &a, why)) {
          *why += ", or off";
          return false;
        }
        c->*field = a;
        return true;
      },
      [field](const Config& c) {
        return (c.*field) ? (c.*field)->ToString() : std::string("off");
      });
}

}  // namespace

// --- the table -----------------------------------------------------------

const std::vector<Setting>& Settings() {
  static const std::vector<Setting> table = [] {
    const Duration zero{0}, one_ns{1}, none{0};
    std::vector<Setting> t;
    t.push_back(PathSetting("segment", &Config::segment,
                            "segment file shared with the app"));
    t.push_back(AddressSetting("listen", &Config::listen,
                               "address of the probes and /metrics"));
    t.push_back(OptionalAddressSetting("admin_listen", &Config::admin_listen,
                                       "address of /debug/* and the hold (off: none)"));
    t.push_back(PeersSetting("probe_peers", &Config::probe_peers,
                             "the kubelet's address (status.hostIP): a lane of its own on listen"));
    t.push_back(DurationSetting("poll_interval", &Config::poll_interval,
                                milliseconds(1), seconds(10),
                                "how often the segment is read"));
    t.push_back(DurationSetting("stall_after", &Config::stall_after, one_ns,
                                none,
                                "a loop silent this long is stalled: /livez "
                                "fails"));
    t.push_back(DurationSetting("lag_above", &Config::lag_above, one_ns, none,
                                "a loop lagging more than this is not ready: "
                                "/readyz fails"));
    t.push_back(CountSetting("expect_loops", &Config::expect_loops, 0,
                             LW_SEG_MAX_SLOTS,
                             "/startupz succeeds once this many loops beat"));
    t.push_back(DurationSetting("startup_grace", &Config::startup_grace, zero,
                                none,
                                "a loop that never beat is starting, not "
                                "stalled, this long"));
    t.push_back(ChoiceSetting<LivenessPolicy>(
        "liveness_policy", &Config::liveness_policy,
        {{"any", LivenessPolicy::kAny}, {"all", LivenessPolicy::kAll}},
        "/livez fails when any loop, or only when all loops, fail"));
    t.push_back(ChoiceSetting<Mode>(
        "mode", &Config::mode,
        {{"enforce", Mode::kEnforce}, {"observe", Mode::kObserve}},
        "observe: log and count, but probes always pass"));
    t.push_back(BoolSetting("host_stall_fails_liveness",
                            &Config::host_stall_fails_liveness,
                            "whether a host pause (not the app's fault) "
                            "fails /livez"));
    t.push_back(BoolSetting("redact_query", &Config::redact_query,
                            "query string values in labels, requests and stacks become "
                            "REDACTED"));
    t.push_back(CountSetting("report_limit", &Config::report_limit, 0,
                             UINT32_MAX,
                             "stall reports logged per loop per "
                             "report_window; the rest are counted"));
    t.push_back(DurationSetting("report_window", &Config::report_window,
                                one_ns, none,
                                "the window of report_limit"));
    t.push_back(CountSetting("stall_history", &Config::stall_history, 0, 4096,
                             "stall reports kept for /debug/stalls"));
    t.push_back(DurationSetting("forget_after", &Config::forget_after, zero,
                                none,
                                "how long a dead or departed loop stays "
                                "listed"));
    t.push_back(DurationSetting("max_hold", &Config::max_hold, zero, none,
                                "longest hold the admin port accepts (0: "
                                "holds off)"));
    t.push_back(CountSetting("create_slots", &Config::create_slots, 0,
                             LW_SEG_MAX_SLOTS,
                             "create the segment with this many slots if the "
                             "app has not (0: never)"));
    t.push_back(CountSetting("http_threads", &Config::http_threads, 1, 64,
                             "threads answering HTTP requests"));
    t.push_back(DurationSetting("http_timeout", &Config::http_timeout, one_ns,
                                none,
                                "read and write timeout of an HTTP "
                                "connection"));
    t.push_back(ChoiceSetting<LogFormat>(
        "log_format", &Config::log_format,
        {{"json", LogFormat::kJson}, {"text", LogFormat::kText}},
        "log lines as JSON objects or as text"));
    t.push_back(ChoiceSetting<LogLevel>(
        "log_level", &Config::log_level,
        {{"debug", LogLevel::kDebug},
         {"info", LogLevel::kInfo},
         {"warn", LogLevel::kWarn},
         {"error", LogLevel::kError}},
        "least severe level logged"));
    t.push_back(AppProbesSetting());
    return t;
  }();
  return table;
}

const Setting* FindByKey(const std::string& key) {
  for (const Setting& s : Settings()) {
    if (s.key == key) return &s;
  }
  return nullptr;
}

const Setting* FindByFlag(const std::string& flag) {
  for (const Setting& s : Settings()) {
    if (s.flag() == flag) return &s;
  }
  return nullptr;
}

}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// Loading the settings (settings.h has the table): the file, then the
// environment, then the flags, each value checked by its row; then the checks
// across settings. Errors name where the value came from.
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <climits>
#include <cstdlib>
#include <unistd.h>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <set>
#include <utility>

#include "settings.h"

namespace loopwatch {
namespace {
// Where each setting got its value, for cross-field errors.
struct Origins {
  std::map<std::string, std::string> where;  // key -> source; absent: default
  std::set<std::string> bad;                 // keys with a rejected value
};

void Apply(const Setting& s, const std::string& text, const std::string& source,
           bool name_key, Config* c, Origins* origins,
           std::vector<ConfigError>* errors) {
  std::string why;
  if (s.parse(text, c, &why)) {
    origins->where[s.key] = source;
    origins->bad.erase(s.key);
    return;
  }
  origins->bad.insert(s.key);
  std::string prefix = name_key ? s.key + ": " : "";
  errors->push_back({source, prefix + Quote(text) + " " + why});
}

// --- the file ------------------------------------------------------------

std::string Where(const std::string& file, const YAML::Mark& m) {
  if (m.is_null()) return file;
  return file + ":" + std::to_string(m.line + 1) + ":" +
         std::to_string(m.column + 1);
}

const char* NodeTypeName(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return "a scalar";
    case YAML::NodeType::Null: return "nothing";
    default: return "an undefined node";
  }
}

std::string ExpectedType(const Setting& s) {
  switch (s.kind) {
    case Kind::kDuration: return "a duration such as 5s";
    case Kind::kCount: return "a whole number";
    case Kind::kBool: return "true or false";
    case Kind::kChoice: return "one of " + s.metavar;
    case Kind::kString: return "a string (" + s.metavar + ")";
  }
  return "a value";
}

// The file a config path names, through symbolic links only if they stay
// in the path's own directory: that is how Kubernetes mounts a ConfigMap
// (loopwatch.yaml -> ..data/loopwatch.yaml -> ..2026_12_06.../loopwatch.yaml);
// a link that leads elsewhere is refused, so the config path cannot be
// used to read another file.
bool ResolveConfigPath(const std::string& path, std::string* real, std::string* why) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    *why = std::string("cannot open the config file: ") + strerror(errno);
    return false;
  }
  if (!S_ISLNK(st.st_mode)) {
    *real = path;
    return true;
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  char dir_real[PATH_MAX], file_real[PATH_MAX];
  if (!realpath(dir.c_str(), dir_real) || !realpath(path.c_str(), file_real)) {
    *why = std::string("cannot open the config file: ") + strerror(errno);
    return false;
  }
  const std::string inside = std::string(dir_real) + (std::string(dir_real) == "/" ? "" : "/");
  if (std::string(file_real).rfind(inside, 0) != 0) {
    *why = std::string("is a symbolic link out of its directory (to ") + file_real +
           "); expected the config file, or a link within its directory as a ConfigMap "
           "mount makes";
    return false;
  }
  *real = file_real;
  return true;
}

bool ReadFile(const std::string& path, std::string* out, std::string* why) {
  std::string real;
  if (!ResolveConfigPath(path, &real, why)) return false;
  // O_NONBLOCK: a FIFO must not hang the start; it is refused below.
  int fd = open(real.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    *why = std::string("cannot open the config file: ") + strerror(errno);
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    *why = S_ISDIR(st.st_mode) ? "is a directory; expected a YAML file"
                               : "is not a regular file; expected a YAML file";
    return false;
  }
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      *why = std::string("cannot read the config file: ") + strerror(errno);
      close(fd);
      return false;
    }
    out->append(buf, size_t(n));
    if (out->size() > (size_t(1) << 20)) {
      close(fd);
      *why = "is larger than 1 MiB; expected a small YAML file";
      return false;
    }
  }
  close(fd);
  return true;
}

void LoadFile(const std::string& path, const std::string& given_by, Config* c,
              Origins* origins, std::vector<ConfigError>* errors) {
  std::string text, why;
  if (!ReadFile(path, &text, &why)) {
    errors->push_back({path, why + " (given by " + given_by + ")"});
    return;
  }
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::ParserException& e) {
    errors->push_back({Where(path, e.mark), "YAML syntax error: " + e.msg});
    return;
  } catch (const YAML::Exception& e) {
    errors->push_back({Where(path, e.mark), "cannot parse YAML: " + e.msg});
    return;
  }
  if (docs.size() > 1) {
    errors->push_back({Where(path, docs[1].Mark()),
                       "a config file holds one YAML document; found a second "
                       "one here"});
  }
  if (docs.empty() || docs[0].IsNull()) return;  // empty: sets nothing
  const YAML::Node& doc = docs[0];
  if (!doc.IsMap()) {
    errors->push_back({Where(path, doc.Mark()),
                       std::string("expected a mapping of settings (key: "
                                   "value, e.g. stall_after: 5s), found ") +
                           NodeTypeName(doc)});
    return;
  }
  std::vector<std::string> keys;
  for (const Setting& s : Settings()) keys.push_back(s.key);
  std::map<std::string, int> seen_line;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const YAML::Node k = it->first;
    const YAML::Node v = it->second;
    if (!k.IsScalar()) {
      errors->push_back({Where(path, k.Mark()),
                         std::string("expected a setting name such as "
                                     "stall_after, found ") +
                             NodeTypeName(k)});
      continue;
    }
    std::string key = k.Scalar();
    const Setting* s = FindByKey(key);
    if (!s) {
      std::string msg = "unknown setting " + Quote(key);
      std::string guess = Suggest(key, keys);
      if (!guess.empty()) msg += " (did you mean " + Quote(guess) + "?)";
      errors->push_back({Where(path, k.Mark()), msg});
      continue;
    }
    auto dup = seen_line.find(key);
    if (dup != seen_line.end()) {
      errors->push_back({Where(path, k.Mark()),
                         "setting " + Quote(key) + " given twice (first on line " +
                             std::to_string(dup->second) + ")"});
      continue;
    }
    seen_line[key] = k.Mark().line + 1;
    // yaml-cpp marks an empty value where the next line starts: point at
    // the key instead.
    YAML::Mark vm = v.Mark().is_null() || v.IsNull() ? k.Mark() : v.Mark();
    if (v.IsNull()) {
      errors->push_back({Where(path, vm), key + ": has no value; expected " +
                                              ExpectedType(*s)});
      origins->bad.insert(key);
      continue;
    }
    if (!v.IsScalar()) {
      errors->push_back({Where(path, vm), key + ": expected " +
                                              ExpectedType(*s) + ", found " +
                                              NodeTypeName(v)});
      origins->bad.insert(key);
      continue;
    }
    Apply(*s, v.Scalar(), Where(path, vm), true, c, origins, errors);
  }
}

// --- flags ---------------------------------------------------------------

struct FlagValue {
  const Setting* setting;
  std::string value;
  std::string flag;
};

bool IsFlag(const std::string& a) { return a.size() > 2 && a.compare(0, 2, "--") == 0; }

std::vector<std::string> AllFlags() {
  std::vector<std::string> f = {"--config", "--print-config", "--help"};
  for (const Setting& s : Settings()) f.push_back(s.flag());
  return f;
}

std::string UnknownFlag(const std::string& flag) {
  std::string guess = Suggest(flag, AllFlags());
  if (guess.empty()) return "unknown flag; see --help for the list";
  return "unknown flag (did you mean " + guess + "?)";
}

void ParseFlags(const std::vector<std::string>& args,
                std::vector<FlagValue>* values, std::string* config_file,
                bool* print_config, bool* help,
                std::vector<ConfigError>* errors) {
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      *help = true;
      continue;
    }
    if (a == "--print-config") {
      *print_config = true;
      continue;
    }
    if (!IsFlag(a)) {
      if (a.size() > 1 && a[0] == '-') {
        errors->push_back({a, UnknownFlag("--" + a.substr(1))});
        if (i + 1 < args.size() && args[i + 1][0] != '-') i++;  // its value
      } else {
        errors->push_back({a, "unexpected argument; settings are given as "
                              "--name VALUE, e.g. --stall-after 5s"});
      }
      continue;
    }
    size_t eq = a.find('=');
    std::string name = a.substr(0, eq);
    bool has_value = eq != std::string::npos;
    std::string value = has_value ? a.substr(eq + 1) : "";
    if (name == "--help" || name == "--print-config") {
      errors->push_back({name, "takes no value"});
      continue;
    }
    const Setting* s = name == "--config" ? nullptr : FindByFlag(name);
    if (name != "--config" && !s) {
      errors->push_back({name, UnknownFlag(name)});
      // Its value, if any, must not be taken for a stray argument.
      if (!has_value && i + 1 < args.size() && !IsFlag(args[i + 1])) i++;
      continue;
    }
    if (!has_value) {
      if (s && s->kind == Kind::kBool) {
        // A bare boolean flag means true; `--flag false` works too.
        if (i + 1 < args.size() &&
            (args[i + 1] == "true" || args[i + 1] == "false")) {
          value = args[++i];
        } else {
          value = "true";
        }
        has_value = true;
      } else if (i + 1 < args.size() && !IsFlag(args[i + 1])) {
        value = args[++i];
        has_value = true;
      }
    }
    if (!has_value) {
      std::string form = s ? s->metavar : "FILE";
      errors->push_back(
          {name, "needs a value; expected " + name + " " + form +
                     (s && s->kind == Kind::kDuration ? " (e.g. " + name + " 5s)"
                                                      : "")});
      continue;
    }
    if (!s) {  // --config
      if (value.empty()) {
        errors->push_back({name, "needs a value; expected --config FILE"});
      } else if (!config_file->empty()) {
        errors->push_back({name, "given more than once; expected one file"});
      } else {
        *config_file = value;
      }
      continue;
    }
    values->push_back({s, value, name});
  }
}

void CrossCheck(const Config& c, const Origins& o,
                std::vector<ConfigError>* errors) {
  auto origin = [&](const char* first, const char* second) {
    auto it = o.where.find(first);
    if (it != o.where.end()) return it->second;
    it = o.where.find(second);
    if (it != o.where.end()) return it->second;
    return std::string("defaults");
  };
  auto ok = [&](const char* k) { return o.bad.count(k) == 0; };

  if (ok("stall_after") && ok("poll_interval") &&
      c.stall_after <= c.poll_interval) {
    errors->push_back({origin("stall_after", "poll_interval"),
                       "stall_after (" + FormatDuration(c.stall_after) +
                           ") must be longer than poll_interval (" +
                           FormatDuration(c.poll_interval) +
                           "): a stall is seen only at a poll"});
  }
  if (ok("listen") && ok("admin_listen") && c.admin_listen &&
      c.listen.port != 0 && c.listen.port == c.admin_listen->port) {
    errors->push_back({origin("admin_listen", "listen"),
                       "admin_listen (" + c.admin_listen->ToString() +
                           ") uses the port of listen (" + c.listen.ToString() +
                           "); expected another port, or off"});
  }
}

}  // namespace

extern "C" char** environ;

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; e++) {
    const char* eq = strchr(*e, '=');
    if (eq) env.emplace(std::string(*e, size_t(eq - *e)), std::string(eq + 1));
  }
  return env;
}

bool LoadConfig(const std::vector<std::string>& args,
                const std::map<std::string, std::string>& env, Config* out,
                std::vector<ConfigError>* errors, bool* print_config,
                bool* help) {
  bool print_dummy = false, help_dummy = false;
  if (!print_config) print_config = &print_dummy;
  if (!help) help = &help_dummy;
  *print_config = false;
  *help = false;
  size_t errors_before = errors->size();
  Config c;
  Origins origins;

  std::vector<FlagValue> flags;
  std::string config_file;
  ParseFlags(args, &flags, &config_file, print_config, help, errors);

  auto env_value = [&](const std::string& name, std::string* v) {
    auto it = env.find(name);
    if (it == env.end() || it->second.empty()) return false;  // empty: unset
    *v = it->second;
    return true;
  };

  std::string given_by = "--config";
  if (config_file.empty() && env_value("LOOPWATCH_CONFIG", &config_file)) {
    given_by = "LOOPWATCH_CONFIG";
  }
  if (!config_file.empty()) {
    LoadFile(config_file, given_by, &c, &origins, errors);
  }
  for (const Setting& s : Settings()) {
    std::string v;
    if (env_value(s.env(), &v)) {
      Apply(s, v, s.env(), false, &c, &origins, errors);
    }
  }
  for (const FlagValue& f : flags) {
    Apply(*f.setting, f.value, f.flag, false, &c, &origins, errors);
  }
  CrossCheck(c, origins, errors);
  *out = c;
  return errors->size() == errors_before;
}

std::string ConfigToYaml(const Config& c) {
  std::string y =
      "# loopwatch sidecar configuration: the effective settings.\n"
      "# Load it with `loopwatch run --config FILE`; each key is also a flag\n"
      "# (stall_after: --stall-after) and a variable (LOOPWATCH_STALL_AFTER).\n";
  for (const Setting& s : Settings()) {
    // Strings are always quoted: "[::]:9321" would be a list unquoted.
    std::string v = s.format(c);
    y += s.key + ": " + (s.kind == Kind::kString ? Quote(v) : v) + "\n";
  }
  return y;
}

std::string ConfigHelp() {
  const Config defaults;
  std::string h =
      "Usage: loopwatch run [--config FILE] [--print-config] [--SETTING VALUE]...\n"
      "\n"
      "Every setting has three spellings: a key in the YAML file (stall_after),\n"
      "a flag (--stall-after 5s or --stall-after=5s) and an environment variable\n"
      "(LOOPWATCH_STALL_AFTER). Flags override the environment, which overrides\n"
      "the file, which overrides the defaults. Durations take a unit: 250ms, 5s,\n"
      "1m30s, 1h (a lone 0 needs none). Addresses are HOST:PORT (0.0.0.0:9321,\n"
      "localhost:9321), [IPV6]:PORT ([::]:9321) or :PORT (every IPv4 interface);\n"
      "port 0 takes any free port.\n"
      "\n"
      "  --config FILE     YAML file of settings, a flat mapping (LOOPWATCH_CONFIG)\n"
      "  --print-config    print the effective configuration as YAML and exit\n"
      "  --help            print this help and exit\n"
      "\n"
      "Settings:\n";
  for (const Setting& s : Settings()) {
    std::string def = s.format(defaults);
    if (def.empty()) def = "(none)";
    h += "  " + s.flag() + " " + s.metavar + "\n";
    h += "      " + s.help + "\n";
    h += "      env " + s.env() + ", key " + s.key + ", default " + def + "\n";
  }
  h +=
      "\n"
      "Signals: SIGTERM and SIGINT stop the sidecar; SIGHUP, SIGUSR1, SIGUSR2\n"
      "and SIGALRM are logged and ignored (settings are read at start only).\n";
  return h;
}

}  // namespace loopwatch

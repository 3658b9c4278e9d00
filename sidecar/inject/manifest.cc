// SPDX-License-Identifier: Apache-2.0
#include "inject/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <regex>

namespace loopwatch::inject {
namespace {

// How kubectl (sigs.k8s.io/yaml over go-yaml v2, YAML 1.1) reads a plain
// scalar: null, a boolean, an integer, a float or a string. Quoted scalars
// are always strings.
const std::regex& IntPattern() {
  static const std::regex re("[-+]?[0-9]+");
  return re;
}
const std::regex& FloatPattern() {
  static const std::regex re(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  return re;
}
// Plain scalars that some YAML reader takes for something other than a
// string: written quoted, whatever this reader makes of them.
const std::regex& AmbiguousPattern() {
  static const std::regex re(
      R"(y|Y|n|N|[-+]?0[xXoO][0-9a-fA-F_]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|[0-9_.:+-]+)");
  return re;
}

bool IsNull(const std::string& s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

int BoolValue(const std::string& s) {  // 1 true, 0 false, -1 neither
  static const char* const kTrue[] = {"true", "True", "TRUE", "yes", "Yes", "YES",
                                      "on",   "On",   "ON"};
  static const char* const kFalse[] = {"false", "False", "FALSE", "no", "No", "NO",
                                       "off",   "Off",   "OFF"};
  for (const char* t : kTrue)
    if (s == t) return 1;
  for (const char* f : kFalse)
    if (s == f) return 0;
  return -1;
}

Json PlainScalar(const std::string& s) {
  if (IsNull(s)) return nullptr;
  int b = BoolValue(s);
  if (b >= 0) return b == 1;
  if (std::regex_match(s, IntPattern())) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (errno == 0 && *end == '\0') return v;
  }
  if (std::regex_match(s, FloatPattern())) {
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (*end == '\0' && std::isfinite(v)) return v;
  }
  return s;
}

bool NeedsQuotes(const std::string& s) {
  return !PlainScalar(s).is_string() || std::regex_match(s, AmbiguousPattern());
}

// Kubernetes objects are a few levels deep; anything past this is refused
// before the recursive parts (comparison, serialisation) see it. yaml-cpp
// has its own guard, at 2000.
constexpr int kMaxJsonDepth = 256;
// At most this many values from one YAML stream, whatever its size.
constexpr size_t kMaxYamlValues = 4 * 1000 * 1000;

// The deepest nesting of [ and { outside strings, and where it first passes
// kMaxJsonDepth (0 if it never does).
size_t TooDeepAt(const std::string& text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return i + 1;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return 0;
}

void LineColumn(const std::string& text, size_t at, int* line, int* column) {
  *line = 1;
  *column = 1;
  for (size_t i = 0; i < at && i < text.size(); i++) {
    if (text[i] == '\n') {
      ++*line;
      *column = 1;
    } else {
      ++*column;
    }
  }
}

std::string Where(const std::string& source, int line, int column) {
  return source + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
}

// Whether a scalar with this tag is resolved like a plain one: untagged and
// unquoted ("?"), or tagged as a type other than a string (!!int 42). A
// quoted scalar ("!") and !!str, or any other tag, are strings.
bool ResolvesPlain(const std::string& tag) {
  if (tag == "?") return true;
  for (const char* t : {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"})
    if (tag == t) return true;
  return false;
}

// yaml-cpp node to JSON. Aliases are resolved by yaml-cpp itself; keys must
// be scalars (Kubernetes objects have no other).
bool FromYaml(const YAML::Node& n, const std::string& source, Json* out, std::string* error,
              size_t* budget) {
  if (*budget == 0) {
    *error = source + ": too many values for the size of the text: YAML aliases expanding "
                      "without end (\"billion laughs\")?";
    return false;
  }
  --*budget;
  switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      *out = nullptr;
      return true;
    case YAML::NodeType::Scalar:
      *out = ResolvesPlain(n.Tag()) ? PlainScalar(n.Scalar()) : Json(n.Scalar());
      return true;
    case YAML::NodeType::Sequence: {
      *out = Json::array();
      for (const auto& item : n) {
        Json v;
        if (!FromYaml(item, source, &v, error, budget)) return false;
        out->push_back(std::move(v));
      }
      return true;
    }
    case YAML::NodeType::Map: {
      *out = Json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) {
          const YAML::Mark m = kv.first.Mark();
          *error = Where(source, m.line + 1, m.column + 1) + "a mapping key must be a scalar";
          return false;
        }
        const std::string& key = kv.first.Scalar();
        if (out->contains(key)) {
          const YAML::Mark m = kv.first.Mark();
          *error = Where(source, m.line + 1, m.column + 1) + "duplicate key \"" + key + "\"";
          return false;
        }
        Json v;
        if (!FromYaml(kv.second, source, &v, error, budget)) return false;
        (*out)[key] = std::move(v);
      }
      return true;
    }
  }
  return true;
}

void Emit(const Json& v, YAML::Emitter* e) {
  switch (v.type()) {
    case Json::value_t::null:
      *e << YAML::Null;
      break;
    case Json::value_t::boolean:
      *e << (v.get<bool>() ? "true" : "false");
      break;
    case Json::value_t::number_integer:
      *e << v.get<int64_t>();
      break;
    case Json::value_t::number_unsigned:
      *e << v.get<uint64_t>();
      break;
    case Json::value_t::number_float:
      *e << v.dump();  // the shortest text that reads back the same
      break;
    case Json::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      if (NeedsQuotes(s)) *e << YAML::DoubleQuoted;
      *e << s;
      break;
    }
    case Json::value_t::array:
      if (v.empty()) {
        *e << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        break;
      }
      *e << YAML::BeginSeq;
      for (const auto& item : v) Emit(item, e);
      *e << YAML::EndSeq;
      break;
    case Json::value_t::object:
      if (v.empty()) {
        *e << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        break;
      }
      *e << YAML::BeginMap;
      for (const auto& [k, item] : v.items()) {
        *e << YAML::Key;
        if (NeedsQuotes(k)) *e << YAML::DoubleQuoted;
        *e << k << YAML::Value;
        Emit(item, e);
      }
      *e << YAML::EndMap;
      break;
    default:  // binary and discarded values do not come out of the parsers
      *e << YAML::Null;
      break;
  }
}

}  // namespace

bool ParseManifest(const std::string& text, const std::string& source, Manifest* out,
                   std::string* error) {
  out->documents.clear();
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (text[first] == '{' || text[first] == '[')) {
    out->form = Form::kJson;
    int line, column;
    if (size_t at = TooDeepAt(text)) {
      LineColumn(text, at - 1, &line, &column);
      *error = Where(source, line, column) + "nested more than " +
               std::to_string(kMaxJsonDepth) + " levels deep";
      return false;
    }
    try {
      out->documents.push_back(Json::parse(text));
    } catch (const Json::parse_error& e) {
      // e.byte is the 1-based offset of the character that broke the parse.
      LineColumn(text, e.byte == 0 ? 0 : e.byte - 1, &line, &column);
      std::string what = e.what();
      // "[json.exception.parse_error.101] parse error at line 3, column 5: x"
      size_t colon = what.find(": ");
      if (colon != std::string::npos) what = what.substr(colon + 2);
      *error = Where(source, line, column) + "not valid JSON: " + what;
      return false;
    } catch (const Json::exception& e) {
      *error = source + ": not valid JSON: " + e.what();
      return false;
    }
    return true;
  }
  out->form = Form::kYaml;
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    *error = Where(source, e.mark.line + 1, e.mark.column + 1) + "not valid YAML: " + e.msg;
    return false;
  } catch (const std::exception& e) {
    *error = source + ": not valid YAML: " + e.what();
    return false;
  }
  // Each value takes at least a byte or two of text unless an alias repeats
  // it: a budget of values in proportion to the text stops alias bombs
  // without limiting real manifests.
  size_t budget = std::min<size_t>(kMaxYamlValues, 64 + 8 * text.size());
  for (const auto& d : docs) {
    if (d.IsNull() || !d.IsDefined()) continue;  // `---` with nothing after it
    Json v;
    if (!FromYaml(d, source, &v, error, &budget)) return false;
    out->documents.push_back(std::move(v));
  }
  return true;
}

std::string ToYaml(const Json& value) {
  YAML::Emitter e;
  e.SetIndent(2);
  e.SetSeqFormat(YAML::Block);
  e.SetMapFormat(YAML::Block);
  Emit(value, &e);
  std::string s = e.c_str();
  if (s.empty() || s.back() != '\n') s.push_back('\n');
  return s;
}

std::string WriteManifest(const Manifest& m) {
  std::string out;
  for (size_t i = 0; i < m.documents.size(); i++) {
    if (m.form == Form::kJson) {
      out += m.documents[i].dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
    } else {
      if (i > 0) out += "---\n";
      out += ToYaml(m.documents[i]);
    }
  }
  return out;
}

}  // namespace loopwatch::inject

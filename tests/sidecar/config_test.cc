// SPDX-License-Identifier: Apache-2.0
//
// Tests of the sidecar configuration: one test per error message (each
// checks where the error points and its key phrase), precedence of the three
// sources, every setting in every spelling, the YAML round trip, durations.
#include "config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace loopwatch {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

using Env = std::map<std::string, std::string>;
using Args = std::vector<std::string>;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/loopwatch-config-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
  }

  // Writes a config file in the temp dir and returns its path.
  std::string File(const std::string& text, const std::string& name = "loopwatch.yaml") {
    std::string path = dir_ + "/" + name;
    std::ofstream f(path);
    f << text;
    return path;
  }

  static std::string Dump(const std::vector<ConfigError>& errors) {
    std::string s;
    for (auto& e : errors) s += "  " + e.ToString() + "\n";
    return s;
  }

  // Loads and expects failure; returns the errors.
  std::vector<ConfigError> Fail(const Args& args, const Env& env = {}) {
    Config c;
    std::vector<ConfigError> errors;
    EXPECT_FALSE(LoadConfig(args, env, &c, &errors, nullptr, nullptr));
    return errors;
  }

  // Loads and expects success.
  Config Load(const Args& args, const Env& env = {}) {
    Config c;
    std::vector<ConfigError> errors;
    bool ok = LoadConfig(args, env, &c, &errors, nullptr, nullptr);
    EXPECT_TRUE(ok);
    for (auto& e : errors) ADD_FAILURE() << "unexpected error: " << e.ToString();
    return c;
  }

  // The only error from loading `yaml` as a file.
  ConfigError OneFileError(const std::string& yaml, std::string* path) {
    *path = File(yaml);
    auto errors = Fail({"--config", *path});
    EXPECT_EQ(errors.size(), 1u) << Dump(errors);
    return errors.empty() ? ConfigError{} : errors[0];
  }

  ConfigError OneError(const Args& args, const Env& env = {}) {
    auto errors = Fail(args, env);
    EXPECT_EQ(errors.size(), 1u) << Dump(errors);
    return errors.empty() ? ConfigError{} : errors[0];
  }

  std::string dir_;
};

// --- errors in the file ---------------------------------------------------

TEST_F(ConfigTest, FileBadDurationPointsAtTheValue) {
  std::string path;
  ConfigError e = OneFileError(
      "# sidecar\nsegment: /run/x\nstall_after: \"5 seconds\"\n", &path);
  EXPECT_EQ(e.source, path + ":3:14");
  EXPECT_EQ(e.message,
            "stall_after: \"5 seconds\" is not a duration; expected a number "
            "with a unit: 250ms, 5s, 1m");
  EXPECT_EQ(e.ToString(), path + ":3:14: " + e.message);
}

TEST_F(ConfigTest, FileUnknownKeySuggestsTheClosest) {
  std::string path;
  ConfigError e = OneFileError(
      "segment: /run/x\nlisten: 0.0.0.0:9321\nmode: enforce\nstal_after: 5s\n",
      &path);
  EXPECT_EQ(e.source, path + ":4:1");
  EXPECT_EQ(e.message, "unknown setting \"stal_after\" (did you mean \"stall_after\"?)");
}

TEST_F(ConfigTest, FileKeyWithDashesSuggestsUnderscores) {
  std::string path;
  ConfigError e = OneFileError("stall-after: 5s\n", &path);
  EXPECT_EQ(e.source, path + ":1:1");
  EXPECT_THAT(e.message, HasSubstr("(did you mean \"stall_after\"?)"));
}

TEST_F(ConfigTest, FileUnknownKeyFarFromAnyHasNoSuggestion) {
  std::string path;
  ConfigError e = OneFileError("colour: blue\n", &path);
  EXPECT_EQ(e.source, path + ":1:1");
  EXPECT_EQ(e.message, "unknown setting \"colour\"");
}

TEST_F(ConfigTest, FileListWhereAScalarIsExpectedNamesTheType) {
  std::string path;
  ConfigError e = OneFileError("stall_after: 5s\nlisten: [a, b]\n", &path);
  EXPECT_EQ(e.source, path + ":2:9");
  EXPECT_EQ(e.message, "listen: expected a string (HOST:PORT), found a list");
}

TEST_F(ConfigTest, FileMappingWhereADurationIsExpectedNamesTheType) {
  std::string path;
  ConfigError e = OneFileError("stall_after: {seconds: 5}\n", &path);
  EXPECT_EQ(e.source, path + ":1:14");
  EXPECT_EQ(e.message, "stall_after: expected a duration such as 5s, found a mapping");
}

TEST_F(ConfigTest, FileEmptyValuePointsAtTheKey) {
  std::string path;
  ConfigError e = OneFileError("stall_after: 5s\nmode:\nlog_level: info\n", &path);
  EXPECT_EQ(e.source, path + ":2:1");
  EXPECT_EQ(e.message, "mode: has no value; expected one of enforce|observe");
}

TEST_F(ConfigTest, FileSyntaxErrorGivesLineAndColumn) {
  std::string path;
  ConfigError e = OneFileError("stall_after: 5s\n  mode: observe\n", &path);
  EXPECT_EQ(e.source, path + ":2:7");
  EXPECT_THAT(e.message, HasSubstr("YAML syntax error: "));
}

TEST_F(ConfigTest, FileMissingSaysSoAndWhoAskedForIt) {
  std::string path = dir_ + "/nope.yaml";
  ConfigError e = OneError({"--config", path});
  EXPECT_EQ(e.source, path);
  EXPECT_EQ(e.message,
            "cannot open the config file: No such file or directory (given by "
            "--config)");
}

TEST_F(ConfigTest, FileUnreadableDirectory) {
  ConfigError e = OneError({"--config=" + dir_});
  EXPECT_EQ(e.source, dir_);
  EXPECT_THAT(e.message, HasSubstr("is a directory; expected a YAML file"));
}

// A FIFO used to hang the sidecar at start: it is refused at once.
TEST_F(ConfigTest, FifoIsRefusedWithoutWaiting) {
  const std::string fifo = dir_ + "/fifo.yaml";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  ConfigError e = OneError({"--config", fifo});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(e.source, fifo);
  EXPECT_THAT(e.message, HasSubstr("is not a regular file; expected a YAML file"));
}

// A ConfigMap volume: loopwatch.yaml -> ..data/loopwatch.yaml, ..data ->
// ..2026_12_06_10_00_00.123/, all inside the mount. A link that leaves the
// config's directory is refused, so --config cannot read another file.
TEST_F(ConfigTest, SymlinksOnlyWithinTheDirectory) {
  const std::string mount = dir_ + "/configmap";
  ASSERT_EQ(mkdir(mount.c_str(), 0755), 0);
  ASSERT_EQ(mkdir((mount + "/..2026_12_06_10_00_00.123").c_str(), 0755), 0);
  {
    std::ofstream f(mount + "/..2026_12_06_10_00_00.123/loopwatch.yaml");
    f << "stall_after: 7s\n";
  }
  ASSERT_EQ(symlink("..2026_12_06_10_00_00.123", (mount + "/..data").c_str()), 0);
  ASSERT_EQ(symlink("..data/loopwatch.yaml", (mount + "/loopwatch.yaml").c_str()), 0);
  EXPECT_EQ(Load({"--config", mount + "/loopwatch.yaml"}).stall_after, seconds(7));

  const std::string outside = dir_ + "/outside.yaml";
  {
    std::ofstream f(outside);
    f << "stall_after: 8s\n";
  }
  ASSERT_EQ(symlink(outside.c_str(), (mount + "/escape.yaml").c_str()), 0);
  ConfigError e = OneError({"--config", mount + "/escape.yaml"});
  EXPECT_THAT(e.message, HasSubstr("is a symbolic link out of its directory"));
  // A regular file anywhere is fine, as ever.
  EXPECT_EQ(Load({"--config", outside}).stall_after, seconds(8));
}

TEST_F(ConfigTest, FileFromEnvironmentNamesTheVariable) {
  std::string path = dir_ + "/nope.yaml";
  ConfigError e = OneError({}, {{"LOOPWATCH_CONFIG", path}});
  EXPECT_EQ(e.source, path);
  EXPECT_THAT(e.message, HasSubstr("(given by LOOPWATCH_CONFIG)"));
}

TEST_F(ConfigTest, FileThatIsAListIsNotAMapping) {
  std::string path;
  ConfigError e = OneFileError("- stall_after: 5s\n- mode: observe\n", &path);
  EXPECT_EQ(e.source, path + ":1:1");
  EXPECT_EQ(e.message,
            "expected a mapping of settings (key: value, e.g. stall_after: 5s), "
            "found a list");
}

TEST_F(ConfigTest, FileThatIsAScalarIsNotAMapping) {
  std::string path;
  ConfigError e = OneFileError("stall_after 5s\n", &path);
  EXPECT_EQ(e.source, path + ":1:1");
  EXPECT_THAT(e.message, HasSubstr("found a scalar"));
}

TEST_F(ConfigTest, FileWithTwoDocuments) {
  std::string path;
  ConfigError e = OneFileError("stall_after: 5s\n---\nmode: observe\n", &path);
  EXPECT_EQ(e.source, path + ":3:1");
  EXPECT_THAT(e.message, HasSubstr("a config file holds one YAML document"));
}

TEST_F(ConfigTest, FileDuplicateKey) {
  std::string path;
  ConfigError e = OneFileError("stall_after: 5s\nmode: observe\nstall_after: 6s\n", &path);
  EXPECT_EQ(e.source, path + ":3:1");
  EXPECT_EQ(e.message, "setting \"stall_after\" given twice (first on line 1)");
}

TEST_F(ConfigTest, FileKeyThatIsNotAName) {
  std::string path;
  ConfigError e = OneFileError("? [stall_after]\n: 5s\n", &path);
  EXPECT_EQ(e.source, path + ":1:3");
  EXPECT_EQ(e.message, "expected a setting name such as stall_after, found a list");
}

TEST_F(ConfigTest, EmptyFileSetsNothing) {
  Config c = Load({"--config", File("# nothing yet\n")});
  EXPECT_EQ(c.stall_after, seconds(5));
  c = Load({"--config", File("")});
  EXPECT_EQ(c.stall_after, seconds(5));
}

TEST_F(ConfigTest, FileErrorsAreAllCollected) {
  std::string path = File(
      "stall_after: 5\n"          // bare number
      "mode: observ\n"            // typo in a choice
      "http_threads: 100\n"       // out of range
      "listen: localhost\n"       // no port
      "colour: blue\n");          // unknown
  auto errors = Fail({"--config", path, "--stal-after", "1s"});
  ASSERT_EQ(errors.size(), 6u);
  std::set<std::string> sources;
  for (auto& e : errors) sources.insert(e.source);
  EXPECT_EQ(sources, (std::set<std::string>{path + ":1:14", path + ":2:7",
                                            path + ":3:15", path + ":4:9",
                                            path + ":5:1", "--stal-after"}));
}

// --- errors in values (whatever the spelling) -----------------------------

TEST_F(ConfigTest, ChoiceTypoSuggestsTheClosest) {
  ConfigError e = OneError({"--mode=observ"});
  EXPECT_EQ(e.source, "--mode");
  EXPECT_EQ(e.message,
            "\"observ\" is not a valid choice; expected enforce or observe (did "
            "you mean \"observe\"?)");
}

TEST_F(ConfigTest, ChoiceListsEveryOption) {
  ConfigError e = OneError({"--log-level", "verbose"});
  EXPECT_EQ(e.source, "--log-level");
  EXPECT_THAT(e.message, HasSubstr("expected debug, info, warn or error"));
}

TEST_F(ConfigTest, BareNumberIsNotADuration) {
  ConfigError e = OneError({"--stall-after", "5"});
  EXPECT_EQ(e.source, "--stall-after");
  EXPECT_EQ(e.message,
            "\"5\" is not a duration; expected a number with a unit: 250ms, 5s, 1m");
}

TEST_F(ConfigTest, ZeroDurationWhereItMakesNoSense) {
  ConfigError e = OneError({"--lag-above", "0"});
  EXPECT_EQ(e.source, "--lag-above");
  EXPECT_EQ(e.message, "\"0\" must be above zero; expected a duration such as 5s");
  // Zero is fine where it means "none".
  Config c = Load({"--startup-grace", "0", "--max-hold", "0s", "--forget-after=0"});
  EXPECT_EQ(c.startup_grace, nanoseconds(0));
  EXPECT_EQ(c.max_hold, nanoseconds(0));
}

TEST_F(ConfigTest, PollIntervalRange) {
  ConfigError e = OneError({}, {{"LOOPWATCH_POLL_INTERVAL", "20s"}, {"LOOPWATCH_STALL_AFTER", "1m"}});
  EXPECT_EQ(e.source, "LOOPWATCH_POLL_INTERVAL");
  EXPECT_EQ(e.message, "\"20s\" is out of range; expected a duration from 1ms to 10s");
  e = OneError({"--poll-interval", "500us"});
  EXPECT_EQ(e.source, "--poll-interval");
  EXPECT_THAT(e.message, HasSubstr("out of range; expected a duration from 1ms to 10s"));
}

TEST_F(ConfigTest, BadBoolean) {
  ConfigError e = OneError({"--host-stall-fails-liveness=yes"});
  EXPECT_EQ(e.source, "--host-stall-fails-liveness");
  EXPECT_EQ(e.message, "\"yes\" is not a boolean; expected true or false");
}

TEST_F(ConfigTest, CountNotANumber) {
  ConfigError e = OneError({"--expect-loops", "-1"});
  EXPECT_EQ(e.source, "--expect-loops");
  EXPECT_EQ(e.message, "\"-1\" is not a whole number; expected a whole number from 0 to 1024");
}

TEST_F(ConfigTest, CountOutOfRange) {
  ConfigError e = OneError({}, {{"LOOPWATCH_HTTP_THREADS", "0"}});
  EXPECT_EQ(e.source, "LOOPWATCH_HTTP_THREADS");
  EXPECT_EQ(e.message, "\"0\" is out of range; expected a whole number from 1 to 64");
  e = OneError({"--create-slots", "2000"});
  EXPECT_THAT(e.message, HasSubstr("from 0 to 1024"));
}

TEST_F(ConfigTest, AddressWithoutPort) {
  ConfigError e = OneError({"--listen", "localhost"});
  EXPECT_EQ(e.source, "--listen");
  EXPECT_EQ(e.message,
            "\"localhost\" is not HOST:PORT (no port); expected HOST:PORT, e.g. "
            "0.0.0.0:9321, :9321 (every IPv4 interface), localhost:9321 or "
            "[::1]:9321; port 0 takes any free port");
}

TEST_F(ConfigTest, AddressWithBadPort) {
  ConfigError e = OneError({"--listen", "127.0.0.1:99999"});
  EXPECT_THAT(e.message, HasSubstr("has an invalid port (0 to 65535)"));
  e = OneError({"--listen", "127.0.0.1:http"});
  EXPECT_THAT(e.message, HasSubstr("has an invalid port"));
}

TEST_F(ConfigTest, AddressIpv6NeedsBrackets) {
  ConfigError e = OneError({"--admin-listen", "::1:9322"});
  EXPECT_EQ(e.source, "--admin-listen");
  EXPECT_THAT(e.message, HasSubstr("IPv6 address without brackets"));
  EXPECT_THAT(e.message, HasSubstr(", or off"));
}

// The one address grammar (http/listen_address.h), through the settings:
// what `loopwatch run` takes is what the HTTP servers bind.
TEST_F(ConfigTest, AddressForms) {
  Config c = Load({"--listen", "[::]:9321", "--admin-listen", "off"});
  EXPECT_EQ(c.listen.host, "::");
  EXPECT_EQ(c.listen.port, 9321);
  EXPECT_EQ(c.listen.ToString(), "[::]:9321");
  EXPECT_FALSE(c.admin_listen.has_value());
  c = Load({"--listen", "my-pod.ns.svc:80", "--admin-listen", "[::1]:0"});
  EXPECT_EQ(c.listen.ToString(), "my-pod.ns.svc:80");
  ASSERT_TRUE(c.admin_listen.has_value());
  EXPECT_EQ(c.admin_listen->ToString(), "[::1]:0");
  // ":PORT" is every IPv4 interface, in the file as on the command line.
  c = Load({"--listen", ":9400"});
  EXPECT_EQ(c.listen.ToString(), "0.0.0.0:9400");
  c = Load({"--config", File("listen: \":9401\"\nadmin_listen: :9402\n")});
  EXPECT_EQ(c.listen.ToString(), "0.0.0.0:9401");
  EXPECT_EQ(c.admin_listen->ToString(), "0.0.0.0:9402");
  c = Load({}, {{"LOOPWATCH_LISTEN", ":9403"}});
  EXPECT_EQ(c.listen.port, 9403);

  ConfigError e = OneError({"--listen", "off"});
  EXPECT_THAT(e.message, HasSubstr("is not HOST:PORT"));
  e = OneError({"--listen", "bad host:80"});
  EXPECT_THAT(e.message, HasSubstr("invalid host name"));
  for (const char* bad : {"9321", "*:9321", ":", "host:", ":-1", ":65536", "[::1]",
                          "[::1]9321", "[]:80", "[zz]:80", "::1:80", "a..b:80"}) {
    e = OneError({"--listen", bad});
    EXPECT_EQ(e.source, "--listen") << bad;
    EXPECT_THAT(e.message, HasSubstr("expected HOST:PORT")) << bad;
  }
}

TEST_F(ConfigTest, EmptySegment) {
  ConfigError e = OneError({"--segment="});
  EXPECT_EQ(e.source, "--segment");
  EXPECT_EQ(e.message, "\"\" is empty; expected a file path");
}

// --- errors in flags ------------------------------------------------------

TEST_F(ConfigTest, UnknownFlagSuggestsAndSkipsItsValue) {
  ConfigError e = OneError({"--stal-after", "5s"});
  EXPECT_EQ(e.source, "--stal-after");
  EXPECT_EQ(e.message, "unknown flag (did you mean --stall-after?)");
  e = OneError({"--stall_after=5s"});
  EXPECT_EQ(e.source, "--stall_after");
  EXPECT_EQ(e.message, "unknown flag (did you mean --stall-after?)");
}

TEST_F(ConfigTest, UnknownFlagWithoutSuggestion) {
  ConfigError e = OneError({"--frobnicate"});
  EXPECT_EQ(e.source, "--frobnicate");
  EXPECT_EQ(e.message, "unknown flag; see --help for the list");
}

TEST_F(ConfigTest, SingleDashFlag) {
  ConfigError e = OneError({"-mode", "observe"});
  EXPECT_EQ(e.source, "-mode");
  EXPECT_EQ(e.message, "unknown flag (did you mean --mode?)");
}

TEST_F(ConfigTest, FlagMissingItsValue) {
  ConfigError e = OneError({"--mode", "observe", "--stall-after"});
  EXPECT_EQ(e.source, "--stall-after");
  EXPECT_EQ(e.message,
            "needs a value; expected --stall-after DURATION (e.g. --stall-after 5s)");
  e = OneError({"--segment", "--mode", "observe"});
  EXPECT_EQ(e.source, "--segment");
  EXPECT_EQ(e.message, "needs a value; expected --segment PATH");
  e = OneError({"--config"});
  EXPECT_EQ(e.source, "--config");
  EXPECT_THAT(e.message, HasSubstr("needs a value; expected --config FILE"));
}

TEST_F(ConfigTest, StrayArgument) {
  ConfigError e = OneError({"--mode", "observe", "5s"});
  EXPECT_EQ(e.source, "5s");
  EXPECT_THAT(e.message, HasSubstr("unexpected argument"));
}

TEST_F(ConfigTest, ConfigGivenTwice) {
  std::string a = File("", "a.yaml"), b = File("", "b.yaml");
  ConfigError e = OneError({"--config", a, "--config", b});
  EXPECT_EQ(e.source, "--config");
  EXPECT_THAT(e.message, HasSubstr("given more than once"));
}

TEST_F(ConfigTest, ActionFlagsTakeNoValue) {
  ConfigError e = OneError({"--print-config=yes"});
  EXPECT_EQ(e.source, "--print-config");
  EXPECT_EQ(e.message, "takes no value");
}

TEST_F(ConfigTest, ActionFlags) {
  Config c;
  std::vector<ConfigError> errors;
  bool print = false, help = false;
  EXPECT_TRUE(LoadConfig({"--print-config"}, {}, &c, &errors, &print, &help));
  EXPECT_TRUE(print);
  EXPECT_FALSE(help);
  EXPECT_TRUE(LoadConfig({"--help"}, {}, &c, &errors, &print, &help));
  EXPECT_FALSE(print);
  EXPECT_TRUE(help);
  EXPECT_TRUE(LoadConfig({"-h"}, {}, &c, &errors, &print, &help));
  EXPECT_TRUE(help);
}

// --- environment ----------------------------------------------------------

TEST_F(ConfigTest, UnknownLoopwatchVariablesAreNotErrors) {
  Config c = Load({}, {{"LOOPWATCH_REPORT_AFTER", "100ms"},
                       {"LOOPWATCH_SLOTS", "16"},
                       {"LOOPWATCH_STAL_AFTER", "junk"},
                       {"LOOPWATCH_SEGMENT", "/dev/shm/seg"}});
  EXPECT_EQ(c.segment, "/dev/shm/seg");  // the app's variable is ours too
}

TEST_F(ConfigTest, EmptyVariableIsUnset) {
  Config c = Load({}, {{"LOOPWATCH_STALL_AFTER", ""}, {"LOOPWATCH_CONFIG", ""}});
  EXPECT_EQ(c.stall_after, seconds(5));
}

// --- cross-field rules ----------------------------------------------------

TEST_F(ConfigTest, StallAfterMustExceedPollInterval) {
  ConfigError e = OneError({"--stall-after", "100ms"});
  EXPECT_EQ(e.source, "--stall-after");
  EXPECT_EQ(e.message,
            "stall_after (100ms) must be longer than poll_interval (100ms): a "
            "stall is seen only at a poll");
  // Set in the file: the error points at the line that set it.
  std::string path = File("poll_interval: 2s\nstall_after: 1s\n");
  e = OneError({"--config", path});
  EXPECT_EQ(e.source, path + ":2:14");
  EXPECT_THAT(e.message, HasSubstr("stall_after (1s) must be longer than poll_interval (2s)"));
  // Only poll_interval was set: it is the culprit.
  e = OneError({}, {{"LOOPWATCH_POLL_INTERVAL", "10s"}});
  EXPECT_EQ(e.source, "LOOPWATCH_POLL_INTERVAL");
}

TEST_F(ConfigTest, AdminPortMustDifferFromListen) {
  ConfigError e = OneError({"--admin-listen", "127.0.0.1:9321"});
  EXPECT_EQ(e.source, "--admin-listen");
  EXPECT_EQ(e.message,
            "admin_listen (127.0.0.1:9321) uses the port of listen "
            "(0.0.0.0:9321); expected another port, or off");
  // Port 0 (ephemeral, for tests) twice is fine.
  Load({"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"});
}

TEST_F(ConfigTest, NoCrossFieldErrorAboutARejectedValue) {
  auto errors = Fail({"--stall-after", "1 s", "--poll-interval", "10s"});
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].source, "--stall-after");
}

// --- precedence -----------------------------------------------------------

TEST_F(ConfigTest, FlagsOverrideEnvironmentOverridesFileOverridesDefaults) {
  std::string path = File("stall_after: 3s\nlag_above: 300ms\nmode: observe\n");
  Env env = {{"LOOPWATCH_STALL_AFTER", "4s"}, {"LOOPWATCH_LAG_ABOVE", "400ms"}};
  Config c = Load({"--config", path, "--stall-after", "6s"}, env);
  EXPECT_EQ(c.stall_after, seconds(6));        // flag
  EXPECT_EQ(c.lag_above, milliseconds(400));   // environment
  EXPECT_EQ(c.mode, Mode::kObserve);           // file
  EXPECT_EQ(c.poll_interval, milliseconds(100));  // default

  c = Load({"--config", path}, env);
  EXPECT_EQ(c.stall_after, seconds(4));
  c = Load({"--config", path});
  EXPECT_EQ(c.stall_after, seconds(3));
  c = Load({});
  EXPECT_EQ(c.stall_after, seconds(5));
}

TEST_F(ConfigTest, ConfigFlagOverridesConfigVariable) {
  std::string a = File("stall_after: 7s\n", "a.yaml");
  std::string b = File("stall_after: 8s\n", "b.yaml");
  EXPECT_EQ(Load({}, {{"LOOPWATCH_CONFIG", a}}).stall_after, seconds(7));
  EXPECT_EQ(Load({"--config", b}, {{"LOOPWATCH_CONFIG", a}}).stall_after, seconds(8));
}

TEST_F(ConfigTest, LaterFlagWins) {
  EXPECT_EQ(Load({"--stall-after=2s", "--stall-after", "3s"}).stall_after, seconds(3));
}

// --- every setting in every spelling --------------------------------------

struct SettingCase {
  std::string key;
  std::string value;  // not the default
  std::function<bool(const Config&)> check;
};

std::vector<SettingCase> AllSettings() {
  return {
      {"segment", "/dev/shm/other segment", [](const Config& c) { return c.segment == "/dev/shm/other segment"; }},
      {"listen", "127.0.0.1:8080", [](const Config& c) { return c.listen.ToString() == "127.0.0.1:8080"; }},
      {"admin_listen", "localhost:8081", [](const Config& c) { return c.admin_listen && c.admin_listen->ToString() == "localhost:8081"; }},
      {"redact_query", "false", [](const Config& c) { return !c.redact_query; }},
      {"probe_peers", "10.0.0.5,fd00::5", [](const Config& c) { return FormatPeerList(c.probe_peers) == "10.0.0.5,fd00::5"; }},
      {"poll_interval", "50ms", [](const Config& c) { return c.poll_interval == milliseconds(50); }},
      {"stall_after", "1m30s", [](const Config& c) { return c.stall_after == seconds(90); }},
      {"lag_above", "1.5s", [](const Config& c) { return c.lag_above == milliseconds(1500); }},
      {"expect_loops", "4", [](const Config& c) { return c.expect_loops == 4; }},
      {"startup_grace", "2m", [](const Config& c) { return c.startup_grace == minutes(2); }},
      {"liveness_policy", "all", [](const Config& c) { return c.liveness_policy == LivenessPolicy::kAll; }},
      {"mode", "observe", [](const Config& c) { return c.mode == Mode::kObserve; }},
      {"host_stall_fails_liveness", "true", [](const Config& c) { return c.host_stall_fails_liveness; }},
      {"report_limit", "0", [](const Config& c) { return c.report_limit == 0; }},
      {"report_window", "1h", [](const Config& c) { return c.report_window == hours(1); }},
      {"stall_history", "100", [](const Config& c) { return c.stall_history == 100; }},
      {"forget_after", "30s", [](const Config& c) { return c.forget_after == seconds(30); }},
      {"max_hold", "15m", [](const Config& c) { return c.max_hold == minutes(15); }},
      {"create_slots", "256", [](const Config& c) { return c.create_slots == 256; }},
      {"http_threads", "8", [](const Config& c) { return c.http_threads == 8; }},
      {"http_timeout", "250ms", [](const Config& c) { return c.http_timeout == milliseconds(250); }},
      {"log_format", "text", [](const Config& c) { return c.log_format == LogFormat::kText; }},
      {"log_level", "debug", [](const Config& c) { return c.log_level == LogLevel::kDebug; }},
      {"app_probes", R"({"app": {"livenessProbe": {"tcpSocket": {"port": 8000}}}})",
       [](const Config& c) { return c.app_probes.find("tcpSocket") != std::string::npos; }},
  };
}

std::string FlagOf(std::string key) {
  for (char& ch : key) if (ch == '_') ch = '-';
  return "--" + key;
}

std::string EnvOf(std::string key) {
  for (char& ch : key) ch = char(toupper(ch));
  return "LOOPWATCH_" + key;
}

TEST_F(ConfigTest, TheTableCoversEverySetting) {
  std::set<std::string> printed, tested;
  std::istringstream yaml(ConfigToYaml(Config{}));
  for (std::string line; std::getline(yaml, line);) {
    if (line.empty() || line[0] == '#') continue;
    printed.insert(line.substr(0, line.find(':')));
  }
  for (auto& s : AllSettings()) tested.insert(s.key);
  EXPECT_EQ(printed, tested);
  EXPECT_EQ(printed.size(), 24u);
}

TEST_F(ConfigTest, EverySettingInEverySpelling) {
  for (const SettingCase& s : AllSettings()) {
    SCOPED_TRACE(s.key);
    EXPECT_FALSE(s.check(Config{})) << "test value is the default";
    // JSON (app_probes) is written single-quoted in a file: plain, it
    // would be a YAML mapping, and its double quotes end a "string".
    const bool json = s.value.find('"') != std::string::npos;
    std::string path = File(s.key + (json ? ": '" : ": \"") + s.value + (json ? "'\n" : "\"\n"),
                            s.key + ".yaml");
    EXPECT_TRUE(s.check(Load({"--config", path}))) << "file";
    if (!json) {
      std::string plain = File(s.key + ": " + s.value + "\n", s.key + "-plain.yaml");
      EXPECT_TRUE(s.check(Load({"--config", plain}))) << "file, plain scalar";
    }
    EXPECT_TRUE(s.check(Load({}, {{EnvOf(s.key), s.value}}))) << "environment";
    EXPECT_TRUE(s.check(Load({FlagOf(s.key), s.value}))) << "flag VALUE";
    EXPECT_TRUE(s.check(Load({FlagOf(s.key) + "=" + s.value}))) << "flag=VALUE";
  }
}

TEST_F(ConfigTest, BareBooleanFlagMeansTrue) {
  EXPECT_TRUE(Load({"--host-stall-fails-liveness"}).host_stall_fails_liveness);
  EXPECT_TRUE(Load({"--host-stall-fails-liveness", "--mode", "observe"})
                  .host_stall_fails_liveness);
  EXPECT_FALSE(Load({"--host-stall-fails-liveness", "false"}).host_stall_fails_liveness);
}

// --- output ---------------------------------------------------------------

TEST_F(ConfigTest, YamlRoundTrip) {
  Config c;
  c.segment = "/var/run/odd dir/seg: \"#1\"";
  c.listen = {"::", 9000};
  c.admin_listen.reset();
  c.poll_interval = microseconds(2500);
  c.stall_after = seconds(90);
  c.lag_above = milliseconds(1500);
  c.expect_loops = 0;
  c.startup_grace = nanoseconds(0);
  c.liveness_policy = LivenessPolicy::kAll;
  c.mode = Mode::kObserve;
  c.host_stall_fails_liveness = true;
  c.report_limit = 1;
  c.report_window = hours(2) + seconds(1);
  c.stall_history = 7;
  c.forget_after = minutes(1) + milliseconds(1);
  c.max_hold = nanoseconds(1);
  c.create_slots = 0;
  c.http_threads = 64;
  c.http_timeout = milliseconds(10);
  c.log_format = LogFormat::kText;
  c.log_level = LogLevel::kError;
  std::string yaml = ConfigToYaml(c);
  Config back = Load({"--config", File(yaml)});
  EXPECT_EQ(ConfigToYaml(back), yaml);
  EXPECT_EQ(back.segment, c.segment);
  EXPECT_EQ(back.listen, c.listen);
  EXPECT_EQ(back.poll_interval, c.poll_interval);
  EXPECT_EQ(back.report_window, c.report_window);
  EXPECT_EQ(back.forget_after, c.forget_after);
  EXPECT_EQ(back.max_hold, c.max_hold);
  EXPECT_EQ(back.mode, c.mode);

  std::string defaults = ConfigToYaml(Config{});
  EXPECT_EQ(ConfigToYaml(Load({"--config", File(defaults)})), defaults);
  EXPECT_THAT(defaults, HasSubstr("\nstall_after: 5s\n"));
  EXPECT_THAT(defaults, HasSubstr("\nlisten: \"0.0.0.0:9321\"\n"));
  EXPECT_EQ(defaults[0], '#');
}

TEST_F(ConfigTest, HelpNamesEverySettingInAllSpellings) {
  std::string help = ConfigHelp();
  for (const SettingCase& s : AllSettings()) {
    EXPECT_THAT(help, HasSubstr("  " + FlagOf(s.key) + " ")) << s.key;
    EXPECT_THAT(help, HasSubstr("env " + EnvOf(s.key) + ", key " + s.key + ", default "))
        << s.key;
  }
  EXPECT_THAT(help, HasSubstr("--stall-after DURATION\n"));
  EXPECT_THAT(help, HasSubstr("key stall_after, default 5s\n"));
  EXPECT_THAT(help, HasSubstr("--mode enforce|observe\n"));
  EXPECT_THAT(help, HasSubstr("--config FILE"));
  EXPECT_THAT(help, HasSubstr("--print-config"));
  EXPECT_THAT(help, HasSubstr("--help"));
  EXPECT_THAT(help, HasSubstr("key probe_peers, default (none)\n"));
  EXPECT_THAT(help, HasSubstr("SIGHUP"));
}

}  // namespace
}  // namespace loopwatch

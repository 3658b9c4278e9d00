// SPDX-License-Identifier: Apache-2.0
//
// loopwatch: the sidecar. `loopwatch run` watches the loops in the segment
// and answers the app's probes; `loopwatch status` prints them as a table.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "hold.h"
#include "http/servers.h"
#include "inject/check_webhook.h"
#include "inject/cli.h"
#include "inject/python_payload.h"
#include "inject/webhook.h"
#include "log.h"
#include "memory.h"
#include "loopwatch/loopwatch.h"
#include "metrics.h"
#include "monitor.h"
#include "segment_layout.h"
#include "status.h"

namespace loopwatch {
namespace {

constexpr const char* kUsage =
    "Usage: loopwatch COMMAND [OPTIONS]\n"
    "\n"
    "loopwatch watches the event loops of an app from a sidecar container:\n"
    "the app's loops beat into a shared-memory segment (libloopwatch), and\n"
    "this process answers the app's Kubernetes probes from it, exports\n"
    "Prometheus metrics and logs stall reports.\n"
    "\n"
    "Commands:\n"
    "  run       run the sidecar (probes on :9321, admin on 127.0.0.1:9322)\n"
    "  status    print the loops in the segment as a table (--json for JSON)\n"
    "  inject    add the sidecar to Kubernetes manifests (stdin to stdout)\n"
    "  uninject  take out what inject added\n"
    "  webhook   the mutating admission webhook that injects at pod creation\n"
    "  check-webhook URL\n"
    "            send the webhook a labelled pod and check it is injected\n"
    "  python-payload DEST\n"
    "            copy the Python package and start-up hook into DEST (an init\n"
    "            container's job: Python apps watched with no image rebuild)\n"
    "  version   print the version\n"
    "  help      print this help; `loopwatch run --help` lists every setting\n"
    "\n"
    "Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.\n";

std::string VersionText() {
  return std::string("loopwatch ") + LOOPWATCH_VERSION + " (segment format " +
         std::to_string(LW_SEG_VERSION_MAJOR) + "." +
         std::to_string(LW_SEG_VERSION_MINOR) + ", libloopwatch " +
         lw_version() + ")";
}

int Run(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  Config config;
  std::vector<ConfigError> errors;
  bool print_config = false, help = false;
  bool ok = LoadConfig(args, env, &config, &errors, &print_config, &help);
  if (help) {
    std::cout << ConfigHelp();
    return 0;
  }
  if (!ok) {
    for (const ConfigError& e : errors) {
      std::cerr << "loopwatch: " << e.ToString() << "\n";
    }
    std::cerr << "loopwatch: see `loopwatch run --help` for every setting\n";
    return 2;
  }
  if (print_config) {
    std::cout << ConfigToYaml(config);
    return 0;
  }

  const bool allocator_tuned = TuneAllocator();  // before any thread: see memory.h

  // Signals go to this thread's sigwait(), never to a handler on another
  // thread; every thread created below inherits the mask. SIGTERM and
  // SIGINT stop the sidecar; the others whose default would kill it are
  // logged and ignored: a daemon someone sends `kill -HUP` must go on
  // answering probes.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGALRM}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  EventLog log(config);
  SidecarMetrics metrics;
  Hold hold;
  Monitor monitor(config, [&log](const std::vector<Event>& events) {
    log.Events(events);
  });
  monitor.Start();

  HttpServers servers(
      config, [&monitor] { return monitor.view(); }, hold, metrics,
      [&log](const std::string& event, const std::string& detail) {
        log.Warn(LogLine(event).Str("detail", detail));
      });
  std::string error;
  if (!servers.Start(&error)) {
    log.Error(LogLine("cannot start the HTTP servers").Str("error", error));
    monitor.Stop();
    return 1;
  }
  log.Info(LogLine("loopwatch started")
               .Str("version", LOOPWATCH_VERSION)
               .Str("segment", config.segment)
               .Str("listen", config.listen.ToString())
               .Int("port", servers.port())
               .Str("admin_listen", config.admin_listen ? config.admin_listen->ToString() : "off")
               .Str("probe_peers", FormatPeerList(config.probe_peers))
               .Int("admin_port", servers.admin_port())
               .Str("mode", config.mode == Mode::kObserve ? "observe" : "enforce")
               .Seconds("stall_after_seconds", config.stall_after.count())
               .Seconds("poll_interval_seconds", config.poll_interval.count())
               .Str("allocator", allocator_tuned ? "tuned" : "GLIBC_TUNABLES")
               .Int("unused_library_bytes_released", int64_t(ReleaseUnusedLibraryPages())));

  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig == SIGTERM || sig == SIGINT) break;
    log.Info(LogLine("signal ignored: only SIGTERM and SIGINT stop loopwatch")
                 .Str("signal", sigabbrev_np(sig) ? sigabbrev_np(sig) : "?"));
  }
  log.Info(LogLine("stopping").Str("signal", strsignal(sig)));
  servers.Stop();
  monitor.Stop();
  log.Info(LogLine("stopped"));
  log.Flush();
  return 0;
}

}  // namespace
}  // namespace loopwatch

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << loopwatch::kUsage;
    return 2;
  }
  const std::string cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "run") return loopwatch::Run(rest, loopwatch::ProcessEnvironment());
  if (cmd == "status") {
    return loopwatch::RunStatus(rest, loopwatch::ProcessEnvironment(), std::cout, std::cerr);
  }
  if (cmd == "inject" || cmd == "uninject") {
    return loopwatch::inject::InjectCommand(rest, cmd == "uninject", std::cin, std::cout,
                                            std::cerr);
  }
  if (cmd == "webhook") return loopwatch::inject::WebhookCommand(rest, std::cout, std::cerr);
  if (cmd == "check-webhook") {
    return loopwatch::inject::CheckWebhookCommand(rest, std::cout, std::cerr);
  }
  if (cmd == "python-payload") {
    return loopwatch::inject::PythonPayloadCommand(rest, std::cout, std::cerr);
  }
  if (cmd == "version" || cmd == "--version" || cmd == "-V") {
    std::cout << loopwatch::VersionText() << "\n";
    return 0;
  }
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    std::cout << loopwatch::kUsage;
    return 0;
  }
  std::cerr << "loopwatch: unknown command \"" << cmd << "\"\n\n"
            << loopwatch::kUsage;
  return 2;
}

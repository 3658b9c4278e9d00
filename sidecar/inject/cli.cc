// SPDX-License-Identifier: Apache-2.0
#include "inject/cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>

#include "inject/manifest.h"
#include "inject/patcher.h"
#include "inject/webhook.h"

namespace loopwatch::inject {
namespace {

constexpr const char* kInjectHelp =
    "Usage: loopwatch inject [-f FILE] [OPTIONS]\n"
    "\n"
    "Adds the loopwatch sidecar to the pods of Kubernetes manifests: a Pod, or a\n"
    "Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job or\n"
    "CronJob whose pod template has the label loopwatch.io/inject: enabled. Other\n"
    "objects pass through unchanged. Reads YAML (several documents) or JSON, a\n"
    "kind: List too, and writes the same form on stdout; one report line per\n"
    "object on stderr. Injecting twice changes nothing.\n"
    "\n"
    "  kubectl get deploy api -o yaml | loopwatch inject | kubectl apply -f -\n"
    "\n"
    "Options:\n"
    "  -f, --filename FILE      the manifests (default -, stdin)\n"
    "  --image IMAGE            the sidecar's image (default loopwatch:" LOOPWATCH_VERSION ")\n"
    "  --image-pull-policy P    Always, IfNotPresent or Never (default: not set)\n"
    "  --config FILE            the injector's settings file, as `loopwatch webhook\n"
    "                           --config` reads it (the Helm chart's ConfigMap):\n"
    "                           image, resources, native_sidecar, ... (docs/inject.md);\n"
    "                           --image and --image-pull-policy override it\n"
    "  --all                    inject pods without the label too, as the webhook\n"
    "                           does in a namespace labelled loopwatch.io/inject:\n"
    "                           enabled (loopwatch.io/inject: disabled still wins)\n"
    "  -h, --help               this help\n"
    "\n"
    "Per-pod settings are annotations on the pod (template), see docs/inject.md:\n"
    "  config.loopwatch.io/containers       the watched containers, a comma list\n"
    "                                       (default: the default-container\n"
    "                                       annotation, else the first container)\n"
    "  config.loopwatch.io/probes           liveness,readiness,startup (default) or none\n"
    "  config.loopwatch.io/native-sidecar   \"false\": a plain container, not an\n"
    "                                       init container (not in Jobs)\n"
    "  config.loopwatch.io/stall-after, lag-above, expect-loops, startup-grace,\n"
    "    liveness-policy, mode, host-stall-fails-liveness, redact-query,\n"
    "    report-limit, report-window, log-format, log-level\n"
    "                                       the sidecar's settings of those names\n"
    "  config.loopwatch.io/cpu-request, cpu-limit, memory-request, memory-limit\n"
    "                                       the sidecar's resources (default 10m,\n"
    "                                       none, 16Mi, 32Mi)\n"
    "\n"
    "Exit codes: 0 done (some objects may be skipped, see the report), 1 an\n"
    "object refused (a bad annotation, say) or the input unreadable: nothing is\n"
    "written, 2 usage.\n";

constexpr const char* kUninjectHelp =
    "Usage: loopwatch uninject [-f FILE]\n"
    "\n"
    "Takes loopwatch out of manifests that `loopwatch inject` (or the webhook)\n"
    "injected, as the annotation loopwatch.io/status records it: the result is the\n"
    "object as it was before. Objects loopwatch did not inject pass through. Same\n"
    "input and output forms as inject.\n"
    "\n"
    "Options:\n"
    "  -f, --filename FILE      the manifests (default -, stdin)\n"
    "  -h, --help               this help\n"
    "\n"
    "Exit codes: 0 done, 1 an object refused or the input unreadable: nothing is\n"
    "written, 2 usage.\n";

bool ReadAll(const std::string& path, std::istream& in, std::string* text, std::string* error) {
  if (path == "-") {
    text->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return true;
  }
  // A FIFO would block open(); a directory reads as an error. Like the
  // sidecar's config file: open without blocking, then check what it is.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    *error = path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    *error = path + ": not a regular file";
    return false;
  }
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = path + ": " + std::strerror(errno);
      close(fd);
      return false;
    }
    if (n == 0) break;
    text->append(buf, size_t(n));
  }
  close(fd);
  return true;
}

bool IsList(const Json& obj) {
  if (!obj.is_object() || !obj.contains("kind") || !obj["kind"].is_string()) return false;
  const std::string kind = obj["kind"];
  return kind.size() >= 4 && kind.compare(kind.size() - 4, 4, "List") == 0 &&
         obj.contains("items") && obj["items"].is_array();
}

// Runs the patcher over one object, or over the items of a List.
void Apply(Json* obj, bool uninject, const InjectorSettings& s, std::vector<Report>* reports) {
  if (IsList(*obj)) {
    for (Json& item : (*obj)["items"]) Apply(&item, uninject, s, reports);
    return;
  }
  reports->push_back(uninject ? Uninject(obj) : Inject(obj, s));
}

}  // namespace

int InjectCommand(const std::vector<std::string>& args, bool uninject, std::istream& in,
                  std::ostream& out, std::ostream& err) {
  const char* cmd = uninject ? "uninject" : "inject";
  const char* help = uninject ? kUninjectHelp : kInjectHelp;
  auto usage = [&](const std::string& what) {
    err << "loopwatch " << cmd << ": " << what << "\n"
        << "Run `loopwatch " << cmd << " --help` for the options.\n";
    return 2;
  };
  std::string file = "-";
  bool file_given = false;
  InjectorSettings s;
  std::string config_path;
  std::optional<std::string> image, pull_policy;
  for (size_t i = 0; i < args.size(); i++) {
    std::string a = args[i], value;
    bool has_value = false;
    size_t eq = a.find('=');
    if (a.compare(0, 2, "--") == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    auto take = [&](std::string* v) {
      if (has_value) {
        *v = value;
        return true;
      }
      if (i + 1 >= args.size()) return false;
      *v = args[++i];
      return true;
    };
    if (a == "-h" || a == "--help") {
      out << help;
      return 0;
    } else if (a == "-f" || a == "--filename") {
      if (file_given) return usage("one -f FILE only");
      if (!take(&file)) return usage(a + " needs a file name (- for stdin)");
      file_given = true;
    } else if (!uninject && a == "--image") {
      image.emplace();
      if (!take(&*image) || image->empty()) return usage("--image needs an image name");
    } else if (!uninject && a == "--image-pull-policy") {
      pull_policy.emplace();
      if (!take(&*pull_policy)) return usage("--image-pull-policy needs a value");
      if (*pull_policy != "Always" && *pull_policy != "IfNotPresent" && *pull_policy != "Never")
        return usage("--image-pull-policy: \"" + *pull_policy +
                     "\" is not Always, IfNotPresent or Never");
    } else if (!uninject && a == "--config") {
      if (!take(&config_path) || config_path.empty()) return usage("--config needs a file name");
    } else if (!uninject && a == "--all" && !has_value) {
      s.namespace_enabled = true;
    } else if (!a.empty() && a[0] == '-' && a != "-") {
      return usage("unknown option " + a);
    } else {
      return usage("unexpected argument \"" + a + "\" (the manifests come with -f FILE)");
    }
  }

  if (!config_path.empty()) {
    std::vector<std::string> errors;
    if (!InjectorSettingsFromYaml(config_path, &s, &errors)) {
      for (const std::string& e : errors) err << "loopwatch " << cmd << ": " << e << "\n";
      return 2;
    }
  }
  if (image) s.image = *image;
  if (pull_policy) s.image_pull_policy = *pull_policy;

  std::string text, error;
  if (!ReadAll(file, in, &text, &error)) {
    err << "loopwatch " << cmd << ": " << error << "\n";
    return 1;
  }
  Manifest m;
  const std::string source = file == "-" ? "<stdin>" : file;
  if (!ParseManifest(text, source, &m, &error)) {
    err << "loopwatch " << cmd << ": " << error << "\n";
    return 1;
  }
  std::vector<Report> reports;
  for (Json& doc : m.documents) Apply(&doc, uninject, s, &reports);
  bool refused = false;
  for (const Report& r : reports) {
    if (r.outcome == Outcome::kRefused) refused = true;
    err << r.Line() << "\n";
  }
  if (refused) {
    err << "loopwatch " << cmd << ": nothing written"
        << (uninject ? "" : ": fix what was refused, or label it loopwatch.io/inject: disabled")
        << "\n";
    return 1;
  }
  out << WriteManifest(m);
  out.flush();
  return out ? 0 : 1;
}

}  // namespace loopwatch::inject

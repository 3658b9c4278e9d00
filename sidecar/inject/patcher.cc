// SPDX-License-Identifier: Apache-2.0
#include "inject/patcher.h"

#include <algorithm>
#include <set>

#include "config.h"
#include "inject/json_access.h"
#include "inject/pod_config.h"
#include "inject/pod_template.h"
#include "settings.h"

namespace loopwatch::inject {

InjectorSettings::InjectorSettings() : image(std::string("loopwatch:") + LOOPWATCH_VERSION) {}

namespace {

void Describe(const Json& obj, Report* r) {
  if (!obj.is_object()) return;
  if (obj.contains("kind") && obj["kind"].is_string()) r->kind = obj["kind"];
  if (!obj.contains("metadata") || !obj["metadata"].is_object()) return;
  const Json& m = obj["metadata"];
  if (m.contains("name") && m["name"].is_string()) {
    r->name = m["name"];
  } else if (m.contains("generateName") && m["generateName"].is_string()) {
    r->name = m["generateName"].get<std::string>() + "*";
  }
  if (m.contains("namespace") && m["namespace"].is_string()) r->namespace_ = m["namespace"];
}


// ---- probes

constexpr const char* kProbeKeys[] = {"livenessProbe", "readinessProbe", "startupProbe"};

const char* ProbePath(const std::string& probe_key) {
  if (probe_key == "livenessProbe") return "/livez";
  if (probe_key == "readinessProbe") return "/readyz";
  return "/startupz";
}

// Timings for a probe the container did not have (the values the docs
// recommend, deploy/sidecar/native.yaml).
Json DefaultTimings(const std::string& probe_key) {
  Json t = Json::object();
  if (probe_key == "startupProbe") {
    t["periodSeconds"] = 1;
    t["failureThreshold"] = 60;
  } else if (probe_key == "livenessProbe") {
    t["periodSeconds"] = 5;
    t["failureThreshold"] = 2;
  } else {
    t["periodSeconds"] = 2;
    t["failureThreshold"] = 1;
  }
  return t;
}

// The probe that replaces `original` (null when the container had none).
Json SidecarProbe(const std::string& probe_key, const Json& original, const std::string& path,
                  int port) {
  Json p = Json::object();
  p["httpGet"] = Json{{"path", path}, {"port", port}};
  const Json timings = original.is_object() ? original : DefaultTimings(probe_key);
  for (const auto& [k, v] : timings.items()) {
    if (k == "httpGet" || k == "tcpSocket" || k == "exec" || k == "grpc") continue;
    p[k] = v;
  }
  // A frozen loop cannot run its SIGTERM handler: no point waiting the
  // pod's whole grace period (30 s by default) before SIGKILL.
  if (probe_key == "livenessProbe" && !p.contains("terminationGracePeriodSeconds"))
    p["terminationGracePeriodSeconds"] = 5;
  return p;
}

// The original probe as the sidecar forwards to it: named ports resolved
// against the container's ports. False with *why when a name is not there.
bool ForwardForm(const Json& probe, const Json& container, Json* out, std::string* why) {
  *out = probe;
  for (const char* handler : {"httpGet", "tcpSocket"}) {
    if (!probe.contains(handler) || !probe[handler].is_object()) continue;
    auto port_it = probe[handler].find("port");
    if (port_it == probe[handler].end() || !port_it->is_string()) continue;
    const std::string name = *port_it;
    if (!name.empty() && name.size() <= 5 && std::all_of(name.begin(), name.end(), ::isdigit)) {
      (*out)[handler]["port"] = std::stoi(name);
      continue;
    }
    bool found = false;
    if (container.contains("ports") && container["ports"].is_array()) {
      for (const Json& p : container["ports"]) {
        if (Str(p, "name") == name && p.contains("containerPort")) {
          (*out)[handler]["port"] = p["containerPort"];
          found = true;
        }
      }
    }
    if (!found) {
      *why = "the " + std::string(handler) + " port " + Quote(name) +
             " of a probe is not a port of container " + Str(container, "name");
      return false;
    }
  }
  return true;
}

// ---- injection

// The "restricted" pod security standard, whatever the pod sets: the
// sidecar's and the Python payload's init container's.
Json RestrictedSecurityContext(const InjectorSettings& s) {
  return Json{{"runAsNonRoot", true},
              {"runAsUser", s.run_as_user},
              {"runAsGroup", s.run_as_user},
              {"allowPrivilegeEscalation", false},
              {"readOnlyRootFilesystem", true},
              {"capabilities", {{"drop", Json::array({"ALL"})}}},
              {"seccompProfile", {{"type", "RuntimeDefault"}}}};
}

Json SidecarContainer(const InjectorSettings& s, const PodConfig& pc, const Json& app_probes) {
  Json c = Json::object();
  c["name"] = kSidecarName;
  c["image"] = s.image;
  if (!s.image_pull_policy.empty()) c["imagePullPolicy"] = s.image_pull_policy;
  if (pc.native_sidecar) c["restartPolicy"] = "Always";
  c["args"] = Json::array({"run"});
  Json env = Json::array();
  env.push_back(Json{{"name", "LOOPWATCH_SEGMENT"}, {"value", kSegmentPath}});
  // The kubelet probes from the node's address: a lane of its own on the
  // probe port, so that no other client can delay its probes.
  env.push_back(Json{{"name", "LOOPWATCH_PROBE_PEERS"},
                     {"valueFrom", {{"fieldRef", {{"fieldPath", "status.hostIP"}}}}}});
  if (s.port != 9321)
    env.push_back(Json{{"name", "LOOPWATCH_LISTEN"}, {"value", ":" + std::to_string(s.port)}});
  for (const auto& [name, value] : pc.sidecar_env)
    env.push_back(Json{{"name", name}, {"value", value}});
  if (!app_probes.empty())
    env.push_back(Json{{"name", "LOOPWATCH_APP_PROBES"}, {"value", Dump(app_probes)}});
  c["env"] = std::move(env);
  c["ports"] = Json::array({Json{{"name", kSidecarName}, {"containerPort", s.port}}});
  // The sidecar's own health. The startup probe of a native sidecar also
  // holds the app back until the sidecar listens.
  c["startupProbe"] = Json{{"httpGet", {{"path", "/healthz"}, {"port", kSidecarName}}},
                           {"periodSeconds", 1},
                           {"failureThreshold", 30}};
  c["livenessProbe"] =
      Json{{"httpGet", {{"path", "/healthz"}, {"port", kSidecarName}}}, {"periodSeconds", 10}};
  Json requests = Json::object(), limits = Json::object();
  if (!pc.cpu_request.empty()) requests["cpu"] = pc.cpu_request;
  if (!pc.memory_request.empty()) requests["memory"] = pc.memory_request;
  if (!pc.cpu_limit.empty()) limits["cpu"] = pc.cpu_limit;
  if (!pc.memory_limit.empty()) limits["memory"] = pc.memory_limit;
  Json resources = Json::object();
  if (!requests.empty()) resources["requests"] = requests;
  if (!limits.empty()) resources["limits"] = limits;
  c["resources"] = resources;
  c["securityContext"] = RestrictedSecurityContext(s);
  c["volumeMounts"] =
      Json::array({Json{{"name", kVolumeName}, {"mountPath", kMountPath}}});
  return c;
}

// The init container that copies the Python payload into its volume: the
// sidecar's image, the same "restricted" settings, a few MiB for a moment.
Json PythonInitContainer(const InjectorSettings& s) {
  Json c = Json::object();
  c["name"] = kPythonName;
  c["image"] = s.image;
  if (!s.image_pull_policy.empty()) c["imagePullPolicy"] = s.image_pull_policy;
  c["args"] = Json::array({"python-payload", kPythonMountPath});
  c["resources"] = Json{{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}},
                        {"limits", {{"memory", "32Mi"}}}};
  c["securityContext"] = RestrictedSecurityContext(s);
  c["volumeMounts"] = Json::array({Json{{"name", kPythonName}, {"mountPath", kPythonMountPath}}});
  return c;
}

// Sets env var `name` in container `c`, recording the original in *record.
void SetEnv(Json& c, const std::string& name, const std::string& value, Json* record,
            Json* created) {
  if (!c.contains("env")) {
    c["env"] = Json::array();
    created->push_back("env");
  }
  Json entry = Json{{"name", name}, {"value", value}};
  if (Json* e = FindNamed(c["env"], name)) {
    (*record)[name] = *e;
    *e = entry;
  } else {
    (*record)[name] = nullptr;
    c["env"].push_back(entry);
  }
}

// Sets meta[map][key] = value, recording the original in status[map].
void SetMapEntry(Json& meta, const char* map, const std::string& key, const std::string& value,
                 Json& status) {
  if (!meta.contains(map) || !meta[map].is_object()) {
    meta[map] = Json::object();
    status["created"].push_back(map);
  }
  const Json* old = MapString(meta, map, key);
  if (!status.contains(map)) status[map] = Json::object();
  status[map][key] = old ? *old : Json(nullptr);
  meta[map][key] = value;
}

// Injects into a pod template that carries no loopwatch status. Works on
// *t in place: callers pass a copy.
Report InjectFresh(PodTemplate& t, const InjectorSettings& s) {
  Report r;
  Json& meta = *t.metadata;
  Json& spec = *t.spec;
  auto skip = [&](const char* code, const std::string& why) {
    r.outcome = Outcome::kSkipped;
    r.code = code;
    r.reason = why;
    return r;
  };
  auto refuse = [&](const std::string& why) {
    r.outcome = Outcome::kRefused;
    r.reason = why;
    return r;
  };

  const Json* label = MapString(meta, "labels", kInjectLabel);
  if (label) {
    if (*label == "disabled") return skip("disabled", "disabled (label loopwatch.io/inject: disabled)");
    if (*label != "enabled")
      return refuse(std::string("label ") + kInjectLabel + ": " + Quote(*label) +
                    " is not enabled or disabled");
  } else if (!s.namespace_enabled) {
    return skip("not_enabled", "not enabled (no label loopwatch.io/inject: enabled on the pod)");
  }
  if (IsTrue(spec, "hostNetwork"))
    return skip("host_network", "hostNetwork: the sidecar's port would be the node's");
  if (!spec.contains("containers") || !spec["containers"].is_array() ||
      spec["containers"].empty())
    return skip("no_container", "no container");

  PodConfig pc;
  std::string why;
  if (!ReadPodConfig(meta, s, &pc, &why)) return refuse(why);
  if (t.job && !pc.native_sidecar)
    return refuse(AnnotationName("native-sidecar") +
                  ": \"false\" in a Job's pod: a plain sidecar container never exits, so "
                  "the pod would never complete");

  Json& containers = spec["containers"];
  for (const char* list : {"containers", "initContainers"}) {
    if (spec.contains(list) && FindNamed(spec[list], kSidecarName))
      return skip("sidecar_present", std::string("it has a container named loopwatch (in ") + list +
                  ") that loopwatch did not inject; remove it to inject");
    if (!spec.contains(list)) continue;
    if (!spec[list].is_array()) return refuse(std::string("spec.") + list + " is not a list");
    for (const Json& c : spec[list]) {
      if (!c.is_object() || !c.contains("ports") || !c["ports"].is_array()) continue;
      for (const Json& p : c["ports"])
        if (IsInt(p, "containerPort", s.port))
          return refuse("port " + std::to_string(s.port) + " is the sidecar's, and container " +
                        Str(c, "name") + " uses it");
    }
  }
  if (!ListOrAbsent(spec, "volumes")) return refuse("spec.volumes is not a list");
  if (spec.contains("volumes") && FindNamed(spec["volumes"], kVolumeName))
    return refuse("it has a volume named loopwatch already");
  if (pc.python) {
    if (spec.contains("volumes") && FindNamed(spec["volumes"], kPythonName))
      return refuse(std::string("it has a volume named ") + kPythonName + " already");
    for (const char* list : {"containers", "initContainers"})
      if (spec.contains(list) && FindNamed(spec[list], kPythonName))
        return refuse(std::string("it has a container named ") + kPythonName + " (in " + list +
                      ") already");
  }
  for (const char* map : {"labels", "annotations"}) {
    if (!meta.contains(map)) continue;
    if (!meta[map].is_object()) return refuse(std::string("metadata.") + map + " is not a mapping");
    for (const auto& [key, value] : meta[map].items())
      if (!value.is_string())
        return refuse(std::string("metadata.") + map + "." + key + " is not a string");
  }

  // Which containers.
  std::vector<std::string> chosen = pc.containers;
  if (chosen.empty()) {
    const Json* dc = MapString(meta, "annotations", kDefaultContainerAnnotation);
    if (dc) {
      chosen.push_back(*dc);
    } else if (!Str(containers[0], "name").empty()) {
      chosen.push_back(Str(containers[0], "name"));
    }
  }
  if (chosen.empty()) return refuse("its first container has no name");
  std::vector<std::string> names;
  for (const Json& c : containers)
    if (c.is_object() && c.contains("name") && c["name"].is_string()) names.push_back(c["name"]);
  std::set<std::string> seen;
  for (const auto& name : chosen) {
    if (std::find(names.begin(), names.end(), name) == names.end())
      return refuse(Quote(name) + " is not a container of this pod (it has: " + Join(names) +
                    ")" + (pc.containers.empty() ? "" : "; see " + AnnotationName("containers")));
    if (!seen.insert(name).second) return refuse(AnnotationName("containers") + " names " +
                                                 Quote(name) + " twice");
  }

  Json status = Json::object();
  status["version"] = LOOPWATCH_VERSION;
  status["sidecar"] = kSidecarName;
  status["in"] = pc.native_sidecar ? "initContainers" : "containers";
  status["volumes"] = Json::array({kVolumeName});
  status["containers"] = Json::object();
  status["created"] = Json::array();
  if (t.metadata_created) status["created"].push_back("metadata");

  Json app_probes = Json::object();
  for (const auto& name : chosen) {
    Json& c = *FindNamed(containers, name);
    Json record = Json::object();
    Json created = Json::array();
    for (const char* list : {"env", "volumeMounts"})
      if (!ListOrAbsent(c, list)) return refuse("container " + name + ": " + list + " is not a list");
    if (c.contains("volumeMounts")) {
      for (const Json& m : c["volumeMounts"]) {
        if (Str(m, "mountPath") == kMountPath)
          return refuse("container " + name + " already mounts something at " + kMountPath);
        if (pc.python && Str(m, "mountPath") == kPythonMountPath)
          return refuse("container " + name + " already mounts something at " + kPythonMountPath);
      }
    }
    Json env_record = Json::object();
    SetEnv(c, "LOOPWATCH_SEGMENT", kSegmentPath, &env_record, &created);
    SetEnv(c, "LOOPWATCH_CONTAINER", name, &env_record, &created);
    if (pc.python) {
      // The bootstrap first, then whatever the app's Python path was: a
      // literal value in the spec, else what the pod declares its image
      // sets (the spec's value replaces the image's ENV at run time).
      std::string path = kPythonBootstrap;
      const Json* old = c.contains("env") ? FindNamed(c["env"], "PYTHONPATH") : nullptr;
      if (old && old->contains("valueFrom"))
        return refuse("container " + name + ": PYTHONPATH comes from valueFrom, which the "
                      "injector cannot read, so it cannot keep it after loopwatch's; give it "
                      "as a value, or move it to " + AnnotationName("python-path"));
      if (old && old->contains("value") && !(*old)["value"].is_string())
        return refuse("container " + name + ": PYTHONPATH's value is not a string");
      const std::string literal = old ? Str(*old, "value") : "";
      if (!literal.empty()) {
        path += ":" + literal;
        if (pc.python_path_set)
          r.notes.push_back(name + ": PYTHONPATH is set in the pod spec, which replaces the "
                            "image's, so " + AnnotationName("python-path") + " is not used");
      } else if (pc.python_path_set) {
        path += ":" + pc.python_path;
      } else if (c.contains("envFrom")) {
        r.notes.push_back(name + ": a PYTHONPATH from envFrom would be replaced by loopwatch's, "
                          "so declare one it sets with " + AnnotationName("python-path"));
      }
      SetEnv(c, "PYTHONPATH", path, &env_record, &created);
    }
    record["env"] = env_record;
    if (!c.contains("volumeMounts")) {
      c["volumeMounts"] = Json::array();
      created.push_back("volumeMounts");
    }
    c["volumeMounts"].push_back(Json{{"name", kVolumeName}, {"mountPath", kMountPath}});
    record["volumeMounts"] = Json::array({kVolumeName});
    if (pc.python) {
      c["volumeMounts"].push_back(
          Json{{"name", kPythonName}, {"mountPath", kPythonMountPath}, {"readOnly", true}});
      record["volumeMounts"].push_back(kPythonName);
    }

    Json probes = Json::object();
    Json nulls = Json::array();
    Json forwards = Json::object();
    for (const char* key : kProbeKeys) {
      const bool wanted = (std::string(key) == "livenessProbe" && pc.liveness) ||
                          (std::string(key) == "readinessProbe" && pc.readiness) ||
                          (std::string(key) == "startupProbe" && pc.startup);
      if (!wanted) continue;
      const Json original = c.contains(key) ? c[key] : Json(nullptr);
      if (original.is_object() && (original.contains("exec") || original.contains("grpc"))) {
        r.notes.push_back(name + "'s " + key + " is " +
                          (original.contains("exec") ? "an exec" : "a gRPC") +
                          " probe: left in place");
        continue;
      }
      if (!original.is_null() && !original.is_object())
        return refuse(name + "'s " + key + " is not an object");
      if (original.is_object()) {
        Json fwd;
        if (!ForwardForm(original, c, &fwd, &why)) return refuse(why);
        forwards[key] = fwd;
      }
      // Per container: the verdict on its own loops, and its own probe
      // asked until they beat (the sidecar's app_probes).
      const std::string path = std::string(ProbePath(key)) + "?container=" + name;
      probes[key] = original;
      if (c.contains(key) && original.is_null()) nulls.push_back(key);  // `key: null`
      c[key] = SidecarProbe(key, original, path, s.port);
    }
    record["probes"] = probes;
    if (!nulls.empty()) record["nulls"] = nulls;
    if (!created.empty()) record["created"] = created;
    if (!forwards.empty()) app_probes[name] = forwards;
    status["containers"][name] = record;
    r.containers.push_back(name);
  }

  const char* list = pc.native_sidecar ? "initContainers" : "containers";
  if (!spec.contains(list)) {
    spec[list] = Json::array();
    status["created"].push_back(list);
  }
  spec[list].push_back(SidecarContainer(s, pc, app_probes));
  if (pc.python) {
    // After a native sidecar: it starts first, so the app's probes have it.
    if (!spec.contains("initContainers")) {
      spec["initContainers"] = Json::array();
      status["created"].push_back("initContainers");
    }
    spec["initContainers"].push_back(PythonInitContainer(s));
    status["python_init"] = kPythonName;
    status["volumes"].push_back(kPythonName);
  }
  if (!spec.contains("volumes")) {
    spec["volumes"] = Json::array();
    status["created"].push_back("volumes");
  }
  Json volume = Json{{"name", kVolumeName}, {"emptyDir", {{"medium", "Memory"}}}};
  if (!s.volume_size.empty()) volume["emptyDir"]["sizeLimit"] = s.volume_size;
  spec["volumes"].push_back(volume);
  if (pc.python)
    spec["volumes"].push_back(Json{{"name", kPythonName}, {"emptyDir", {{"sizeLimit", "16Mi"}}}});

  SetMapEntry(meta, "labels", kInjectedLabel, "true", status);
  // What deploy/monitoring/podmonitor.yaml selects, as on hand-made pods.
  SetMapEntry(meta, "labels", kSidecarLabel, "true", status);
  if (!MapString(meta, "annotations", kDefaultContainerAnnotation))
    SetMapEntry(meta, "annotations", kDefaultContainerAnnotation, chosen[0], status);
  if (!meta.contains("annotations") || !meta["annotations"].is_object()) {
    meta["annotations"] = Json::object();
    status["created"].push_back("annotations");
  }
  meta["annotations"][kStatusAnnotation] = Dump(status);
  r.outcome = Outcome::kInjected;
  return r;
}

}  // namespace

const char* Report::OutcomeName() const {
  switch (outcome) {
    case Outcome::kInjected: return "injected";
    case Outcome::kUnchanged: return "unchanged";
    case Outcome::kSkipped: return "skipped";
    case Outcome::kRefused: return "refused";
    case Outcome::kUninjected: return "uninjected";
    case Outcome::kNotWorkload: return "passed";
  }
  return "?";
}

std::string Report::Line() const {
  std::string who = (kind.empty() ? "object" : kind) + "/" + (name.empty() ? "?" : name);
  if (!namespace_.empty()) who = namespace_ + "/" + who;
  std::string out = who + ": ";
  switch (outcome) {
    case Outcome::kInjected:
      out += reason.empty() ? "injected" : reason;
      if (!containers.empty()) out += " (containers: " + Join(containers) + ")";
      break;
    case Outcome::kUnchanged:
      out += "unchanged: " + reason;
      break;
    case Outcome::kSkipped:
      out += "skipped: " + reason;
      break;
    case Outcome::kRefused:
      out += "refused: " + reason;
      break;
    case Outcome::kUninjected:
      out += "uninjected";
      break;
    case Outcome::kNotWorkload:
      out += "passed through: " + reason;
      break;
  }
  for (const auto& n : notes) out += "; " + n;
  return out;
}

// Refused before anything else: the status annotation could not record
// what it replaced byte for byte.
static bool RefuseInvalidUtf8(const Json& object, Report* r) {
  if (ValidUtf8(object)) return false;
  r->outcome = Outcome::kRefused;
  r->reason = "the object is not valid UTF-8";
  return true;
}

// The common start of Inject and Uninject: names the object in *r, finds
// the pod template in `copy` (a copy of `object`) and takes out what an
// earlier injection added (*was_injected), as its status annotation lists.
// False with *r filled when there is nothing to patch (passed through) or
// it cannot be patched (refused).
static bool TakeOut(const Json& object, Json* copy, PodTemplate* t, Report* r,
                    bool* was_injected) {
  Describe(object, r);
  if (!Locate(copy, t)) {
    r->reason = "not a workload with a pod template";
    return false;
  }
  if (!t->problem.empty()) {
    r->outcome = Outcome::kRefused;
    r->reason = t->problem;
    return false;
  }
  if (RefuseInvalidUtf8(object, r)) return false;
  std::string why;
  Json status = ReadStatus(*t->metadata, &why);
  *was_injected = !status.is_null();
  if (*was_injected && (!why.empty() || !Remove(*t, status, &why))) {
    r->outcome = Outcome::kRefused;
    r->reason = why;
    return false;
  }
  return true;
}

Report Uninject(Json* object) {
  Report r;
  Json copy = *object;
  PodTemplate t;
  bool was_injected = false;
  if (!TakeOut(*object, &copy, &t, &r, &was_injected)) return r;
  if (!was_injected) {
    r.outcome = Outcome::kUnchanged;
    r.reason = "not injected";
    return r;
  }
  *object = std::move(copy);
  r.outcome = Outcome::kUninjected;
  return r;
}

Report Inject(Json* object, const InjectorSettings& settings) {
  Report r;
  Json copy = *object;
  PodTemplate t;
  // Injected before: that is taken out and injected again. If nothing
  // changed since, the result is the input, and the object is left alone;
  // if another webhook changed the pod (a container added, restartPolicy
  // dropped), this puts loopwatch back as it should be.
  bool again = false;
  if (!TakeOut(*object, &copy, &t, &r, &again)) return r;
  if (again) {
    // Remove may have taken out the template's metadata: find it again.
    t = PodTemplate();
    if (!Locate(&copy, &t) || !t.problem.empty()) {
      r.outcome = Outcome::kRefused;
      r.reason = "the object has no pod template once loopwatch is taken out";
      return r;
    }
  }
  Report fresh = InjectFresh(t, settings);
  fresh.kind = r.kind;
  fresh.name = r.name;
  fresh.namespace_ = r.namespace_;
  if (fresh.outcome != Outcome::kInjected) return fresh;
  if (again && copy == *object) {
    fresh.outcome = Outcome::kUnchanged;
    fresh.reason = "already injected";
    return fresh;
  }
  if (again) fresh.reason = "re-injected (the pod had changed since it was injected)";
  *object = std::move(copy);
  return fresh;
}

}  // namespace loopwatch::inject

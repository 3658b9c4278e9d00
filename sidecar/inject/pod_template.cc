// SPDX-License-Identifier: Apache-2.0
#include "inject/pod_template.h"

#include "inject/patcher.h"

namespace loopwatch::inject {

namespace {

// Restores map[key] to `original` (null: absent, unless `was_null`: there
// with the value null).
void RestoreMapEntry(Json& map, const std::string& key, const Json& original,
                     bool was_null = false) {
  if (!map.is_object()) return;
  if (original.is_null() && !was_null) {
    map.erase(key);
  } else {
    map[key] = original;
  }
}

}  // namespace

bool Locate(Json* obj, PodTemplate* t) {
  if (!obj->is_object() || !obj->contains("kind") || !(*obj)["kind"].is_string()) return false;
  const std::string kind = (*obj)["kind"];
  Json* holder = nullptr;  // the object with metadata and spec
  if (kind == "Pod") {
    holder = obj;
  } else if (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" ||
             kind == "ReplicaSet" || kind == "ReplicationController" || kind == "Job") {
    Json& spec = (*obj)["spec"];
    if (!spec.is_object() || !spec.contains("template")) return false;
    holder = &spec["template"];
    t->job = kind == "Job";
  } else if (kind == "CronJob") {
    Json* p = obj;
    for (const char* k : {"spec", "jobTemplate", "spec", "template"}) {
      if (!p->is_object() || !p->contains(k)) return false;
      p = &(*p)[k];
    }
    holder = p;
    t->job = true;
  } else {
    return false;
  }
  if (!holder->is_object() || !holder->contains("spec") || !(*holder)["spec"].is_object())
    return false;
  if (holder->contains("metadata") && !(*holder)["metadata"].is_object()) {
    t->problem = "the pod's metadata is not a mapping";
    return true;
  }
  if (!holder->contains("metadata")) {
    (*holder)["metadata"] = Json::object();
    t->metadata_created = true;
  }
  t->holder = holder;
  t->metadata = &(*holder)["metadata"];
  t->spec = &(*holder)["spec"];
  return true;
}

Json ReadStatus(const Json& meta, std::string* why) {
  const Json* s = MapString(meta, "annotations", kStatusAnnotation);
  if (!s) {
    const bool present = meta.contains("annotations") && meta["annotations"].is_object() &&
                         meta["annotations"].contains(kStatusAnnotation);
    if (!present) return nullptr;
    *why = std::string("the annotation ") + kStatusAnnotation + " is not a string";
    return Json::object();
  }
  Json status = Json::parse(s->get<std::string>(), nullptr, false);
  if (status.is_discarded() || !status.is_object() || !status.contains("sidecar") ||
      !status["sidecar"].is_string() || !status.contains("in") || !status["in"].is_string() ||
      !status.contains("containers") || !status["containers"].is_object()) {
    *why = std::string("the annotation ") + kStatusAnnotation +
           " is not one loopwatch wrote; remove it, or the object's loopwatch parts, by hand";
    return Json::object();  // an empty object: present but unusable
  }
  return status;
}

bool Remove(PodTemplate& t, const Json& status, std::string* why) {
  Json& spec = *t.spec;
  Json& meta = *t.metadata;
  const Json created = status.value("created", Json::array());
  const std::string in = status["in"];
  if (in != "initContainers" && in != "containers") {
    *why = "loopwatch.io/status names no container list";
    return false;
  }
  if (spec.contains(in)) EraseNamed(spec[in], status["sidecar"].get<std::string>());
  if (status.contains("python_init") && status["python_init"].is_string() &&
      spec.contains("initContainers"))
    EraseNamed(spec["initContainers"], status["python_init"].get<std::string>());
  for (const char* list : {"initContainers", "containers"})
    if (spec.contains(list) && spec[list].is_array() && spec[list].empty() &&
        Contains(created, list))
      spec.erase(list);
  if (spec.contains("volumes")) {
    for (const Json& v : status.value("volumes", Json::array()))
      if (v.is_string()) EraseNamed(spec["volumes"], v.get<std::string>());
    if (spec["volumes"].empty() && Contains(created, "volumes")) spec.erase("volumes");
  }
  for (const auto& [name, c] : status["containers"].items()) {
    Json* container = spec.contains("containers") ? FindNamed(spec["containers"], name) : nullptr;
    if (!container || !c.is_object()) continue;  // gone since: nothing of ours left in it
    const Json ccreated = c.value("created", Json::array());
    if (c.contains("env") && c["env"].is_object() && container->contains("env")) {
      Json& env = (*container)["env"];
      for (const auto& [var, original] : c["env"].items()) {
        if (original.is_null()) {
          EraseNamed(env, var);
        } else if (Json* e = FindNamed(env, var)) {
          *e = original;
        }
      }
      if (env.is_array() && env.empty() && Contains(ccreated, "env")) container->erase("env");
    }
    if (container->contains("volumeMounts")) {
      Json& mounts = (*container)["volumeMounts"];
      for (const Json& m : c.value("volumeMounts", Json::array()))
        if (m.is_string())
          EraseNamed(mounts, m.get<std::string>(),
                     {{"mountPath", m == kPythonName ? kPythonMountPath : kMountPath}});
      if (mounts.is_array() && mounts.empty() && Contains(ccreated, "volumeMounts"))
        container->erase("volumeMounts");
    }
    if (c.contains("probes") && c["probes"].is_object()) {
      for (const auto& [key, original] : c["probes"].items())
        RestoreMapEntry(*container, key, original, Contains(c.value("nulls", Json()), key.c_str()));
    }
  }
  for (const char* map : {"labels", "annotations"}) {
    if (status.contains(map) && status[map].is_object() && meta.contains(map)) {
      for (const auto& [key, original] : status[map].items())
        RestoreMapEntry(meta[map], key, original);
    }
  }
  if (meta.contains("annotations") && meta["annotations"].is_object()) {
    meta["annotations"].erase(kStatusAnnotation);
    if (meta["annotations"].empty() && Contains(created, "annotations"))
      meta.erase("annotations");
  }
  if (meta.contains("labels") && meta["labels"].is_object() && meta["labels"].empty() &&
      Contains(created, "labels"))
    meta.erase("labels");
  if (meta.empty() && Contains(created, "metadata")) t.holder->erase("metadata");
  return true;
}

}  // namespace loopwatch::inject

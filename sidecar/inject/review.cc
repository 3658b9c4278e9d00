// SPDX-License-Identifier: Apache-2.0
#include "inject/review.h"

#include <exception>

#include "inject/manifest.h"
#include "settings.h"  // Quote

namespace loopwatch::inject {
namespace {

ReviewAnswer BadRequest(const std::string& why) {
  ReviewAnswer a;
  a.status = 400;
  a.content_type = "text/plain; charset=utf-8";
  a.body = "bad request: " + why + "\n";
  a.result = "bad_request";
  return a;
}

std::string Text(const Json& o, const char* key) {
  if (!o.is_object()) return "";
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

std::string Base64(std::string_view in) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 |
                 uint8_t(in[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

ReviewAnswer Review(std::string_view body, const InjectorSettings& settings) {
  Manifest m;
  std::string error;
  const std::string text(body);
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || text[first] != '{')
    return BadRequest("the body is not a JSON object (an AdmissionReview)");
  if (!ParseManifest(text, "body", &m, &error)) return BadRequest(error);
  const Json& review = m.documents.at(0);
  if (Text(review, "kind") != "AdmissionReview" ||
      Text(review, "apiVersion") != "admission.k8s.io/v1")
    return BadRequest("not an AdmissionReview of admission.k8s.io/v1 (kind " +
                      Quote(Text(review, "kind")) + ", apiVersion " +
                      Quote(Text(review, "apiVersion")) + ")");
  if (!review.contains("request") || !review["request"].is_object())
    return BadRequest("the AdmissionReview has no request");
  const Json& request = review["request"];
  const std::string uid = Text(request, "uid");
  if (uid.empty()) return BadRequest("the AdmissionReview's request has no uid");

  ReviewAnswer a;
  a.uid = uid;
  a.content_type = "application/json";
  Json response = Json::object();
  response["uid"] = uid;
  response["allowed"] = true;
  Json warnings = Json::array();
  try {
    const Json& kind = request.contains("kind") ? request["kind"] : Json();
    const std::string operation = Text(request, "operation");
    if (Text(kind, "kind") != "Pod" || !Text(kind, "group").empty() ||
        (!operation.empty() && operation != "CREATE")) {
      // The webhook's rules send only pod creations; anything else passes.
      a.result = "passed";
    } else if (!request.contains("object") || !request["object"].is_object()) {
      a.result = "error";
      warnings.push_back("loopwatch: not injected: the review carries no pod object");
    } else {
      const Json& pod = request["object"];
      Json patched = pod;
      InjectorSettings s = settings;
      // The API server sends only pods its selectors chose (a labelled
      // namespace, or a labelled pod): no label means enabled here, while
      // loopwatch.io/inject: disabled on the pod still wins.
      s.namespace_enabled = true;
      a.report = Inject(&patched, s);
      if (a.report.namespace_.empty()) a.report.namespace_ = Text(request, "namespace");
      a.result = a.report.OutcomeName();
      a.code = a.report.code;
      if (a.report.outcome == Outcome::kInjected) {
        Json patch = Json::diff(pod, patched);
        a.patch_ops = patch.size();
        response["patchType"] = "JSONPatch";
        response["patch"] = Base64(patch.dump(-1, ' ', false, Json::error_handler_t::replace));
      } else if (a.report.outcome == Outcome::kRefused) {
        warnings.push_back("loopwatch: not injected: " + a.report.reason);
      }
      for (const std::string& n : a.report.notes) warnings.push_back("loopwatch: " + n);
    }
  } catch (const std::exception& e) {
    // Never a rejection, never a half patch: the pod goes in as it came.
    a.result = "error";
    response.erase("patchType");
    response.erase("patch");
    warnings.push_back(std::string("loopwatch: not injected: internal error: ") + e.what());
  }
  if (!warnings.empty()) response["warnings"] = warnings;
  Json out = Json::object();
  out["apiVersion"] = "admission.k8s.io/v1";
  out["kind"] = "AdmissionReview";
  out["response"] = response;
  a.body = out.dump(-1, ' ', false, Json::error_handler_t::replace);
  return a;
}

}  // namespace loopwatch::inject

// SPDX-License-Identifier: Apache-2.0
#include "inject_harness.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "inject/manifest.h"
#include "inject/patcher.h"
#include "inject/review.h"

namespace lwfuzz {
namespace {

using loopwatch::inject::Inject;
using loopwatch::inject::InjectorSettings;
using loopwatch::inject::Json;
using loopwatch::inject::Manifest;
using loopwatch::inject::Outcome;
using loopwatch::inject::Report;
using loopwatch::inject::Uninject;

[[noreturn]] void Violation(const char* what, const Json& input, const Report& r) {
  std::fprintf(stderr, "inject invariant violated: %s\n  report: %s\n  input: %s\n", what,
               r.Line().c_str(),
               input.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
  std::abort();
}

// The same object as the webhook gets it: the review's patch, applied by
// nlohmann's RFC 6902 implementation, must give what Inject gives.
void CheckReview(const Json& x) {
  Json review = {{"apiVersion", "admission.k8s.io/v1"},
                 {"kind", "AdmissionReview"},
                 {"request", {{"uid", "u"}, {"kind", {{"group", ""}, {"kind", "Pod"}}},
                              {"operation", "CREATE"}, {"object", x}}}};
  const std::string body = review.dump(-1, ' ', false, Json::error_handler_t::replace);
  loopwatch::inject::ReviewAnswer a = loopwatch::inject::Review(body, InjectorSettings());
  if (!x.is_object()) return;
  Report none;
  if (a.status != 200) Violation("a well-formed review was not answered 200", x, none);
  Json out = Json::parse(a.body, nullptr, false);
  if (out.is_discarded() || !out["response"]["allowed"].is_boolean() ||
      !out["response"]["allowed"].get<bool>())
    Violation("the review's answer is not allowed: true", x, none);
  if (!out["response"].contains("patch")) return;
  // The input went through dump/parse: compare against that form.
  Json pod = Json::parse(body)["request"]["object"];
  Json want = pod;
  InjectorSettings s;
  s.namespace_enabled = true;
  Report r = Inject(&want, s);
  std::string raw = out["response"]["patch"];
  // base64 back to bytes
  std::string bytes;
  uint32_t val = 0;  // only the low 14 bits matter: a byte and what follows
  int bits = -8;
  for (char c : raw) {
    const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char* at = std::strchr(abc, c);
    if (!at || c == '\0') break;
    val = ((val << 6) | uint32_t(at - abc)) & 0x3FFFu;
    bits += 6;
    if (bits >= 0) {
      bytes.push_back(char((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  Json patch = Json::parse(bytes, nullptr, false);
  if (patch.is_discarded()) Violation("the patch is not JSON", x, r);
  Json got;
  try {
    got = pod.patch(patch);
  } catch (const std::exception&) {
    Violation("the patch does not apply to the pod", x, r);
  }
  // As the API server sees objects: the order of keys is not kept.
  auto unordered = [](const Json& j) {
    return nlohmann::json::parse(j.dump(-1, ' ', false, Json::error_handler_t::replace));
  };
  if (unordered(got) != unordered(want)) Violation("pod + patch != inject(pod)", x, r);
}

void Check(const Json& x, const InjectorSettings& s) {
  Json once = x;
  Report r1 = Inject(&once, s);
  if (r1.outcome != Outcome::kInjected && once != x)
    Violation("an object not injected was changed", x, r1);
  if (r1.outcome != Outcome::kInjected) return;

  Json twice = once;
  Report r2 = Inject(&twice, s);
  if (twice != once) Violation("inject(inject(x)) != inject(x)", x, r2);
  if (r2.outcome != Outcome::kUnchanged) Violation("the second inject was not 'unchanged'", x, r2);

  Json back = once;
  Report u1 = Uninject(&back);
  if (u1.outcome != Outcome::kUninjected) Violation("uninject(inject(x)) failed", x, u1);
  Json original = x;
  Uninject(&original);  // x itself when x was not injected
  if (back != original) Violation("uninject(inject(x)) != uninject(x)", x, u1);
}

}  // namespace

void RunInject(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  Manifest m;
  std::string error;
  if (!loopwatch::inject::ParseManifest(text, "fuzz", &m, &error)) {
    if (error.empty()) std::abort();  // a refusal always says why
    return;
  }
  InjectorSettings s;
  (void)loopwatch::inject::Review(text, s);  // any bytes as a review body
  for (const Json& doc : m.documents) {
    CheckReview(doc);
    Check(doc, s);
    s.namespace_enabled = true;  // and as the webhook sees it
    Check(doc, s);
    s.namespace_enabled = false;
  }
  (void)loopwatch::inject::WriteManifest(m);
  m.form = m.form == loopwatch::inject::Form::kJson ? loopwatch::inject::Form::kYaml
                                                    : loopwatch::inject::Form::kJson;
  (void)loopwatch::inject::WriteManifest(m);
}

}  // namespace lwfuzz

// SPDX-License-Identifier: Apache-2.0
#include "inject_harness.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "inject/manifest.h"
#include "inject/patcher.h"

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
  for (const Json& doc : m.documents) {
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

// SPDX-License-Identifier: Apache-2.0
//
// review.h: one admission review, as a pure function: the body of
// POST /inject (an AdmissionReview, admission.k8s.io/v1) in, the HTTP answer
// out. The webhook server (webhook.h) adds TLS, routing, logs and metrics.
//
// It never rejects a pod. A pod it injects gets a JSONPatch (RFC 6902,
// computed as the difference between the pod and the patcher's result);
// one it skips, no patch; one it refuses (a bad annotation) or fails on,
// `allowed: true` with a warning that the API server shows to the user
// (kubectl prints it). Only a body that is not an AdmissionReview at all
// gets a 4xx, with a line saying what is wrong.
#ifndef LOOPWATCH_SIDECAR_INJECT_REVIEW_H_
#define LOOPWATCH_SIDECAR_INJECT_REVIEW_H_

#include <string>
#include <string_view>

#include "inject/patcher.h"

namespace loopwatch::inject {

struct ReviewAnswer {
  int status = 200;           // 200, or 400 for a body that is not a review
  std::string content_type;   // application/json, or text/plain for a 4xx
  std::string body;
  // For logs and metrics.
  std::string uid;
  std::string result;         // injected, unchanged, skipped, refused, passed, error
  std::string code;           // skipped: Report::code; else empty
  Report report;              // the patcher's, when it ran
  size_t patch_ops = 0;
};

ReviewAnswer Review(std::string_view body, const InjectorSettings& settings);

// RFC 4648 base64, as the AdmissionReview's `patch` field wants it.
std::string Base64(std::string_view bytes);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_REVIEW_H_

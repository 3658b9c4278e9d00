// SPDX-License-Identifier: Apache-2.0
//
// check_webhook.h: `loopwatch check-webhook URL`, a client of the injector
// for `helm test` and for people: it sends the AdmissionReview of a small
// labelled pod over HTTPS, verifying the server's certificate against a CA
// file, and checks that the answer admits it with a patch that adds the
// sidecar. Exit 0 yes, 1 no (with why), 2 usage.
#ifndef LOOPWATCH_SIDECAR_INJECT_CHECK_WEBHOOK_H_
#define LOOPWATCH_SIDECAR_INJECT_CHECK_WEBHOOK_H_

#include <iosfwd>
#include <string>
#include <vector>

namespace loopwatch::inject {

int CheckWebhookCommand(const std::vector<std::string>& args, std::ostream& out,
                        std::ostream& err);

}  // namespace loopwatch::inject

#endif  // LOOPWATCH_SIDECAR_INJECT_CHECK_WEBHOOK_H_

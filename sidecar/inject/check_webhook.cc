// SPDX-License-Identifier: Apache-2.0
#include "inject/check_webhook.h"

#include <httplib.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ostream>

#include "inject/args.h"
#include "inject/json_access.h"

namespace loopwatch::inject {
namespace {

constexpr const char* kHelp = R"(Usage: loopwatch check-webhook [OPTIONS] URL

Sends the injector at URL (https://HOST[:PORT]/inject) the AdmissionReview
of a small pod labelled loopwatch.io/inject: enabled, and checks that the
answer carries the review's uid, admits the pod and patches the sidecar in.
`helm test` runs it through the injector's Service.

Options:
  --ca-file FILE    the CA that signed the injector's certificate (PEM);
                    without it, the system's CAs
  --timeout SECONDS connect and read timeout (default 5)
  -h, --help        this help

Exit codes: 0 the injector answered as it should, 1 it did not (the
reason is printed), 2 bad usage.
)";

// RFC 4648 base64 to bytes; false when it is not base64.
bool FromBase64(const std::string& in, std::string* out) {
  if (in.size() % 4 != 0) return false;
  out->assign(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out->data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return false;
  size_t pad = 0;
  for (size_t i = in.size(); i > 0 && in[i - 1] == '=' && pad < 2; i--) pad++;
  out->resize(static_cast<size_t>(n) - pad);
  return true;
}

struct Target {
  std::string host;
  int port = 443;
  std::string path;
};

bool ParseUrl(const std::string& url, Target* t, std::string* why) {
  const std::string scheme = "https://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    *why = "the URL must start with https:// (the injector serves HTTPS only)";
    return false;
  }
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  t->path = slash == std::string::npos ? "/inject" : rest.substr(slash);
  const size_t colon = authority.rfind(':');
  const size_t bracket = authority.rfind(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    char* end = nullptr;
    const long port = std::strtol(authority.c_str() + colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) {
      *why = "the URL's port is not a number from 1 to 65535";
      return false;
    }
    t->port = static_cast<int>(port);
    t->host = authority.substr(0, colon);
  } else {
    t->host = authority;
  }
  if (t->host.size() > 1 && t->host.front() == '[' && t->host.back() == ']')
    t->host = t->host.substr(1, t->host.size() - 2);
  if (t->host.empty()) {
    *why = "the URL has no host";
    return false;
  }
  return true;
}

Json SampleReview(const std::string& uid) {
  Json pod = {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", "loopwatch-check-webhook"},
        {"namespace", "loopwatch-check"},
        {"labels", {{"loopwatch.io/inject", "enabled"}}}}},
      {"spec", {{"containers", Json::array({{{"name", "app"}, {"image", "example.invalid/app:1"}}})}}},
  };
  return {
      {"apiVersion", "admission.k8s.io/v1"},
      {"kind", "AdmissionReview"},
      {"request",
       {{"uid", uid},
        {"kind", {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}},
        {"resource", {{"group", ""}, {"version", "v1"}, {"resource", "pods"}}},
        {"operation", "CREATE"},
        {"namespace", "loopwatch-check"},
        {"object", pod}}},
  };
}

// Checks the answer; "" when it is right, else what is wrong.
std::string Judge(const std::string& body, const std::string& uid, size_t* ops) {
  Json answer = Json::parse(body, nullptr, false);
  if (answer.is_discarded() || !answer.is_object()) return "the answer is not JSON";
  const Json* r = answer.contains("response") ? &answer["response"] : nullptr;
  if (!r || !r->is_object()) return "the answer has no response object";
  if (r->value("uid", Json()) != uid) return "the answer's uid is not the review's";
  if (r->value("allowed", Json()) != true) return "the answer does not admit the pod";
  if (!r->contains("patch")) {
    std::string warnings = r->contains("warnings") ? r->at("warnings").dump() : "none";
    return "the answer has no patch (the pod was not injected; warnings: " + warnings + ")";
  }
  if (r->value("patchType", Json()) != "JSONPatch") return "the answer's patchType is not JSONPatch";
  std::string patch_text;
  if (!(*r)["patch"].is_string() || !FromBase64((*r)["patch"].get<std::string>(), &patch_text))
    return "the answer's patch is not base64";
  Json patch = Json::parse(patch_text, nullptr, false);
  if (patch.is_discarded() || !patch.is_array() || patch.empty())
    return "the answer's patch is not a JSON Patch array";
  *ops = patch.size();
  // An operation on /spec/containers or /spec/initContainers whose value is
  // the loopwatch container, or a list holding it.
  auto is_sidecar = [](const Json& c) {
    return c.is_object() && c.value("name", Json()) == "loopwatch" && c.contains("image");
  };
  for (const Json& op : patch) {
    if (!op.is_object() || !op.contains("path") || !op["path"].is_string()) continue;
    const std::string p = op["path"];
    if (p.rfind("/spec/containers", 0) != 0 && p.rfind("/spec/initContainers", 0) != 0) continue;
    const Json v = op.value("value", Json());
    if (is_sidecar(v)) return "";
    if (v.is_array())
      for (const Json& c : v)
        if (is_sidecar(c)) return "";
  }
  return "the patch does not add the loopwatch container";
}

}  // namespace

int CheckWebhookCommand(const std::vector<std::string>& args, std::ostream& out,
                        std::ostream& err) {
  auto usage = [&](const std::string& what) {
    err << "loopwatch check-webhook: " << what
        << "\nRun `loopwatch check-webhook --help` for the options.\n";
    return 2;
  };
  std::string ca_file, url;
  double timeout_s = 5;
  ArgReader r(args);
  while (r.Next()) {
    const std::string a = r.name();
    if (a == "-h" || a == "--help") {
      out << kHelp;
      return 0;
    } else if (a == "--ca-file") {
      if (!r.Value(&ca_file) || ca_file.empty()) return usage("--ca-file needs a file");
    } else if (a == "--timeout") {
      std::string t;
      char* end = nullptr;
      if (!r.Value(&t)) return usage("--timeout needs a number of seconds");
      timeout_s = std::strtod(t.c_str(), &end);
      if (t.empty() || *end || !(timeout_s > 0 && timeout_s <= 300))
        return usage("--timeout: " + t + " is not a number of seconds from 0 to 300");
    } else if (a.compare(0, 1, "-") == 0 && a != "-") {
      return usage("unknown option " + a);
    } else if (url.empty()) {
      url = a;
    } else {
      return usage("one URL only");
    }
  }
  if (url.empty()) return usage("the injector's URL is missing (https://HOST[:PORT]/inject)");
  Target t;
  std::string why;
  if (!ParseUrl(url, &t, &why)) return usage(why);
  if (!ca_file.empty() && access(ca_file.c_str(), R_OK) != 0)
    return usage("--ca-file " + ca_file + ": cannot be read");

  httplib::SSLClient client(t.host, t.port);
  if (!ca_file.empty()) client.set_ca_cert_path(ca_file.c_str());
  client.enable_server_certificate_verification(true);
  const auto to = std::chrono::duration<double>(timeout_s);
  client.set_connection_timeout(std::chrono::duration_cast<std::chrono::microseconds>(to));
  client.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(to));
  client.set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(to));

  const std::string uid = "loopwatch-check-" + std::to_string(getpid()) + "-" +
                          std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  const auto start = std::chrono::steady_clock::now();
  auto res = client.Post(t.path, SampleReview(uid).dump(), "application/json");
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!res) {
    std::string detail = httplib::to_string(res.error());
    if (client.get_openssl_verify_result() != 0)
      detail += ": certificate not trusted (" +
                std::string(X509_verify_cert_error_string(client.get_openssl_verify_result())) + ")";
    err << "loopwatch check-webhook: " << url << ": " << detail << "\n";
    return 1;
  }
  if (res->status != 200) {
    err << "loopwatch check-webhook: " << url << ": HTTP " << res->status << ": " << res->body
        << "\n";
    return 1;
  }
  size_t ops = 0;
  if (std::string wrong = Judge(res->body, uid, &ops); !wrong.empty()) {
    err << "loopwatch check-webhook: " << url << ": " << wrong << "\n";
    return 1;
  }
  char took[32];
  snprintf(took, sizeof took, "%.1f", ms);
  out << "ok: " << url << " injected a labelled pod (" << ops << " patch operations) in " << took
      << " ms\n";
  return 0;
}

}  // namespace loopwatch::inject

// SPDX-License-Identifier: Apache-2.0
#include "inject/webhook.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "config.h"
#include "http/listen_address.h"
#include "inject/args.h"
#include "inject/pod_config.h"
#include "inject/review.h"
#include "log.h"
#include "settings.h"

namespace loopwatch::inject {
namespace {

constexpr const char* kHelp =
    "Usage: loopwatch webhook --tls-cert FILE --tls-key FILE [OPTIONS]\n"
    "\n"
    "The mutating admission webhook: the API server sends it each new pod its\n"
    "selectors chose (loopwatch.io/inject: enabled on the namespace or the pod),\n"
    "and it answers with the patch `loopwatch inject` would make. It never\n"
    "rejects a pod: a pod it cannot inject is admitted as it is, with a warning.\n"
    "HTTPS only. The certificate and key are read again when the files change.\n"
    "\n"
    "  POST /inject   AdmissionReview (admission.k8s.io/v1) in and out\n"
    "  GET  /healthz  200 while serving\n"
    "  GET  /metrics  Prometheus metrics (reviews by result, latency)\n"
    "\n"
    "Options:\n"
    "  --tls-cert FILE     PEM certificate (chain), e.g. from cert-manager\n"
    "  --tls-key FILE      PEM private key of the certificate\n"
    "  --listen HOST:PORT  where to serve (default 0.0.0.0:10250)\n"
    "  --config FILE       the injector's settings, YAML (image, resources, ...;\n"
    "                      see docs/inject.md)\n"
    "  --image IMAGE       the sidecar's image (overrides the config file)\n"
    "  --threads N         threads answering reviews (default 16, 1 to 64)\n"
    "  --log-format F      json (default) or text\n"
    "  -h, --help          this help\n"
    "\n"
    "Exit codes: 0 stopped by SIGTERM or SIGINT, 1 could not serve (address,\n"
    "certificate), 2 bad usage or configuration.\n";

// ---- the certificate, read again when its files change

struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
  }
};

bool Stamp(const std::string& path, FileStamp* s) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;  // follows symlinks: Secret volumes swap ..data
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  s->size = st.st_size;
  s->mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  if (!e) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

class CertStore {
 public:
  CertStore(std::string cert, std::string key) : cert_path_(std::move(cert)), key_path_(std::move(key)) {}
  ~CertStore() { Free(cert_, chain_, key_); }

  // Loads the pair; false with *error (the first load fails the command).
  bool Load(std::string* error) {
    X509* cert = nullptr;
    STACK_OF(X509)* chain = nullptr;
    EVP_PKEY* key = nullptr;
    FileStamp cs, ks;
    if (!Stamp(cert_path_, &cs) || !Stamp(key_path_, &ks)) {
      *error = "cannot stat " + cert_path_ + " or " + key_path_ + ": " + std::strerror(errno);
      return false;
    }
    if (!ReadPair(&cert, &chain, &key, error)) return false;
    std::lock_guard<std::mutex> lock(mu_);
    std::swap(cert, cert_);
    std::swap(chain, chain_);
    std::swap(key, key_);
    cert_stamp_ = cs;
    key_stamp_ = ks;
    not_after_ = NotAfter(cert_);
    Free(cert, chain, key);
    return true;
  }

  // Called for each new TLS connection: at most once a second, looks at the
  // files, and loads them again if they changed. `on_reload(ok, message)`.
  template <typename F>
  void MaybeReload(F on_reload) {
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    int64_t last = last_check_ms_.load();
    if (now - last < 1000 || !last_check_ms_.compare_exchange_strong(last, now)) return;
    FileStamp cs, ks;
    if (!Stamp(cert_path_, &cs) || !Stamp(key_path_, &ks)) return;  // mid-rotation
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cs == cert_stamp_ && ks == key_stamp_) return;
    }
    std::string error;
    if (Load(&error)) {
      on_reload(true, "certificate reloaded from " + cert_path_);
    } else {
      // Keep serving with the pair that works; try again on the next change.
      std::lock_guard<std::mutex> lock(mu_);
      cert_stamp_ = cs;
      key_stamp_ = ks;
      on_reload(false, "certificate not reloaded, still serving the previous one: " + error);
    }
  }

  bool Apply(SSL* ssl) {
    std::lock_guard<std::mutex> lock(mu_);
    return SSL_use_cert_and_key(ssl, cert_, key_, chain_, 1) == 1;
  }

  int64_t not_after() const {
    std::lock_guard<std::mutex> lock(mu_);
    return not_after_;
  }

 private:
  static void Free(X509* c, STACK_OF(X509)* chain, EVP_PKEY* k) {
    if (c) X509_free(c);
    if (chain) sk_X509_pop_free(chain, X509_free);
    if (k) EVP_PKEY_free(k);
  }

  static int64_t NotAfter(X509* c) {
    struct tm t{};
    if (!c || ASN1_TIME_to_tm(X509_get0_notAfter(c), &t) != 1) return 0;
    return int64_t(timegm(&t));
  }

  bool ReadPair(X509** cert, STACK_OF(X509)** chain, EVP_PKEY** key, std::string* error) {
    BIO* b = BIO_new_file(cert_path_.c_str(), "r");
    if (!b) {
      *error = cert_path_ + ": cannot open: " + OpenSslError();
      return false;
    }
    *cert = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    if (!*cert) {
      BIO_free(b);
      *error = cert_path_ + ": no PEM certificate: " + OpenSslError();
      return false;
    }
    *chain = sk_X509_new_null();
    while (X509* extra = PEM_read_bio_X509(b, nullptr, nullptr, nullptr))
      sk_X509_push(*chain, extra);
    ERR_clear_error();  // the loop ends on "no start line"
    BIO_free(b);
    b = BIO_new_file(key_path_.c_str(), "r");
    if (b) {
      *key = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
      BIO_free(b);
    }
    if (!*key) {
      *error = key_path_ + ": no PEM private key: " + OpenSslError();
      Free(*cert, *chain, nullptr);
      return false;
    }
    if (X509_check_private_key(*cert, *key) != 1) {
      *error = key_path_ + " is not the key of the certificate in " + cert_path_;
      ERR_clear_error();
      Free(*cert, *chain, *key);
      return false;
    }
    return true;
  }

  const std::string cert_path_, key_path_;
  mutable std::mutex mu_;
  X509* cert_ = nullptr;
  STACK_OF(X509)* chain_ = nullptr;
  EVP_PKEY* key_ = nullptr;
  FileStamp cert_stamp_, key_stamp_;
  int64_t not_after_ = 0;
  std::atomic<int64_t> last_check_ms_{0};
};

// ---- metrics

class WebhookMetrics {
 public:
  WebhookMetrics()
      : registry_(std::make_shared<prometheus::Registry>()),
        reviews_(prometheus::BuildCounter()
                     .Name("loopwatch_webhook_reviews_total")
                     .Help("Admission reviews answered, by result (injected, unchanged, "
                           "skipped, refused, passed, error, bad_request) and, for skipped "
                           "ones, reason")
                     .Register(*registry_)),
        latency_(prometheus::BuildHistogram()
                     .Name("loopwatch_webhook_review_seconds")
                     .Help("Time to answer a review, from the body read to the answer built")
                     .Register(*registry_)
                     .Add({}, prometheus::Histogram::BucketBoundaries{
                                  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                  0.05, 0.1})),
        reloads_(prometheus::BuildCounter()
                     .Name("loopwatch_webhook_certificate_reloads_total")
                     .Help("Certificate files read again after a change, by result")
                     .Register(*registry_)),
        expiry_(prometheus::BuildGauge()
                    .Name("loopwatch_webhook_certificate_expiry_timestamp_seconds")
                    .Help("When the certificate served now expires (notAfter), Unix time")
                    .Register(*registry_)
                    .Add({})) {}

  void Review(const std::string& result, const std::string& reason, double seconds) {
    reviews_.Add({{"result", result}, {"reason", reason}}).Increment();
    if (result != "bad_request") latency_.Observe(seconds);
  }
  void Reload(bool ok) { reloads_.Add({{"result", ok ? "ok" : "error"}}).Increment(); }
  void Expiry(int64_t t) { expiry_.Set(double(t)); }
  std::string Render() { return prometheus::TextSerializer().Serialize(registry_->Collect()); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& reviews_;
  prometheus::Histogram& latency_;
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Gauge& expiry_;
};

std::string Iso8601(int64_t t) {
  char buf[32];
  time_t tt = time_t(t);
  struct tm tm{};
  gmtime_r(&tt, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

bool InjectorSettingsFromYaml(const std::string& path, InjectorSettings* out,
                              std::vector<std::string>* errors) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    errors->push_back(path + ": cannot read: " + std::strerror(errno));
    return false;
  } catch (const YAML::Exception& e) {
    errors->push_back(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                      std::to_string(e.mark.column + 1) + ": YAML syntax error: " + e.msg);
    return false;
  }
  if (root.IsNull()) return true;
  if (!root.IsMap()) {
    errors->push_back(path + ":1:1: expected a mapping of settings (image: ..., ...)");
    return false;
  }
  static const std::vector<std::string> kKeys = [] {
    std::vector<std::string> keys = {"image",          "image_pull_policy", "cpu_request",
                                     "cpu_limit",      "memory_request",    "memory_limit",
                                     "volume_size",    "native_sidecar",    "run_as_user"};
    for (const std::string& k : PodSettableKeys()) keys.push_back(k);
    return keys;
  }();
  const auto& sidecar_keys = PodSettableKeys();
  std::map<std::string, std::string> where_of;  // key -> "file:line:column: "
  for (const auto& kv : root) {
    const YAML::Mark m = kv.first.Mark();
    const std::string where =
        path + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": ";
    if (kv.first.IsScalar()) where_of[kv.first.Scalar()] = where;
    if (!kv.first.IsScalar()) {
      errors->push_back(where + "a key must be a plain name");
      continue;
    }
    const std::string key = kv.first.Scalar();
    if (!kv.second.IsScalar()) {
      errors->push_back(where + key + ": expected a single value");
      continue;
    }
    const std::string v = kv.second.Scalar();
    auto bad = [&](const std::string& what) { errors->push_back(where + key + ": " + Quote(v) + " " + what); };
    double q;
    if (key == "image") {
      if (v.empty()) bad("is empty; expected an image reference");
      else out->image = v;
    } else if (key == "image_pull_policy") {
      if (v != "Always" && v != "IfNotPresent" && v != "Never" && !v.empty())
        bad("is not Always, IfNotPresent or Never");
      else out->image_pull_policy = v;
    } else if (key == "cpu_request" || key == "cpu_limit" || key == "memory_request" ||
               key == "memory_limit" || key == "volume_size") {
      if (!v.empty() && !ParseQuantity(v, &q)) {
        bad("is not a resource quantity (e.g. 10m, 16Mi; \"\" for none)");
        continue;
      }
      (key == "cpu_request"      ? out->cpu_request
       : key == "cpu_limit"      ? out->cpu_limit
       : key == "memory_request" ? out->memory_request
       : key == "memory_limit"   ? out->memory_limit
                                 : out->volume_size) = v;
    } else if (key == "native_sidecar") {
      if (v != "true" && v != "false") bad("is not true or false");
      else out->native_sidecar = v == "true";
    } else if (key == "run_as_user") {
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 1 || n > 2147483647) bad("is not a user id (1 or more; not root)");
      else out->run_as_user = n;
    } else if (std::find(sidecar_keys.begin(), sidecar_keys.end(), key) != sidecar_keys.end()) {
      // A default of the sidecar's own setting for every injected pod.
      std::string env, why;
      if (!CheckSidecarSetting(key, v, &env, &why)) {
        bad(why);
        continue;
      }
      auto& list = out->sidecar_settings;
      list.erase(std::remove_if(list.begin(), list.end(), [&](const auto& e) { return e.first == key; }),
                 list.end());
      list.emplace_back(key, v);
    } else {
      std::string hint = Suggest(key, kKeys);
      std::string list;
      for (const auto& k : kKeys) list += (list.empty() ? "" : ", ") + k;
      errors->push_back(where + "unknown setting " + Quote(key) +
                        (hint.empty() ? "; the settings are " + list : "; did you mean " + hint + "?"));
    }
  }
  // A request above its limit would have every pod refused: say so now.
  for (const char* what : {"cpu", "memory"}) {
    const std::string req_key = std::string(what) + "_request", lim_key = std::string(what) + "_limit";
    const std::string& req = std::string(what) == "cpu" ? out->cpu_request : out->memory_request;
    const std::string& lim = std::string(what) == "cpu" ? out->cpu_limit : out->memory_limit;
    double a, b;
    if (req.empty() || lim.empty() || !ParseQuantity(req, &a) || !ParseQuantity(lim, &b) || a <= b)
      continue;
    const std::string where = where_of.count(req_key) ? where_of[req_key]
                              : where_of.count(lim_key) ? where_of[lim_key]
                                                        : path + ": ";
    errors->push_back(where + req_key + " " + req + " is above " + lim_key + " " + lim +
                      ": every pod would be refused");
  }
  return errors->empty();
}

int WebhookCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto usage = [&](const std::string& what) {
    err << "loopwatch webhook: " << what << "\nRun `loopwatch webhook --help` for the options.\n";
    return 2;
  };
  std::string cert, key, config_path, image, listen_text = "0.0.0.0:10250";
  int threads = 16;
  Config log_config;
  ArgReader r(args);
  while (r.Next()) {
    const std::string a = r.name();
    std::string value;
    if (a == "-h" || a == "--help") {
      out << kHelp;
      return 0;
    } else if (a == "--tls-cert" || a == "--tls-key" || a == "--listen" || a == "--config" ||
               a == "--image" || a == "--threads" || a == "--log-format") {
      if (!r.Value(&value) || value.empty()) return usage(a + " needs a value");
      if (a == "--tls-cert") cert = value;
      else if (a == "--tls-key") key = value;
      else if (a == "--listen") listen_text = value;
      else if (a == "--config") config_path = value;
      else if (a == "--image") image = value;
      else if (a == "--threads") {
        char* end = nullptr;
        long n = std::strtol(value.c_str(), &end, 10);
        if (*end || n < 1 || n > 64) return usage("--threads: \"" + value + "\" is not 1 to 64");
        threads = int(n);
      } else {
        if (value == "json") log_config.log_format = LogFormat::kJson;
        else if (value == "text") log_config.log_format = LogFormat::kText;
        else return usage("--log-format: \"" + value + "\" is not json or text");
      }
    } else {
      return usage("unknown option " + a);
    }
  }
  if (cert.empty() || key.empty()) return usage("--tls-cert and --tls-key are required (HTTPS only)");
  ListenAddress listen;
  std::string why;
  if (!ParseListenAddress(listen_text, &listen, &why)) return usage("--listen: " + why);
  InjectorSettings settings;
  if (!config_path.empty()) {
    std::vector<std::string> errors;
    if (!InjectorSettingsFromYaml(config_path, &settings, &errors)) {
      for (const auto& e : errors) err << "loopwatch webhook: " << e << "\n";
      return 2;
    }
  }
  if (!image.empty()) settings.image = image;

  EventLog log(log_config);
  WebhookMetrics metrics;
  auto store = std::make_shared<CertStore>(cert, key);
  if (!store->Load(&why)) {
    err << "loopwatch webhook: " << why << "\n";
    return 1;
  }
  metrics.Expiry(store->not_after());

  // Every new connection's ClientHello first looks for a new certificate,
  // then takes the current one.
  struct HelloCtx {
    CertStore* store;
    EventLog* log;
    WebhookMetrics* metrics;
  };
  static HelloCtx hello;  // one webhook per process
  hello = {store.get(), &log, &metrics};
  httplib::SSLServer svr([&](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_client_hello_cb(
        &ctx,
        [](SSL* ssl, int*, void* arg) -> int {
          auto* h = static_cast<HelloCtx*>(arg);
          h->store->MaybeReload([h](bool ok, const std::string& message) {
            h->metrics->Reload(ok);
            if (ok) {
              h->metrics->Expiry(h->store->not_after());
              h->log->Info(LogLine(message).Str("not_after", Iso8601(h->store->not_after())));
            } else {
              h->log->Warn(LogLine(message));
            }
          });
          return h->store->Apply(ssl) ? SSL_CLIENT_HELLO_SUCCESS : SSL_CLIENT_HELLO_ERROR;
        },
        &hello);
    return true;
  });
  if (!svr.is_valid()) {
    err << "loopwatch webhook: cannot set up TLS: " << OpenSslError() << "\n";
    return 1;
  }
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  // Answers go out at once (Nagle against the client's delayed ACK costs
  // 40 ms a review on a kept-alive connection).
  svr.set_tcp_nodelay(true);
  svr.set_payload_max_length(kMaxReviewBytes);
  // A client that holds a thread without sending (a stalled handshake or
  // body) is cut after 3 s; 16 threads by default, so that a few of them
  // never delay the API server's reviews.
  svr.set_read_timeout(3, 0);
  svr.set_write_timeout(3, 0);
  svr.set_keep_alive_timeout(30);
  svr.set_keep_alive_max_count(100000);
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string text = res.status == 413 ? "request body too large (at most 6 MiB)"
                      : res.status == 404 ? "not found: try POST /inject, GET /healthz, GET /metrics"
                      : res.status == 400 ? "bad request"
                                          : "error";
    res.set_content(text + "\n", "text/plain; charset=utf-8");
  });
  svr.Post("/inject", [&](const httplib::Request& req, httplib::Response& res) {
    const auto start = std::chrono::steady_clock::now();
    const std::string type = req.get_header_value("Content-Type");
    if (type.find("application/json") == std::string::npos) {
      metrics.Review("bad_request", "", 0);
      res.status = 415;
      res.set_content("unsupported media type: POST an AdmissionReview as application/json\n",
                      "text/plain; charset=utf-8");
      return;
    }
    ReviewAnswer a = Review(req.body, settings);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics.Review(a.result, a.code, seconds);
    res.status = a.status;
    res.set_content(a.body, a.content_type.c_str());
    LogLine line("review");
    line.Str("result", a.result);
    if (a.status != 200) {
      line.Str("error", a.body.substr(0, a.body.size() - 1)).Str("peer", req.remote_addr);
      log.Warn(line);
      return;
    }
    line.Str("uid", a.uid)
        .Str("namespace", a.report.namespace_)
        .Str("name", a.report.name)
        .Str("reason", a.report.reason)
        .Int("patch_ops", int64_t(a.patch_ops))
        .Seconds("seconds", int64_t(seconds * 1e9));
    if (a.result == "refused" || a.result == "error") log.Warn(line);
    else log.Info(line);
  });
  svr.Get("/inject", [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "POST");
    res.set_content("method not allowed: POST an AdmissionReview\n", "text/plain; charset=utf-8");
  });
  svr.Get("/healthz", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok: certificate valid until " + Iso8601(store->not_after()) + "\n",
                    "text/plain; charset=utf-8");
  });
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.Render(), "text/plain; version=0.0.4; charset=utf-8");
  });

  // Signals are taken by this thread only.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  int port = listen.port;
  if (port == 0) {
    port = svr.bind_to_any_port(listen.host);
  } else if (!svr.bind_to_port(listen.host, port)) {
    port = -1;
  }
  if (port < 0) {
    err << "loopwatch webhook: cannot listen on " << listen.ToString() << ": "
        << std::strerror(errno) << "\n";
    return 1;
  }
  std::thread server([&] { svr.listen_after_bind(); });
  log.Info(LogLine("loopwatch webhook started")
               .Str("version", LOOPWATCH_VERSION)
               .Str("listen", listen.host)
               .Int("port", port)
               .Str("image", settings.image)
               .Str("not_after", Iso8601(store->not_after())));
  int sig = 0;
  for (;;) {
    sigwait(&sigs, &sig);
    if (sig == SIGTERM || sig == SIGINT) break;
    log.Info(LogLine("signal ignored").Str("signal", strsignal(sig)));
  }
  log.Info(LogLine("stopping").Str("signal", strsignal(sig)));
  svr.stop();
  server.join();
  log.Info(LogLine("stopped"));
  log.Flush();
  return 0;
}

}  // namespace loopwatch::inject

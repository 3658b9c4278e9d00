// SPDX-License-Identifier: Apache-2.0
//
// review_client: sends AdmissionReviews to `loopwatch webhook` over HTTPS
// keep-alive connections, as fast as each connection gets answers, and
// prints what it measured as one JSON line. Built and run by
// scripts/bench-inject.
//
//   review_client --port P --ca CA.crt --containers N --connections C
//                 --seconds S [--warmup S]
//
// The pod of each review has N containers (image, two ports, three env
// variables, resources, liveness and readiness probes on a named port) and
// the label loopwatch.io/inject: enabled; the webhook watches the first.
// Every answer is checked: 200, the request's uid, a JSONPatch.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

Json Pod(int containers) {
  Json cs = Json::array();
  for (int i = 0; i < containers; i++) {
    const std::string name = "c" + std::to_string(i);
    cs.push_back({{"name", name},
                  {"image", "registry.example/shop/" + name + ":1.4.2"},
                  {"ports", {{{"name", "http"}, {"containerPort", 8000 + i}},
                             {{"name", "admin"}, {"containerPort", 9000 + i}}}},
                  {"env", {{{"name", "MODE"}, {"value", "production"}},
                           {{"name", "WORKERS"}, {"value", "4"}},
                           {{"name", "LOG_FORMAT"}, {"value", "json"}}}},
                  {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "128Mi"}}},
                                 {"limits", {{"memory", "256Mi"}}}}},
                  {"livenessProbe", {{"httpGet", {{"path", "/health"}, {"port", "admin"}}},
                                     {"periodSeconds", 10}}},
                  {"readinessProbe", {{"httpGet", {{"path", "/ready"}, {"port", "http"}}},
                                      {"periodSeconds", 5}}}});
  }
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"generateName", "shop-api-7d9c5b-"},
                        {"namespace", "shop"},
                        {"labels", {{"app", "shop-api"}, {"loopwatch.io/inject", "enabled"}}}}},
          {"spec", {{"containers", cs}, {"terminationGracePeriodSeconds", 30}}}};
}

std::string Review(int containers) {
  Json r = {{"apiVersion", "admission.k8s.io/v1"},
            {"kind", "AdmissionReview"},
            {"request", {{"uid", "0b6f1c1e-7d3c-4f43-9a8e-5d0c1e2f3a4b"},
                         {"kind", {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}},
                         {"resource", {{"group", ""}, {"version", "v1"}, {"resource", "pods"}}},
                         {"namespace", "shop"},
                         {"operation", "CREATE"},
                         {"object", Pod(containers)}}}};
  return r.dump();
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, containers = 3, connections = 1;
  double seconds = 5, warmup = 1;
  std::string ca;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--port") port = std::atoi(v.c_str());
    else if (a == "--ca") ca = v;
    else if (a == "--containers") containers = std::atoi(v.c_str());
    else if (a == "--connections") connections = std::atoi(v.c_str());
    else if (a == "--seconds") seconds = std::atof(v.c_str());
    else if (a == "--warmup") warmup = std::atof(v.c_str());
    else {
      fprintf(stderr, "review_client: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (!port || ca.empty() || containers < 1 || connections < 1 || seconds <= 0) {
    fprintf(stderr, "usage: review_client --port P --ca CA --containers N --connections C "
                    "--seconds S [--warmup S]\n");
    return 2;
  }
  const std::string body = Review(containers);
  std::atomic<bool> failed{false};
  std::vector<std::vector<double>> lat(static_cast<size_t>(connections));
  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(warmup));
  const auto end = measure_from + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < connections; c++) {
    threads.emplace_back([&, c] {
      httplib::SSLClient cli("127.0.0.1", port);
      cli.set_ca_cert_path(ca.c_str());
      cli.enable_server_certificate_verification(true);
      cli.set_keep_alive(true);
      cli.set_tcp_nodelay(true);  // as Go's net/http, the API server's client
      cli.set_read_timeout(10, 0);
      while (!failed) {
        const auto t0 = Clock::now();
        if (t0 >= end) break;
        auto res = cli.Post("/inject", body, "application/json");
        const auto t1 = Clock::now();
        if (!res || res->status != 200 || res->body.find("\"patchType\":\"JSONPatch\"") ==
                                              std::string::npos) {
          fprintf(stderr, "review_client: bad answer: %s\n",
                  res ? res->body.substr(0, 300).c_str() : httplib::to_string(res.error()).c_str());
          failed = true;
          break;
        }
        if (t0 >= measure_from) lat[size_t(c)].push_back(
            std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  if (failed) return 1;
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  if (all.empty()) return 1;
  auto pct = [&](double p) { return all[std::min(all.size() - 1, size_t(p * double(all.size())))]; };
  printf("{\"containers\":%d,\"connections\":%d,\"seconds\":%.1f,\"reviews\":%zu,"
         "\"body_bytes\":%zu,\"per_second\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f,"
         "\"max_us\":%.0f}\n",
         containers, connections, seconds, all.size(), body.size(), double(all.size()) / seconds,
         pct(0.50), pct(0.99), all.back());
  return 0;
}

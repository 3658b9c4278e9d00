// SPDX-License-Identifier: Apache-2.0
//
// Runs the inject harness over the golden inputs of `loopwatch inject`
// (tests/inject/golden/*/input.*) and over deterministic structural
// mutations of each (a value anywhere replaced by one of another type, a key
// removed, a list emptied or grown), so that every ctest run, with any
// compiler, checks the patcher's promises on inputs no fixture spells out.
// The libFuzzer target inject_fuzzer explores further (with clang).
//
//   inject_corpus_test GOLDEN_DIR [MUTATIONS_PER_SEED]
#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "inject/manifest.h"
#include "inject/patcher.h"
#include "inject_harness.h"

namespace {

using loopwatch::inject::Json;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct Rng {  // xorshift64*: the same mutations on every run
  uint64_t s;
  uint64_t Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * UINT64_C(2685821657736338717);
  }
};

// Every node of the tree, for picking one at random.
void Nodes(Json& v, std::vector<Json*>* out) {
  out->push_back(&v);
  if (v.is_object() || v.is_array())
    for (auto& child : v) Nodes(child, out);
}

Json RandomValue(Rng& rng, const std::vector<Json*>& nodes) {
  switch (rng.Next() % 10) {
    case 0: return nullptr;
    case 1: return rng.Next() % 2 == 0;
    case 2: return int64_t(rng.Next() % 3 == 0 ? 9321 : rng.Next() % 70000) - 10;
    case 3: return "";
    case 4: return Json::array();
    case 5: return Json::object();
    case 6: return "loopwatch";
    case 7: return Json{{"name", "loopwatch"}};
    case 8: return "{\"sidecar\":\"loopwatch\",\"in\":\"initContainers\",\"containers\":{}}";
    default: return *nodes[rng.Next() % nodes.size()];  // a copy of another part
  }
}

void Mutate(Json& doc, Rng& rng) {
  for (int k = 0, n = 1 + int(rng.Next() % 3); k < n; k++) {
    std::vector<Json*> nodes;
    Nodes(doc, &nodes);
    Json* at = nodes[rng.Next() % nodes.size()];
    switch (rng.Next() % 4) {
      case 0:  // replace
        *at = RandomValue(rng, nodes);
        break;
      case 1:  // remove a key or an item
        if (at->is_object() && !at->empty()) {
          auto it = at->begin();
          std::advance(it, rng.Next() % at->size());
          at->erase(it.key());
        } else if (at->is_array() && !at->empty()) {
          at->erase(at->begin() + long(rng.Next() % at->size()));
        }
        break;
      case 2:  // grow
        if (at->is_array()) at->push_back(RandomValue(rng, nodes));
        if (at->is_object()) (*at)[rng.Next() % 2 ? "loopwatch.io/status" : "name"] =
                                 RandomValue(rng, nodes);
        break;
      default:  // empty
        if (at->is_array() || at->is_object()) at->clear();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s GOLDEN_DIR [MUTATIONS_PER_SEED]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int per_seed = argc == 3 ? std::atoi(argv[2]) : 400;
  std::vector<std::string> seeds;
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      for (const char* name : {"/input.yaml", "/input.json"}) {
        std::string path = dir + "/" + e->d_name + name;
        if (std::ifstream(path).good()) seeds.push_back(path);
      }
    }
    closedir(d);
  }
  std::sort(seeds.begin(), seeds.end());
  if (seeds.size() < 10) {
    fprintf(stderr, "%s: expected at least 10 golden inputs, found %zu\n", dir.c_str(),
            seeds.size());
    return 1;
  }
  Rng rng{UINT64_C(0x9E3779B97F4A7C15)};
  long runs = 0;
  for (const std::string& path : seeds) {
    std::string text = ReadFile(path);
    lwfuzz::RunInject(reinterpret_cast<const uint8_t*>(text.data()), text.size());
    runs++;
    loopwatch::inject::Manifest m;
    std::string error;
    if (!loopwatch::inject::ParseManifest(text, path, &m, &error)) {
      fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    // The first seed's injected form too, so that mutations reach the
    // status annotation and the uninject side.
    for (int i = 0; i < per_seed; i++) {
      Json doc = m.documents[rng.Next() % m.documents.size()];
      if (rng.Next() % 2) {
        loopwatch::inject::InjectorSettings s;
        s.namespace_enabled = true;
        loopwatch::inject::Inject(&doc, s);
      }
      Mutate(doc, rng);
      std::string mutated = doc.dump(-1, ' ', false, Json::error_handler_t::replace);
      lwfuzz::RunInject(reinterpret_cast<const uint8_t*>(mutated.data()), mutated.size());
      runs++;
    }
  }
  printf("%ld runs over %zu golden inputs: every promise held\n", runs, seeds.size());
  return 0;
}

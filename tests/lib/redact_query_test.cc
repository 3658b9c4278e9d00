// SPDX-License-Identifier: Apache-2.0
//
// lw_redact_query (lib/src/redact_query.h), which the sidecar and the Python
// package both use on text from an app: what counts as a query, what is
// redacted, and that any bytes are safe (lengths, truncated output).
#include "redact_query.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace {

std::string Redact(const std::string& in) {
  std::string out(in.size() * 9 + 1, '\0');
  const size_t n = lw_redact_query(in.data(), in.size(), out.data(), out.size());
  EXPECT_LE(n, in.size() * 9) << in;
  out.resize(n);
  return out;
}

TEST(RedactQuery, Cases) {
  struct {
    const char* in;
    const char* out;
  } cases[] = {
      {"", ""},
      {"GET /orders/42", "GET /orders/42"},
      {"GET /orders/42?api_key=s3cr3t", "GET /orders/42?api_key=REDACTED"},
      {"GET /x?a=1&b=2;c=3&flag&empty=", "GET /x?a=REDACTED&b=REDACTED;c=REDACTED&flag&empty="},
      {"?token=abc", "?token=REDACTED"},
      {"POST /login?user=ann&pw=hunter2 (0.561 s)", "POST /login?user=REDACTED&pw=REDACTED (0.561 s)"},
      {"get(\"https://h/p?token=CANARY\")", "get(\"https://h/p?token=REDACTED\")"},
      {"see https://h/p?a=1#frag?b=2 now", "see https://h/p?a=REDACTED#frag?b=REDACTED now"},
      {"is it ok? yes", "is it ok? yes"},
      {"why ?", "why ?"},
      {"end?", "end?"},
      {"x?=v", "x?=REDACTED"},
      {"a?b?c=d", "a?b?c=REDACTED"},
      {"two /a?x=1 /b?y=2", "two /a?x=REDACTED /b?y=REDACTED"},
      {"multi\nline?k=v\nnext", "multi\nline?k=REDACTED\nnext"},
  };
  for (const auto& c : cases) EXPECT_EQ(Redact(c.in), c.out) << c.in;
}

TEST(RedactQuery, ShortOutputBufferGivesTheFullLength) {
  const std::string in = "GET /x?a=1&b=2";
  char out[8];
  const size_t n = lw_redact_query(in.data(), in.size(), out, sizeof out);
  EXPECT_EQ(n, std::string("GET /x?a=REDACTED&b=REDACTED").size());
  EXPECT_EQ(std::string(out, sizeof out), "GET /x?a");
  EXPECT_EQ(lw_redact_query(in.data(), in.size(), nullptr, 0), n);
}

TEST(RedactQuery, AnyBytes) {
  std::mt19937 rng(7);
  const char alphabet[] = "?=&;# \"a/\n\x00\xff";
  for (int i = 0; i < 20000; i++) {
    std::string in(rng() % 64, '\0');
    for (char& c : in) c = alphabet[rng() % (sizeof alphabet - 1)];
    const std::string out = Redact(in);
    // Any bytes are safe, and redacting twice changes nothing more.
    EXPECT_EQ(Redact(out), out) << i;
  }
}

}  // namespace

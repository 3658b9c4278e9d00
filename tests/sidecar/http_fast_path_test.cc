// SPDX-License-Identifier: Apache-2.0
//
// The gate's fast-path parser and formatter as pure functions (the same
// requests over real sockets are in http_servers_test.cc, which also holds
// the fast path's bytes equal to the worker path's).
#include "http/fast_path.h"

#include <gtest/gtest.h>

#include <deque>
#include <string>

namespace loopwatch {
namespace {

// The request's path points into the head: the heads are kept here.
FastRequest Parse(const std::string& head, bool* ok) {
  static std::deque<std::string> heads;
  heads.push_back(head);
  FastRequest r;
  *ok = ParseFastHead(heads.back(), &r);
  return r;
}

TEST(FastPath, PlainProbesAreTaken) {
  bool ok;
  FastRequest r = Parse("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", &ok);
  ASSERT_TRUE(ok);
  EXPECT_EQ(r.path, "/livez");
  EXPECT_FALSE(r.head);
  EXPECT_FALSE(r.json);
  EXPECT_FALSE(r.verbose);
  EXPECT_FALSE(r.close);

  r = Parse("HEAD /readyz?verbose HTTP/1.1\r\nAccept: application/json\r\n\r\n", &ok);
  ASSERT_TRUE(ok);
  EXPECT_EQ(r.path, "/readyz");
  EXPECT_TRUE(r.head);
  EXPECT_TRUE(r.json);
  EXPECT_TRUE(r.verbose);

  // The query wins over Accept, as the worker path decides.
  r = Parse("GET /startupz?format=text&verbose=0 HTTP/1.1\r\n"
            "Accept: application/json\r\n\r\n", &ok);
  ASSERT_TRUE(ok);
  EXPECT_FALSE(r.json);
  EXPECT_FALSE(r.verbose);
  r = Parse("GET /livez?format=json&format=json HTTP/1.1\r\n\r\n", &ok);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(r.json);
}

TEST(FastPath, ConnectionHandling) {
  bool ok;
  FastRequest r = Parse("GET /livez HTTP/1.1\r\nConnection: close\r\n\r\n", &ok);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(r.close);
  EXPECT_TRUE(r.close_header);
  // HTTP/1.0 closes unless it asks to be kept alive, without saying so.
  r = Parse("GET /livez HTTP/1.0\r\n\r\n", &ok);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(r.close);
  EXPECT_FALSE(r.close_header);
  r = Parse("GET /livez HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &ok);
  ASSERT_TRUE(ok);
  EXPECT_FALSE(r.close);
}

TEST(FastPath, AnythingUnusualGoesToAWorker) {
  for (const char* head : {
           "POST /livez HTTP/1.1\r\n\r\n",
           "GET /livez HTTP/2\r\n\r\n",
           "GET /livez HTTP/1.1\n\n",                                // bare LF
           "GET /livez HTTP/1.1\r\nHost:\tx\r\n\r\n",                // a tab
           "GET /li%76ez HTTP/1.1\r\n\r\n",                           // escape
           "GET livez HTTP/1.1\r\n\r\n",                              // not a path
           "GET /livez?verbose=%31 HTTP/1.1\r\n\r\n",
           "GET /livez?a=b=c HTTP/1.1\r\n\r\n",
           "GET /livez?format=json&format=text HTTP/1.1\r\n\r\n",     // disagree
           "GET /livez HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
           "GET /livez HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
           "GET /livez HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
           "GET /livez HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
           "GET /livez HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
           "GET /livez HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n",
           "GET /livez HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
           "GET /livez HTTP/1.1\r\nHost : x\r\n\r\n",
           "GET /livez HTTP/1.1\r\nEmpty:\r\n\r\n",
           "GET /livez HTTP/1.1\r\n folded\r\n\r\n",
           "GET /livez HTTP/1.1\r\nHost: x\r\n",                      // incomplete
       }) {
    FastRequest r;
    EXPECT_FALSE(ParseFastHead(head, &r)) << head;
  }
  std::string many = "GET /livez HTTP/1.1\r\n";
  for (int i = 0; i < 40; i++) many += "X-H" + std::to_string(i) + ": v\r\n";
  FastRequest r;
  EXPECT_FALSE(ParseFastHead(many + "\r\n", &r));
  EXPECT_FALSE(ParseFastHead("GET /" + std::string(1100, 'a') + " HTTP/1.1\r\n\r\n", &r));
}

TEST(FastPath, FormatsLikeTheWorkerPath) {
  FastRequest req;
  req.path = "/livez";
  FastResponse res{503, "text/plain; charset=utf-8", "loop a stalled 6.0s\n"};
  std::string out;
  ASSERT_TRUE(FormatFastResponse(req, res, "timeout=5", &out));
  EXPECT_EQ(out,
            "HTTP/1.1 503 Service Unavailable\r\n"
            "Cache-Control: no-store\r\n"
            "Content-Length: 20\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Keep-Alive: timeout=5\r\n"
            "\r\n"
            "loop a stalled 6.0s\n");

  req.head = true;
  req.close = req.close_header = true;
  res.status = 200;
  ASSERT_TRUE(FormatFastResponse(req, res, "timeout=5", &out));
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\n"
            "Accept-Ranges: bytes\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n"
            "Content-Length: 20\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n");

  res.status = 418;  // no reason phrase known: a worker answers
  EXPECT_FALSE(FormatFastResponse(req, res, "timeout=5", &out));
}

TEST(HeadLength, EndsAtTheFirstBlankLineOfEitherKind) {
  EXPECT_EQ(HeadLength(""), 0u);
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\r\nHost: a\r\n"), 0u);  // incomplete
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\r\n\r\nbody"), 18u);
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\n\nbody"), 16u);
  // Whichever blank line comes first ends the head.
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\n\n\r\n\r\n"), 16u);
  EXPECT_EQ(HeadLength("GET /\r\n\r\nGET /\n\n"), 9u);
}

}  // namespace
}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// gate.h: an HTTP server (cpp-httplib's request processing and routing)
// behind a gate that no client can make wait for another.
//
// Stock httplib hands each accepted connection to a worker thread, which
// then blocks reading the request: a client that trickles a byte at a time
// holds a worker for as long as it likes, and the pool queues connections
// without limit, so a few slow clients starve every worker. Here:
//   - one gate thread (epoll) owns every connection while its request head
//     is incomplete and between keep-alive requests; the workers (a fixed
//     pool) only ever get connections whose request head has fully arrived,
//     so a slow client costs a file descriptor, never a worker;
//   - a head must complete within `timeout` of its first byte (of the
//     accept, for a new connection), else 408 and close; an idle kept-alive
//     connection closes after kKeepAliveIdleSec (no cap on the requests per
//     connection: the gate, not a worker, holds it between requests); a head
//     over kMaxHeadBytes is refused (414 or 431) by the gate itself;
//   - a request the route set's fast path takes (fast_path.h) is answered on
//     the gate thread, from memory, with a non-blocking send;
//   - in a worker, reading the body and writing the response each have
//     `timeout`, so a worker is held at most that long by any client;
//   - at most kMaxConnections connections: a new one evicts the gate's
//     longest-waiting connection instead of queueing behind it.
// Route sets (public_routes.h, admin_routes.h) add handlers as to any
// httplib::Server; routing.h has what they share.
#ifndef LOOPWATCH_SIDECAR_HTTP_GATE_H_
#define LOOPWATCH_SIDECAR_HTTP_GATE_H_

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "http/fast_path.h"
#include "http/listen_address.h"

namespace loopwatch {

// A request head (request line and headers) larger than this is refused.
constexpr size_t kMaxHeadBytes = 16 * 1024;
// The largest request body a route set can accept.
constexpr size_t kMaxPayloadBytes = 4096;
// Connections per server, waiting in the gate or in a worker.
constexpr size_t kMaxConnections = 256;
// Idle time allowed between requests on a kept-alive connection.
constexpr int kKeepAliveIdleSec = 5;
// The Keep-Alive header of a response on a connection that stays open.
inline constexpr const char kKeepAliveHeader[] = "timeout=5";
static_assert(kKeepAliveIdleSec == 5, "kKeepAliveHeader repeats kKeepAliveIdleSec");

// Called by a handler on a worker thread: the connection closes after this
// response (its body was not read, or the stream is out of step), and the
// response says so ("Connection: close").
void CloseAfterResponse(httplib::Response& res);
// Whether a handler of the current request asked for that.
bool ClosingAfterResponse();

class GatedServer : public httplib::Server {
 public:
  // `name` names the threads ("lw-pub" gives lw-pub-gate, lw-pub-http, ...).
  GatedServer(std::string name, size_t workers, int64_t timeout_ns);
  ~GatedServer() override;

  // The fast path: `answer` fills the response to a fast request, or returns
  // false to leave it to a worker; `count` is told of each answered one.
  // Both run on the gate thread, so they must never block: they answer
  // from memory, in microseconds. An exception from `answer` sends the
  // request to a worker. Set before Run().
  // Told of every connection accepted, on the gate thread. Set before Run().
  void SetOnAccept(std::function<void()> on_accept) { on_accept_ = std::move(on_accept); }

  using FastAnswer = std::function<bool(const FastRequest&, FastResponse*)>;
  using FastCount = std::function<void(const FastRequest&, int status)>;
  void SetFastPath(FastAnswer answer, FastCount count);

  // Binds `at`; on success *port is the port bound (`at.port` may be 0).
  // With `reuse_port`, the socket joins the SO_REUSEPORT group of the
  // address (the probe lane and the general lane, probe_lane.h).
  bool Bind(const ListenAddress& at, bool reuse_port, int* port, std::string* error);
  // The listening socket once bound, -1 before.
  int listening_fd() const { return svr_sock_; }
  // Starts the gate, the workers and the accept thread.
  bool Run(std::string* error);
  // Stops everything and closes every connection (requests in flight are
  // cut short); returns within about a second. Idempotent.
  void Shutdown();

 private:
  struct Conn;
  class ConnStream;
  class InlineQueue;
  enum class Fast { kNo, kAnswered, kParked };

  bool process_and_close_socket(socket_t sock) override;
  void Wake();

  // The gate thread.
  void GateLoop();
  void Accepted(int fd);
  void Returned(Conn* c);
  void Readable(Conn* c);
  void Writable(Conn* c);
  void RouteHeads(Conn* c);
  Fast AnswerFast(Conn* c, size_t head);
  void RefuseOversizedHead(Conn* c);
  void PrepareNextRequest(Conn* c);
  void Arm(Conn* c);
  void Disarm(Conn* c);
  void ToWorker(Conn* c);
  void Close(Conn* c);
  void DeleteClosed();

  // The workers.
  void WorkerLoop();
  void Serve(Conn* c);

  const std::string name_;
  const size_t workers_n_;
  const int64_t timeout_ns_;

  std::atomic<bool> running_{false};
  std::atomic<bool> stopping_{false};
  std::thread accept_;
  std::thread gate_;
  std::vector<std::thread> workers_;
  int epfd_ = -1;
  int evfd_ = -1;

  std::mutex inbox_mu_;  // accept thread and workers -> gate
  std::vector<int> inbox_fds_;
  std::vector<Conn*> inbox_returns_;

  std::multimap<int64_t, Conn*> deadlines_;  // gate thread only
  std::vector<Conn*> closed_;               // gate thread only; deleted after a batch

  std::mutex work_mu_;  // gate -> workers
  std::condition_variable work_cv_;
  std::deque<Conn*> work_;

  std::mutex conns_mu_;  // every open connection, for the limit and Shutdown()
  std::unordered_set<Conn*> conns_;

  bool reuse_port_ = false;  // read by the socket options while binding
  std::function<void()> on_accept_;
  FastAnswer fast_answer_;  // set before Run(); gate thread only
  FastCount fast_count_;
};

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_GATE_H_

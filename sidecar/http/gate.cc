// SPDX-License-Identifier: Apache-2.0
#include "http/gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "clock.h"

namespace loopwatch {
namespace {

constexpr int64_t kNsPerMs = 1000000;
constexpr int64_t kNsPerSec = 1000000000;
// Response bytes buffered before a send.
constexpr size_t kWriteBufferBytes = 64 * 1024;
constexpr size_t kReadChunk = 8192;
// The backlog asked for; the kernel caps it at net.core.somaxconn.
constexpr int kListenBacklog = 65535;

// Set by a handler on this worker thread: see CloseAfterResponse().
thread_local bool t_close_connection = false;

void SetThreadName(const std::string& name) {
  pthread_setname_np(pthread_self(), name.c_str());
}

// Waits until `fd` is ready for `events` or the CLOCK_MONOTONIC deadline.
bool WaitFd(int fd, short events, int64_t deadline_ns) {
  for (;;) {
    const int64_t left = deadline_ns - MonotonicNowNs();
    if (left <= 0) return false;
    struct pollfd p = {fd, events, 0};
    const int r = poll(&p, 1, int((left + kNsPerMs - 1) / kNsPerMs));
    if (r > 0) return true;  // ready, or an error the next call will report
    if (r < 0 && errno != EINTR) return false;
  }
}

void AddrToString(const sockaddr_storage& ss, std::string* ip, int* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    *port = ntohs(a->sin6_port);
  } else {
    *port = -1;
  }
  *ip = buf;
}

// The one place bytes leave and enter a connection, for the gate and the
// workers alike (a TLS transport goes here).
ssize_t SendSome(int fd, const char* data, size_t size) {
  return send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
}
ssize_t RecvSome(int fd, char* data, size_t size) { return recv(fd, data, size, 0); }

// A short answer written by the gate itself (no worker involved).
void SendCanned(int fd, int status, const char* reason, const char* body) {
  const std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                        "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
                        std::to_string(strlen(body)) + "\r\nConnection: close\r\n\r\n" + body;
  (void)!SendSome(fd, r.data(), r.size());
}

bool WouldBlock() { return errno == EAGAIN || errno == EWOULDBLOCK; }

}  // namespace

void CloseAfterResponse(httplib::Response& res) {
  t_close_connection = true;
  res.set_header("Connection", "close");
}

bool ClosingAfterResponse() { return t_close_connection; }

struct GatedServer::Conn {
  int fd = -1;
  std::string in;        // received, not yet consumed: in[pos..]
  size_t pos = 0;
  std::string out;       // fast-path response bytes not yet sent
  int64_t deadline_ns = 0;
  bool started = false;  // bytes of the next request have arrived
  bool writing = false;  // the gate waits for EPOLLOUT to send `out`
  bool close_after_write = false;
  bool registered = false;  // known to epoll
  bool armed = false;       // has an entry in deadlines_
  bool closed = false;      // by the gate; deleted after the epoll batch
  std::multimap<int64_t, Conn*>::iterator deadline;
  bool addrs = false;
  std::string remote_ip, local_ip;
  int remote_port = -1, local_port = -1;
};

// httplib hands process_and_close_socket() to its task queue right on the
// accept thread: handing a socket to the gate never blocks.
class GatedServer::InlineQueue : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

// httplib's view of a connection in a worker: reads the buffered head
// first, then the socket, never past the request's deadline; buffers the
// response.
class GatedServer::ConnStream : public httplib::Stream {
 public:
  ConnStream(Conn* c, int64_t timeout_ns) : c_(c), timeout_ns_(timeout_ns) {}

  bool is_readable() const override {
    return c_->pos < c_->in.size() || WaitFd(c_->fd, POLLIN, c_->deadline_ns);
  }
  bool is_writable() const override { return true; }

  ssize_t read(char* ptr, size_t size) override {
    if (c_->pos >= c_->in.size()) {
      // Whatever was written must go out before waiting for the client
      // (an "100 Continue" it waits for before sending the body).
      if (!c_->out.empty() && !Flush()) return -1;
      c_->in.clear();
      c_->pos = 0;
      if (size >= kReadChunk) return Recv(ptr, size);
      char buf[kReadChunk];
      const ssize_t n = Recv(buf, sizeof buf);
      if (n <= 0) return n;
      c_->in.assign(buf, size_t(n));
    }
    const size_t n = std::min(size, c_->in.size() - c_->pos);
    memcpy(ptr, c_->in.data() + c_->pos, n);
    c_->pos += n;
    return ssize_t(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (failed_) return -1;
    c_->out.append(ptr, size);
    if (c_->out.size() >= kWriteBufferBytes && !Flush()) return -1;
    return ssize_t(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Addrs();
    ip = c_->remote_ip;
    port = c_->remote_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Addrs();
    ip = c_->local_ip;
    port = c_->local_port;
  }
  socket_t socket() const override { return c_->fd; }

  bool Flush() {
    if (failed_) return false;
    const int64_t deadline = std::max(c_->deadline_ns, MonotonicNowNs() + timeout_ns_);
    size_t off = 0;
    while (off < c_->out.size()) {
      const ssize_t n = SendSome(c_->fd, c_->out.data() + off, c_->out.size() - off);
      if (n > 0) {
        off += size_t(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && WouldBlock() && WaitFd(c_->fd, POLLOUT, deadline)) {
        continue;
      } else {
        failed_ = true;
        break;
      }
    }
    c_->out.clear();
    return !failed_;
  }

 private:
  ssize_t Recv(char* ptr, size_t size) {
    for (;;) {
      const ssize_t n = RecvSome(c_->fd, ptr, size);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (!WouldBlock() || !WaitFd(c_->fd, POLLIN, c_->deadline_ns)) return -1;
    }
  }
  void Addrs() const {
    if (c_->addrs) return;
    c_->addrs = true;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getpeername(c_->fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      AddrToString(ss, &c_->remote_ip, &c_->remote_port);
    }
    len = sizeof ss;
    if (getsockname(c_->fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      AddrToString(ss, &c_->local_ip, &c_->local_port);
    }
  }
  Conn* c_;
  int64_t timeout_ns_;
  bool failed_ = false;
};

// ---- set-up and shutdown

GatedServer::GatedServer(std::string name, size_t workers, int64_t timeout_ns)
    : name_(std::move(name)), workers_n_(workers), timeout_ns_(timeout_ns) {
  new_task_queue = [] { return new InlineQueue; };
  // SO_REUSEADDR, and SO_REUSEPORT only for a lane of a pair: httplib's
  // default SO_REUSEPORT would let a second sidecar bind the port silently.
  set_socket_options([this](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (reuse_port_) setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes);
  });
  set_keep_alive_timeout(kKeepAliveIdleSec);
  set_payload_max_length(kMaxPayloadBytes);
  const std::chrono::nanoseconds t(timeout_ns);
  set_read_timeout(t);
  set_write_timeout(t);
}

GatedServer::~GatedServer() { Shutdown(); }

void GatedServer::SetFastPath(FastAnswer answer, FastCount count) {
  fast_answer_ = std::move(answer);
  fast_count_ = std::move(count);
}

bool GatedServer::Bind(const ListenAddress& at, bool reuse_port, int* port,
                       std::string* error) {
  reuse_port_ = reuse_port;
  errno = 0;
  if (!bind_to_port(at.host, at.port)) {
    const int err = errno;
    *error = "cannot bind " + at.ToString() + ": " +
             (err != 0 ? strerror(err) : "no such address (is the host name right?)");
    return false;
  }
  const int fd = svr_sock_;
  // httplib listens with a backlog of 5. A full accept queue drops a SYN,
  // which the client retries only after a second: a burst of connections
  // deserves the kernel's largest queue (listen() again resizes it).
  ::listen(fd, kListenBacklog);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    *error = std::string("getsockname: ") + strerror(errno);
    return false;
  }
  std::string ip;
  AddrToString(ss, &ip, port);
  return true;
}

bool GatedServer::Run(std::string* error) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  evfd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epfd_ < 0 || evfd_ < 0) {
    *error = std::string("epoll/eventfd: ") + strerror(errno);
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up eventfd
  epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev);
  gate_ = std::thread([this] { GateLoop(); });
  for (size_t i = 0; i < workers_n_; i++) workers_.emplace_back([this] { WorkerLoop(); });
  accept_ = std::thread([this] {
    SetThreadName(name_ + "-accept");
    listen_after_bind();
  });
  // stop() is a no-op until the accept loop runs: wait for it, so that
  // Shutdown() right after Run() cannot miss it.
  for (int i = 0; i < 2000 && !is_running(); i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  running_ = true;
  return true;
}

void GatedServer::Shutdown() {
  if (!running_.exchange(false)) {
    // Bound but never served: release the port.
    const int fd = svr_sock_.exchange(INVALID_SOCKET);
    if (fd != INVALID_SOCKET) close(fd);
    return;
  }
  stop();  // closes the listening socket: the accept loop ends
  if (accept_.joinable()) accept_.join();
  stopping_.store(true);
  {
    // Cut in-flight requests short: their reads and writes fail at once.
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (Conn* c : conns_) shutdown(c->fd, SHUT_RDWR);
  }
  Wake();
  work_cv_.notify_all();
  if (gate_.joinable()) gate_.join();
  for (auto& w : workers_) w.join();
  workers_.clear();
  // Whatever the gate did not get to.
  for (int fd : inbox_fds_) close(fd);
  inbox_fds_.clear();
  inbox_returns_.clear();
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (Conn* c : conns_) {
      close(c->fd);
      delete c;
    }
    conns_.clear();
  }
  if (epfd_ >= 0) close(epfd_);
  if (evfd_ >= 0) close(evfd_);
  epfd_ = evfd_ = -1;
}

// Runs on httplib's accept thread.
bool GatedServer::process_and_close_socket(socket_t sock) {
  if (stopping_.load()) {
    close(sock);
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox_fds_.push_back(sock);
  }
  Wake();
  return true;
}

void GatedServer::Wake() {
  const uint64_t one = 1;
  (void)!::write(evfd_, &one, sizeof one);
}

// ---- the gate thread

void GatedServer::GateLoop() {
  SetThreadName(name_ + "-gate");
  std::vector<epoll_event> events(64);
  std::vector<int> fds;
  std::vector<Conn*> returns;
  while (!stopping_.load()) {
    int timeout_ms = 1000;
    if (!deadlines_.empty()) {
      const int64_t left = deadlines_.begin()->first - MonotonicNowNs();
      timeout_ms = int(std::clamp<int64_t>((left + kNsPerMs - 1) / kNsPerMs, 0, 1000));
    }
    const int n = epoll_wait(epfd_, events.data(), int(events.size()), timeout_ms);
    if (stopping_.load()) break;
    for (int i = 0; i < n; i++) {
      Conn* c = static_cast<Conn*>(events[size_t(i)].data.ptr);
      if (c == nullptr) {  // the eventfd: new sockets, connections back from workers
        uint64_t v;
        (void)!::read(evfd_, &v, sizeof v);
        {
          std::lock_guard<std::mutex> lock(inbox_mu_);
          fds.swap(inbox_fds_);
          returns.swap(inbox_returns_);
        }
        for (int fd : fds) Accepted(fd);
        for (Conn* r : returns) Returned(r);
        fds.clear();
        returns.clear();
      } else if (c->closed) {
        // closed earlier in this batch (evicted)
      } else if (c->writing) {
        Writable(c);
      } else {
        Readable(c);
      }
    }
    const int64_t now = MonotonicNowNs();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      Conn* c = deadlines_.begin()->second;
      // A request under way gets a 408; an idle keep-alive just a close.
      if (c->started && !c->writing) {
        SendCanned(c->fd, 408, "Request Timeout", "request timeout\n");
      }
      Close(c);
    }
    DeleteClosed();
  }
  // Stopping: close everything waiting here (workers close their own).
  while (!deadlines_.empty()) Close(deadlines_.begin()->second);
  DeleteClosed();
}

void GatedServer::Accepted(int fd) {
  if (on_accept_) on_accept_();
  size_t count;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    count = conns_.size();
  }
  if (count >= kMaxConnections) {
    // Full: the longest-waiting connection goes, never the newcomer.
    if (deadlines_.empty()) {
      close(fd);
      return;
    }
    Conn* victim = deadlines_.begin()->second;
    if (victim->started && !victim->writing) {
      SendCanned(victim->fd, 503, "Service Unavailable", "too many connections\n");
    }
    Close(victim);
  }
  const int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int yes = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
  Conn* c = new Conn;
  c->fd = fd;
  c->deadline_ns = MonotonicNowNs() + timeout_ns_;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.insert(c);
  }
  Readable(c);
}

// Back from a worker, to wait for the next request on the connection.
void GatedServer::Returned(Conn* c) {
  PrepareNextRequest(c);
  if (HeadLength(std::string_view(c->in)) > 0) {
    RouteHeads(c);  // pipelined
  } else {
    Readable(c);
  }
}

// A response is out: drop the request's bytes and time the next one.
void GatedServer::PrepareNextRequest(Conn* c) {
  if (c->pos > 0) {
    c->in.erase(0, c->pos);
    c->pos = 0;
  }
  c->started = !c->in.empty();
  c->deadline_ns = MonotonicNowNs() + (c->started ? timeout_ns_ : kKeepAliveIdleSec * kNsPerSec);
}

// Answers an oversized head itself, and closes.
void GatedServer::RefuseOversizedHead(Conn* c) {
  const std::string_view v = std::string_view(c->in).substr(c->pos);
  const size_t nl = v.find('\n');
  if (nl == std::string_view::npos || nl > kMaxHeadBytes) {
    SendCanned(c->fd, 414, "URI Too Long", "request line too long\n");
  } else {
    SendCanned(c->fd, 431, "Request Header Fields Too Large", "request headers too large\n");
  }
  Close(c);
}

// Each complete head is answered here (the fast path) or goes to a worker;
// an oversized one is refused; else the connection waits here for more.
// Pipelined requests are taken in order: fast ones here until one needs a
// worker, which then has the rest of the buffer.
void GatedServer::RouteHeads(Conn* c) {
  for (;;) {
    const size_t head = HeadLength(std::string_view(c->in).substr(c->pos));
    if (head > kMaxHeadBytes || (head == 0 && c->in.size() - c->pos > kMaxHeadBytes)) {
      RefuseOversizedHead(c);
      return;
    }
    if (head == 0) {
      Arm(c);
      return;
    }
    switch (AnswerFast(c, head)) {
      case Fast::kNo:
        ToWorker(c);
        return;
      case Fast::kAnswered:
        PrepareNextRequest(c);
        continue;  // a pipelined request, or wait for the next one
      case Fast::kParked:
        return;  // closed, or waiting for EPOLLOUT
    }
  }
}

// The fast path for the complete head at in[pos..pos+head): answers it and
// consumes it, or leaves it for a worker. Never blocks: the answer is
// computed from memory and sent with a non-blocking send; what the socket
// does not take at once is sent on EPOLLOUT.
GatedServer::Fast GatedServer::AnswerFast(Conn* c, size_t head) {
  if (!fast_answer_) return Fast::kNo;
  FastRequest req;
  if (!ParseFastHead(std::string_view(c->in).substr(c->pos, head), &req)) return Fast::kNo;
  FastResponse r;
  std::string out;
  try {
    if (!fast_answer_(req, &r) || !FormatFastResponse(req, r, kKeepAliveHeader, &out)) {
      return Fast::kNo;
    }
  } catch (...) {
    return Fast::kNo;  // a worker tries again and answers 500 if it throws
  }
  if (fast_count_) fast_count_(req, r.status);
  c->pos += head;
  size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = SendSome(c->fd, out.data() + sent, out.size() - sent);
    if (n > 0) {
      sent += size_t(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && WouldBlock()) {
      break;
    } else {
      Close(c);  // the client went away
      return Fast::kParked;
    }
  }
  if (sent < out.size()) {
    // Rare (bodies are small): keep the rest, send it on EPOLLOUT; no more
    // requests are read until it is out.
    c->out.assign(out, sent, std::string::npos);
    c->writing = true;
    c->close_after_write = req.close;
    c->deadline_ns = MonotonicNowNs() + timeout_ns_;
    Arm(c);
    return Fast::kParked;
  }
  if (req.close) {
    Close(c);
    return Fast::kParked;
  }
  return Fast::kAnswered;
}

// EPOLLOUT on a connection with the rest of a fast response to send.
void GatedServer::Writable(Conn* c) {
  while (!c->out.empty()) {
    const ssize_t n = SendSome(c->fd, c->out.data(), c->out.size());
    if (n > 0) {
      c->out.erase(0, size_t(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && WouldBlock()) {
      Arm(c);
      return;
    } else {
      Close(c);
      return;
    }
  }
  c->writing = false;
  if (c->close_after_write) {
    Close(c);
    return;
  }
  PrepareNextRequest(c);
  RouteHeads(c);
}

// Reads what arrived, then routes.
void GatedServer::Readable(Conn* c) {
  const size_t old = c->in.size();
  c->in.resize(old + kReadChunk);
  ssize_t n;
  do {
    n = RecvSome(c->fd, &c->in[old], kReadChunk);
  } while (n < 0 && errno == EINTR);
  c->in.resize(old + size_t(std::max<ssize_t>(n, 0)));
  if (n == 0 || (n < 0 && !WouldBlock())) {
    Close(c);  // the client went away
    return;
  }
  if (n > 0 && !c->started) {
    c->started = true;
    c->deadline_ns = std::min(c->deadline_ns, MonotonicNowNs() + timeout_ns_);
  }
  RouteHeads(c);
}

// Waits for the connection's next event (EPOLLOUT while `writing`, else
// EPOLLIN) or its deadline.
void GatedServer::Arm(Conn* c) {
  epoll_event ev{};
  ev.events = (c->writing ? EPOLLOUT : EPOLLIN | EPOLLRDHUP) | EPOLLONESHOT;
  ev.data.ptr = c;
  if (epoll_ctl(epfd_, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) != 0) {
    Close(c);
    return;
  }
  c->registered = true;
  Disarm(c);
  c->deadline = deadlines_.emplace(c->deadline_ns, c);
  c->armed = true;
}

void GatedServer::Disarm(Conn* c) {
  if (c->armed) {
    deadlines_.erase(c->deadline);
    c->armed = false;
  }
}

void GatedServer::ToWorker(Conn* c) {
  Disarm(c);
  {
    std::lock_guard<std::mutex> lock(work_mu_);
    work_.push_back(c);
  }
  work_cv_.notify_one();
}

// Closes a connection the gate owns. The Conn itself lives on until the end
// of the epoll batch: an event for it may still be in the batch.
void GatedServer::Close(Conn* c) {
  Disarm(c);
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.erase(c);
  }
  close(c->fd);
  c->fd = -1;
  c->closed = true;
  closed_.push_back(c);
}

void GatedServer::DeleteClosed() {
  for (Conn* c : closed_) delete c;
  closed_.clear();
}

// ---- the workers

void GatedServer::WorkerLoop() {
  SetThreadName(name_ + "-http");
  for (;;) {
    Conn* c;
    {
      std::unique_lock<std::mutex> lock(work_mu_);
      work_cv_.wait(lock, [this] { return !work_.empty() || stopping_.load(); });
      if (work_.empty()) return;
      c = work_.front();
      work_.pop_front();
    }
    Serve(c);
  }
}

void GatedServer::Serve(Conn* c) {
  c->deadline_ns = MonotonicNowNs() + timeout_ns_;
  ConnStream stream(c, timeout_ns_);
  const bool last = stopping_.load();
  bool closed = false;
  bool ok = false;
  t_close_connection = false;
  try {
    ok = process_request(stream, last, closed, nullptr);
  } catch (...) {
    ok = false;
  }
  ok = stream.Flush() && ok;
  if (!ok || closed || last || t_close_connection || stopping_.load()) {
    {
      std::lock_guard<std::mutex> lock(conns_mu_);
      conns_.erase(c);
    }
    close(c->fd);
    delete c;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox_returns_.push_back(c);
  }
  Wake();
}

}  // namespace loopwatch

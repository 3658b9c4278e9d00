// SPDX-License-Identifier: Apache-2.0
#include "http_server.h"

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

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "monitor.h"

namespace loopwatch {
namespace {

constexpr int64_t kNsPerMs = 1000000;
constexpr int64_t kNsPerSec = 1000000000;
// A request head (request line + headers) larger than this is refused.
constexpr size_t kMaxHeadBytes = 16 * 1024;
// Largest request body accepted (admin port: /hold takes its arguments in the
// query or a small form).
constexpr size_t kMaxPayloadBytes = 4096;
// Connections per server, waiting or in a worker.
constexpr size_t kMaxConnections = 256;
// Idle time allowed between requests on a kept-alive connection. There is no
// cap on the requests per connection: stock httplib caps them (100) because
// its worker thread stays with a connection while it is kept alive; here the
// gate holds idle connections and a worker only ever has one request, so the
// cap protected nothing and cost a reconnect per 100 probes. An idle
// connection still closes after this, and Stop() closes them all. The
// Keep-Alive header says "timeout=5" without a "max=".
constexpr time_t kKeepAliveIdleSec = 5;
constexpr const char* kKeepAliveHeader = "timeout=5";
static_assert(kKeepAliveIdleSec == 5, "kKeepAliveHeader repeats it");
// Response bytes buffered before a send.
constexpr size_t kWriteBufferBytes = 64 * 1024;
constexpr size_t kReadChunk = 8192;

constexpr const char* kTextType = "text/plain; charset=utf-8";
constexpr const char* kJsonType = "application/json";

// Set by a handler on this worker thread: close the connection after this
// response (its body was not read, or the stream is no longer in step).
thread_local bool t_close_connection = false;

void SetThreadName(const char* name) { pthread_setname_np(pthread_self(), name); }

int64_t DefaultClock() { return MonotonicNowNs(); }

// Waits until `fd` is ready for `events` or the CLOCK_MONOTONIC deadline.
bool WaitFd(int fd, short events, int64_t deadline_ns) {
  for (;;) {
    int64_t left = deadline_ns - MonotonicNowNs();
    if (left <= 0) return false;
    struct pollfd p = {fd, events, 0};
    int ms = int((left + kNsPerMs - 1) / kNsPerMs);
    int r = poll(&p, 1, ms);
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

// A canned response written by the gate itself (no worker involved).
void SendCanned(int fd, int status, const char* reason, const char* body) {
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                  "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
                  std::to_string(strlen(body)) + "\r\nConnection: close\r\n\r\n" + body;
  (void)!send(fd, r.data(), r.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

// ---- the gate's fast path
//
// A bodiless GET or HEAD of /livez, /readyz, /startupz or /healthz is
// answered by the gate itself, without a worker: on a kept-alive connection
// that saves two thread wake-ups per probe (gate -> worker -> gate). It
// takes only requests whose answer it can reproduce byte for byte as the
// worker path (httplib 0.11) would write it; anything else, or anything it
// is unsure of, goes to a worker as before:
//   - request line exactly "GET|HEAD SP path[?query] SP HTTP/1.1|HTTP/1.0",
//     the path one of the four, no %-escapes, the query plain name[=value]
//     pairs of [A-Za-z0-9._~-];
//   - every line ends in CRLF and is at most 1 KiB (httplib refuses lines
//     over 8 KiB with 414 or 400), at most 32 header lines; no control
//     bytes; header lines are "token: value" with a non-empty value;
//   - no Transfer-Encoding, Content-Length absent or "0", no Accept-Encoding
//     (httplib would compress), Range (206) or Expect (100 Continue); at most
//     one Accept and one Connection, without %-escapes; Connection, if any,
//     is exactly "close", "Keep-Alive" or "keep-alive".
struct FastRequest {
  std::string_view path;  // "/livez", "/readyz", "/startupz" or "/healthz"
  bool head = false;      // HEAD: no body
  bool json = false;      // ?format=json, or Accept: application/json
  bool verbose = false;   // ?verbose (not 0, false, no)
  bool close = false;     // close after the response
  bool close_header = false;  // "Connection: close" in the response
};

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         strchr("!#$&'*+-.^_`|~", c) != nullptr;
}

bool IsQueryChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '~' || c == '-';
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Query parameters as httplib parses them, for the plain form only: false
// (use a worker) for anything else, or for a parameter we read given twice
// with different values (httplib's multimap would pick one of them).
bool ParseFastQuery(std::string_view q, FastRequest* r) {
  bool has_format = false, has_verbose = false;
  std::string_view format, verbose;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (kv.empty()) continue;  // "a&&b", a trailing '&': httplib skips them
    size_t eq = kv.find('=');
    std::string_view key = kv.substr(0, eq);
    std::string_view val = eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
    if (key.empty()) return false;
    for (char c : key) {
      if (!IsQueryChar(c)) return false;
    }
    for (char c : val) {
      if (!IsQueryChar(c)) return false;  // also a second '='
    }
    if (key == "format") {
      if (has_format && format != val) return false;
      has_format = true;
      format = val;
    } else if (key == "verbose") {
      if (has_verbose && verbose != val) return false;
      has_verbose = true;
      verbose = val;
    }
  }
  if (has_format) r->json = format == "json";  // as WantsJson: the query wins
  r->verbose = has_verbose && verbose != "0" && verbose != "false" && verbose != "no";
  return true;
}

// Parses a complete request head (through its blank line) for the fast
// path. False: not for the fast path; a worker answers it.
bool ParseFastHead(std::string_view h, FastRequest* r) {
  // Every '\n' ends a "\r\n"; no other control bytes anywhere.
  for (size_t i = 0; i < h.size(); i++) {
    const unsigned char c = static_cast<unsigned char>(h[i]);
    if (c == '\r') {
      if (i + 1 >= h.size() || h[i + 1] != '\n') return false;
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      return false;  // a bare '\n', a tab, NUL...
    }
  }
  if (h.size() < 4 || h.substr(h.size() - 4) != "\r\n\r\n") return false;
  constexpr size_t kMaxFastLine = 1024;
  constexpr int kMaxFastHeaders = 32;

  size_t eol = h.find("\r\n");
  if (eol > kMaxFastLine) return false;
  std::string_view line = h.substr(0, eol);
  std::string_view rest = h.substr(eol + 2);
  if (line.rfind("GET ", 0) == 0) {
    line.remove_prefix(4);
  } else if (line.rfind("HEAD ", 0) == 0) {
    r->head = true;
    line.remove_prefix(5);
  } else {
    return false;
  }
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return false;
  std::string_view target = line.substr(0, sp);
  std::string_view version = line.substr(sp + 1);
  bool http10;
  if (version == "HTTP/1.1") {
    http10 = false;
  } else if (version == "HTTP/1.0") {
    http10 = true;
  } else {
    return false;
  }
  size_t qm = target.find('?');
  std::string_view path = target.substr(0, qm);
  if (path == "/livez" || path == "/readyz" || path == "/startupz" || path == "/healthz") {
    r->path = path;
  } else {
    return false;
  }

  bool content_length = false, accept_seen = false, connection_seen = false;
  std::string_view accept, connection;
  int headers = 0;
  while (!rest.empty()) {
    eol = rest.find("\r\n");
    if (eol > kMaxFastLine || ++headers > kMaxFastHeaders + 1) return false;
    line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    if (line.empty()) break;  // the blank line: the head's end
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return false;
    std::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (!IsTokenChar(c)) return false;  // also "Name :" and folded lines
    }
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (value.empty()) return false;
    if (EqualsNoCase(name, "Transfer-Encoding") || EqualsNoCase(name, "Accept-Encoding") ||
        EqualsNoCase(name, "Range") || EqualsNoCase(name, "Expect")) {
      return false;
    }
    if (EqualsNoCase(name, "Content-Length")) {
      if (content_length || value != "0") return false;
      content_length = true;
    } else if (EqualsNoCase(name, "Accept")) {
      if (accept_seen || value.find('%') != std::string_view::npos) return false;
      accept_seen = true;
      accept = value;
    } else if (EqualsNoCase(name, "Connection")) {
      if (connection_seen) return false;
      if (value != "close" && value != "Keep-Alive" && value != "keep-alive") return false;
      connection_seen = true;
      connection = value;
    }
  }
  if (!rest.empty()) return false;  // cannot happen: h is one head

  r->json = accept.find("application/json") != std::string_view::npos;
  if (qm != std::string_view::npos && !ParseFastQuery(target.substr(qm + 1), r)) {
    return false;
  }
  // httplib: "Connection: close" closes and says so; HTTP/1.0 closes unless
  // "Connection: Keep-Alive" (exactly; httplib compares case-sensitively),
  // without a Connection header in the response.
  r->close_header = connection == "close";
  r->close = r->close_header || (http10 && connection != "Keep-Alive");
  return true;
}

// The response as the worker path writes it: httplib's status line, then
// its headers sorted by name (a case-insensitive std::multimap), then the
// body unless HEAD. False for a status this does not know the reason of.
bool FormatFastResponse(const FastRequest& req, const ProbeResponse& r, std::string* out) {
  const char* reason;
  switch (r.status) {
    case 200: reason = "OK"; break;
    case 503: reason = "Service Unavailable"; break;
    default: return false;
  }
  out->clear();
  out->reserve(200 + r.content_type.size() + r.body.size());
  out->append("HTTP/1.1 ").append(std::to_string(r.status)).append(" ").append(reason);
  out->append("\r\n");
  if (req.head) out->append("Accept-Ranges: bytes\r\n");
  out->append("Cache-Control: no-store\r\n");
  if (req.close_header) out->append("Connection: close\r\n");
  out->append("Content-Length: ").append(std::to_string(r.body.size())).append("\r\n");
  out->append("Content-Type: ").append(r.content_type).append("\r\n");
  if (!req.close) out->append("Keep-Alive: ").append(kKeepAliveHeader).append("\r\n");
  out->append("\r\n");
  if (!req.head) out->append(r.body);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// The gate: an httplib::Server whose accepted connections go to an epoll
// thread until a request head is complete, then to a fixed worker pool that
// runs httplib's request processing on a stream with deadlines.
class HttpServers::Gated : public httplib::Server {
 public:
  Gated(std::string name, size_t workers, int64_t timeout_ns)
      : name_(std::move(name)), workers_n_(workers), timeout_ns_(timeout_ns) {
    // httplib calls process_and_close_socket() through the task queue right
    // on its accept thread: handing a socket to the gate never blocks.
    new_task_queue = [] { return new InlineQueue; };
    // SO_REUSEADDR only: httplib's default SO_REUSEPORT would let a second
    // sidecar bind the same port silently.
    set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    set_keep_alive_timeout(kKeepAliveIdleSec);
    set_payload_max_length(kMaxPayloadBytes);
    std::chrono::nanoseconds t(timeout_ns);
    set_read_timeout(t);
    set_write_timeout(t);
  }

  ~Gated() override { Shutdown(); }

  // The gate's fast path (see FastRequest): `answer` fills the response of a
  // fast request, or returns false to leave it to a worker; `count` counts
  // an answered one. Both run on the gate thread, so they must never block:
  // they copy the View pointer and format from memory, in microseconds.
  // Exceptions from `answer` send the request to a worker. Set before Run().
  using FastAnswer = std::function<bool(const FastRequest&, ProbeResponse*)>;
  using FastCount = std::function<void(const FastRequest&, int status)>;
  void SetFastPath(FastAnswer answer, FastCount count) {
    fast_answer_ = std::move(answer);
    fast_count_ = std::move(count);
  }

  // Binds; on success *port is the actual port.
  bool Bind(const std::string& host, int port, int* actual, std::string* error) {
    errno = 0;
    if (!bind_to_port(host, port)) {
      const int err = errno;
      *error = "cannot bind " + host + ":" + std::to_string(port) + ": " +
               (err != 0 ? strerror(err) : "no such address (is the host name right?)");
      return false;
    }
    int fd = svr_sock_;
    // httplib listens with a backlog of 5; a burst of probes and scrapes
    // deserves more (listen() again just resizes the queue on Linux).
    ::listen(fd, 128);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
      *error = std::string("getsockname: ") + strerror(errno);
      return false;
    }
    std::string ip;
    AddrToString(ss, &ip, actual);
    return true;
  }

  // Starts the gate, the workers and the accept thread.
  bool Run(std::string* error) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    evfd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epfd_ < 0 || evfd_ < 0) {
      *error = std::string("epoll/eventfd: ") + strerror(errno);
      return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev);
    gate_ = std::thread([this] { GateLoop(); });
    for (size_t i = 0; i < workers_n_; i++) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
    accept_ = std::thread([this] {
      SetThreadName((name_ + "-accept").c_str());
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

  void Shutdown() {
    if (!running_.exchange(false)) {
      // Bound but never served: release the port.
      int fd = svr_sock_.exchange(INVALID_SOCKET);
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

 private:
  class InlineQueue : public httplib::TaskQueue {
   public:
    void enqueue(std::function<void()> fn) override { fn(); }
    void shutdown() override {}
  };

  struct Conn {
    int fd = -1;
    std::string in;        // received, not yet consumed: in[pos..]
    size_t pos = 0;
    std::string out;       // response bytes not yet sent
    int64_t deadline_ns = 0;
    bool started = false;  // bytes of the next request have arrived
    bool writing = false;  // the gate waits for EPOLLOUT to send `out`
    bool close_after_write = false;
    bool registered = false;  // known to epoll
    bool timed = false;
    bool closed = false;      // by the gate; deleted after the epoll batch
    std::multimap<int64_t, Conn*>::iterator timer;
    bool addrs = false;
    std::string remote_ip, local_ip;
    int remote_port = -1, local_port = -1;
  };

  // httplib's view of a connection: reads the buffered head first, then the
  // socket, never past the request's deadline; buffers the response.
  class ConnStream : public httplib::Stream {
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
        ssize_t n = Recv(buf, sizeof buf);
        if (n <= 0) return n;
        c_->in.assign(buf, size_t(n));
      }
      size_t n = std::min(size, c_->in.size() - c_->pos);
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
      const int64_t deadline =
          std::max(c_->deadline_ns, MonotonicNowNs() + timeout_ns_);
      size_t off = 0;
      while (off < c_->out.size()) {
        ssize_t n = send(c_->fd, c_->out.data() + off, c_->out.size() - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          off += size_t(n);
        } else if (n < 0 && errno == EINTR) {
          continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          if (!WaitFd(c_->fd, POLLOUT, deadline)) {
            failed_ = true;
            break;
          }
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
        ssize_t n = recv(c_->fd, ptr, size, 0);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (!WaitFd(c_->fd, POLLIN, c_->deadline_ns)) return -1;
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

  // Runs on httplib's accept thread.
  bool process_and_close_socket(socket_t sock) override {
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

  void Wake() {
    uint64_t one = 1;
    (void)!::write(evfd_, &one, sizeof one);
  }

  // ---- gate thread

  void GateLoop() {
    SetThreadName((name_ + "-gate").c_str());
    std::vector<epoll_event> events(64);
    std::vector<int> fds;
    std::vector<Conn*> returns;
    while (!stopping_.load()) {
      int timeout_ms = 1000;
      if (!timers_.empty()) {
        int64_t left = timers_.begin()->first - MonotonicNowNs();
        timeout_ms = int(std::clamp<int64_t>((left + kNsPerMs - 1) / kNsPerMs, 0, 1000));
      }
      int n = epoll_wait(epfd_, events.data(), int(events.size()), timeout_ms);
      if (stopping_.load()) break;
      for (int i = 0; i < n; i++) {
        Conn* c = static_cast<Conn*>(events[size_t(i)].data.ptr);
        if (c == nullptr) {
          uint64_t v;
          (void)!::read(evfd_, &v, sizeof v);
          {
            std::lock_guard<std::mutex> lock(inbox_mu_);
            fds.swap(inbox_fds_);
            returns.swap(inbox_returns_);
          }
          for (int fd : fds) NewConn(fd);
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
      while (!timers_.empty() && timers_.begin()->first <= now) {
        Conn* c = timers_.begin()->second;
        // A request under way gets a 408; an idle keep-alive just a close.
        if (c->started && !c->writing) {
          SendCanned(c->fd, 408, "Request Timeout", "request timeout\n");
        }
        Close(c);
      }
      Bury();
    }
    // Stopping: close everything waiting here (workers close their own).
    while (!timers_.empty()) Close(timers_.begin()->second);
    Bury();
  }

  void NewConn(int fd) {
    size_t count;
    {
      std::lock_guard<std::mutex> lock(conns_mu_);
      count = conns_.size();
    }
    if (count >= kMaxConnections) {
      // Full: the longest-waiting connection goes, never the newcomer.
      if (timers_.empty()) {
        close(fd);
        return;
      }
      Conn* victim = timers_.begin()->second;
      if (victim->started && !victim->writing) {
        SendCanned(victim->fd, 503, "Service Unavailable", "too many connections\n");
      }
      Close(victim);
    }
    int flags = fcntl(fd, F_GETFL, 0);
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
  void Returned(Conn* c) {
    Rest(c);
    if (HeadLength(c) > 0) {
      Triage(c);
    } else {
      Readable(c);
    }
  }

  // A response is out: drop the request's bytes and time the next one.
  void Rest(Conn* c) {
    if (c->pos > 0) {
      c->in.erase(0, c->pos);
      c->pos = 0;
    }
    c->started = !c->in.empty();
    c->deadline_ns = MonotonicNowNs() +
                     (c->started ? timeout_ns_ : kKeepAliveIdleSec * kNsPerSec);
  }

  // Length of the request head at in[pos..] (through its blank line), or 0
  // while incomplete.
  static size_t HeadLength(const Conn* c) {
    std::string_view v(c->in);
    v.remove_prefix(c->pos);
    size_t crlf = v.find("\r\n\r\n");
    size_t lf = v.find("\n\n");
    size_t end = std::min(crlf == std::string_view::npos ? crlf : crlf + 4,
                          lf == std::string_view::npos ? lf : lf + 2);
    return end == std::string_view::npos ? 0 : end;
  }

  // Answers an oversized head itself, and closes.
  void Refuse(Conn* c) {
    std::string_view v(c->in);
    v.remove_prefix(c->pos);
    size_t nl = v.find('\n');
    if (nl == std::string_view::npos || nl > kMaxHeadBytes) {
      SendCanned(c->fd, 414, "URI Too Long", "request line too long\n");
    } else {
      SendCanned(c->fd, 431, "Request Header Fields Too Large",
                 "request headers too large\n");
    }
    Close(c);
  }

  // A complete head is answered here (the fast path) or goes to a worker,
  // an oversized one is refused, else the connection waits here for more.
  // Pipelined requests are taken in order: fast ones here until one needs a
  // worker, which then has the rest of the buffer.
  void Triage(Conn* c) {
    for (;;) {
      size_t head = HeadLength(c);
      if (head > kMaxHeadBytes || (head == 0 && c->in.size() - c->pos > kMaxHeadBytes)) {
        Refuse(c);
        return;
      }
      if (head == 0) {
        Arm(c);
        return;
      }
      switch (AnswerFast(c, head)) {
        case Fast::kNo:
          Dispatch(c);
          return;
        case Fast::kAnswered:
          Rest(c);
          continue;  // a pipelined request, or wait for the next one
        case Fast::kParked:
          return;  // closed, or waiting for EPOLLOUT
      }
    }
  }

  enum class Fast { kNo, kAnswered, kParked };

  // The fast path for the complete head at in[pos..pos+head): answers it and
  // consumes it, or leaves it for a worker. Never blocks: the answer is
  // computed from memory (microseconds) and sent with a non-blocking send;
  // what the socket does not take at once is sent on EPOLLOUT.
  Fast AnswerFast(Conn* c, size_t head) {
    if (!fast_answer_) return Fast::kNo;
    FastRequest req;
    if (!ParseFastHead(std::string_view(c->in).substr(c->pos, head), &req)) return Fast::kNo;
    ProbeResponse r;
    std::string out;
    try {
      if (!fast_answer_(req, &r) || !FormatFastResponse(req, r, &out)) return Fast::kNo;
    } catch (...) {
      return Fast::kNo;  // a worker tries again and answers 500 if it throws
    }
    if (fast_count_) fast_count_(req, r.status);
    c->pos += head;
    size_t sent = 0;
    while (sent < out.size()) {
      ssize_t n = send(c->fd, out.data() + sent, out.size() - sent,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += size_t(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        Close(c);  // the client went away
        return Fast::kParked;
      }
    }
    if (sent < out.size()) {
      // Rare (bodies are small): keep the rest, send it on EPOLLOUT; no
      // more requests are read until it is out.
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
  void Writable(Conn* c) {
    while (!c->out.empty()) {
      ssize_t n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c->out.erase(0, size_t(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
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
    Rest(c);
    Triage(c);
  }

  // Reads what arrived, then routes.
  void Readable(Conn* c) {
    size_t old = c->in.size();
    c->in.resize(old + kReadChunk);
    ssize_t n;
    do {
      n = recv(c->fd, &c->in[old], kReadChunk, 0);
    } while (n < 0 && errno == EINTR);
    c->in.resize(old + size_t(std::max<ssize_t>(n, 0)));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      Close(c);  // the client went away
      return;
    }
    if (n > 0 && !c->started) {
      c->started = true;
      c->deadline_ns = std::min(c->deadline_ns, MonotonicNowNs() + timeout_ns_);
    }
    Triage(c);
  }

  // Waits for the next event of the connection (EPOLLOUT while `writing`,
  // else EPOLLIN) or its deadline.
  void Arm(Conn* c) {
    epoll_event ev{};
    ev.events = (c->writing ? EPOLLOUT : EPOLLIN | EPOLLRDHUP) | EPOLLONESHOT;
    ev.data.ptr = c;
    if (epoll_ctl(epfd_, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) != 0) {
      Close(c);
      return;
    }
    c->registered = true;
    if (c->timed) timers_.erase(c->timer);
    c->timer = timers_.emplace(c->deadline_ns, c);
    c->timed = true;
  }

  void Untime(Conn* c) {
    if (c->timed) {
      timers_.erase(c->timer);
      c->timed = false;
    }
  }

  void Dispatch(Conn* c) {
    Untime(c);
    {
      std::lock_guard<std::mutex> lock(work_mu_);
      work_.push_back(c);
    }
    work_cv_.notify_one();
  }

  // Closes a connection the gate owns. The Conn itself lives on until the
  // end of the epoll batch: an event for it may still be in the batch.
  void Close(Conn* c) {
    Untime(c);
    {
      std::lock_guard<std::mutex> lock(conns_mu_);
      conns_.erase(c);
    }
    close(c->fd);
    c->fd = -1;
    c->closed = true;
    graveyard_.push_back(c);
  }

  void Bury() {
    for (Conn* c : graveyard_) delete c;
    graveyard_.clear();
  }

  // ---- workers

  void WorkerLoop() {
    SetThreadName((name_ + "-http").c_str());
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

  void Serve(Conn* c) {
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

  std::multimap<int64_t, Conn*> timers_;  // gate thread only
  std::vector<Conn*> graveyard_;          // gate thread only

  std::mutex work_mu_;  // gate -> workers
  std::condition_variable work_cv_;
  std::deque<Conn*> work_;

  std::mutex conns_mu_;  // every open connection, for the limit and Stop()
  std::unordered_set<Conn*> conns_;

  FastAnswer fast_answer_;  // set before Run(); gate thread only
  FastCount fast_count_;
};

// ---------------------------------------------------------------------------

namespace {

bool ParsePort(const std::string& s, int* port) {
  if (s.empty() || s.size() > 5) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v > 65535) return false;
  *port = v;
  return true;
}

bool WantsJson(const httplib::Request& req) {
  if (req.has_param("format")) return req.get_param_value("format") == "json";
  return req.get_header_value("Accept").find("application/json") != std::string::npos;
}

bool Flag(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return false;
  const std::string v = req.get_param_value(name);
  return v != "0" && v != "false" && v != "no";
}

// Endpoint of a counted path; -1 for others.
int CountedEndpoint(std::string_view path) {
  if (path == "/livez") return int(Endpoint::kLivez);
  if (path == "/readyz") return int(Endpoint::kReadyz);
  if (path == "/startupz") return int(Endpoint::kStartupz);
  if (path == "/healthz") return int(Endpoint::kHealthz);
  if (path == "/metrics") return int(Endpoint::kMetrics);
  return -1;
}

void Reply(httplib::Response& res, int status, std::string body,
           const char* type = kTextType) {
  res.status = status;
  res.body = std::move(body);  // no copy: /metrics is large
  res.headers.erase("Content-Type");
  res.set_header("Content-Type", type);
}

// Content-Length per RFC 9112 6.3: one value, digits only (strtoull alone
// would take "-5", " 7" and "5, 7"). False if absent or invalid.
bool ParseContentLength(const httplib::Request& req, unsigned long long* n) {
  const size_t count = req.get_header_value_count("Content-Length");
  if (count == 0) return false;
  const std::string v = req.get_header_value("Content-Length");
  for (size_t i = 1; i < count; i++) {
    if (req.get_header_value("Content-Length", i) != v) return false;
  }
  if (v.empty() || v.size() > 19) return false;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
  }
  *n = strtoull(v.c_str(), nullptr, 10);
  return true;
}

void CloseAfter(httplib::Response& res) {
  t_close_connection = true;
  res.set_header("Connection", "close");
}

// Short bodies for errors httplib raises itself (its own are empty).
httplib::Server::HandlerResponse ErrorBody(const httplib::Request& req,
                                           httplib::Response& res,
                                           const char* hint) {
  if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
  std::string body;
  switch (res.status) {
    case 400: body = "bad request\n"; break;
    case 404: body = std::string("not found; ") + hint + "\n"; break;
    case 405: body = "method not allowed\n"; break;
    case 413:
      body = "payload too large (at most " + std::to_string(kMaxPayloadBytes) +
             " bytes)\n";
      break;
    case 414: body = "request line too long\n"; break;
    case 416: body = "range not satisfiable\n"; break;
    case 500: body = "internal error\n"; break;
    default: body = "error " + std::to_string(res.status) + "\n"; break;
  }
  // After a malformed request the stream is out of step (an unread body, a
  // half-parsed head): answer, then close.
  if (res.status == 400 || res.status == 413 || res.status == 414 ||
      res.status >= 500 || req.method.empty()) {
    CloseAfter(res);
  }
  res.set_content(body, kTextType);
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

bool ParseListenAddress(const std::string& text, std::string* host, int* port,
                        std::string* error) {
  const std::string form =
      "expected HOST:PORT, e.g. 0.0.0.0:9321, 127.0.0.1:9322 or [::1]:9322 "
      "(port 0: any free port)";
  std::string h, p;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      *error = "\"" + text + "\": " + form;
      return false;
    }
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
    if (h.empty()) {
      *error = "\"" + text + "\": empty IPv6 address; " + form;
      return false;
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      *error = "\"" + text + "\": no port; " + form;
      return false;
    }
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
    if (h.find(':') != std::string::npos) {
      *error = "\"" + text + "\": IPv6 addresses go in brackets; " + form;
      return false;
    }
    if (h.empty() || h == "*") h = "0.0.0.0";
  }
  if (!ParsePort(p, port)) {
    *error = "\"" + text + "\": bad port \"" + p + "\"; " + form;
    return false;
  }
  *host = h;
  return true;
}

HttpServers::HttpServers(const Config& config, ViewSource view_source,
                         Hold& hold, SidecarMetrics& metrics, LogFn log,
                         Clock clock)
    : config_(config),
      view_source_(std::move(view_source)),
      hold_(hold),
      metrics_(metrics),
      log_(std::move(log)),
      clock_(clock ? std::move(clock) : Clock(DefaultClock)) {}

HttpServers::~HttpServers() { Stop(); }

bool HttpServers::Start(std::string* error) {
  if (started_) return true;
  const int64_t timeout_ns = std::max<int64_t>(config_.http_timeout.count(), kNsPerMs);
  std::string host, admin_host;
  int port = 0, admin_port = 0;
  std::string why;
  if (!ParseListenAddress(config_.listen, &host, &port, &why)) {
    *error = "listen: " + why;
    return false;
  }
  const bool admin_on = config_.admin_listen != "off" && !config_.admin_listen.empty();
  if (admin_on && !ParseListenAddress(config_.admin_listen, &admin_host, &admin_port, &why)) {
    *error = "admin_listen: " + why;
    return false;
  }

  const size_t threads = std::max<uint32_t>(config_.http_threads, 1);
  public_ = std::make_unique<Gated>("lw-pub", threads, timeout_ns);
  if (admin_on) {
    admin_ = std::make_unique<Gated>("lw-adm", std::min<size_t>(threads, 2), timeout_ns);
  }
  AddRoutes(public_.get(), admin_.get());

  if (!public_->Bind(host, port, &port_, &why)) {
    *error = "listen " + config_.listen + ": " + why;
    public_.reset();
    admin_.reset();
    return false;
  }
  if (admin_ && !admin_->Bind(admin_host, admin_port, &admin_port_, &why)) {
    *error = "admin_listen " + config_.admin_listen + ": " + why;
    public_.reset();
    admin_.reset();
    port_ = -1;
    return false;
  }
  if (!public_->Run(&why) || (admin_ && !admin_->Run(&why))) {
    *error = "cannot start the HTTP servers: " + why;
    Stop();
    return false;
  }
  started_ = true;
  return true;
}

void HttpServers::Stop() {
  // Both at once: each waits at most for its workers' current requests,
  // which Shutdown() cuts short.
  std::thread a;
  if (admin_) a = std::thread([this] { admin_->Shutdown(); });
  if (public_) public_->Shutdown();
  if (a.joinable()) a.join();
  started_ = false;
}

void HttpServers::AddRoutes(Gated* pub, Gated* adm) {
  auto view = [this]() -> std::shared_ptr<const View> {
    std::shared_ptr<const View> v = view_source_ ? view_source_() : nullptr;
    if (!v) {
      static const auto kEmpty = std::make_shared<const View>();
      return kEmpty;
    }
    return v;
  };
  auto exception = [this](const httplib::Request& req, httplib::Response& res,
                          std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    if (log_) log_("http handler exception", req.method + " " + req.path + ": " + what);
    CloseAfter(res);
    Reply(res, 500, "internal error\n");
  };
  // httplib adds "Keep-Alive: timeout=..., max=..." unless it closes the
  // connection itself; drop it where this server closes it instead, and the
  // "max=" elsewhere (no cap here; see kKeepAliveIdleSec).
  auto tidy = [](const httplib::Request& req, httplib::Response& res) {
    const bool had = res.has_header("Keep-Alive");
    res.headers.erase("Keep-Alive");
    if (had && !t_close_connection &&
        !(req.version == "HTTP/1.0" && req.get_header_value("Connection") != "Keep-Alive")) {
      res.set_header("Keep-Alive", kKeepAliveHeader);
    }
  };
  auto count = [this](const httplib::Request& req, const httplib::Response& res) {
    int e = CountedEndpoint(req.path);
    if (e >= 0) metrics_.CountProbe(Endpoint(e), res.status);
  };

  // ---- public
  pub->set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    const bool body = req.has_header("Transfer-Encoding") ||
                      (req.has_header("Content-Length") &&
                       req.get_header_value("Content-Length") != "0");
    if (req.method != "GET" && req.method != "HEAD") {
      // Answered without reading any body, so the connection must close.
      CloseAfter(res);
      res.set_header("Allow", "GET, HEAD");
      Reply(res, 405, "method not allowed: the probe port serves GET only\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    unsigned long long n = 0;
    if (req.has_header("Content-Length") && !ParseContentLength(req, &n)) {
      CloseAfter(res);
      Reply(res, 400, "bad request: invalid Content-Length\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (body) CloseAfter(res);  // a GET body is never read
    return httplib::Server::HandlerResponse::Unhandled;
  });
  pub->set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
        return ErrorBody(req, res, "try /livez /readyz /startupz /healthz /metrics");
      }));
  pub->set_exception_handler(exception);
  pub->set_post_routing_handler(tidy);
  pub->set_logger(count);

  auto probe = [this, view](Probe p) {
    return [this, view, p](const httplib::Request& req, httplib::Response& res) {
      std::shared_ptr<const View> v = view();
      ProbeResponse r = AnswerProbe(p, *v, config_, hold_, clock_(), WantsJson(req),
                                    Flag(req, "verbose"));
      res.set_header("Cache-Control", "no-store");
      Reply(res, r.status, std::move(r.body), r.content_type.c_str());
    };
  };
  // The same answers on the gate's fast path (bodiless GET/HEAD of the four
  // probes): the same view_source, the same functions, the same counting.
  // In memory and in microseconds, as the gate thread requires: a pointer
  // copy of the View, formatting, and an atomic add for 200/503.
  pub->SetFastPath(
      [this, view](const FastRequest& req, ProbeResponse* r) {
        std::shared_ptr<const View> v = view();
        if (req.path == "/healthz") {
          *r = HealthzResponse(*v, clock_(), config_);
          return true;
        }
        const Probe p = req.path == "/livez"    ? Probe::kLive
                        : req.path == "/readyz" ? Probe::kReady
                                                : Probe::kStartup;
        *r = AnswerProbe(p, *v, config_, hold_, clock_(), req.json, req.verbose);
        return true;
      },
      [this](const FastRequest& req, int status) {
        int e = CountedEndpoint(req.path);
        if (e >= 0) metrics_.CountProbe(Endpoint(e), status);
      });
  pub->Get("/livez", probe(Probe::kLive));
  pub->Get("/readyz", probe(Probe::kReady));
  pub->Get("/startupz", probe(Probe::kStartup));
  pub->Get("/healthz", [this, view](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const View> v = view();
    ProbeResponse r = HealthzResponse(*v, clock_(), config_);
    res.set_header("Cache-Control", "no-store");
    Reply(res, r.status, std::move(r.body), r.content_type.c_str());
  });
  pub->Get("/metrics", [this, view](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const View> v = view();
    Reply(res, 200, metrics_.Render(*v, hold_, clock_()), kMetricsContentType);
  });
  pub->Get("/", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200,
          "loopwatch " LOOPWATCH_VERSION "\n"
          "/livez     liveness: fails when a loop is stalled or dead\n"
          "/readyz    readiness: fails on lag, a stall, or the app's own flag\n"
          "/startupz  startup: passes once the expected loops have beaten\n"
          "           (?verbose: a line per loop; ?format=json or "
          "Accept: application/json: JSON)\n"
          "/healthz   the sidecar itself\n"
          "/metrics   Prometheus metrics\n");
  });

  if (!adm) return;

  // ---- admin
  auto clear_hold = [this](const httplib::Request&, httplib::Response& res) {
    const int64_t now = clock_();
    const bool was = hold_.Active(now);
    hold_.Clear();
    if (was && log_) log_("hold cleared", "liveness probes judged again");
    Reply(res, 200, HoldJson(hold_, config_, now), kJsonType);
  };
  auto set_hold = [this, clear_hold](const httplib::Request& req, httplib::Response& res) {
    const std::string usage =
        "expected POST /hold?for=DURATION&reason=TEXT, e.g. for=10m (at most " +
        FormatDuration(config_.max_hold) + "); for=0 or DELETE /hold ends it\n";
    if (!req.has_param("for")) {
      Reply(res, 400, "missing for=; " + usage);
      return;
    }
    const std::string text = req.get_param_value("for");
    Duration d{};
    if (!ParseDuration(text, &d) || d.count() < 0) {
      Reply(res, 400, "bad duration \"" + OneLine(text.substr(0, 64)) + "\"; " + usage);
      return;
    }
    if (d.count() == 0) {
      clear_hold(req, res);
      return;
    }
    if (d > config_.max_hold) {
      Reply(res, 400, "for=" + OneLine(text.substr(0, 64)) + " is longer than max_hold (" +
                          FormatDuration(config_.max_hold) + "); " + usage);
      return;
    }
    std::string reason = OneLine(req.get_param_value("reason").substr(0, 200));
    if (reason.empty()) reason = "no reason given";
    const int64_t now = clock_();
    hold_.Set(now, now + d.count(), reason);
    if (log_) {
      log_("hold set", "for " + FormatDuration(d) + " from " + req.remote_addr +
                           ": " + reason);
    }
    Reply(res, 200, HoldJson(hold_, config_, now), kJsonType);
  };
  const char* const kAdminHint = "try /debug/loops /debug/stalls /hold";

  adm->set_pre_routing_handler([set_hold, clear_hold, kAdminHint](
                                   const httplib::Request& req, httplib::Response& res) {
    const std::string& m = req.method;
    if (m != "GET" && m != "HEAD" && m != "POST" && m != "DELETE") {
      CloseAfter(res);
      res.set_header("Allow", "GET, HEAD, POST, DELETE");
      Reply(res, 405, "method not allowed\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.has_header("Transfer-Encoding")) {
      CloseAfter(res);
      Reply(res, 411, "a body needs Content-Length\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!req.has_header("Content-Length")) {
      if (m == "POST" || m == "DELETE") {
        // No length, no body (RFC 9112 6.3), as `curl -X POST URL` sends it;
        // httplib would wait for the client to close instead. Answered here.
        if (req.path == "/hold") {
          if (m == "POST") {
            set_hold(req, res);
          } else {
            clear_hold(req, res);
          }
        } else {
          Reply(res, 404, std::string("not found; ") + kAdminHint + "\n");
        }
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    }
    unsigned long long n = 0;
    if (!ParseContentLength(req, &n)) {
      CloseAfter(res);
      Reply(res, 400, "bad request: invalid Content-Length\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (n > kMaxPayloadBytes) {
      CloseAfter(res);
      Reply(res, 413,
            "payload too large (at most " + std::to_string(kMaxPayloadBytes) + " bytes)\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (n > 0 && m != "POST" && m != "DELETE") CloseAfter(res);  // never read
    return httplib::Server::HandlerResponse::Unhandled;
  });
  adm->set_error_handler(httplib::Server::HandlerWithResponse(
      [kAdminHint](const httplib::Request& req, httplib::Response& res) {
        return ErrorBody(req, res, kAdminHint);
      }));
  adm->set_exception_handler(exception);
  adm->set_post_routing_handler(tidy);

  adm->Get("/", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200,
          "loopwatch " LOOPWATCH_VERSION " admin\n"
          "GET    /debug/loops              every loop, in detail (JSON)\n"
          "GET    /debug/stalls             recent stall reports with stacks (JSON)\n"
          "GET    /hold                     the liveness hold\n"
          "POST   /hold?for=10m&reason=...  make /livez pass for a while\n"
          "DELETE /hold                     end the hold\n");
  });
  adm->Get("/debug/loops", [this, view](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const View> v = view();
    Reply(res, 200, LoopsJson(*v, clock_()), kJsonType);
  });
  adm->Get("/debug/stalls", [this, view](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const View> v = view();
    Reply(res, 200, StallsJson(*v, clock_()), kJsonType);
  });
  adm->Get("/hold", [this](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, HoldJson(hold_, config_, clock_()), kJsonType);
  });
  adm->Post("/hold", set_hold);
  adm->Delete("/hold", clear_hold);
}

}  // namespace loopwatch

// SPDX-License-Identifier: Apache-2.0
//
// A small HTTP/1.1 server on one standalone-asio io_context, watched by
// loopwatch. A timer on the io_context beats every 100 ms; three endpoints
// stall the loop on purpose so that the sidecar has something to report:
//
//   GET /health       200 "ok"
//   GET /sleep?ms=N   blocks the loop in a sleep  (stall class: blocked, clock_nanosleep)
//   GET /spin?ms=N    burns CPU on the loop       (stall class: cpu)
//   GET /read?ms=N    blocks the loop in read()   (stall class: blocked, read)
//
// Usage: asio_example [--host ADDR] [--port N] [--name LOOP_NAME]
// With LOOPWATCH_SEGMENT unset, loopwatch is a no-op and this is a plain server.
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include <loopwatch/loopwatch.hpp>

namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;

constexpr auto kBeatInterval = 100ms;

// The heartbeat: a timer on the loop itself, so a stuck loop stops beating.
class Heartbeat {
 public:
  Heartbeat(asio::io_context& io, loopwatch::Loop& loop) : timer_(io), loop_(loop) {}
  void Start() {
    loop_.beat();
    timer_.expires_after(kBeatInterval);
    timer_.async_wait([this](std::error_code ec) {
      if (!ec) Start();
    });
  }

 private:
  asio::steady_timer timer_;
  loopwatch::Loop& loop_;
};

// `ms=N` from a query string, 0..600000; -1 if absent or malformed.
long ParseMs(const std::string& query) {
  if (query.rfind("ms=", 0) != 0 || query.size() == 3 || query.size() > 9) return -1;
  long ms = 0;
  for (char c : query.substr(3)) {
    if (c < '0' || c > '9') return -1;
    ms = ms * 10 + (c - '0');
  }
  return ms <= 600000 ? ms : -1;
}

void Spin(std::chrono::milliseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  volatile unsigned long n = 0;
  while (std::chrono::steady_clock::now() < until) n = n + 1;
}

// Blocks in read(2) on a pipe until a helper thread closes the write end.
void BlockInRead(std::chrono::milliseconds d) {
  int fds[2];
  if (pipe(fds) != 0) return;
  std::thread closer([fd = fds[1], d] {
    std::this_thread::sleep_for(d);
    close(fd);
  });
  char c;
  while (read(fds[0], &c, 1) > 0) {
  }
  closer.join();
  close(fds[0]);
}

struct Response {
  int status;
  std::string body;
};

// Runs on the loop: whatever a handler does, it does to the whole server.
Response Handle(loopwatch::Loop& loop, const std::string& method, const std::string& target) {
  std::string path = target.substr(0, target.find('?'));
  std::string query = path.size() < target.size() ? target.substr(path.size() + 1) : "";
  if (path != "/health" && path != "/sleep" && path != "/spin" && path != "/read") {
    return {404, "not found: try /health, /sleep?ms=N, /spin?ms=N, /read?ms=N\n"};
  }
  if (method != "GET") return {405, "only GET\n"};
  std::string label = "GET " + path;
  loopwatch::ScopedActivity activity(loop, label.c_str());
  if (path == "/health") return {200, "ok\n"};
  long ms = ParseMs(query);
  if (ms < 0) return {400, "expected ?ms=N with N from 0 to 600000\n"};
  auto d = std::chrono::milliseconds(ms);
  if (path == "/sleep") std::this_thread::sleep_for(d);
  if (path == "/spin") Spin(d);
  if (path == "/read") BlockInRead(d);
  return {200, path.substr(1) + " " + std::to_string(ms) + "ms done\n"};
}

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    default: return "Error";
  }
}

// One request per connection (Connection: close keeps the example short).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, loopwatch::Loop& loop)
      : socket_(std::move(socket)), loop_(loop), buffer_(8192) {}

  void Start() {
    auto self = shared_from_this();
    asio::async_read_until(socket_, buffer_, "\r\n\r\n",
                           [self](std::error_code ec, std::size_t) { self->OnRequest(ec); });
  }

 private:
  void OnRequest(std::error_code ec) {
    if (ec == asio::error::not_found) return Reply({400, "request head too large\n"});
    if (ec) return;  // the client went away
    std::istream in(&buffer_);
    std::string method, target, version;
    in >> method >> target >> version;
    if (target.empty() || target[0] != '/' || version.rfind("HTTP/1.", 0) != 0) {
      return Reply({400, "malformed request line\n"});
    }
    Reply(Handle(loop_, method, target));
  }

  void Reply(const Response& r) {
    out_ = "HTTP/1.1 " + std::to_string(r.status) + " " + Reason(r.status) +
           "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(r.body.size()) +
           "\r\nConnection: close\r\n\r\n" + r.body;
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(out_), [self](std::error_code, std::size_t) {
      std::error_code ignored;
      self->socket_.shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  tcp::socket socket_;
  loopwatch::Loop& loop_;
  asio::streambuf buffer_;
  std::string out_;
};

void Accept(tcp::acceptor& acceptor, loopwatch::Loop& loop) {
  acceptor.async_accept([&acceptor, &loop](std::error_code ec, tcp::socket socket) {
    if (!ec) std::make_shared<Session>(std::move(socket), loop)->Start();
    if (acceptor.is_open()) Accept(acceptor, loop);
  });
}

int Usage(int code) {
  (code ? std::cerr : std::cout)
      << "usage: asio_example [--host ADDR] [--port N] [--name LOOP_NAME]\n"
         "  --host ADDR   address to listen on (default 127.0.0.1)\n"
         "  --port N      port, 0 for any free one (default 8080)\n"
         "  --name NAME   loop name shown by the sidecar (default asio-main)\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", name = "asio-main";
  unsigned long port = 8080;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--help") return Usage(0);
    if (i + 1 >= argc) return Usage(2);
    const char* v = argv[++i];
    char* end;
    if (a == "--host") {
      host = v;
    } else if (a == "--name") {
      name = v;
    } else if (a == "--port") {
      port = std::strtoul(v, &end, 10);
      if (end == v || *end || port > 65535) return Usage(2);
    } else {
      return Usage(2);
    }
  }

  asio::io_context io;  // run by this thread only: it is "the loop"
  // Open the loop on the thread that runs it: the watchdog samples this
  // thread's CPU time and syscall when the loop stalls.
  loopwatch::LoopOptions options;
  options.name = name;
  options.kind = "asio";
  options.interval = kBeatInterval;
  std::error_code ec;
  loopwatch::Loop loop = loopwatch::Loop::open(options, ec);
  if (ec) {
    std::cerr << "loopwatch: " << ec.message() << ": " << loopwatch::last_error()
              << " (serving without it)\n";
  } else if (!loopwatch::enabled()) {
    std::cerr << "loopwatch: LOOPWATCH_SEGMENT is not set; not watched\n";
  }

  tcp::acceptor acceptor(io);
  try {
    tcp::endpoint endpoint(asio::ip::make_address(host), static_cast<unsigned short>(port));
    acceptor.open(endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen();
  } catch (const std::exception& e) {
    std::cerr << "cannot listen on " << host << ":" << port << ": " << e.what() << "\n";
    return 1;
  }
  std::cout << "listening on " << host << ":" << acceptor.local_endpoint().port() << std::endl;

  Heartbeat heartbeat(io, loop);
  heartbeat.Start();
  Accept(acceptor, loop);
  // SIGTERM/SIGINT end run(); the Loop's destructor then closes the slot, so
  // the sidecar sees the loop leave cleanly instead of dying.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&io](std::error_code, int) { io.stop(); });
  io.run();
  return 0;
}

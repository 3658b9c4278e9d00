/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_probe: the HTTP client of the sidecar benchmarks, for what wrk cannot
 * do (Debian's wrk has no fixed-rate mode). One thread, epoll, non-blocking
 * sockets, CLOCK_MONOTONIC. IPv4 loopback only: it connects to 127.0.0.1.
 *
 *   http_probe paced --port P [--path /livez] [--rate 1000] [--duration 10]
 *                    [--connections 8] [--fresh]
 *       Open loop: request i is due at start + i/rate, whether or not earlier
 *       answers came back (no coordinated omission). It goes out on an idle
 *       kept-alive connection, or waits for one. Latency is measured from
 *       the due time (what a caller at that rate sees) and, as "service",
 *       from the moment it was written.
 *   http_probe seq --port P [--path /metrics] [--requests 200] [--warmup 20]
 *       Closed loop on one kept-alive connection: each request is sent when
 *       the previous answer is complete.
 *   http_probe watch --port P [--path /livez] [--every-us 1000]
 *                    [--duration S]
 *       Polls one kept-alive connection every N us (never two requests in
 *       flight) and prints a JSON line whenever the status code changes:
 *       {"status":503,"sent_ns":T0,"recv_ns":T1} (CLOCK_MONOTONIC). Runs for
 *       --duration seconds or until SIGTERM/SIGINT.
 *
 *   --fresh: a new connection per request with "Connection: close", as the
 *   kubelet's HTTP probes do (Go's client with keep-alives disabled); the
 *   connect is inside the measured time.
 *
 * paced and seq print one JSON summary line: counts, status codes, latency
 * percentiles in microseconds ("latency" from the due time, "service" from
 * the write to the last byte, "first_byte" from the write to the first
 * byte: a server that renders the whole body before sending, as the sidecar
 * does, has rendered it by then), body size, achieved rate. A server closing a
 * kept-alive connection after a response that says "Connection: close"
 * (loopwatch closes after 100 requests) is followed by a reconnect; any
 * other failure counts as an error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_US INT64_C(1000)
#define NS_PER_MS INT64_C(1000000)
#define NS_PER_SEC INT64_C(1000000000)
#define MAX_CONNS 256

enum mode { PACED, SEQ, WATCH };
enum cstate { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };

struct conn {
  int fd;
  enum cstate state;
  int64_t due_ns;   /* when the request in flight was due */
  int64_t sent_ns;  /* when it was written */
  int64_t first_ns; /* when its first response bytes arrived; 0 before */
  char *in;
  size_t in_len, in_cap;
  int req_pending;  /* connecting with a request to send once connected */
};

static enum mode g_mode;
static int g_port = -1;
static const char *g_path;
static double g_rate = 1000;
static double g_duration = 10;
static int g_nconns = 8;
static int g_fresh;
static long g_requests = 200;
static long g_warmup = 20;
static int64_t g_every_ns = 1000 * NS_PER_US;

static int g_epfd;
static struct conn g_conns[MAX_CONNS];
static char g_req[1024];
static size_t g_req_len;
static volatile sig_atomic_t g_stop;

/* results */
static int64_t *g_lat;      /* from due time */
static int64_t *g_svc;      /* from write */
static int64_t *g_ttfb;     /* from write to the first response byte */
static long g_done, g_cap;
static long g_errors, g_reconnects, g_connects;
static long g_status[600];
static uint64_t g_body_bytes;
static int g_watch_last = -1;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "http_probe: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static void conn_close(struct conn *c) {
  if (c->fd >= 0) {
    epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
  }
  c->fd = -1;
  c->state = C_DOWN;
  c->in_len = 0;
  c->req_pending = 0;
}

/* Starts a non-blocking connect; the connection is C_CONNECTING or C_IDLE. */
static int conn_open(struct conn *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)g_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  g_connects++;
  c->fd = fd;
  c->in_len = 0;
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.data.ptr = c;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
    c->state = C_IDLE;
    ev.events = EPOLLIN | EPOLLRDHUP;
  } else if (errno == EINPROGRESS) {
    c->state = C_CONNECTING;
    ev.events = EPOLLOUT;
  } else {
    close(fd);
    c->fd = -1;
    c->state = C_DOWN;
    return -1;
  }
  if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
  return 0;
}

static void fail(struct conn *c) {
  g_errors++;
  conn_close(c);
}

static void conn_send(struct conn *c) {
  size_t off = 0;
  while (off < g_req_len) {
    ssize_t n = send(c->fd, g_req + off, g_req_len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      /* A request this small always fits an empty socket buffer. */
      fail(c);
      return;
    }
  }
  c->state = C_BUSY;
  c->first_ns = 0;
}

/* Sends a request due at `due` on `c`, which is idle or down. */
static void issue(struct conn *c, int64_t due) {
  if (c->state == C_DOWN && conn_open(c) != 0) {
    g_errors++;
    return;
  }
  c->due_ns = due;
  if (c->state == C_CONNECTING) {
    c->req_pending = 1;
    return;
  }
  c->sent_ns = now_ns();
  conn_send(c);
}

static void record(struct conn *c, int status, size_t body, int64_t t) {
  if (status >= 0 && status < 600) g_status[status]++;
  g_body_bytes += body;
  if (g_mode == WATCH) {
    if (status != g_watch_last) {
      printf("{\"status\":%d,\"sent_ns\":%" PRId64 ",\"recv_ns\":%" PRId64 "}\n",
             status, c->sent_ns, t);
      fflush(stdout);
      g_watch_last = status;
    }
    g_done++;
    return;
  }
  if (g_done < g_cap) {
    g_lat[g_done] = t - c->due_ns;
    g_svc[g_done] = t - c->sent_ns;
    g_ttfb[g_done] = (c->first_ns ? c->first_ns : t) - c->sent_ns;
  }
  g_done++;
}

/* Parses what arrived; returns 1 when a whole response was consumed. */
static int parse_response(struct conn *c, int64_t t, int eof) {
  char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
  if (!end) return 0;
  size_t head = (size_t)(end - c->in) + 4;
  int status = -1;
  if (c->in_len < 12 || strncmp(c->in, "HTTP/1.", 7) != 0) return -1;
  status = atoi(c->in + 9);
  long clen = -1;
  int close_after = 0;
  for (char *p = c->in; p < end;) {
    char *nl = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    if (!nl) break;
    if ((size_t)(nl - p) > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
      clen = atol(p + 15);
    } else if ((size_t)(nl - p) > 11 && strncasecmp(p, "Connection:", 11) == 0) {
      char *v = p + 11;
      while (*v == ' ') v++;
      if (strncasecmp(v, "close", 5) == 0) close_after = 1;
    }
    p = nl + 2;
  }
  size_t body;
  if (clen >= 0) {
    if (c->in_len < head + (size_t)clen) return 0;
    body = (size_t)clen;
  } else {
    if (!eof) return 0;  /* read to the end */
    body = c->in_len - head;
    close_after = 1;
  }
  record(c, status, body, t);
  size_t used = head + body;
  memmove(c->in, c->in + used, c->in_len - used);
  c->in_len -= used;
  if (close_after || g_fresh) {
    conn_close(c);
    if (!g_fresh) {
      /* Reconnect now, as a pool would, so that the next request does not
       * pay for the handshake (--fresh measures that case). */
      g_reconnects++;
      if (conn_open(c) != 0) g_errors++;
    }
  } else {
    c->state = C_IDLE;
  }
  return 1;
}

static void on_event(struct conn *c, uint32_t events) {
  if (c->state == C_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      fail(c);
      return;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.ptr = c;
    ev.events = EPOLLIN | EPOLLRDHUP;
    epoll_ctl(g_epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = C_IDLE;
    if (c->req_pending) {
      c->req_pending = 0;
      c->sent_ns = now_ns();
      conn_send(c);
    }
    return;
  }
  int eof = 0;
  for (;;) {
    if (c->in_cap - c->in_len < 65536) {
      c->in_cap = c->in_cap * 2 + 65536;
      c->in = realloc(c->in, c->in_cap);
      if (!c->in) die("realloc");
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n > 0) {
      if (c->state == C_BUSY && c->first_ns == 0) c->first_ns = now_ns();
      c->in_len += (size_t)n;
      continue;
    }
    if (n == 0) eof = 1;
    else if (errno == EINTR) continue;
    else if (errno != EAGAIN && errno != EWOULDBLOCK) eof = 1;
    break;
  }
  (void)events;
  int64_t t = now_ns();
  if (c->state == C_BUSY) {
    int r = parse_response(c, t, eof);
    if (r < 0) {
      fail(c);
      return;
    }
    if (r == 1) return;
  }
  if (eof) {
    if (c->state == C_BUSY) {
      fail(c);  /* closed before a whole answer */
    } else {
      conn_close(c);  /* idle kept-alive connection closed by the server */
    }
  }
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(const int64_t *v, long n, double p) {
  if (n == 0) return 0;
  long i = (long)((p / 100.0) * (double)n + 0.999999) - 1;  /* nearest rank */
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return (double)v[i] / (double)NS_PER_US;
}

static void print_stats(const char *name, int64_t *v, long n) {
  qsort(v, (size_t)n, sizeof *v, cmp64);
  double sum = 0;
  for (long i = 0; i < n; i++) sum += (double)v[i];
  printf("\"%s\":{\"min_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
         "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f}",
         name, n ? (double)v[0] / NS_PER_US : 0, pct(v, n, 50), pct(v, n, 90),
         pct(v, n, 99), pct(v, n, 99.9),
         n ? (double)v[n - 1] / NS_PER_US : 0,
         n ? sum / (double)n / NS_PER_US : 0);
}

static void usage(void) {
  fprintf(stderr,
          "usage: http_probe paced|seq|watch --port P [--path PATH] [--rate R]\n"
          "       [--duration S] [--connections C] [--fresh] [--requests N]\n"
          "       [--warmup N] [--every-us U]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  if (strcmp(argv[1], "paced") == 0) g_mode = PACED;
  else if (strcmp(argv[1], "seq") == 0) g_mode = SEQ;
  else if (strcmp(argv[1], "watch") == 0) g_mode = WATCH;
  else usage();
  g_path = g_mode == SEQ ? "/metrics" : "/livez";
  if (g_mode == WATCH) g_duration = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--fresh") == 0) { g_fresh = 1; continue; }
    if (!v) usage();
    i++;
    if (strcmp(a, "--port") == 0) g_port = atoi(v);
    else if (strcmp(a, "--path") == 0) g_path = v;
    else if (strcmp(a, "--rate") == 0) g_rate = atof(v);
    else if (strcmp(a, "--duration") == 0) g_duration = atof(v);
    else if (strcmp(a, "--connections") == 0) g_nconns = atoi(v);
    else if (strcmp(a, "--requests") == 0) g_requests = atol(v);
    else if (strcmp(a, "--warmup") == 0) g_warmup = atol(v);
    else if (strcmp(a, "--every-us") == 0) g_every_ns = atol(v) * NS_PER_US;
    else usage();
  }
  if (g_port <= 0 || g_port > 65535 || g_nconns < 1 || g_nconns > MAX_CONNS ||
      g_rate <= 0 || g_duration < 0 || g_requests < 1 || g_warmup < 0 ||
      g_every_ns < 0 || g_path[0] != '/')
    usage();
  if (g_mode != PACED) g_nconns = 1;
  g_req_len = (size_t)snprintf(g_req, sizeof g_req,
                               "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                               "User-Agent: loopwatch-http-probe\r\n%s\r\n",
                               g_path, g_port,
                               g_fresh ? "Connection: close\r\n" : "");
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  g_epfd = epoll_create1(EPOLL_CLOEXEC);
  if (g_epfd < 0) die("epoll_create1");
  for (int i = 0; i < g_nconns; i++) g_conns[i].fd = -1;

  long total;
  if (g_mode == PACED) total = (long)(g_rate * g_duration + 0.5);
  else if (g_mode == SEQ) total = g_requests + g_warmup;
  else total = -1;
  g_cap = total > 0 ? total : 0;
  g_lat = calloc((size_t)g_cap + 1, sizeof *g_lat);
  g_svc = calloc((size_t)g_cap + 1, sizeof *g_svc);
  g_ttfb = calloc((size_t)g_cap + 1, sizeof *g_ttfb);
  if (!g_lat || !g_svc || !g_ttfb) die("calloc");

  /* Open the kept-alive connections before the clock starts. */
  if (!g_fresh) {
    for (int i = 0; i < g_nconns; i++) {
      if (conn_open(&g_conns[i]) != 0) die("connect");
    }
  }
  const double period_ns = g_mode == PACED ? 1e9 / g_rate : 0;
  int64_t *queue = calloc((size_t)g_cap + 1, sizeof *queue);  /* due times */
  long q_head = 0, q_tail = 0;
  long issued = 0;
  const int64_t start = now_ns();
  const int64_t end = g_duration > 0 ? start + (int64_t)(g_duration * 1e9) : 0;
  int64_t watch_next = start;
  long late = 0;  /* paced: requests that had to wait for a connection */

  struct epoll_event evs[64];
  for (;;) {
    int64_t t = now_ns();
    if (g_stop) break;
    if (g_mode == PACED) {
      while (issued < total && start + (int64_t)((double)issued * period_ns) <= t) {
        queue[q_tail++] = start + (int64_t)((double)issued * period_ns);
        issued++;
      }
      for (int i = 0; i < g_nconns && q_head < q_tail; i++) {
        struct conn *c = &g_conns[i];
        if (c->state == C_IDLE || c->state == C_DOWN) {
          if (t - queue[q_head] > NS_PER_MS) late++;
          issue(c, queue[q_head++]);
        }
      }
      if (issued >= total && q_head >= q_tail) {
        int busy = 0;
        for (int i = 0; i < g_nconns; i++) {
          if (g_conns[i].state == C_BUSY || g_conns[i].state == C_CONNECTING) busy = 1;
        }
        if (!busy) break;
        if (t > start + (int64_t)(g_duration * 1e9) + 5 * NS_PER_SEC) break;
      }
    } else {
      struct conn *c = &g_conns[0];
      int free_conn = c->state == C_IDLE || c->state == C_DOWN;
      if (g_mode == SEQ) {
        if (issued >= total && free_conn) break;
        if (free_conn) {
          issue(c, t);
          issued++;
        }
      } else {
        if (end && t >= end && free_conn) break;
        if (free_conn && t >= watch_next) {
          issue(c, t);
          issued++;
          watch_next = t + g_every_ns;
        }
      }
    }
    /* Sleep until the next due time or an event. */
    int64_t wake = t + 100 * NS_PER_MS;
    if (g_mode == PACED && issued < total) {
      int64_t due = start + (int64_t)((double)issued * period_ns);
      if (due < wake) wake = due;
    } else if (g_mode == WATCH && watch_next < wake) {
      wake = watch_next;
    }
    int64_t left = wake - now_ns();
    if (left < 0) left = 0;
    struct timespec ts = {(time_t)(left / NS_PER_SEC), (long)(left % NS_PER_SEC)};
    int n = epoll_pwait2(g_epfd, evs, 64, &ts, NULL);
    if (n < 0 && errno != EINTR) die("epoll_pwait2");
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
  }
  const int64_t elapsed = now_ns() - start;
  if (g_mode == WATCH) return 0;

  long n = g_done < g_cap ? g_done : g_cap;
  long skip = 0;
  if (g_mode == SEQ) skip = n < g_warmup ? n : g_warmup;
  printf("{\"mode\":\"%s\",\"path\":\"%s\",\"fresh\":%d,\"connections\":%d,",
         argv[1], g_path, g_fresh, g_nconns);
  if (g_mode == PACED) printf("\"target_rate\":%.0f,", g_rate);
  printf("\"requests\":%ld,\"measured\":%ld,\"errors\":%ld,\"reconnects\":%ld,"
         "\"connects\":%ld,\"late_sends\":%ld,\"elapsed_s\":%.3f,"
         "\"achieved_rate\":%.1f,\"body_bytes_mean\":%.0f,\"status\":{",
         issued, n - skip, g_errors, g_reconnects, g_connects, late,
         (double)elapsed / 1e9, (double)g_done / ((double)elapsed / 1e9),
         g_done ? (double)g_body_bytes / (double)g_done : 0.0);
  int first = 1;
  for (int s = 0; s < 600; s++) {
    if (g_status[s]) {
      printf("%s\"%d\":%ld", first ? "" : ",", s, g_status[s]);
      first = 0;
    }
  }
  printf("},");
  print_stats("latency", g_lat + skip, n - skip);
  printf(",");
  print_stats("service", g_svc + skip, n - skip);
  printf(",");
  print_stats("first_byte", g_ttfb + skip, n - skip);
  printf("}\n");
  return g_errors > 0 ? 1 : 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * flood: a hostile client and a kubelet against the sidecar's public port.
 *
 *   flood --port P [--host 127.0.0.1] [--path /livez] [--probe-src 127.0.0.1]
 *         [--hostile 1000] [--hostile-peers 1] [--probes 10000] [--rate 200]
 *         [--timeout-ms 1000] [--warmup-ms 2000]
 *
 * The hostile side (one thread, epoll, non-blocking) holds --hostile
 * connections from 127.0.0.2 and up (--hostile-peers addresses), a third
 * each: idle (connect, send nothing), trickle (a request head, one byte
 * every 100 ms) and churn (connect, maybe half a request, close, again at
 * once). Whatever the server closes is opened again at once.
 *
 * The kubelet side (another thread) makes --probes probes from --probe-src
 * as the kubelet does: a fresh connection each, GET with "Connection:
 * close", --timeout-ms for the whole exchange (connect included), paced at
 * --rate per second from a fixed schedule.
 *
 * Prints one JSON object: probes, failures (and the first ten, with what
 * failed), status codes, latency percentiles in ms, and the hostile side's
 * connects. Exit 0 (the caller judges).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HOSTILE 20000

static const char *host = "127.0.0.1", *path = "/livez", *probe_src = "127.0.0.1";
static int port, hostile_n = 1000, hostile_peers = 1, probes = 10000;
static double rate = 200;
static int64_t timeout_ms = 1000, warmup_ms = 2000;
static atomic_int stop_flood; /* main sets it, the hostile thread polls it */
static int64_t hostile_connects, hostile_errors;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct sockaddr_in addr_of(const char *ip, int p) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)p);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

/* A socket bound to `src`, connecting (non-blocking if asked) to the server. */
static int open_conn(const char *src, int nonblock) {
  int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  struct sockaddr_in s = addr_of(src, 0);
  if (bind(fd, (struct sockaddr *)&s, sizeof s) != 0) {
    close(fd);
    return -1;
  }
  struct sockaddr_in d = addr_of(host, port);
  if (connect(fd, (struct sockaddr *)&d, sizeof d) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

/* ---- the hostile side */

enum kind { IDLE, TRICKLE, CHURN };
struct hconn {
  int fd;
  enum kind kind;
  int sent;          /* trickle: bytes of the head sent */
  int64_t next_ns;   /* trickle: next byte */
  char src[16];
};
static struct hconn hc[MAX_HOSTILE];
static const char kTrickleHead[] = "GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

static void hostile_open(int ep, int i) {
  struct hconn *c = &hc[i];
  for (;;) {
    c->fd = open_conn(c->src, 1);
    if (c->fd >= 0) break;
    __atomic_add_fetch(&hostile_errors, 1, __ATOMIC_RELAXED);
    usleep(1000);
    if (stop_flood) return;
  }
  __atomic_add_fetch(&hostile_connects, 1, __ATOMIC_RELAXED);
  c->sent = 0;
  c->next_ns = now_ns() + 100000000;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (c->kind == CHURN ? EPOLLOUT : 0),
                           .data.u32 = (uint32_t)i};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void hostile_reopen(int ep, int i) {
  epoll_ctl(ep, EPOLL_CTL_DEL, hc[i].fd, NULL);
  close(hc[i].fd);
  hostile_open(ep, i);
}

static void *hostile_main(void *arg) {
  (void)arg;
  int ep = epoll_create1(0);
  for (int i = 0; i < hostile_n; i++) {
    hc[i].kind = (enum kind)(i % 3);
    snprintf(hc[i].src, sizeof hc[i].src, "127.0.0.%d", 2 + i % hostile_peers);
    hostile_open(ep, i);
  }
  struct epoll_event evs[256];
  int64_t churned = 0;
  while (!stop_flood) {
    int n = epoll_wait(ep, evs, 256, 10);
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      struct hconn *c = &hc[i];
      if (c->kind == CHURN && (evs[k].events & EPOLLOUT)) {
        if (++churned % 2) (void)!write(c->fd, "GET /livez HTTP/1.1\r\n", 21);
        hostile_reopen(ep, i);
        continue;
      }
      char buf[4096];
      ssize_t r = read(c->fd, buf, sizeof buf);
      if (r == 0 || (r < 0 && errno != EAGAIN) || (evs[k].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        hostile_reopen(ep, i);
      }
    }
    int64_t t = now_ns();
    for (int i = 0; i < hostile_n; i++) {
      struct hconn *c = &hc[i];
      if (c->kind != TRICKLE || t < c->next_ns) continue;
      if (c->sent < (int)sizeof kTrickleHead - 1) {
        if (write(c->fd, kTrickleHead + c->sent, 1) == 1) c->sent++;
      }
      c->next_ns = t + 100000000;
    }
  }
  for (int i = 0; i < hostile_n; i++) close(hc[i].fd);
  close(ep);
  return NULL;
}

/* ---- the kubelet side */

struct failure {
  int probe;
  int64_t us;
  char what[64];
};

/* One probe: the status code, or -1 with *what set. */
static int probe_once(int64_t *us, char *what, size_t what_size) {
  const int64_t t0 = now_ns(), deadline = t0 + timeout_ms * 1000000;
  int fd = open_conn(probe_src, 1);
  if (fd < 0) {
    snprintf(what, what_size, "socket/connect: %s", strerror(errno));
    *us = (now_ns() - t0) / 1000;
    return -1;
  }
  char req[256];
  int len = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: kube-probe/1.29\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n",
                     path, host, port);
  int sent = 0, status = -1;
  char resp[8192];
  size_t got = 0;
  const char *stage = "connect";
  for (;;) {
    int64_t left = deadline - now_ns();
    if (left <= 0) {
      snprintf(what, what_size, "timeout in %s", stage);
      break;
    }
    struct pollfd p = {fd, (short)(sent < len ? POLLOUT : POLLIN), 0};
    int r = poll(&p, 1, (int)((left + 999999) / 1000000));
    if (r <= 0) continue;
    if (sent < len) {
      ssize_t w = write(fd, req + sent, (size_t)(len - sent));
      if (w < 0 && errno != EAGAIN) {
        snprintf(what, what_size, "write: %s", strerror(errno));
        break;
      }
      if (w > 0) sent += (int)w;
      stage = "response";
      continue;
    }
    ssize_t rd = read(fd, resp + got, sizeof resp - 1 - got);
    if (rd > 0) {
      got += (size_t)rd;
      if (got < sizeof resp - 1) continue;
    } else if (rd < 0 && errno == EAGAIN) {
      continue;
    } else if (rd < 0) {
      snprintf(what, what_size, "read: %s", strerror(errno));
      break;
    }
    resp[got] = '\0';
    if (got > 12 && strncmp(resp, "HTTP/1.1 ", 9) == 0) {
      status = atoi(resp + 9);
    } else {
      snprintf(what, what_size, "no status line (%zu bytes)", got);
    }
    break;
  }
  close(fd);
  *us = (now_ns() - t0) / 1000;
  return status;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_ms(const int64_t *v, int n, double p) {
  if (n == 0) return -1;
  int i = (int)((double)n * p / 100);
  if (i >= n) i = n - 1;
  return (double)v[i] / 1000.0;
}

int main(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--port")) port = atoi(v);
    else if (!strcmp(k, "--host")) host = v;
    else if (!strcmp(k, "--path")) path = v;
    else if (!strcmp(k, "--probe-src")) probe_src = v;
    else if (!strcmp(k, "--hostile")) hostile_n = atoi(v);
    else if (!strcmp(k, "--hostile-peers")) hostile_peers = atoi(v);
    else if (!strcmp(k, "--probes")) probes = atoi(v);
    else if (!strcmp(k, "--rate")) rate = atof(v);
    else if (!strcmp(k, "--timeout-ms")) timeout_ms = atoll(v);
    else if (!strcmp(k, "--warmup-ms")) warmup_ms = atoll(v);
    else {
      fprintf(stderr, "flood: unknown option %s\n", k);
      return 2;
    }
  }
  if (port <= 0 || hostile_n < 0 || hostile_n > MAX_HOSTILE || hostile_peers < 1 ||
      hostile_peers > 200 || rate <= 0) {
    fprintf(stderr, "usage: flood --port P [--hostile N<=%d] [--hostile-peers 1..200] "
                    "[--probes N] [--rate R] ...\n", MAX_HOSTILE);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  pthread_t flood;
  if (hostile_n > 0) pthread_create(&flood, NULL, hostile_main, NULL);
  usleep((useconds_t)(warmup_ms * 1000));

  int64_t *lat = calloc((size_t)probes + 1, sizeof *lat);
  struct failure fails[10];
  int nlat = 0, nfail = 0, codes[600] = {0};
  const int64_t start = now_ns();
  for (int i = 0; i < probes; i++) {
    const int64_t due = start + (int64_t)((double)i * 1e9 / rate);
    const int64_t wait = due - now_ns();
    if (wait > 0) {
      struct timespec ts = {(time_t)(wait / 1000000000), (long)(wait % 1000000000)};
      nanosleep(&ts, NULL);
    }
    int64_t us;
    char what[64] = "";
    const int status = probe_once(&us, what, sizeof what);
    if (status < 0) {
      if (nfail < 10) {
        fails[nfail].probe = i;
        fails[nfail].us = us;
        snprintf(fails[nfail].what, sizeof fails[nfail].what, "%s", what);
      }
      nfail++;
    } else {
      lat[nlat++] = us;
      if (status < 600) codes[status]++;
    }
  }
  const double secs = (double)(now_ns() - start) / 1e9;
  stop_flood = 1;
  if (hostile_n > 0) pthread_join(flood, NULL);

  qsort(lat, (size_t)nlat, sizeof *lat, cmp64);
  printf("{\"probes\":%d,\"failures\":%d,\"failure_samples\":[", probes, nfail);
  for (int i = 0; i < nfail && i < 10; i++) {
    printf("%s{\"probe\":%d,\"ms\":%.1f,\"error\":\"%s\"}", i ? "," : "", fails[i].probe,
           (double)fails[i].us / 1000.0, fails[i].what);
  }
  printf("],\"codes\":{");
  int first = 1;
  for (int c = 0; c < 600; c++) {
    if (codes[c]) {
      printf("%s\"%d\":%d", first ? "" : ",", c, codes[c]);
      first = 0;
    }
  }
  printf("},\"seconds\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,", secs,
         pct_ms(lat, nlat, 50), pct_ms(lat, nlat, 99), nlat ? (double)lat[nlat - 1] / 1000.0 : -1.0);
  printf("\"hostile\":{\"connections\":%d,\"peers\":%d,\"connects\":%lld,\"connect_errors\":%lld}}\n",
         hostile_n, hostile_peers, (long long)hostile_connects, (long long)hostile_errors);
  free(lat);
  return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * control_server: the smallest HTTP responder there is (one thread, epoll,
 * a canned "200 ok" to every request head), on 127.0.0.1 and a free port,
 * which it prints on stdout. The probe benchmark sends it the same paced load
 * as the sidecar: what this server's tail latency shows is the machine's
 * (scheduler, virtualisation), not the sidecar's. Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
  int one = 1;
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 128) != 0 ||
      getsockname(s, (struct sockaddr *)&a, &len) != 0) {
    perror("control_server");
    return 1;
  }
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
  epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
  static const char reply[] =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
      "\r\nok: 1 loops, 1 live\n";
  char buf[8192];
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == s) {
        int c = accept4(s, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        continue;
      }
      ssize_t k = recv(fd, buf, sizeof buf, 0);
      if (k <= 0) {
        close(fd);
        continue;
      }
      /* Requests are one small head per segment on loopback. */
      if (memmem(buf, (size_t)k, "\r\n\r\n", 4)) {
        (void)!send(fd, reply, sizeof reply - 1, MSG_NOSIGNAL);
      }
    }
  }
}

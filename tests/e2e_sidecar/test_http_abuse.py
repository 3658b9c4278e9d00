# SPDX-License-Identifier: Apache-2.0
"""Malformed, oversized and slow HTTP against the real binary: clear 4xx
answers, the server keeps serving, and /livez stays within its budget while
64 slowloris clients hold connections open."""

import selectors
import socket
import threading
import time

from sidecar_harness import LOCALHOST, now, raw_request, status_of

SLOWLORIS_CLIENTS = 64
LIVEZ_SAMPLES = 300
P99_BUDGET = 0.050
MAX_BUDGET = 0.250


def assert_serving(sc):
    r = sc.livez()
    assert r.status == 200 and r.body.startswith("ok"), r
    assert sc.get("/healthz").status == 200


def test_malformed_and_oversized_requests(world):
    sc = world.sidecar()
    port, admin = sc.port, sc.admin_port

    for bad in (b"GARBAGE\r\n\r\n",
                b"GET\r\n\r\n",
                b"GET /livez HTTP/9.9\r\n\r\n",
                b"\x00\x01\x02\x03\xff\xfe\r\n\r\n"):
        raw = raw_request(port, bad, timeout=3)
        assert status_of(raw) == 400, (bad, raw[:200])
        assert_serving(sc)
    # A header line without a colon: httplib skips it (lenient, allowed by
    # RFC 9112 section 5 only as "reject or ignore"); either way, no harm.
    raw = raw_request(port, b"GET /livez HTTP/1.1\r\nNo colon here\r\n"
                            b"Connection: close\r\n\r\n", timeout=3)
    assert status_of(raw) in (200, 400), raw[:200]
    assert_serving(sc)

    # 64 KiB of headers: refused before it is all read.
    big = (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    raw = raw_request(port, big, timeout=3)
    code = status_of(raw)
    assert code is not None and 400 <= code < 500, raw[:200]
    assert code == 431, raw[:200]
    assert_serving(sc)

    # A 64 KiB request line.
    raw = raw_request(port, b"GET /" + b"x" * 65536 + b" HTTP/1.1\r\n\r\n", timeout=3)
    assert status_of(raw) == 414, raw[:200]
    assert_serving(sc)

    # An oversized body to the admin port: refused by its Content-Length.
    raw = raw_request(admin, b"POST /hold?for=1s HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 10000000\r\n\r\n" + b"z" * 65536, timeout=3)
    assert status_of(raw) == 413, raw[:200]
    r = sc.admin("/hold")
    assert r.status == 200 and r.json()["active"] is False, r  # no hold was set
    raw = raw_request(admin, b"POST /hold?for=1s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"10000000\r\n" + b"z" * 65536, timeout=3)
    assert status_of(raw) in (411, 413), raw[:200]
    assert sc.admin("/hold").json()["active"] is False

    # Unknown paths and methods.
    assert sc.get("/nope").status == 404
    assert sc.admin("/nope").status == 404
    assert sc.get("/livez", method="DELETE").status in (404, 405)

    # The admin endpoints are not on the public port.
    for path in ("/debug/stalls", "/debug/loops", "/hold"):
        r = sc.get(path)
        assert r.status == 404, (path, r)
        assert sc.admin(path).status == 200, path
    assert sc.get("/hold?for=1h", method="POST").status in (404, 405)
    assert sc.admin("/hold").json()["active"] is False
    # And the probes are not on the admin port.
    assert sc.admin("/livez").status == 404

    assert_serving(sc)
    assert sc.alive()


def test_invalid_content_length_is_400(world):
    """RFC 9112 section 6.3: a request with an invalid Content-Length has
    invalid framing; the server MUST answer 400 and close."""
    sc = world.sidecar()
    for port, head in ((sc.port, b"GET /livez HTTP/1.1\r\n"),
                       (sc.admin_port, b"POST /hold?for=1s HTTP/1.1\r\n")):
        for value in (b"-5", b"abc", b"1x"):
            raw = raw_request(port, head + b"Content-Length: " + value + b"\r\n\r\n", timeout=3)
            assert status_of(raw) == 400, (port == sc.port and "public" or "admin", value, raw[:300])
            assert b"Connection: close" in raw, raw[:300]
    assert sc.admin("/hold").json()["active"] is False
    assert_serving(sc)


class Slowloris:
    """N connections that each send a request head one byte at a time and
    never finish it; reopened when the server closes them. One thread and a
    selector, so the measuring thread is not starved of the GIL."""

    HEAD = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"

    def __init__(self, port, n, byte_every=0.2):
        self.port, self.n, self.byte_every = port, n, byte_every
        self.opened = 0
        self.closed_by_server = 0
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def connect(self):
        s = socket.create_connection((LOCALHOST, self.port), timeout=2)
        s.setblocking(False)
        self.opened += 1
        return [s, 0]

    def run(self):
        sel = selectors.DefaultSelector()
        conns = []
        try:
            for _ in range(self.n):
                c = self.connect()
                conns.append(c)
                sel.register(c[0], selectors.EVENT_READ, c)
            while not self.stop.is_set():
                for c in list(conns):
                    s, pos = c
                    data = self.HEAD[pos:pos + 1] if pos < len(self.HEAD) else b"X"
                    try:
                        s.send(data)
                        c[1] = pos + 1
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        self.replace(sel, conns, c)
                deadline = time.monotonic() + self.byte_every
                while not self.stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    for key, _ in sel.select(left):
                        c = key.data
                        try:
                            b = c[0].recv(4096)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            b = b""
                        if not b:  # the server gave up on it: come back
                            self.closed_by_server += 1
                            self.replace(sel, conns, c)
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            for s, _ in conns:
                s.close()

    def replace(self, sel, conns, c):
        try:
            sel.unregister(c[0])
        except (KeyError, ValueError):
            pass
        c[0].close()
        conns.remove(c)
        n = self.connect()
        conns.append(n)
        sel.register(n[0], selectors.EVENT_READ, n)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def test_slowloris_does_not_delay_livez(world, measure):
    sc = world.sidecar()
    assert_serving(sc)
    with Slowloris(sc.port, SLOWLORIS_CLIENTS) as slow:
        time.sleep(1.0)  # all connected and dribbling
        assert slow.error is None, slow.error
        assert slow.opened >= SLOWLORIS_CLIENTS
        lat = []
        codes = set()
        t_end = now() + 6.0
        while len(lat) < LIVEZ_SAMPLES and now() < t_end:
            r = sc.livez()
            lat.append(r.elapsed)
            codes.add(r.status)
            time.sleep(0.01)
        assert slow.error is None, slow.error
        # The slow clients are still there (served or not, they held on).
        assert slow.thread.is_alive()
    lat.sort()
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    measure("slowloris: /livez samples", len(lat))
    measure("slowloris: /livez p50", p50 * 1e3, "ms")
    measure("slowloris: /livez p99", p99 * 1e3, "ms")
    measure("slowloris: /livez max", lat[-1] * 1e3, "ms")
    measure("slowloris: connections opened", slow.opened)
    measure("slowloris: closed by the server", slow.closed_by_server)
    assert codes == {200}, codes
    assert len(lat) >= 200, len(lat)
    assert p99 < P99_BUDGET, "p99 %.1f ms" % (p99 * 1e3)
    assert lat[-1] < MAX_BUDGET, "max %.1f ms" % (lat[-1] * 1e3)
    assert_serving(sc)
    assert sc.admin("/debug/loops").status == 200

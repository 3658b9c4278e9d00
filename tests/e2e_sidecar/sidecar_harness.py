# SPDX-License-Identifier: Apache-2.0
"""Helpers of the end-to-end tests: the real `loopwatch run` binary, the real
asio example app, plain HTTP on 127.0.0.1, and polling with deadlines.

Standard library only (pytest is the one dependency of the suite)."""

import http.client as httpclient
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

LOCALHOST = "127.0.0.1"

# The sidecar's settings in these tests (Sidecar.start's defaults): short
# enough for a quick suite, long enough to tell a stall from CI noise.
STALL_AFTER = 2.0     # seconds; --stall-after
POLL_INTERVAL = 0.1   # seconds; --poll-interval
# The app beats every 100 ms: its last beat may precede a request by that.
BEAT_INTERVAL = 0.1
# Slack for CI noise on top of a bound the design promises to within 10 ms
# (the benchmarks measure the real figure on a quiet machine).
MARGIN = 0.5


def seconds(x):
    return "%dms" % round(x * 1000)


def now():
    return time.monotonic()


# ----------------------------------------------------------------- HTTP


class Response:
    def __init__(self, status, body, headers, started, elapsed):
        self.status = status
        self.body = body
        self.headers = headers
        self.started = started  # time.monotonic() when the request was sent
        self.elapsed = elapsed  # seconds, connect to last byte

    @property
    def ended(self):
        return self.started + self.elapsed

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %r (%.1f ms)>" % (self.status, self.body[:300], self.elapsed * 1e3)


def http(port, path, method="GET", body=None, headers=None, timeout=5.0):
    """One request on a new connection; returns a Response."""
    t0 = now()
    conn = httpclient.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, data.decode("utf-8", "replace"),
                        {k.lower(): v for k, v in r.getheaders()}, t0, now() - t0)
    finally:
        conn.close()


def raw_request(port, data, timeout=5.0, chunk=65536):
    """Sends raw bytes on a new connection and returns everything the server
    answers until it closes (or the timeout). A reset after the answer is
    fine: the server may close with our unread bytes in its buffer."""
    s = socket.create_connection((LOCALHOST, port), timeout=timeout)
    out = b""
    try:
        try:
            for i in range(0, len(data), chunk):
                s.sendall(data[i:i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished: read what it said
        deadline = now() + timeout
        while now() < deadline:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                break
            if not b:
                break
            out += b
    finally:
        s.close()
    return out


def status_of(raw):
    """Status code of a raw HTTP response, or None."""
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    return int(m.group(1)) if m else None


def parse_metrics(text):
    """Prometheus text format -> {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            raise AssertionError("bad metrics line: %r" % line)
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(metrics, name, **labels):
    """The value of one series; labels not given may be anything, but
    exactly one series must match."""
    found = [v for (n, ls), v in metrics.items()
             if n == name and all(dict(ls).get(k) == str(v2) for k, v2 in labels.items())]
    if len(found) != 1:
        raise AssertionError("%d series match %s%r" % (len(found), name, labels))
    return found[0]


def wait_for(what, fn, timeout, interval=0.02):
    """Calls fn() until it returns something truthy; returns that value.
    Fails with `what` after `timeout` seconds (the last value is shown)."""
    deadline = now() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if now() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (timeout, what, last))
        time.sleep(interval)


def clean_env(extra=None):
    """The environment without any LOOPWATCH_* setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWATCH_")}
    env.update(extra or {})
    return env


# ----------------------------------------------------------------- processes


class Proc:
    """A child process whose teardown is guaranteed by the fixture."""

    def __init__(self):
        self.proc = None
        self.expect_exit = False  # set when the test itself ends it

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self.expect_exit = True
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def teardown(self):
        """Kills whatever is left (continuing a stopped process first)."""
        if not self.alive():
            return
        self.expect_exit = True
        try:
            self.proc.send_signal(signal.SIGCONT)
        except ProcessLookupError:
            pass
        self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Burner(Proc):
    """A process that burns one CPU (for CPU contention), pinned to `cpus`."""

    def __init__(self, cpus):
        super().__init__()
        self.proc = subprocess.Popen(
            ["sh", "-c", "while :; do :; done"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus))


class Sidecar(Proc):
    """`loopwatch run` on ports chosen by the kernel (read back from its
    "loopwatch started" log line), logging JSON to a file per start."""

    def __init__(self, binary, workdir, segment, name="sidecar"):
        super().__init__()
        self.binary = binary
        self.workdir = workdir
        self.segment = segment
        self.name = name
        self.starts = 0
        self.port = None
        self.admin_port = None
        self.log_path = None
        self.cmd = None

    def command(self, *extra, stall_after=None, poll_interval=None):
        stall_after = stall_after or seconds(STALL_AFTER)
        poll_interval = poll_interval or seconds(POLL_INTERVAL)
        return [self.binary, "run", "--segment", str(self.segment),
                "--listen", LOCALHOST + ":0", "--admin-listen", LOCALHOST + ":0",
                "--stall-after", stall_after, "--poll-interval", poll_interval,
                "--log-format", "json", *extra]

    def start(self, *extra, stall_after=None, poll_interval=None, timeout=15, env=None):
        """env: variables added to the sidecar's (clean) environment."""
        assert not self.alive(), "already running"
        self.starts += 1
        self.expect_exit = False
        self.log_path = self.workdir / ("%s-%d.log" % (self.name, self.starts))
        self.cmd = self.command(*extra, stall_after=stall_after, poll_interval=poll_interval)
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, env=clean_env(env))
        self.started_at = now()
        line = self.wait_log("loopwatch started", timeout=timeout)
        self.port = line["port"]
        self.admin_port = line["admin_port"]
        assert self.port > 0 and self.admin_port > 0, line
        return self

    def restart(self, *extra, **kw):
        self.stop()
        return self.start(*extra, **kw)

    def stop(self, timeout=5):
        """SIGTERM; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        self.signal(signal.SIGKILL)
        return self.wait(10)

    # ---- logs

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lines(self):
        """Every JSON log line so far (other lines, e.g. a sanitizer's, come
        back as {"raw": text})."""
        out = []
        for text in self.log_text().splitlines():
            try:
                obj = json.loads(text)
                out.append(obj if isinstance(obj, dict) else {"raw": text})
            except ValueError:
                out.append({"raw": text})
        return out

    def logged(self, msg, **fields):
        """Log lines whose msg starts with `msg` and that have these fields."""
        return [l for l in self.lines()
                if str(l.get("msg", "")).startswith(msg)
                and all(l.get(k) == v for k, v in fields.items())]

    def wait_log(self, msg, timeout, count=1, **fields):
        """Waits for `count` lines matching logged(); returns the last."""
        def check():
            found = self.logged(msg, **fields)
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError("sidecar exited (%s) while waiting for %r; log:\n%s"
                                     % (self.proc.returncode, msg, self.log_text()))
            return None
        return wait_for("log line %r %r" % (msg, fields), check, timeout)

    # ---- HTTP

    def get(self, path, **kw):
        return http(self.port, path, **kw)

    def admin(self, path, method="GET", **kw):
        return http(self.admin_port, path, method=method, **kw)

    def livez(self):
        return self.get("/livez")

    def loops(self):
        r = self.admin("/debug/loops")
        assert r.status == 200, r
        return r.json()

    def loop(self, pid):
        """The /debug/loops entry of the loop of this pid (None if absent)."""
        found = [l for l in self.loops()["loops"] if l["pid"] == pid]
        assert len(found) <= 1, found
        return found[0] if found else None

    def metrics(self):
        r = self.get("/metrics")
        assert r.status == 200, r
        return parse_metrics(r.body)

    def wait_loop_state(self, pid, state, timeout):
        def check():
            l = self.loop(pid)
            return l if l and l["state"] == state else None
        return wait_for("loop of pid %d %s" % (pid, state), check, timeout)

    def wait_livez(self, status, timeout, interval=0.01):
        """Polls /livez until it answers `status`; returns that Response."""
        return wait_for("/livez %d" % status,
                        lambda: (lambda r: r if r.status == status else None)(self.livez()),
                        timeout, interval)


class AsyncRequest:
    """A request in a thread: /sleep and friends do not answer until the
    loop is free again. `sent_at` is when the request left (monotonic)."""

    def __init__(self, port, path, timeout):
        self.port, self.path, self.timeout = port, path, timeout
        self.sent_at = None
        self.response = None
        self.error = None
        self._sent = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._sent.wait(10) or self.sent_at is None:
            raise AssertionError("could not send %s: %r" % (path, self.error))

    def _run(self):
        try:
            conn = httpclient.HTTPConnection(LOCALHOST, self.port, timeout=self.timeout)
            conn.connect()
            self.sent_at = now()
            conn.request("GET", self.path)
            self._sent.set()
            r = conn.getresponse()
            body = r.read().decode("utf-8", "replace")
            self.response = Response(r.status, body, {}, self.sent_at, now() - self.sent_at)
            conn.close()
        except Exception as e:  # reported by result()
            self.error = e
        finally:
            self._sent.set()

    def result(self, timeout):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("%s still unanswered after %.1fs" % (self.path, timeout))
        if self.error:
            raise self.error
        return self.response


class App(Proc):
    """The asio example, instrumented with libloopwatch, on a free port."""

    def __init__(self, binary, workdir, segment, name="asio-main", label="app"):
        super().__init__()
        self.binary = binary
        self.workdir = workdir
        self.segment = segment
        self.name = name
        self.label = label
        self.port = None

    def start(self, timeout=15, cpus=None):
        """cpus: a set of CPUs to pin the app (all its threads) to."""
        out_path = self.workdir / ("%s-%s.out" % (self.label, id(self)))
        self.out_path = out_path
        with open(out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--port", "0", "--name", self.name],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=clean_env({"LOOPWATCH_SEGMENT": str(self.segment)}),
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

        def listening():
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", out_path.read_text(errors="replace"))
            if not m and self.proc.poll() is not None:
                raise AssertionError("app exited (%s): %s" % (self.proc.returncode,
                                                              out_path.read_text()))
            return m
        self.port = int(wait_for("the app to listen", listening, timeout).group(1))
        return self

    def get(self, path, **kw):
        return http(self.port, path, **kw)

    def request_async(self, path, timeout=60):
        return AsyncRequest(self.port, path, timeout)

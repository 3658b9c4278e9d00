# SPDX-License-Identifier: Apache-2.0
"""Helpers of the Python end-to-end tests: app servers (uvicorn, gunicorn)
under `python -m loopwatch.run`, on top of tests/e2e_sidecar/sidecar_harness.py (HTTP, polling,
the Sidecar process) and tests/e2e_sidecar/conftest.py's World (every process a test
starts is killed at teardown; the test fails if a sidecar crashed)."""

import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = pathlib.Path(os.environ.get("LOOPWATCH_SOURCE_DIR") or HERE.parents[1])
E2E_DIR = SOURCE_DIR / "tests" / "e2e_sidecar"
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))

import sidecar_harness  # noqa: E402

# tests/e2e_sidecar/conftest.py under another module name (ours is "conftest"): its
# World, its sidecar binary fixture, its measurements and their summary.
_spec = importlib.util.spec_from_file_location("lw_e2e_conftest", E2E_DIR / "conftest.py")
e2e_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e_conftest)
World = e2e_conftest.World

APPS_DIR = HERE / "apps"
APP_FILE = APPS_DIR / "stallapp.py"

# The sidecar's settings here: a short stall_after keeps the suite quick.
STALL_AFTER = 1.0     # --stall-after
POLL_INTERVAL = 0.1   # --poll-interval
BEAT_INTERVAL = 0.1   # the runner's default heartbeat interval
# How late anything may be on a slow, busy CI machine (2 cores, 3x slower).
MARGIN = 1.0

# Python of the apps: this one (ctest runs the suite with /usr/bin/python3,
# whose Debian packages are the fastapi, uvicorn and gunicorn tested here).
PYTHON = sys.executable


def line_of(tag, path=APP_FILE):
    """Line number of the "# LINE:<tag>" marker in an app file."""
    found = [i for i, text in enumerate(path.read_text().splitlines(), 1)
             if text.rstrip().endswith("# LINE:%s" % tag)]
    assert len(found) == 1, (tag, found)
    return found[0]


def stack_frames(text):
    """The frames of a report's stack, most recent first, as
    (file, line, function)."""
    return [(m.group(1), int(m.group(2)), m.group(3))
            for m in re.finditer(r'^  File "([^"]*)", line (\d+) in (\S+)$', text, re.M)]


def free_port():
    s = socket.socket()
    try:
        s.bind((sidecar_harness.LOCALHOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def command_path(name):
    """The console script of this Python's package (/usr/bin/uvicorn for
    /usr/bin/python3), so that `-- uvicorn ...` runs what users run."""
    found = shutil.which(name, path=os.path.dirname(os.path.realpath(PYTHON)))
    if found is None:
        found = shutil.which(name, path=os.path.dirname(PYTHON))
    return [found] if found else [PYTHON, "-m", name]


def pythonpath():
    """PYTHONPATH with absolute entries (the apps run in another directory)."""
    return os.pathsep.join(os.path.abspath(p)
                           for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)


def children_of(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return sorted(out)


class Server(sidecar_harness.Proc):
    """An app server under `python -m loopwatch.run`, in a process group of
    its own (uvicorn's and gunicorn's workers included), on a free port;
    stdout and stderr go to a log file. Teardown kills the whole group."""

    def __init__(self, workdir, segment, label):
        super().__init__()
        self.workdir = workdir
        self.segment = segment
        self.label = label
        self.port = None
        self.log_path = workdir / ("%s.log" % label)
        self.cmd = None

    def start(self, command, port, timeout=30, runner_args=(), env=None):
        self.port = port
        self.cmd = [PYTHON, "-m", "loopwatch.run", "--segment", str(self.segment),
                    *runner_args, "--", *command]
        env = sidecar_harness.clean_env({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": pythonpath(),
                                         **(env or {})})
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, env=env, cwd=str(APPS_DIR),
                                         start_new_session=True)
        self.started_at = sidecar_harness.now()

        def answering():
            if self.proc.poll() is not None:
                raise AssertionError("%s exited (%s) before answering; log:\n%s"
                                     % (self.label, self.proc.returncode, self.log_text()))
            try:
                r = self.get("/health", timeout=2)
            except OSError:
                return None
            return r if r.status == 200 else None
        sidecar_harness.wait_for("%s to answer /health (log: %s)" % (self.label, self.log_path),
                       answering, timeout, interval=0.05)
        return self

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def get(self, path, **kw):
        return sidecar_harness.http(self.port, path, **kw)

    def request_async(self, path, timeout=60):
        return sidecar_harness.AsyncRequest(self.port, path, timeout)

    def teardown(self):
        """SIGKILL to the whole group (the workers too), then reap."""
        if self.proc is None:
            return
        self.expect_exit = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class PyWorld(World):
    """World plus app servers under the runner."""

    def sidecar(self, *extra, **kw):
        kw.setdefault("stall_after", sidecar_harness.seconds(STALL_AFTER))
        kw.setdefault("poll_interval", sidecar_harness.seconds(POLL_INTERVAL))
        return super().sidecar(*extra, **kw)

    def _server(self, label):
        self._request.getfixturevalue("package_dir")
        s = Server(self.tmp, self.segment, "%s%d" % (label, len(self.procs)))
        self.procs.append(s)
        return s

    def uvicorn(self, *args, loop="asyncio", timeout=30, env=None):
        """`loopwatch.run -- uvicorn stallapp:app --loop LOOP ARGS...`"""
        port = free_port()
        cmd = [*command_path("uvicorn"), "stallapp:app", "--app-dir", str(APPS_DIR),
               "--host", sidecar_harness.LOCALHOST, "--port", str(port), "--loop", loop, *args]
        return self._server("uvicorn").start(cmd, port, timeout=timeout, env=env)

    def aiohttp(self, *runner_args, timeout=30):
        """`loopwatch.run RUNNER_ARGS -- python3 aioapp.py PORT` (aiohttp.web)."""
        port = free_port()
        cmd = [PYTHON, str(APPS_DIR / "aioapp.py"), str(port)]
        return self._server("aiohttp").start(cmd, port, timeout=timeout, runner_args=runner_args)

    def gunicorn(self, *args, workers=3, timeout=45):
        """`loopwatch.run -- gunicorn -k uvicorn.workers.UvicornWorker
        stallapp:app -w N ARGS...`; the arbiter's own --timeout is high, so
        that it never kills a worker the test blocks on purpose."""
        port = free_port()
        cmd = [*command_path("gunicorn"), "-k", "uvicorn.workers.UvicornWorker",
               "stallapp:app", "--chdir", str(APPS_DIR), "-b", "%s:%d" % (sidecar_harness.LOCALHOST, port),
               "-w", str(workers), "--timeout", "300", "--graceful-timeout", "1", *args]
        return self._server("gunicorn").start(cmd, port, timeout=timeout)


# ---------------------------------------------------------------- helpers


def wait_loops(sc, count, prefix, timeout=30, state="live"):
    """Waits until the sidecar lists `count` loops named prefix-<pid>, all in
    `state`; returns them sorted by pid."""
    def check():
        loops = [l for l in sc.loops()["loops"]
                 if re.fullmatch(re.escape(prefix) + r"-\d+", l["name"]) and l["state"] == state]
        return sorted(loops, key=lambda l: l["pid"]) if len(loops) == count else None
    return sidecar_harness.wait_for("%d %s loops named %s-<pid>" % (count, state, prefix), check, timeout)


def status_json(sidecar_bin, segment):
    """`loopwatch status --json` of the segment (read directly, no HTTP)."""
    r = subprocess.run([sidecar_bin, "status", "--segment", str(segment), "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10,
                       env=sidecar_harness.clean_env())
    assert r.returncode == 0, (r.returncode, r.stderr)
    return json.loads(r.stdout)


def last_stall_id(sc):
    """The highest stall_id the sidecar has logged so far (0: none)."""
    return max((l.get("stall_id", 0) for l in sc.lines()
                if l.get("msg") == "stall started"), default=0)


def new_lines(sc, msg, after, **fields):
    """Log lines with exactly this msg, these fields and a stall_id above
    `after` (stalls before a test's trigger, e.g. a slow start, are not its)."""
    return [l for l in sc.lines()
            if l.get("msg") == msg and l.get("stall_id", 0) > after
            and all(l.get(k) == v for k, v in fields.items())]


def wait_new(sc, msg, after, timeout, **fields):
    """Waits for the first line of new_lines(); returns it."""
    def check():
        found = new_lines(sc, msg, after, **fields)
        if found:
            return found[0]
        if sc.proc.poll() is not None:
            raise AssertionError("sidecar exited (%s) while waiting for %r; log:\n%s"
                                 % (sc.proc.returncode, msg, sc.log_text()))
        return None
    return sidecar_harness.wait_for("log line %r %r (stall_id > %d)" % (msg, fields, after), check, timeout)


def wait_detection(sc, sent_at, measure, path="/livez"):
    """Polls /livez from the moment the blocking request was sent until it
    answers 503; checks how long that took and returns that response. Every
    answer before it must be 200 (no other verdict in between)."""
    deadline = sent_at + STALL_AFTER + POLL_INTERVAL + MARGIN + 2.0  # fail late: show the value
    last_ok = None
    while sidecar_harness.now() < deadline:
        r = sc.get(path)
        if r.status == 503:
            latency = r.ended - sent_at
            measure("detection latency (upper bound)", latency * 1e3, "ms")
            assert latency <= STALL_AFTER + POLL_INTERVAL + MARGIN, \
                "/livez turned 503 only %.3fs after the request" % latency
            assert latency >= STALL_AFTER - BEAT_INTERVAL - 0.05, \
                "/livez turned 503 too early, %.3fs after the request: %r" % (latency, r)
            return r
        assert r.status == 200, r
        last_ok = r
        time.sleep(max(0.0, r.started + 0.02 - sidecar_harness.now()))
    raise AssertionError("/livez never turned 503 (last: %r)" % (last_ok,))


def metric_delta(before, after, name, **labels):
    """How much one series grew between two parse_metrics() results (a
    series absent before counts from 0)."""
    def value(m):
        found = [v for (n, ls), v in m.items()
                 if n == name and all(dict(ls).get(k) == str(v2) for k, v2 in labels.items())]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0
    return value(after) - value(before)


def report_requests(text):
    """The requests in flight of a report: [(method, path, age seconds)]."""
    m = re.search(r"^requests in flight: (\d+)$", text, re.M)
    assert m, text
    reqs = [(r.group(1), r.group(2), float(r.group(3)))
            for r in re.finditer(r"^  (\S+) (\S+) \((\d+\.\d{3}) s\)$", text, re.M)]
    assert int(m.group(1)) == len(reqs), text
    return reqs


def stalled_loop(sc, pid):
    """The loop's entry in /livez?format=json while it is stalled."""
    detail = sc.get("/livez?format=json").json()
    assert detail["code"] == 503, detail
    (loop,) = [l for l in detail["loops"] if l["pid"] == pid]
    assert loop["state"] == "stalled", loop
    return loop


def redacted(path):
    """`path` as the middleware records it by default: the value of every
    query parameter as REDACTED."""
    base, q, query = path.partition("?")
    if not q:
        return path
    return base + "?" + "&".join(k + ("=REDACTED" if v else "=" if e else "")
                                 for k, e, v in (p.partition("=") for p in query.split("&")))


def check_report(rep, name, pid, path, top):
    """The "stall report" log line of `name`: its loop, its one request in
    flight `path`, and its stack, which starts with the frames `top`
    ((file, line, function), most recent first)."""
    assert rep["loop"] == name and rep["pid"] == pid, rep
    text = rep["stack"]
    assert re.search(r"^task: Task-\d+ running RequestResponseCycle\.run_asgi "
                     r"\(\S+/uvicorn/protocols/http/(h11|httptools)_impl\.py:\d+\)$", text, re.M), text
    reqs = report_requests(text)
    assert [(m, p) for m, p, _ in reqs] == [("GET", redacted(path))], text
    # The request started after the loop's last beat, before the report.
    assert 0 < reqs[0][2] <= rep["silent_seconds"] + 0.05, (reqs, rep["silent_seconds"])
    assert "\nStack (most recent call first):\n" in text, text
    frames = stack_frames(text)
    assert frames[:len(top)] == top, text
    # The endpoint was called by FastAPI, under the runner's middleware.
    fns = [(f.rsplit("/", 2)[-2:], fn) for f, _, fn in frames]
    assert (["fastapi", "routing.py"], "run_endpoint_function") in fns, text
    assert (["loopwatch", "asgi.py"], "__call__") in fns, text
    return frames


def debug_stall(sc, stall_id):
    stalls = [s for s in sc.admin("/debug/stalls").json()["stalls"] if s["id"] == stall_id]
    assert len(stalls) == 1, stalls
    return stalls[0]

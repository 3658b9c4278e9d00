# SPDX-License-Identifier: Apache-2.0
"""Per-container probes, as `loopwatch inject` writes them: /livez?container=
NAME judges that container's loops only; until one of them has beaten, the
container's own probe (app_probes, kept by the injector) answers, so an app
that does not use the library is judged exactly as before it was injected.

Real parts: the sidecar, real HTTP and TCP servers standing for the app's
own health checks, and loops_app (libloopwatch) with LOOPWATCH_CONTAINER."""

import http.server as http_server
import json
import socket
import subprocess
import threading

import pytest

from sidecar_harness import LOCALHOST, clean_env, http, wait_for


class OwnCheck:
    """The app's own /health, whose answer the test sets."""

    def __init__(self):
        self.status = 200
        self.hits = 0
        owner = self

        class Handler(http_server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hits += 1
                owner.headers = dict(self.headers)
                body = b"app body that must not reach the probe port\n"
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http_server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def own():
    o = OwnCheck()
    yield o
    o.close()


def test_own_probes_answer_until_the_loops_beat(world, own, loops_app_bin):
    listening = socket.socket()
    listening.bind((LOCALHOST, 0))
    listening.listen(8)
    closed_port = free_port()
    probes = {
        "app": {
            "livenessProbe": {"httpGet": {"path": "/health", "port": own.port,
                                          "httpHeaders": [{"name": "X-Probe", "value": "k"}]},
                              "timeoutSeconds": 2},
            "readinessProbe": {"tcpSocket": {"port": listening.getsockname()[1]}},
            "startupProbe": {"tcpSocket": {"port": closed_port}},
        },
    }
    sc = world.sidecar("--app-probes", json.dumps(probes))
    try:
        r = http(sc.port, "/livez?container=app")
        assert r.status == 200, r.body
        assert r.body.startswith(
            "ok: container app's own livez probe (no loop of it has beaten yet): "
            "GET http://127.0.0.1:%d/health answered 200 in " % own.port), r.body
        assert "app body" not in r.body
        assert own.hits == 1 and own.headers.get("X-Probe") == "k"
        own.status = 500
        r = http(sc.port, "/livez?container=app")
        assert r.status == 503 and "answered 500" in r.body, r.body
        r = http(sc.port, "/readyz?container=app")
        assert r.status == 200 and "connected" in r.body, r.body
        r = http(sc.port, "/startupz?container=app")
        assert r.status == 503 and "Connection refused" in r.body, r.body
        # A container with no probe of its own passes until it beats.
        r = http(sc.port, "/livez?container=sidekick")
        assert r.status == 200, r.body
        assert "has no probe of its own" in r.body
        # Bad names are refused, not echoed.
        for q in ("App", "a%20b", "-x", "x" * 64):
            r = http(sc.port, "/livez?container=" + q)
            assert r.status == 400, (q, r.status, r.body)

        # The app's loop (in container app) beats: from now on the sidecar
        # judges app on its loops, whatever its own check says.
        out = world.tmp / "loops_app.out"
        with open(out, "wb") as f:
            app = subprocess.Popen(
                [loops_app_bin, "1", "100"], stdin=subprocess.DEVNULL, stdout=f,
                stderr=subprocess.STDOUT,
                env=clean_env({"LOOPWATCH_SEGMENT": str(world.segment),
                               "LOOPWATCH_CONTAINER": "app"}))
        try:
            wait_for("app judged on its loops",
                     lambda: http(sc.port, "/livez?container=app").body.startswith("ok: 1 loops"),
                     10)
            hits = own.hits
            for path in ("/livez", "/readyz", "/startupz"):
                r = http(sc.port, path + "?container=app&verbose=1")
                assert r.status == 200, (path, r.body)
                assert "container=app" in r.body and "own" not in r.body, r.body
            assert own.hits == hits  # not asked any more
            loops = json.loads(http(sc.admin_port, "/debug/loops").body)["loops"]
            assert [l.get("container") for l in loops] == ["app"], loops
            # The other container is still not judged on loops.
            assert "has no probe of its own" in http(sc.port, "/livez?container=sidekick").body
        finally:
            app.kill()
            app.wait()
    finally:
        listening.close()


def test_an_own_probe_that_hangs_is_cut_at_its_timeout(world):
    hanging = socket.socket()
    hanging.bind((LOCALHOST, 0))
    hanging.listen(1)  # accepts the connection, never answers
    probes = {"app": {"livenessProbe": {"httpGet": {"path": "/", "port": hanging.getsockname()[1]},
                                        "timeoutSeconds": 1}}}
    sc = world.sidecar("--app-probes", json.dumps(probes))
    try:
        r = http(sc.port, "/livez?container=app", timeout=10)
        assert r.status == 503, r.body
        assert 0.9 <= r.elapsed < 4, r.elapsed
        # Meanwhile the sidecar's own probes still answer at once.
        assert http(sc.port, "/healthz").status == 200
    finally:
        hanging.close()


@pytest.mark.parametrize("value, message", [
    ("not json", "app_probes: not a JSON object of containers"),
    ('{"App": {}}', 'app_probes: "App" is not a container name'),
    ('{"app": {"livenessProbe": {"exec": {"command": ["x"]}}}}',
     "app_probes: app.livenessProbe: neither httpGet nor tcpSocket"),
    ('{"app": {"livenessProbe": {"httpGet": {"port": "http"}}}}',
     "app_probes: app.livenessProbe: httpGet.port must be a port number"),
])
def test_bad_app_probes_stop_the_sidecar_at_start(world, value, message):
    sc = world.sidecar(start=False)
    r = subprocess.run(sc.command("--app-probes", value), capture_output=True, text=True,
                       timeout=10, env=clean_env())
    assert r.returncode == 2, r.stderr
    assert "--app-probes" in r.stderr and message in r.stderr, r.stderr

# SPDX-License-Identifier: Apache-2.0
"""A real app stalls its loop; the sidecar's /livez, logs and metrics say so,
and name the class and the syscall the app's watchdog saw."""

import json
import os
import time

from sidecar_harness import BEAT_INTERVAL, MARGIN, POLL_INTERVAL, STALL_AFTER, metric, now


def wait_detection(sidecar, sent_at, measure):
    """Polls /livez from the moment the blocking request was sent until it
    answers 503; checks the latency and returns that response."""
    deadline = sent_at + STALL_AFTER + POLL_INTERVAL + MARGIN + 2.0  # fail late, to show the value
    last_ok = None
    while now() < deadline:
        r = sidecar.livez()
        if r.status == 503:
            latency = r.ended - sent_at  # upper bound: the answer was in
            earliest = (last_ok.started if last_ok else sent_at) - sent_at
            measure("detection latency (upper bound)", latency * 1e3, "ms")
            measure("detection latency (lower bound)", earliest * 1e3, "ms")
            assert latency <= STALL_AFTER + POLL_INTERVAL + MARGIN, \
                "/livez turned 503 only %.3fs after the request" % latency
            assert latency >= STALL_AFTER - BEAT_INTERVAL - 0.05, \
                "/livez turned 503 too early, %.3fs after the request: %r" % (latency, r)
            return r
        assert r.status == 200, r
        last_ok = r
        time.sleep(max(0.0, r.started + 0.01 - now()))  # ~100 probes/s
    raise AssertionError("/livez never turned 503 (last: %r)" % (last_ok,))


def test_blocked_sleep(world, measure):
    sc = world.sidecar()
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)
    assert sc.livez().status == 200

    req = app.request_async("/sleep?ms=5000")
    r = wait_detection(sc, req.sent_at, measure)
    assert "blocked in clock_nanosleep" in r.body, r
    assert "asio-main" in r.body, r

    detail = sc.get("/livez?format=json").json()
    assert detail["code"] == 503
    (loop,) = [l for l in detail["loops"] if l["pid"] == app.pid]
    assert loop["state"] == "stalled"
    assert loop["stall"]["class"] == "blocked"
    assert loop["stall"]["syscall"] == "clock_nanosleep"

    # The app recovers by itself after 5 s.
    done = req.result(timeout=10)
    assert done.status == 200, done
    ended = sc.wait_log("stall ended", timeout=3, pid=app.pid)
    measure("stall ended duration", ended["duration_seconds"], "s")
    assert 4.8 <= ended["duration_seconds"] <= 5.0 + 2 * BEAT_INTERVAL + MARGIN, ended
    back = sc.wait_livez(200, timeout=2)
    measure("recovery: /livez 200 after the response", (back.ended - done.ended) * 1e3, "ms")

    started = sc.logged("stall started")
    reports = sc.logged("stall report")
    assert len(started) == 1, started
    assert len(reports) == 1, reports
    assert len(sc.logged("stall ended")) == 1
    assert started[0]["pid"] == app.pid and started[0]["class"] == "blocked", started
    rep = reports[0]
    assert rep["class"] == "blocked", rep
    assert rep["syscall"] == "clock_nanosleep", rep
    assert rep["activity"] == "GET /sleep", rep
    assert rep["loop"] == "asio-main" and rep["pid"] == app.pid, rep
    assert ended["stall_id"] == started[0]["stall_id"] == rep["stall_id"]

    m = sc.metrics()
    assert metric(m, "loopwatch_stalls_total", **{"class": "blocked"}) == 1
    assert metric(m, "loopwatch_stalls_total", **{"class": "cpu"}) == 0
    assert metric(m, "loopwatch_stall_duration_seconds_count", **{"class": "blocked"}) == 1
    total = metric(m, "loopwatch_stall_duration_seconds_sum", **{"class": "blocked"})
    assert 4.8 <= total <= 5.8, total
    assert metric(m, "loopwatch_stall_duration_seconds_bucket",
                  **{"class": "blocked", "le": "2.5"}) == 0
    assert metric(m, "loopwatch_stall_duration_seconds_bucket",
                  **{"class": "blocked", "le": "10"}) == 1

    stalls = sc.admin("/debug/stalls").json()["stalls"]
    assert len(stalls) == 1 and stalls[0]["summary"] == "blocked in clock_nanosleep", stalls


def stall_report(sc, app, path, measure):
    req = app.request_async(path)
    r = wait_detection(sc, req.sent_at, measure)
    rep = sc.wait_log("stall report", timeout=2, pid=app.pid)
    return r, rep


def test_cpu_spin(world, measure):
    sc = world.sidecar()
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)

    r, rep = stall_report(sc, app, "/spin?ms=4000", measure)
    assert "cpu-bound" in r.body, r
    assert rep["class"] == "cpu", rep
    assert rep["activity"] == "GET /spin", rep
    measure("loop cpu seconds in the report", rep["loop_cpu_seconds"], "s")
    assert rep["loop_cpu_seconds"] >= 1.0, rep  # it really burned CPU
    assert len(sc.logged("stall started")) == 1
    assert metric(sc.metrics(), "loopwatch_stalls_total", **{"class": "cpu"}) == 1


def test_cpu_spin_under_cpu_contention(world, measure):
    """A CPU-bound loop that gets only part of a core (CPU limits in a pod,
    noisy neighbours) is still a `cpu` stall: its thread is runnable in
    user space, not blocked in a syscall. Here the app shares one CPU with
    two busy processes, so the loop thread gets about a third of it."""
    cpu = max(os.sched_getaffinity(0))
    sc = world.sidecar()
    app = world.app(cpus={cpu})
    sc.wait_loop_state(app.pid, "live", timeout=5)
    world.burner({cpu})
    world.burner({cpu})

    req = app.request_async("/spin?ms=4000")
    r = sc.wait_livez(503, timeout=STALL_AFTER + 3)
    measure("detection under contention", (r.ended - req.sent_at) * 1e3, "ms")
    rep = sc.wait_log("stall report", timeout=2, pid=app.pid)
    measure("loop cpu seconds under contention", rep["loop_cpu_seconds"], "s")
    measure("silent seconds at the report", rep["silent_seconds"], "s")
    assert rep["class"] == "cpu", "report: %s" % json.dumps(rep)
    assert rep["syscall"] == "", rep
    assert "cpu-bound" in sc.livez().body


def test_blocked_read(world, measure):
    sc = world.sidecar()
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)

    r, rep = stall_report(sc, app, "/read?ms=4000", measure)
    assert "blocked in read" in r.body, r
    assert rep["class"] == "blocked", rep
    assert rep["syscall"] == "read", rep
    assert rep["activity"] == "GET /read", rep
    assert rep["loop_cpu_seconds"] < 0.5, rep
    assert metric(sc.metrics(), "loopwatch_stalls_total", **{"class": "blocked"}) == 1

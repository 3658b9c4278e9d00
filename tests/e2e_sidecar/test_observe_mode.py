# SPDX-License-Identifier: Apache-2.0
"""Observe mode: the probes always pass (for a safe roll-out), but stalls
are still detected, logged and counted."""

from sidecar_harness import STALL_AFTER, metric, now



def test_observe_mode_logs_and_counts_but_passes(world, measure):
    sc = world.sidecar("--mode", "observe")
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)

    req = app.request_async("/sleep?ms=4000")
    started = sc.wait_log("stall started", timeout=STALL_AFTER + 1.5, pid=app.pid)
    measure("stall logged after (observe)", now() - req.sent_at, "s")
    assert started["class"] == "blocked", started
    for path in ("/livez", "/readyz"):
        r = sc.get(path)
        assert r.status == 200, (path, r)
        assert "observe mode" in r.body and "would fail" in r.body, (path, r)
    assert "clock_nanosleep" in sc.livez().body
    assert sc.loop(app.pid)["state"] == "stalled"
    detail = sc.get("/livez?format=json").json()
    assert detail["mode"] == "observe" and detail["verdict"] == "fail", detail
    assert metric(sc.metrics(), "loopwatch_stalls_total", **{"class": "blocked"}) == 1
    rep = sc.wait_log("stall report", timeout=1, pid=app.pid)
    assert rep["syscall"] == "clock_nanosleep", rep

    assert req.result(timeout=5).status == 200
    ended = sc.wait_log("stall ended", timeout=2, pid=app.pid)
    assert 3.8 <= ended["duration_seconds"] <= 4.8, ended
    m = sc.metrics()
    assert metric(m, "loopwatch_stall_duration_seconds_count", **{"class": "blocked"}) == 1
    ok = sc.livez()
    assert ok.status == 200 and "would fail" not in ok.body, ok

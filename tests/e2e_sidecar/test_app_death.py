# SPDX-License-Identifier: Apache-2.0
"""SIGKILL of the app: its loop is dead (not stalled); liveness fails only if
nothing replaces it within stall_after; a new app takes over."""

import signal

from sidecar_harness import MARGIN, POLL_INTERVAL, STALL_AFTER, metric, now, wait_for



def test_sigkill_gives_dead_then_replacement(world, measure):
    sc = world.sidecar()
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)
    old_pid = app.pid

    app.signal(signal.SIGKILL)
    killed_at = now()
    app.wait(5)
    dead = sc.wait_loop_state(old_pid, "dead", timeout=POLL_INTERVAL + MARGIN)
    measure("dead seen in /debug/loops after SIGKILL", (now() - killed_at) * 1e3, "ms")
    assert dead["failing_liveness"] is False, dead  # not yet: it may be replaced
    died = sc.wait_log("loop died", timeout=1, pid=old_pid)
    assert died["loop"] == "asio-main", died

    # Not replaced: /livez fails once stall_after has passed since the death.
    early = sc.livez()
    if now() - killed_at < STALL_AFTER - POLL_INTERVAL - 0.1:
        assert early.status == 200, early
    r = sc.wait_livez(503, timeout=STALL_AFTER + POLL_INTERVAL + MARGIN + 1)
    latency = r.ended - killed_at
    measure("/livez 503 after SIGKILL", latency * 1e3, "ms")
    assert STALL_AFTER - 0.2 <= latency <= STALL_AFTER + POLL_INTERVAL + MARGIN, latency
    assert "dead" in r.body and str(old_pid) in r.body, r
    assert sc.loop(old_pid)["state"] == "dead"
    assert metric(sc.metrics(), "loopwatch_loop_deaths_total") == 1

    # A replacement gets a slot and liveness passes again.
    new = world.app()
    started_at = now()
    fresh = sc.wait_loop_state(new.pid, "live", timeout=3)
    measure("slots: dead loop -> replacement", "%s -> %s" % (dead["slot"], fresh["slot"]))
    ok = sc.wait_livez(200, timeout=2)
    measure("/livez 200 after the replacement started", (ok.ended - started_at) * 1e3, "ms")
    assert "dead" not in ok.body, ok
    loops = sc.loops()["loops"]
    for l in loops:
        assert l["failing_liveness"] is False, l
    old = [l for l in loops if l["pid"] == old_pid]
    assert all(l["state"] in ("dead", "gone") for l in old), old
    assert sc.loops()["verdicts"]["livez"]["ok"] is True
    # Still 200 a while later: the dead loop no longer counts.
    poll = sc.loops()["poll"]
    wait_for("3 more polls", lambda: sc.loops()["poll"] >= poll + 3, 2)
    assert sc.livez().status == 200
    assert len(sc.logged("loop died")) == 1

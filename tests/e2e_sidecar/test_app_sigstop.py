# SPDX-License-Identifier: Apache-2.0
"""SIGSTOP of the whole app (its watchdog thread too): a stall, not a
death; SIGCONT ends it."""

import signal

from sidecar_harness import MARGIN, POLL_INTERVAL, STALL_AFTER, now



def test_sigstop_is_a_stall_not_a_death(world, measure):
    sc = world.sidecar()
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)

    app.signal(signal.SIGSTOP)
    stopped_at = now()
    r = sc.wait_livez(503, timeout=STALL_AFTER + POLL_INTERVAL + MARGIN + 1)
    latency = r.ended - stopped_at
    measure("/livez 503 after SIGSTOP", latency * 1e3, "ms")
    assert STALL_AFTER - 0.2 <= latency <= STALL_AFTER + POLL_INTERVAL + MARGIN, latency
    assert "stalled" in r.body and "dead" not in r.body, r

    loop = sc.loop(app.pid)
    assert loop["state"] == "stalled", loop
    assert loop["stall"] is not None and loop["stall"]["class"] != "host", loop
    # Counted and logged once it is clear no report will come (the watchdog
    # is stopped too): stall_after + 5 polls.
    started = sc.wait_log("stall started", timeout=2, pid=app.pid)
    measure("stall class while SIGSTOPped", started["class"])
    assert not sc.logged("loop died")

    app.signal(signal.SIGCONT)
    cont_at = now()
    ok = sc.wait_livez(200, timeout=1.5)
    measure("/livez 200 after SIGCONT", (ok.ended - cont_at) * 1e3, "ms")
    ended = sc.wait_log("stall ended", timeout=1, pid=app.pid)
    assert ended["duration_seconds"] >= STALL_AFTER + 0.4, ended
    assert sc.loop(app.pid)["state"] in ("live", "lagging")
    assert app.get("/health").status == 200

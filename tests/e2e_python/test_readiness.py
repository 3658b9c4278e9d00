# SPDX-License-Identifier: Apache-2.0
"""loopwatch.set_ready() from an endpoint of the app (e.g. draining, a
dependency down): /readyz fails (traffic is shed) while /livez passes (no
restart), and passes again after set_ready(True)."""

import time

import sidecar_harness
from python_servers import MARGIN, POLL_INTERVAL, last_stall_id, new_lines


def test_set_ready_false_fails_readyz_not_livez(world, measure):
    sc = world.sidecar()
    app = world.uvicorn(loop="asyncio")
    name = "uvicorn-%d" % app.pid
    loop = sc.wait_loop_state(app.pid, "live", timeout=10)
    assert loop["ready"] is True, loop
    assert sc.get("/readyz").status == 200 and sc.livez().status == 200
    before_id = last_stall_id(sc)

    assert app.get("/ready?on=0").json() == {"ready": False, "pid": app.pid}
    t0 = sidecar_harness.now()
    r = sidecar_harness.wait_for("/readyz 503",
                       lambda: (lambda r: r if r.status == 503 else None)(sc.get("/readyz")),
                       POLL_INTERVAL + MARGIN)
    measure("/readyz 503 after set_ready(False)", (r.ended - t0) * 1e3, "ms")
    assert r.body.startswith("loop %s not ready (set by the app)" % name), r
    # For a while: not ready, but live and started; the app itself is fine.
    end = sidecar_harness.now() + 0.6
    while sidecar_harness.now() < end:
        live, ready = sc.livez(), sc.get("/readyz")
        assert live.status == 200 and ready.status == 503, (live, ready)
        time.sleep(0.05)
    assert sc.get("/startupz").status == 200
    assert app.get("/health").status == 200
    loop = sc.loop(app.pid)
    assert loop["ready"] is False and loop["state"] == "live", loop
    assert loop["failing_liveness"] is False, loop
    verbose = sc.get("/readyz?verbose").body
    assert "loop %s slot=%d pid=%d " % (name, loop["slot"], app.pid) in verbose, verbose
    assert " ready=no" in verbose, verbose
    m = sc.metrics()
    assert sidecar_harness.metric(m, "loopwatch_loop_ready", loop=name) == 0
    assert sidecar_harness.metric(m, "loopwatch_loop_up", loop=name) == 1
    assert new_lines(sc, "stall started", before_id) == []

    assert app.get("/ready?on=1").json() == {"ready": True, "pid": app.pid}
    t0 = sidecar_harness.now()
    r = sidecar_harness.wait_for("/readyz 200",
                       lambda: (lambda r: r if r.status == 200 else None)(sc.get("/readyz")),
                       POLL_INTERVAL + MARGIN)
    measure("/readyz 200 after set_ready(True)", (r.ended - t0) * 1e3, "ms")
    assert r.body.startswith("ok: 1 loops ready"), r
    assert sc.loop(app.pid)["ready"] is True
    assert sidecar_harness.metric(sc.metrics(), "loopwatch_loop_ready", loop=name) == 1
    assert sc.livez().status == 200

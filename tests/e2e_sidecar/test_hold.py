# SPDX-License-Identifier: Apache-2.0
"""The hold: a POST on the admin port makes /livez pass for a bounded time
while the app is stalled (to stop a restart loop); logged, in the metrics,
and it expires by itself."""

from sidecar_harness import STALL_AFTER, metric

HOLD = 3.0


def test_hold_passes_livez_then_expires(world, measure):
    sc = world.sidecar()
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)
    m = sc.metrics()
    assert metric(m, "loopwatch_hold_active") == 0

    app.request_async("/sleep?ms=9000")
    sc.wait_livez(503, timeout=STALL_AFTER + 1.5)

    r = sc.admin("/hold?for=%ds&reason=e2e+debugging" % HOLD, method="POST")
    held_at = r.started
    assert r.status == 200, r
    j = r.json()
    assert j["active"] is True and j["reason"] == "e2e debugging", j
    assert HOLD - 0.2 < j["remaining_seconds"] <= HOLD, j

    live = sc.livez()
    assert live.status == 200, live
    assert "held" in live.body and "would fail" in live.body, live
    assert "e2e debugging" in live.body and "clock_nanosleep" in live.body, live
    detail = sc.get("/livez?format=json").json()
    assert detail["code"] == 200 and detail["verdict"] == "fail", detail
    assert detail["hold"]["reason"] == "e2e debugging", detail
    # Only /livez is held: readiness still tells the truth.
    assert sc.get("/readyz").status == 503
    m = sc.metrics()
    assert metric(m, "loopwatch_hold_active") == 1
    assert metric(m, "loopwatch_holds_total") == 1
    assert 0 < metric(m, "loopwatch_hold_remaining_seconds") <= HOLD
    logged = sc.wait_log("hold set", timeout=1)
    assert "e2e debugging" in logged.get("detail", ""), logged
    # Still counted as a stall while held.
    assert metric(m, "loopwatch_stalls_total", **{"class": "blocked"}) == 1

    # It expires by itself.
    back = sc.wait_livez(503, timeout=HOLD + 1.5)
    expired_after = back.ended - held_at
    measure("hold expired after", expired_after, "s")
    assert HOLD - 0.05 <= expired_after <= HOLD + 0.5, expired_after
    assert "held" not in back.body and "stalled" in back.body, back
    assert metric(sc.metrics(), "loopwatch_hold_active") == 0
    assert sc.admin("/hold").json()["active"] is False


def test_hold_is_bounded_and_can_be_cleared(world):
    sc = world.sidecar("--max-hold", "10m")
    r = sc.admin("/hold?for=2h", method="POST")
    assert r.status == 400 and "max_hold" in r.body, r
    r = sc.admin("/hold?for=soon", method="POST")
    assert r.status == 400 and "bad duration" in r.body, r
    r = sc.admin("/hold", method="POST")
    assert r.status == 400 and "for=" in r.body, r
    assert sc.admin("/hold").json()["active"] is False
    assert sc.admin("/hold?for=5m", method="POST").json()["active"] is True
    r = sc.admin("/hold", method="DELETE")
    assert r.status == 200 and r.json()["active"] is False, r
    assert metric(sc.metrics(), "loopwatch_hold_active") == 0
    assert sc.wait_log("hold cleared", timeout=1)

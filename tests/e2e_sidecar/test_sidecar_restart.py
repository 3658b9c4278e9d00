# SPDX-License-Identifier: Apache-2.0
"""The sidecar restarted in the middle of a stall: the new one fails /livez
at once, with the stall's true age (from the app's own beat timestamps),
not an age counted from its own start."""

import signal
import time

from sidecar_harness import STALL_AFTER, now

MARGIN = 0.3  # the age is read from the same clock: tighter than detection


def test_restart_during_stall_keeps_true_age(world, measure):
    sc = world.sidecar()
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)

    req = app.request_async("/sleep?ms=8000")
    blocked_at = req.sent_at
    sc.wait_log("stall started", timeout=STALL_AFTER + 1.5, pid=app.pid)
    assert sc.livez().status == 503
    # Well into the stall, so that an age counted from the new sidecar's
    # start could not pass for the true one.
    time.sleep(max(0.0, blocked_at + 3.0 - now()))

    sc.signal(signal.SIGKILL)  # a crash, no goodbye
    sc.wait(5)
    killed_at = now()
    sc.start()  # new process, new ports, same segment
    measure("sidecar restart to 'loopwatch started'", (now() - killed_at) * 1e3, "ms")

    # The very first probe of the new sidecar already fails...
    first = sc.get("/livez?format=json")
    assert first.status == 503, first
    elapsed = first.started - blocked_at
    detail = first.json()
    (loop,) = [l for l in detail["loops"] if l["pid"] == app.pid]
    age = loop["heartbeat_age_seconds"]
    measure("time since the block began", elapsed, "s")
    measure("heartbeat age reported by the new sidecar", age, "s")
    assert loop["state"] == "stalled", loop
    # ...with the stall's true age: at least the time since the request
    # (minus the view's age and noise), at most that plus one beat interval.
    assert age >= elapsed - MARGIN, (age, elapsed)
    assert age <= elapsed + 0.1 + MARGIN, (age, elapsed)
    assert age > now() - sc.started_at + 1.0, "age counted from the sidecar's start"
    assert loop["stall"]["class"] == "blocked", loop
    assert loop["stall"]["syscall"] == "clock_nanosleep", loop
    assert "stalled" in detail["message"], detail

    # The new sidecar logs the ongoing stall with its true silence, once.
    started = sc.wait_log("stall started", timeout=1.5, pid=app.pid)
    assert started["silent_seconds"] >= elapsed - MARGIN, (started, elapsed)
    rep = sc.wait_log("stall report", timeout=1.5, pid=app.pid)
    assert rep["syscall"] == "clock_nanosleep" and rep["activity"] == "GET /sleep", rep

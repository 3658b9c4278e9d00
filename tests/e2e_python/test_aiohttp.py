# SPDX-License-Identifier: Apache-2.0
"""aiohttp.web (Debian's python3-aiohttp) under `python -m loopwatch.run`,
with no loopwatch code in the app: the runner puts
loopwatch.aiohttp.middleware first in every Application, so a stall report
lists the requests in flight, as it does for uvicorn. Without the middleware
the report says they are unknown, not 0."""

import re
import time

from python_servers import (APPS_DIR, last_stall_id, line_of, report_requests, stack_frames,
                            wait_detection, wait_new)

AIOAPP = APPS_DIR / "aioapp.py"


def test_aiohttp_report_lists_the_requests_in_flight(world, measure):
    sc = world.sidecar()
    app = world.aiohttp()
    name = "python3-%d" % app.pid
    sc.wait_loop_state(app.pid, "live", timeout=10)
    before_id = last_stall_id(sc)

    # One request awaiting (not the culprit), then one that blocks the loop
    # in a sub-application, with a secret in its query string.
    app.request_async("/wait?s=30")
    time.sleep(0.3)
    req = app.request_async("/sub/sleep?s=3&token=CANARY")
    wait_detection(sc, req.sent_at, measure)
    rep = wait_new(sc, "stall report", before_id, timeout=3, pid=app.pid)
    assert rep["loop"] == name, rep
    assert rep["class"] == "blocked" and rep["syscall"] == "clock_nanosleep", rep
    text = rep["stack"]
    # Oldest first; the sub-application's request once, not twice.
    reqs = report_requests(text)
    assert [(m, p) for m, p, _ in reqs] == [("GET", "/wait?s=REDACTED"),
                                          ("GET", "/sub/sleep?s=REDACTED&token=REDACTED")], text
    assert reqs[0][2] > reqs[1][2], reqs
    assert "CANARY" not in sc.log_text()
    assert (str(AIOAPP), line_of("aio-sleep", AIOAPP), "blocking_sleep") in stack_frames(text), text
    assert re.search(r"^task: Task-\d+ running ", text, re.M), text

    assert req.result(timeout=15).status == 200


def test_aiohttp_without_the_middleware_says_unknown(world, measure):
    sc = world.sidecar()
    app = world.aiohttp("--no-middleware")
    sc.wait_loop_state(app.pid, "live", timeout=10)
    before_id = last_stall_id(sc)
    req = app.request_async("/sleep?s=2.5")
    wait_detection(sc, req.sent_at, measure)
    rep = wait_new(sc, "stall report", before_id, timeout=3, pid=app.pid)
    assert "\nrequests in flight: unknown (nothing records them" in rep["stack"], rep["stack"]
    frame = (str(AIOAPP), line_of("aio-sleep", AIOAPP), "blocking_sleep")
    assert frame in stack_frames(rep["stack"]), rep["stack"]
    assert req.result(timeout=15).status == 200

# SPDX-License-Identifier: Apache-2.0
"""Nothing secret on the public port, and by default in no log line.

The app (uvicorn under the runner) stalls in GET /secret, whose request
URL, activity label and running task (in the report's text, above the
stack) each carry a canary secret in a query string. Every answer of the public port (the probes in every form,
/healthz, /metrics, /) is read during and after the stall: no canary, and
no text from the app's memory at all (the activity label, the request's
path, the stack). The sidecar's log and the admin port carry the report,
with the query values as REDACTED. With LOOPWATCH_REDACT_QUERY=false in
both containers, the admin port and the log show the canaries, and the
public port still does not."""

import pytest

import sidecar_harness
from python_servers import STALL_AFTER, wait_new, last_stall_id

CANARIES = ("CANARY-QUERY", "CANARY-ACTIVITY", "CANARY-TASK")
# Text from the app's memory that the public port must not show either.
APP_TEXT = ("/secret", "pay.example", "charge ", "time.sleep", "stallapp.py")

PUBLIC_PATHS = [p + q for p in ("/livez", "/readyz", "/startupz")
                for q in ("", "?verbose", "?format=json", "?format=json&verbose")]
PUBLIC_PATHS += ["/healthz", "/metrics", "/"]


def public_answers(sc):
    out = {}
    for path in PUBLIC_PATHS:
        out[path] = sc.get(path).body
    out["/livez (Accept: application/json)"] = sc.get(
        "/livez", headers={"Accept": "application/json"}).body
    return out


def assert_clean(answers, forbidden):
    for path, body in answers.items():
        for word in forbidden:
            assert word not in body, "%r found in %s:\n%s" % (word, path, body[:2000])


@pytest.mark.parametrize("redact", [True, False], ids=["default", "redaction-off"])
def test_no_secret_on_the_public_port(world, redact):
    env = {} if redact else {"LOOPWATCH_REDACT_QUERY": "false"}
    sc = world.sidecar(*(() if redact else ("--redact-query", "false")))
    app = world.uvicorn(loop="asyncio", env=env)
    sc.wait_loop_state(app.pid, "live", timeout=10)
    before = last_stall_id(sc)

    stall = STALL_AFTER + 2.0
    req = app.request_async("/secret?s=%g&api_key=CANARY-QUERY&page=2" % stall)
    sc.wait_livez(503, timeout=STALL_AFTER + 2)
    rep = wait_new(sc, "stall report", before, timeout=3, pid=app.pid)
    during = public_answers(sc)
    assert during["/livez"].startswith("loop uvicorn-%d stalled" % app.pid), during["/livez"]
    assert "clock_nanosleep" in during["/livez?verbose"]  # the kernel's words are fine

    req.result(timeout=stall + 10)
    wait_new(sc, "stall ended", before, timeout=3, pid=app.pid)
    after = public_answers(sc)
    assert_clean(during, CANARIES + APP_TEXT)
    assert_clean(after, CANARIES + APP_TEXT)

    # The report itself, in the log and on the admin port.
    stalls = sc.admin("/debug/stalls").body
    loops = sc.admin("/debug/loops").body
    log = sc.log_text()
    assert "stallapp.py" in rep["stack"] and "/secret?" in rep["stack"], rep
    if redact:
        for text, where in ((log, "the log"), (stalls, "/debug/stalls"), (loops, "/debug/loops")):
            for canary in CANARIES:
                assert canary not in text, "%s found in %s" % (canary, where)
        assert "api_key=REDACTED&page=REDACTED" in rep["stack"], rep["stack"]
        assert "task: fetch https://pay.example/v1?token=REDACTED" in rep["stack"], rep["stack"]
        assert rep["activity"] == "charge https://pay.example/v1?api_key=REDACTED", rep
        assert "api_key=REDACTED" in stalls
    else:
        assert "api_key=CANARY-QUERY&page=2" in rep["stack"], rep["stack"]
        assert "token=CANARY-TASK" in rep["stack"], rep["stack"]
        assert "CANARY-ACTIVITY" in rep["activity"], rep
        assert "CANARY-QUERY" in stalls

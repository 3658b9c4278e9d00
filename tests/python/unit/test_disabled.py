# SPDX-License-Identifier: Apache-2.0
"""loopwatch off (LOOPWATCH_SEGMENT unset or empty): every call is a cheap
no-op that never raises, schedules nothing and starts no thread."""

import pytest

from conftest import LOG_FORMAT, PY, child_env, one_result, run_all, write_script

SCRIPT = """
import asyncio, logging, os, threading
logging.basicConfig(format=%r, level=logging.DEBUG)
import loopwatch
from loopwatch import _native
from loopwatch.asgi import LoopwatchMiddleware
from script_support import result

outside = loopwatch.install()          # no loop running: still no warning

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 204, "headers": []})

async def main():
    loop = asyncio.get_running_loop()
    r = {"outside": outside, "enabled": loopwatch.enabled(),
         "native_enabled": _native.enabled()}
    r["install"] = loopwatch.install()
    r["install_named"] = loopwatch.install("named", interval=0.05)
    r["scheduled"] = len(loop._scheduled)
    with loopwatch.activity("label"):
        with loopwatch.activity("inner"):
            r["scheduled_in_activity"] = len(loop._scheduled)
    loopwatch.set_ready(False)
    loopwatch.set_ready(True)
    r["uninstall"] = loopwatch.uninstall()
    sent = []
    async def send(m):
        sent.append(m)
    async def receive():
        return {"type": "http.request"}
    await LoopwatchMiddleware(app)({"type": "http", "method": "GET", "path": "/x",
                                    "query_string": b"a=1"}, receive, send)
    r["middleware_sent"] = [m.get("status") for m in sent]
    r["close_wrapped"] = "close" in vars(loop)
    r["threads"] = threading.active_count()
    r["tasks"] = len(os.listdir("/proc/self/task"))
    r["version"] = loopwatch.__version__
    r["scheduled_end"] = len(loop._scheduled)
    return r

r = asyncio.run(main())
r["uninstall_outside"] = loopwatch.uninstall()
result(**r)
""" % LOG_FORMAT


@pytest.mark.parametrize("segment_value", [None, ""], ids=["unset", "empty"])
def test_everything_is_a_harmless_noop(tmp_path, spawn, segment_value):
    script = write_script(tmp_path, "app_off.py", SCRIPT)
    env = child_env(LOOPWATCH_SEGMENT=segment_value,
                    LOOPWATCH_INTERVAL="250ms", LOOPWATCH_NAME="ignored")
    (rc, out, err), = run_all(spawn, [([PY, script], env, str(tmp_path))])
    r = one_result((rc, out, err))
    assert r["outside"] is False
    assert r["enabled"] is False and r["native_enabled"] is False
    assert r["install"] is False and r["install_named"] is False
    # No heartbeat timer on the loop, before, during or after.
    assert r["scheduled"] == 0 and r["scheduled_in_activity"] == 0 and r["scheduled_end"] == 0
    assert r["uninstall"] is False and r["uninstall_outside"] is False
    assert r["middleware_sent"] == [204]
    assert r["close_wrapped"] is False
    # No watchdog or reporter thread: the process has only its main thread.
    assert r["threads"] == 1 and r["tasks"] == 1, r
    assert r["version"] and r["version"][0].isdigit()
    # Nothing logged at all (DEBUG level on), nothing written anywhere.
    assert "loopwatch:" not in err, err
    assert "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app_off.py"]

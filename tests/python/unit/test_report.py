# SPDX-License-Identifier: Apache-2.0
"""Stall reports written by the real watchdog (LOOPWATCH_REPORT_AFTER=200ms),
read back with `loopwatch status --json`: class, syscall, the Python stack
with the exact line, the task, the requests in flight, the activity label.

The four stalling scripts start together (module fixture) and each test
kills its script once it has checked the report."""

import os
import re

import pytest

from conftest import (PY, SLEEP_SYSCALL, Child, child_env, line_of, loops_of, status, wait_until,
                      write_script)

# argv[1]: asyncio, uvloop, or thread (an asyncio loop in a second thread
# while the main thread waits: the report shows the loop thread's stack).
BLOCKED = """
import asyncio, sys, threading, time
import loopwatch, script_support

async def stuck():
    script_support.say("STALL")
    time.sleep(60)  # stall-sleep

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.3)
    await asyncio.create_task(stuck(), name="stuck-task")

mode = sys.argv[1]
if mode == "uvloop":
    import uvloop
    uvloop.install()
    asyncio.run(main())
elif mode == "thread":
    threading.Thread(target=asyncio.run, args=(main(),), name="loop-thread").start()
    threading.Event().wait(60)  # main-thread-wait
else:
    asyncio.run(main())
"""

CPU = """
import asyncio, time
import loopwatch, script_support

def crunch(deadline):
    while time.monotonic() < deadline: pass  # stall-cpu

async def spin():
    script_support.say("STALL")
    with loopwatch.activity("crunching numbers"):
        crunch(time.monotonic() + 60)  # stall-cpu-call

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.3)
    await asyncio.create_task(spin(), name="spin-task")
asyncio.run(main())
"""

# A catastrophic regular expression: the loop thread keeps the GIL in C
# code (seconds; the test kills it once the report is in).
REGEX = """
import asyncio, re
import loopwatch, script_support

async def backtrack():
    script_support.say("STALL")
    re.match(r'(a+)+$', 'a' * 28 + 'b')  # stall-regex

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.3)
    await asyncio.create_task(backtrack(), name="regex-task")
asyncio.run(main())
"""

# A sync function in a thread pool (as FastAPI runs a `def` endpoint) that
# keeps the GIL in C code: the loop thread only waits for the GIL.
REGEX_THREAD = """
import asyncio, re
import loopwatch, script_support

def backtrack():
    re.match(r'(a+)+$', 'a' * 28 + 'b')  # holder-regex

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.3)
    script_support.say("STALL")
    await asyncio.get_running_loop().run_in_executor(None, backtrack)
asyncio.run(main())
"""

# Threads that use the CPU without starving the loop: pure Python (which
# lets the GIL go every switch interval) or hashlib.pbkdf2_hmac (which
# releases it). 1.5 s of that, then the loop blocks on its own.
BUSY_THREAD = """
import asyncio, hashlib, sys, threading, time
import loopwatch, script_support

def pure():
    end = time.monotonic() + 60
    while time.monotonic() < end:
        pass

def pbkdf2():
    hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 100_000_000)

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.3)
    threading.Thread(target=pure if sys.argv[1] == "pure" else pbkdf2, daemon=True).start()
    await asyncio.sleep(1.5)
    script_support.say("STALL")
    time.sleep(60)  # stall-own-sleep

asyncio.run(main())
"""

REQUESTS = """
import asyncio, time
import loopwatch, script_support
from loopwatch.asgi import LoopwatchMiddleware

async def app(scope, receive, send):
    if scope["path"] == "/wait":
        await asyncio.sleep(3600)
    elif scope["path"] == "/slow":
        script_support.say("STALL")
        time.sleep(60)  # stall-request
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

mw = LoopwatchMiddleware(app)

async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}

async def send(message):
    pass

async def request(method, path, query):
    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": [], "http_version": "1.1", "scheme": "http"}
    await mw(scope, receive, send)

async def main():
    assert loopwatch.install()
    waiting = asyncio.create_task(request("POST", "/wait", b""), name="waiting-request")
    await asyncio.sleep(0.3)
    await asyncio.create_task(request("GET", "/slow", b"q=1"), name="slow-request")
asyncio.run(main())
"""

SCRIPTS = {"regex": (REGEX, []), "holder": (REGEX_THREAD, []),
           "busy-pure": (BUSY_THREAD, ["pure"]), "busy-pbkdf2": (BUSY_THREAD, ["pbkdf2"]),
           "cpu": (CPU, []), "blocked": (BLOCKED, ["asyncio"]),
           "blocked-uvloop": (BLOCKED, ["uvloop"]), "blocked-thread": (BLOCKED, ["thread"]),
           "requests": (REQUESTS, [])}


@pytest.fixture(scope="module")
def stalls(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    kids = {}
    # Every script written before any child starts: the blocked variants
    # share one file, and rewriting it while a child reads it gave that child
    # an empty script (seen on a pyenv Python, whose start-up is slower).
    scripts = {}
    for kind, (text, _) in SCRIPTS.items():
        name = "stall_%s.py" % kind.split("-")[0]
        if name not in scripts:
            scripts[name] = write_script(base, name, text)
    try:
        for kind, (text, args) in SCRIPTS.items():
            script = scripts["stall_%s.py" % kind.split("-")[0]]
            seg = base / ("seg-" + kind)
            env = child_env(seg, LOOPWATCH_REPORT_AFTER="200ms")
            kids[kind] = (Child([PY, script] + args, env, str(base)), script, seg)
        yield kids
    finally:
        for child, _, _ in kids.values():
            child.kill()


def report_of(child, script, seg, marker, func, timeout=30):
    """Waits for the stall report whose stack names `func` at the line of
    `marker`; returns (loop, stall, line)."""
    child.wait_line("STALL", timeout=30)
    line = line_of(script, marker)
    frame = 'File "%s", line %d in %s' % (script, line, func)

    def look():
        for l in loops_of(status(seg), pid=child.pid):
            stall = l.get("stall") or {}
            if frame in stall.get("text", ""):
                return l
        return None
    try:
        loop = wait_until(look, timeout=timeout, what="a report naming %s" % frame)
    except AssertionError:
        raise AssertionError("no report with %r; last status: %r\n%s"
                             % (frame, status(seg), child.describe()))
    return loop, loop["stall"], line


def test_regex_holding_the_gil(stalls):
    child, script, seg = stalls["regex"]
    loop, stall, line = report_of(child, script, seg, "stall-regex", "backtrack")
    child.kill()
    text = stall["text"]
    assert loop["state"] == "stalled" and loop["stalls"] >= 1
    assert stall["class"] == "cpu", stall
    # The reporter could not get the GIL: the report says so, and still
    # names the calling line (the stack was read without the GIL).
    assert re.search(r"^task: unknown \(the GIL was not released within \d+ ms", text, re.M), text
    assert "(stack read without the GIL, as faulthandler does)" in text
    # A plain asyncio script: nothing records requests, so none are claimed.
    assert "\nrequests in flight: unknown (nothing records them in this process" in text
    assert text.index("stack read without the GIL") < text.index(
        'File "%s", line %d in backtrack' % (script, line))


def test_gil_held_by_another_thread(stalls):
    child, script, seg = stalls["holder"]
    loop, stall, line = report_of(child, script, seg, "holder-regex", "backtrack")
    text = stall["text"]
    m = re.search(r"^task: unknown \(the loop thread waits for the GIL, which thread (\d+) "
                  r"holds: it used (\d+) ms of CPU in (\d+) ms"
                  r"(?: \(and waited (\d+) ms for a CPU\))?, the loop thread (\d+) ms\)$",
                  text, re.M)
    assert m, text
    holder, used, window, waited, loop_ms = (int(g or 0) for g in m.groups())
    # A thread of the app's process, not its main (loop) thread.
    assert os.path.exists("/proc/%d/task/%d" % (child.pid, holder)) and holder != child.pid
    child.kill()
    # Not the loop's fault, not cpu: it waits for the GIL in futex(). The
    # waiter wakes every switch interval (5 ms) to ask the holder to drop the
    # GIL, so the one-instant sample may also find it running: then no syscall.
    assert stall["class"] == "gil", stall
    assert stall["syscall"] in ("futex", ""), stall
    # On the CPU, or ready for it on a crowded machine, a quarter of the time.
    assert (used + waited) * 4 >= window and loop_ms * 4 < window, m.group(0)
    # The holder's stack first, with the line that holds the GIL; then the
    # loop thread's, which is where it was when it lost the GIL.
    holder_at = text.index("Thread %d holds the GIL" % holder)
    frame_at = text.index('File "%s", line %d in backtrack' % (script, line))
    loop_at = text.index("The loop thread, waiting for the GIL:")
    assert holder_at < frame_at < loop_at, text


@pytest.mark.parametrize("variant", ["busy-pure", "busy-pbkdf2"])
def test_busy_threads_that_let_the_gil_go_are_not_blamed(stalls, variant):
    """A thread in pure Python (the GIL changes hands every 5 ms) or in
    pbkdf2 (the GIL released) does not stall the loop; when the loop then
    blocks on its own, the report blames the loop's own line."""
    child, script, seg = stalls[variant]
    loop, stall, line = report_of(child, script, seg, "stall-own-sleep", "main")
    child.kill()
    text = stall["text"]
    assert loop["stalls"] == 1, loop  # none while the thread was busy
    assert stall["class"] == "blocked" and stall["syscall"] == SLEEP_SYSCALL, stall
    assert "GIL" not in text, text
    assert text.startswith("task: Task-1 running main (%s:%d)\n" % (script, line)), text


def test_cpu_busy_loop(stalls):
    child, script, seg = stalls["cpu"]
    loop, stall, line = report_of(child, script, seg, "stall-cpu", "crunch")
    child.kill()
    text = stall["text"]
    assert loop["name"] == "stall_cpu-%d" % child.pid
    assert stall["class"] == "cpu", stall
    assert stall["activity"] == "crunching numbers"
    assert loop["activity"] == "crunching numbers"
    call = line_of(script, "stall-cpu-call")
    assert "task: spin-task running spin (%s:%d)\n" % (script, call) in text, text
    # Innermost first: crunch, then its caller spin.
    assert text.index("line %d in crunch" % line) < text.index("line %d in spin" % call)
    assert "GIL" not in text


@pytest.mark.parametrize("variant", ["blocked", "blocked-uvloop", "blocked-thread"])
def test_blocked_in_time_sleep(stalls, variant):
    child, script, seg = stalls[variant]
    loop, stall, line = report_of(child, script, seg, "stall-sleep", "stuck")
    child.kill()
    text = stall["text"]
    assert loop["name"] == "stall_blocked-%d" % child.pid
    assert loop["kind"] == ("uvloop" if variant == "blocked-uvloop" else "asyncio")
    assert loop["state"] == "stalled" and loop["stalls"] >= 1
    assert stall["class"] == "blocked", stall
    assert stall["syscall"] == SLEEP_SYSCALL, stall
    assert text.startswith("task: stuck-task running stuck (%s:%d)\n" % (script, line)), text
    assert "\nrequests in flight: unknown (nothing records them in this process: "\
        "loopwatch.asgi.LoopwatchMiddleware or loopwatch.aiohttp.middleware would)\n" in text
    assert "Stack (most recent call first):\n" in text
    assert not stall.get("activity")
    # The loop thread's stack, not the main thread's.
    wait_line = line_of(script, "main-thread-wait")
    assert "line %d in <module>" % wait_line not in text, text
    if variant == "blocked-thread":
        assert "in _bootstrap_inner" in text, text


def test_requests_in_flight(stalls):
    child, script, seg = stalls["requests"]
    loop, stall, line = report_of(child, script, seg, "stall-request", "app")
    child.kill()
    text = stall["text"]
    assert stall["class"] == "blocked" and stall["syscall"] == SLEEP_SYSCALL, stall
    assert text.startswith("task: slow-request running request ("), text
    # Oldest first, each with its age.
    m = re.search(r"requests in flight: 2\n"
                  r"  POST /wait \((\d+)\.(\d{3}) s\)\n"
                  r"  GET /slow\?q=REDACTED \((\d+)\.(\d{3}) s\)\n", text)
    assert m, text
    wait_age = float("%s.%s" % m.group(1, 2))
    slow_age = float("%s.%s" % m.group(3, 4))
    # The report opens 0.3 s (interval + report_after) after the last beat,
    # which came at most one interval before /slow began: /slow is at least
    # 0.2 s old. /wait began 0.3 s before /slow.
    assert slow_age >= 0.19 and wait_age >= slow_age + 0.25, (wait_age, slow_age)
    assert text.index("requests in flight") < text.index(
        'File "%s", line %d in app' % (script, line))


FORMAT = """
import asyncio, os, re
import loopwatch, script_support
from loopwatch import _native, _heartbeat
from loopwatch.asgi import LoopwatchMiddleware

release = None

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope.get("path") == "/boom":
        raise ValueError("boom")
    if scope.get("path", "").startswith("/hold"):
        await release.wait()
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

def http(method, path, query=b""):
    return {"type": "http", "method": method, "path": path, "query_string": query,
            "headers": []}

async def call(mw, scope):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(m):
        sent.append(m.get("status", m["type"]))
    await mw(scope, receive, send)
    return sent

async def main():
    global release
    release = asyncio.Event()
    mw = LoopwatchMiddleware(app)
    r = {"pid": os.getpid()}
    # No heartbeat on this loop yet: the middleware passes everything through.
    r["unwatched_sent"] = await call(mw, http("GET", "/plain"))
    try:
        await call(mw, http("GET", "/boom"))
    except ValueError:
        r["unwatched_raised"] = True

    assert loopwatch.install()
    native = _heartbeat.current().native
    r["idle_requests"] = native.requests()
    r["idle_report"] = _native.report_now(native)  # report-idle
    held = [asyncio.create_task(call(mw, http("POST", "/hold/a", b"x=1&y=%C3%A9")))]
    await asyncio.sleep(0.2)
    held.append(asyncio.create_task(call(mw, {"type": "websocket", "path": "/hold/ws",
                                              "query_string": b""})))
    r["lifespan_sent"] = await call(mw, {"type": "lifespan"})
    await asyncio.sleep(0.05)
    r["requests"] = native.requests()
    r["report"] = _native.report_now(native)  # report-busy
    release.set()
    r["held_sent"] = await asyncio.gather(*held)
    r["after"] = native.requests()
    try:
        await call(mw, http("GET", "/boom"))
    except ValueError:
        r["raised"] = True
    r["after_raise"] = native.requests()

    release = asyncio.Event()
    many = [asyncio.create_task(call(mw, http("GET", "/hold/%d" % i))) for i in range(40)]
    await asyncio.sleep(0.1)
    r["many_requests"] = len(native.requests())
    r["many_report"] = _native.report_now(native)
    release.set()
    await asyncio.gather(*many)
    r["many_after"] = native.requests()
    r["many_after_report"] = _native.report_now(native)

    long_path = "/" + "p" * 300
    release = asyncio.Event()
    t = asyncio.create_task(call(mw, http("GET", "/hold" + long_path)))
    await asyncio.sleep(0.05)
    r["long"] = native.requests()
    release.set()
    await t
    script_support.result(**r)
asyncio.run(main())
"""


def test_middleware_requests_and_report_now(tmp_path, spawn, segment):
    """native.requests() and _native.report_now(): the report's text, built
    on demand (no watchdog), and the middleware's bookkeeping."""
    from conftest import one_result
    script = write_script(tmp_path, "fmt.py", FORMAT)
    env = child_env(segment)
    r = one_result(spawn([PY, script], env).wait(60))
    ok = [200, "http.response.body"]
    assert r["unwatched_sent"] == ok and r["unwatched_raised"] is True
    assert r["idle_requests"] == []
    idle = line_of(script, "report-idle")
    assert r["idle_report"].startswith(
        "task: Task-1 running main (%s:%d)\nrequests in flight: 0\n"
        "Stack (most recent call first):\n" % (script, idle)), r["idle_report"]
    assert 'File "%s", line %d in main' % (script, idle) in r["idle_report"]

    # Oldest first; the query string's values redacted; websocket and lifespan.
    reqs = r["requests"]
    assert [(m, p) for m, p, _ in reqs] == [("POST", "/hold/a?x=REDACTED&y=REDACTED"),
                                            ("WEBSOCKET", "/hold/ws")], reqs
    # LOOPWATCH_REDACT_QUERY=false: the query string kept as sent.
    raw = one_result(spawn([PY, script], dict(env, LOOPWATCH_REDACT_QUERY="false")).wait(60))
    assert [(m, p) for m, p, _ in raw["requests"]] == [("POST", "/hold/a?x=1&y=%C3%A9"),
                                                       ("WEBSOCKET", "/hold/ws")], raw
    assert reqs[0][2] >= 0.2 and 0 <= reqs[1][2] < reqs[0][2]
    assert r["lifespan_sent"] == []
    busy = line_of(script, "report-busy")
    m = re.match(r"task: Task-1 running main \(%s:%d\)\n"
                 r"requests in flight: 2\n"
                 r"  POST /hold/a\?x=REDACTED&y=REDACTED \((\d+\.\d{3}) s\)\n"
                 r"  WEBSOCKET /hold/ws \((\d+\.\d{3}) s\)\n"
                 r"Stack \(most recent call first\):\n"
                 r'  File "%s", line %d in main\n'
                 % (re.escape(script), busy, re.escape(script), busy), r["report"])
    assert m, r["report"]
    assert float(m.group(1)) >= 0.25 and float(m.group(2)) < float(m.group(1)), m.groups()
    assert r["held_sent"] == [ok, []]
    # Done or failed, a request leaves the table.
    assert r["after"] == [] and r["raised"] is True and r["after_raise"] == []

    # 40 at once: the table holds 32, the report shows 12 and counts the rest.
    assert r["many_requests"] == 32
    many = r["many_report"]
    assert "requests in flight: 40\n" in many, many
    assert len(re.findall(r"^  GET /hold/\d+ \(\d+\.\d{3} s\)$", many, re.M)) == 12
    assert "  ... and 28 more\n" in many
    assert r["many_after"] == []
    assert "requests in flight: 0\n" in r["many_after_report"]
    (method, path, _), = r["long"]
    assert method == "GET" and path == ("/hold/" + "p" * 300)[:239]

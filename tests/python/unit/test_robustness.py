# SPDX-License-Identifier: Apache-2.0
"""Nothing hangs: slots closed while their report is being built, and
interpreter shutdown while a report is open. Every script is bounded by a
timeout; a hang fails the test instead of stalling the suite."""

import time

import pytest

from conftest import PY, Child, child_env, loops_of, one_result, status, write_script

# Stalls the loop (time.sleep, or a regex that keeps the GIL so that the
# report hook waits for the reporter), then at once, before the loop beats
# again, uninstalls it / lets the loop stop and closes it / uninstalls it
# from another thread. Stall lengths straddle the report's opening
# (interval 0.1 + LOOPWATCH_REPORT_AFTER 0.2) plus the hook's GIL wait.
CLOSE_DURING_REPORT = """
import asyncio, math, os, re, threading, time
import loopwatch, script_support
from loopwatch import _heartbeat, _native

PATTERN = re.compile(r'(a+)+$')

def calibrate():
    n = 14
    while True:
        t = time.monotonic()
        PATTERN.match('a' * n + 'b')
        d = time.monotonic() - t
        if d >= 0.02 or n >= 30:
            return n, d
        n += 1

N0, D0 = calibrate()

def hold_gil(seconds):
    k = N0 + max(0, round(math.log2(seconds / D0)))
    PATTERN.match('a' * k + 'b')

def stall(how, seconds):
    if how == "regex":
        hold_gil(seconds)
    else:
        time.sleep(seconds)

done = []
plan = [("sleep", 0.33), ("regex", 0.4), ("regex", 0.55)]

# 1. uninstall() on the loop thread right after the stall.
async def uninstall_after(how, seconds):
    assert loopwatch.install()
    await asyncio.sleep(0.15)
    stall(how, seconds)
    assert loopwatch.uninstall()
for how, seconds in plan:
    asyncio.run(uninstall_after(how, seconds))
    done.append(("uninstall", how, seconds))

# 2. The loop stops right after the stall (its slot is released), then closes.
async def return_after(how, seconds):
    assert loopwatch.install()
    await asyncio.sleep(0.15)
    stall(how, seconds)
for how, seconds in plan:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(return_after(how, seconds))
    loop.close()
    done.append(("stop-close", how, seconds))

# 3. Another thread uninstalls the loop (and asks for a report) while the
#    loop thread sleeps and the watchdog builds the report.
for delay in (0.29, 0.33, 0.38):
    loop = asyncio.new_event_loop()
    started = threading.Event()
    async def sleeper():
        assert loopwatch.install()
        await asyncio.sleep(0.15)
        started.set()
        time.sleep(0.6)
    t = threading.Thread(target=loop.run_until_complete, args=(sleeper(),))
    t.start()
    started.wait()
    time.sleep(delay)
    hb = _heartbeat._beats.get(loop)
    if hb is not None and hb.native is not None:
        _native.report_now(hb.native)
    _heartbeat.uninstall(loop)
    t.join()
    loop.close()
    done.append(("other-thread", delay))

async def last():
    assert loopwatch.install()
    a = await script_support.amine()
    await asyncio.sleep(0.4)
    b = await script_support.amine()
    return a, b
a, b = asyncio.run(last())
script_support.result(done=len(done), first=a, second=b)
"""

# Interpreter shutdown while a stall report is open.
EXIT_DAEMON_THREAD = """
import asyncio, threading, time
import loopwatch, script_support

async def stuck():
    assert loopwatch.install()
    await asyncio.sleep(0.2)
    time.sleep(60)
threading.Thread(target=asyncio.run, args=(stuck(),), daemon=True).start()
script_support.wait_until(lambda: any((l.get("stall") or {}).get("text") for l in script_support.mine()),
                  30, what="the report")
script_support.say("REPORTED")
# Returns: shutdown with the loop thread stuck and the report open.
"""

EXIT_FROM_LOOP = """
import asyncio, sys, time
import loopwatch, script_support

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.2)
    time.sleep(0.9)          # the report opens after 0.3 s
    script_support.say("REPORTED")
    sys.exit(0)              # before the loop beats again
asyncio.run(main())
"""

EXIT_AFTER_REGEX = """
import asyncio, math, re, sys, time
import loopwatch, script_support

PATTERN = re.compile(r'(a+)+$')
n = 14
while True:
    t = time.monotonic(); PATTERN.match('a' * n + 'b'); d = time.monotonic() - t
    if d >= 0.02 or n >= 30:
        break
    n += 1
k = n + round(math.log2(0.8 / d))

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.2)
    PATTERN.match('a' * k + 'b')   # keeps the GIL: the reporter waits for it
    script_support.say("REPORTED")
    raise SystemExit(0)
asyncio.run(main())
"""

EXIT_SCRIPTS = {"daemon-thread": EXIT_DAEMON_THREAD, "sys-exit-in-loop": EXIT_FROM_LOOP,
                "exit-after-gil-held": EXIT_AFTER_REGEX}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All scripts of this module at once, each with its own segment."""
    base = tmp_path_factory.mktemp("robust")
    kids = {}
    env = {"LOOPWATCH_REPORT_AFTER": "200ms"}
    scripts = dict(EXIT_SCRIPTS, close=CLOSE_DURING_REPORT)
    try:
        for name, text in scripts.items():
            script = write_script(base, name.replace("-", "_") + ".py", text)
            seg = base / ("seg-" + name)
            kids[name] = (Child([PY, script], child_env(seg, **env), str(base)), seg)
        yield kids
    finally:
        for child, _ in kids.values():
            child.kill()


def test_closing_while_a_report_is_built_never_hangs(runs):
    child, seg = runs["close"]
    r = one_result(child.wait(90))
    assert r["done"] == 3 + 3 + 3
    # Afterwards the module still works: a fresh slot beats.
    assert len(r["first"]) == 1 and len(r["second"]) == 1
    assert r["second"][0]["beats"] > r["first"][0]["beats"]
    assert "Fatal Python error" not in child.stderr()
    # Every slot it took was released; none left behind looking dead.
    assert loops_of(status(seg), pid=child.pid) == []


@pytest.mark.parametrize("name", sorted(EXIT_SCRIPTS))
def test_exit_with_a_report_open(runs, name):
    child, seg = runs[name]
    child.wait_line("REPORTED", timeout=60)
    t0 = time.monotonic()
    rc, out, err = child.wait(30)
    took = time.monotonic() - t0
    assert rc == 0, err
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    assert took < 10, "exit took %.1f s after the report" % took
    # At exit the slot is closed (not left for the sidecar to find dead).
    assert loops_of(status(seg), pid=child.pid) == []

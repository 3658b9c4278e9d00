# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the tests (the pytest process) and the scripts they run
(each in a fresh /usr/bin/python3, with this directory on PYTHONPATH).

A segment is always read with the real reader, `loopwatch status --json`
(the sidecar binary named by LOOPWATCH_BIN, passed to scripts as LW_TEST_BIN),
never by parsing the file here.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

BIN = os.environ.get("LW_TEST_BIN") or os.environ.get("LOOPWATCH_BIN") or ""


def reader_env():
    """The reader reads LOOPWATCH_* settings from its environment: give it
    none of the app's (LOOPWATCH_NAME, LOOPWATCH_INTERVAL, ...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOOPWATCH_")}


def status(segment=None, stall_after="250ms", timeout=20):
    """`loopwatch status --json` of the segment (default: LOOPWATCH_SEGMENT)."""
    segment = segment or os.environ["LOOPWATCH_SEGMENT"]
    r = subprocess.run([BIN, "status", "--segment", str(segment), "--json",
                        "--stall-after", stall_after],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=reader_env(), timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("loopwatch status exited %d: %s"
                           % (r.returncode, r.stderr.decode(errors="replace")))
    return json.loads(r.stdout)


def loops_of(st, pid=None, name=None):
    return [l for l in st["loops"]
            if (pid is None or l["pid"] == pid) and (name is None or l["name"] == name)]


def mine(segment=None, **kw):
    """The slots of this process (a list: tests check there is exactly one);
    none when the segment was never created, or loopwatch is off."""
    segment = segment or os.environ.get("LOOPWATCH_SEGMENT")
    if not segment or not os.path.exists(segment):
        return []
    return loops_of(status(segment, **kw), pid=os.getpid())


async def amine(segment=None, **kw):
    """mine(), from a coroutine on the watched loop, which keeps beating
    (the reader runs from a worker thread)."""
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: mine(segment, **kw))


def result(**kw):
    """The script's findings, for the test to check: one line on stdout."""
    sys.stdout.write("RESULT " + json.dumps(kw) + "\n")
    sys.stdout.flush()


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def wait_until(fn, timeout, interval=0.05, what="condition"):
    """Polls fn() until it returns something true; returns that, or raises
    AssertionError with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s; last: %r"
                                 % (timeout, what, last))
        time.sleep(interval)

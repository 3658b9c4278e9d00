# SPDX-License-Identifier: Apache-2.0
"""os.fork() inside a running loop, the child running the loop on: the
child takes a slot of its own, named with its own pid, and never writes the
parent's; the parent's slot dies with the parent."""

import os
import signal
import time

from conftest import PY, child_env, loops_of, status, wait_until, write_script

FORK = """
import asyncio, os, sys
import loopwatch, script_support

async def main():
    assert loopwatch.install()
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        # asyncio forgets the running loop in a forked child (it records the
        # pid): a child that runs the loop on says it runs it.
        asyncio.events._set_running_loop(loop)
        script_support.say("CHILD", os.getpid())
    else:
        script_support.say("PARENT", os.getpid(), pid)
    await asyncio.sleep(120)
asyncio.run(main())
"""


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_fork_in_a_running_loop(tmp_path, spawn, segment):
    script = write_script(tmp_path, "forker.py", FORK)
    parent = spawn([PY, script], child_env(segment))
    _, ppid, cpid = parent.wait_line("PARENT").split()
    ppid, cpid = int(ppid), int(cpid)
    assert ppid == parent.pid
    parent.wait_line("CHILD %d" % cpid)
    try:
        def both():
            st = status(segment, stall_after="5s")
            p = loops_of(st, pid=ppid)
            c = loops_of(st, pid=cpid)
            return (p, c) if len(p) == 1 and len(c) == 1 else None
        p0, c0 = wait_until(both, timeout=20, what="a slot for the parent and one for the child")
        p0, c0 = p0[0], c0[0]
        assert p0["name"] == "forker-%d" % ppid
        assert c0["name"] == "forker-%d" % cpid
        assert c0["slot"] != p0["slot"]
        assert (p0["kind"], c0["kind"]) == ("asyncio", "asyncio")
        assert c0["interval_seconds"] == p0["interval_seconds"] == 0.1

        time.sleep(0.6)
        st = status(segment, stall_after="5s")
        p1, = loops_of(st, pid=ppid)
        c1, = loops_of(st, pid=cpid)
        assert p1["slot"] == p0["slot"] and p1["name"] == p0["name"]
        assert p1["beats"] >= p0["beats"] + 2, (p0, p1)
        assert c1["beats"] >= c0["beats"] + 2, (c0, c1)

        # Parent stopped: its slot's beats stop (so the child never beats
        # the parent's slot) while the child's go on.
        os.kill(ppid, signal.SIGSTOP)
        time.sleep(0.3)
        st = status(segment, stall_after="5s")
        p2, = loops_of(st, pid=ppid)
        c2, = loops_of(st, pid=cpid)
        time.sleep(0.8)
        st = status(segment, stall_after="5s")
        p3, = loops_of(st, pid=ppid)
        c3, = loops_of(st, pid=cpid)
        assert p3["beats"] == p2["beats"], (p2, p3)
        assert c3["beats"] >= c2["beats"] + 3, (c2, c3)

        # Parent killed: its slot is dead (nobody holds its lock, not even
        # the child), the child's is live.
        os.kill(ppid, signal.SIGKILL)
        parent.proc.wait(10)

        def parent_dead():
            st = status(segment, stall_after="5s")
            p = loops_of(st, pid=ppid)
            c = loops_of(st, pid=cpid)
            return (p[0], c[0]) if p and c and p[0]["state"] == "dead" else None
        p4, c4 = wait_until(parent_dead, timeout=10, what="the parent's slot dead")
        assert p4["beats"] == p3["beats"]
        assert c4["state"] == "live", c4
        time.sleep(0.3)
        c5, = loops_of(status(segment, stall_after="5s"), pid=cpid)
        assert c5["beats"] > c4["beats"] and c5["state"] == "live"
    finally:
        for pid in (cpid, ppid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

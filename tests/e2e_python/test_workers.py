# SPDX-License-Identifier: Apache-2.0
"""Multi-process servers under `python -m loopwatch.run`: gunicorn with
UvicornWorker (seed 000: a blocked worker, killed by the arbiter, an empty
reply) and uvicorn --workers. Every worker's loop has a slot of its own,
named by role and pid; the sidecar judges each worker (a stalled one, a dead
one), follows respawns and drops the slots of dead workers."""

import os
import re
import signal
import time

import sidecar_harness
from python_servers import (APP_FILE, MARGIN, POLL_INTERVAL, STALL_AFTER, check_report, children_of,
                  last_stall_id, line_of, wait_detection, wait_loops, wait_new)

SLEEP = 3.0


def worker_pids(arbiter):
    """The arbiter's worker processes (children running the app)."""
    return set(children_of(arbiter))


def test_gunicorn_blocked_worker_verdict_per_worker(world, measure):
    """One of 3 gunicorn workers blocks in time.sleep: its loop is stalled,
    the others are live; /livez fails with liveness_policy any and passes
    with all (two sidecars read the same segment), and the app still answers
    from the other workers."""
    any_sc = world.sidecar("--liveness-policy", "any")
    all_sc = world.sidecar("--liveness-policy", "all")
    app = world.gunicorn(workers=3)
    loops = wait_loops(any_sc, 3, "gunicorn-worker", timeout=30)
    pids = sorted(l["pid"] for l in loops)
    assert set(pids) == worker_pids(app.pid), (pids, children_of(app.pid))
    for l in loops:
        assert l["name"] == "gunicorn-worker-%d" % l["pid"], l
    # The arbiter runs no event loop: no slot of its own.
    assert sorted(l["pid"] for l in any_sc.loops()["loops"]) == pids
    wait_loops(all_sc, 3, "gunicorn-worker", timeout=5)
    assert any_sc.livez().status == 200 and all_sc.livez().status == 200
    before_any, before_all = last_stall_id(any_sc), last_stall_id(all_sc)

    path = "/sleep?s=%g" % SLEEP
    req = app.request_async(path)
    wait_detection(any_sc, req.sent_at, measure)
    rep = wait_new(any_sc, "stall report", before_any, timeout=2)
    victim = rep["pid"]
    name = "gunicorn-worker-%d" % victim
    assert victim in pids, (rep, pids)
    assert rep["class"] == "blocked" and rep["syscall"] == "clock_nanosleep", rep
    check_report(rep, name, victim, path, [(str(APP_FILE), line_of("sleep"), "blocking_sleep")])

    # Per worker: the blocked one is stalled and fails liveness, the others live.
    detail = any_sc.get("/livez", headers={"Accept": "application/json"}).json()
    assert detail["code"] == 503, detail
    states = {l["pid"]: (l["state"], l["failing_liveness"]) for l in detail["loops"]}
    assert states == {p: ("stalled", True) if p == victim else ("live", False) for p in pids}, \
        detail
    (stalled,) = [l for l in detail["loops"] if l["pid"] == victim]
    assert stalled["name"] == name and stalled["stall"]["class"] == "blocked", stalled
    verbose = any_sc.get("/livez?verbose")
    assert verbose.status == 503, verbose
    assert verbose.body.startswith("loop %s stalled " % name), verbose
    for p in pids:
        (line,) = [t for t in verbose.body.splitlines()
                   if t.startswith("loop gunicorn-worker-%d slot=" % p)]
        if p == victim:
            assert " state=stalled " in line and " failing_liveness" in line, line
            assert " syscall=clock_nanosleep" in line, line
        else:
            assert " state=live " in line and "failing_liveness" not in line, line

    # Policy all: passes while other workers are live, and says why (once
    # this sidecar too has seen the stall: it polls on its own schedule).
    all_sc.wait_loop_state(victim, "stalled", timeout=POLL_INTERVAL + MARGIN)
    r = all_sc.livez()
    assert r.status == 200, r
    assert r.body.startswith("ok: 2 of 3 loops healthy (policy all); loop %s stalled " % name), r
    # The other workers go on serving the app.
    for _ in range(3):
        h = app.get("/health", timeout=2)
        assert h.status == 200 and h.json()["pid"] in set(pids) - {victim}, h

    answers = []
    while req.response is None and req.error is None and sidecar_harness.now() < req.sent_at + SLEEP + 10:
        answers.append(all_sc.livez())
        time.sleep(0.05)
    done = req.result(timeout=10)
    assert done.status == 200 and done.json()["pid"] == victim, done
    assert answers and all(a.status == 200 for a in answers), \
        [a for a in answers if a.status != 200]

    # Both sidecars saw the one stall of that worker, and its end.
    for sc, before in ((any_sc, before_any), (all_sc, before_all)):
        ended = wait_new(sc, "stall ended", before, timeout=2)
        assert ended["pid"] == victim and ended["loop"] == name, ended
        assert SLEEP - 0.05 <= ended["duration_seconds"] <= SLEEP + MARGIN, ended
        started = [l for l in sc.lines() if l.get("msg") == "stall started"
                   and l["stall_id"] > before]
        assert [l["pid"] for l in started] == [victim], started
    any_sc.wait_livez(200, timeout=POLL_INTERVAL + MARGIN)
    # Live again (the victim may still count as lagging for a while: its
    # last lag samples include the stall), and none fails liveness.
    after = {l["pid"]: l for l in any_sc.loops()["loops"]}
    assert sorted(after) == pids, after
    for p, l in after.items():
        assert l["state"] in (("live", "lagging") if p == victim else ("live",)), l
        assert l["failing_liveness"] is False, l


def test_gunicorn_killed_worker_is_dead_then_replaced_and_forgotten(world, measure):
    """kill -9 of a gunicorn worker: its slot is dead (not stalled); the
    arbiter's new worker gets a slot of its own, named by its new pid, so
    /livez passes; the dead slot is dropped after forget_after."""
    forget_after = 3.0
    sc = world.sidecar("--forget-after", sidecar_harness.seconds(forget_after))
    app = world.gunicorn(workers=3)
    loops = wait_loops(sc, 3, "gunicorn-worker", timeout=30)
    old = {l["pid"]: l for l in loops}
    assert set(old) == worker_pids(app.pid)
    victim = loops[0]

    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = sidecar_harness.now()
    dead = sc.wait_loop_state(victim["pid"], "dead", timeout=POLL_INTERVAL + MARGIN)
    measure("dead seen after kill -9", (sidecar_harness.now() - killed_at) * 1e3, "ms")
    assert dead["name"] == victim["name"] and dead["slot"] == victim["slot"], dead
    assert dead["stall"] is None, dead  # dead, not stalled
    died = sc.wait_log("loop died", timeout=2, pid=victim["pid"])
    assert died["loop"] == victim["name"] and died["slot"] == victim["slot"], died

    # The arbiter respawns; the new worker registers under its own pid.
    def respawned():
        live = [l for l in sc.loops()["loops"]
                if l["state"] == "live" and re.fullmatch(r"gunicorn-worker-\d+", l["name"])]
        return live if len(live) == 3 and victim["pid"] not in {l["pid"] for l in live} else None
    live = sidecar_harness.wait_for("the replacement worker's loop", respawned, timeout=30)
    measure("replacement loop live after kill -9", sidecar_harness.now() - killed_at, "s")
    (new,) = [l for l in live if l["pid"] not in old]
    assert new["name"] == "gunicorn-worker-%d" % new["pid"], new
    assert new["pid"] in worker_pids(app.pid), (new, children_of(app.pid))
    assert {l["pid"] for l in live} == worker_pids(app.pid)
    # A free slot is taken first: the dead one stays to be seen (lib/FORMAT.md 8.2).
    assert new["slot"] != victim["slot"], (new, victim)
    assert sc.loop(victim["pid"])["state"] == "dead"

    # Replaced: liveness passes; the dead loop no longer counts against it.
    ok = sc.wait_livez(200, timeout=POLL_INTERVAL + MARGIN)
    assert "dead" not in ok.body, ok
    assert sc.loop(victim["pid"])["failing_liveness"] is False
    m = sc.metrics()
    assert sidecar_harness.metric(m, "loopwatch_loop_deaths_total") == 1
    assert sidecar_harness.metric(m, "loopwatch_loops", state="dead") == 1
    assert sidecar_harness.metric(m, "loopwatch_loops", state="live") == 3

    # forget_after after the death, the dead slot goes away.
    sidecar_harness.wait_for("the dead loop to be forgotten",
                   lambda: sc.loop(victim["pid"]) is None, timeout=forget_after + MARGIN + 1)
    forgotten = sidecar_harness.now() - killed_at
    measure("dead loop forgotten after kill -9", forgotten, "s")
    assert forgotten >= forget_after - 0.2, forgotten
    assert sorted(l["pid"] for l in sc.loops()["loops"]) == sorted(worker_pids(app.pid))
    m = sc.metrics()
    assert sidecar_harness.metric(m, "loopwatch_loops", state="dead") == 0
    assert sc.livez().status == 200
    assert len(sc.logged("loop died")) == 1


def test_gunicorn_respawned_worker_reclaims_the_dead_slot(world, measure):
    """A segment with one slot per worker: the respawned worker must reuse
    the dead worker's slot. The arbiter is stopped meanwhile (SIGSTOP), so
    the dead worker is not replaced: /livez fails stall_after after the death
    (policy any), then passes once the new worker has taken the slot."""
    sc = world.sidecar("--create-slots", "3")
    app = world.gunicorn(workers=3)
    loops = wait_loops(sc, 3, "gunicorn-worker", timeout=30)
    assert sc.loops()["segment"]["slot_count"] == 3
    old = {l["pid"] for l in loops}
    victim = loops[1]

    os.kill(app.pid, signal.SIGSTOP)  # no respawn for now
    try:
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = sidecar_harness.now()
        sc.wait_loop_state(victim["pid"], "dead", timeout=POLL_INTERVAL + MARGIN)
        r = sc.wait_livez(503, timeout=STALL_AFTER + POLL_INTERVAL + MARGIN)
        measure("/livez 503 after kill -9, not replaced", r.ended - killed_at, "s")
        assert r.ended - killed_at >= STALL_AFTER - 0.05, r
        assert r.body.startswith("loop %s dead: pid %d gone without closing, not replaced for "
                                 % (victim["name"], victim["pid"])), r
    finally:
        os.kill(app.pid, signal.SIGCONT)
    resumed_at = sidecar_harness.now()

    gone = sc.wait_log("loop gone", timeout=30, pid=victim["pid"])
    measure("dead slot reclaimed after SIGCONT", sidecar_harness.now() - resumed_at, "s")
    assert gone["reason"] == "slot reclaimed" and gone["slot"] == victim["slot"], gone
    live = wait_loops(sc, 3, "gunicorn-worker", timeout=10)
    (new,) = [l for l in live if l["pid"] not in old]
    assert new["slot"] == victim["slot"], (new, victim)
    assert new["name"] == "gunicorn-worker-%d" % new["pid"], new
    assert {l["pid"] for l in live} == worker_pids(app.pid)
    assert sc.wait_livez(200, timeout=POLL_INTERVAL + MARGIN).status == 200
    assert all(l["state"] != "dead" for l in sc.loops()["loops"]), sc.loops()


def test_uvicorn_workers_each_get_a_slot(world):
    """uvicorn --workers 2: one slot per worker process, named
    uvicorn-worker-<pid> with the pids of the real workers; the supervisor
    (the runner's pid) has no loop."""
    sc = world.sidecar()
    app = world.uvicorn("--workers", "2", loop="asyncio")
    loops = wait_loops(sc, 2, "uvicorn-worker", timeout=30)

    def spawned_workers():
        out = set()
        for pid in children_of(app.pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmdline = f.read().split(b"\0")
            except OSError:
                continue
            # multiprocessing's spawn start method runs spawn_main; its
            # resource tracker, another child, runs no loop.
            if any(b"spawn_main" in a for a in cmdline):
                out.add(pid)
        return out
    workers = spawned_workers()
    assert len(workers) == 2, children_of(app.pid)
    assert {l["pid"] for l in loops} == workers, (loops, workers)
    for l in loops:
        assert l["name"] == "uvicorn-worker-%d" % l["pid"] and l["kind"] == "asyncio", l
    all_loops = sc.loops()["loops"]
    assert len(all_loops) == 2 and app.pid not in {l["pid"] for l in all_loops}, all_loops
    assert sc.livez().status == 200
    served = app.get("/health").json()["pid"]
    assert served in workers, (served, workers)

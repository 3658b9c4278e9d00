# SPDX-License-Identifier: Apache-2.0
"""The segment changes under a running app: deleted, another file renamed
over it, truncated. The app's library re-attaches its loop to the file now
at the path within a second, without a crash, and a later stall of the app
is caught (before, /livez answered 200 "liveness not judged" or "0 loops"
from then on). And when the segment stays unreadable after loops were live,
/livez fails once stall_after has passed: the documented choice
(docs/kubernetes.md, LoopwatchSegmentLost), with a metric and a log line."""

import os
import shutil

from sidecar_harness import MARGIN, POLL_INTERVAL, STALL_AFTER, metric, now, wait_for

# The library looks at the path twice a second: "within a second", with room
# for a loaded machine.
REATTACH_BOUND = 1.0 + MARGIN


def live_again(sc, app, old_ino, seg):
    """Waits until the loop of `app` is live in a file other than `old_ino`."""
    def check():
        if not seg.exists() or seg.stat().st_ino == old_ino:
            return None
        loops = [l for l in sc.loops()["loops"] if l["pid"] == app.pid and l["state"] == "live"]
        return loops or None
    return wait_for("the loop live again in the new file", check, 5)


def renamed_over(seg):
    other = seg.parent / "other"
    shutil.copyfile(seg, other)  # a valid segment, with a stale copy of the slots
    with open(other, "r+b") as f:
        f.seek(24)
        f.write(os.urandom(8))  # another segment_id
    os.rename(other, seg)


def test_a_stall_after_the_segment_changed_is_caught(world, measure):
    seg = world.segment
    sc = world.sidecar("--create-slots", "0")  # only the app creates it
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)

    changes = {
        "deleted": lambda: os.unlink(seg),
        "renamed over": lambda: renamed_over(seg),
        "truncated to 4096 bytes": lambda: os.truncate(seg, 4096),
        "truncated to 0": lambda: os.truncate(seg, 0),
    }
    for how, change in changes.items():
        ino = seg.stat().st_ino
        t0 = now()
        change()
        live_again(sc, app, ino, seg)
        took = now() - t0
        measure("loop live again after the segment was %s" % how, took, "s")
        assert took <= REATTACH_BOUND, (how, took)
        assert app.alive(), "the app died when the segment was %s" % how

        # A stall now is seen, as before the change.
        req = app.request_async("/sleep?ms=%d" % int((STALL_AFTER + 1.0) * 1000))
        r = sc.wait_livez(503, timeout=STALL_AFTER + POLL_INTERVAL + 1.0 + MARGIN)
        assert "stalled" in r.body, (how, r)
        assert req.result(timeout=10).status == 200
        sc.wait_livez(200, timeout=POLL_INTERVAL + MARGIN)


def test_segment_unreadable_after_loops_were_live_fails_liveness(world, measure):
    seg = world.segment
    sc = world.sidecar("--create-slots", "0")
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)

    # Something that is not a segment takes the path (a directory: neither
    # the app nor the sidecar can use it, and neither touches it).
    os.unlink(seg)
    os.mkdir(seg)
    t0 = now()
    sc.wait_log("segment unreadable", timeout=2)
    r = sc.wait_livez(503, timeout=STALL_AFTER + 1.0 + MARGIN)
    waited = now() - t0
    measure("/livez 503 after the segment became unreadable", waited, "s")
    assert waited >= STALL_AFTER - 0.2, waited  # not before stall_after
    assert "after 1 loop was live: they cannot be watched" in r.body, r
    lost = sc.wait_log("segment lost: /livez fails", timeout=1)
    assert "cannot be watched" in lost["reason"], lost
    m = sc.metrics()
    assert metric(m, "loopwatch_segment_loops_lost") == 1
    assert metric(m, "loopwatch_segment_unreadable_seconds") >= STALL_AFTER - 0.2
    assert app.alive()

    # The way out: the path is free again, the app creates the segment
    # (its library looks twice a second), and all is well.
    os.rmdir(seg)
    t0 = now()
    # (The loop of the lost file is listed "gone" beside the new one.)
    wait_for("the loop live in the new file",
             lambda: [l for l in sc.loops()["loops"]
                      if l["pid"] == app.pid and l["state"] == "live"],
             REATTACH_BOUND + 1.0)
    ok = sc.wait_livez(200, timeout=1)
    measure("/livez 200 after the path was freed", now() - t0, "s")
    assert "1 live" in ok.body, ok
    m = sc.metrics()
    assert metric(m, "loopwatch_segment_loops_lost") == 0
    assert metric(m, "loopwatch_segment_unreadable_seconds") == 0


def test_segment_never_readable_is_no_verdict(world):
    """No loop was ever seen: the app has not started; nothing fails."""
    os.mkdir(world.segment)
    sc = world.sidecar("--create-slots", "0")
    sc.wait_log("segment unreadable", timeout=2)
    t0 = now()
    while now() - t0 < STALL_AFTER + 0.5:
        r = sc.livez()
        assert r.status == 200 and "not judged" in r.body, r
    assert metric(sc.metrics(), "loopwatch_segment_loops_lost") == 0

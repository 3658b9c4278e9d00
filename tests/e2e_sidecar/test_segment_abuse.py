# SPDX-License-Identifier: Apache-2.0
"""Any bytes in the segment, while the sidecar runs: every probe answers at
once with a clear error naming the problem, /healthz stays 200, the sidecar
keeps serving, and it recovers when a valid segment comes back."""

import os
import random
import signal
import struct

from sidecar_harness import metric, wait_for

PROBES = ("/livez", "/readyz", "/startupz")
QUICK = 0.25  # seconds: a probe must never wait on the segment
MAGIC = b"LOOPWTCH"


class Abuse:
    def __init__(self, sc, measure):
        self.sc = sc
        self.measure = measure
        self.slowest = 0.0

    def expect(self, status, needles, timeout=2.0):
        """Waits until /debug/loops (the admin port) reports segment
        `status` with an error naming every needle (what the file holds),
        then checks that every probe names the status, quickly, and quotes
        nothing of the file: no needle on the public port."""
        sc = self.sc
        seg = wait_for("segment status %s" % status,
                       lambda: (lambda s: s if s["status"] == status else None)(
                           sc.loops()["segment"]), timeout)
        for n in needles:
            assert n in seg["error"], (n, seg)
        for path in PROBES:
            r = sc.get(path, timeout=2)
            self.slowest = max(self.slowest, r.elapsed)
            assert r.elapsed < QUICK, (path, r)
            if path == "/startupz" and r.status == 200 and r.body == "ok: started\n":
                continue  # startup passed once (the app ran); it stays passed
            assert "segment %s (" % status in r.body, (path, r)
            for n in needles:
                assert n not in r.body, (path, n, r)
            assert "\n" not in r.body.rstrip("\n"), r  # one line
        live = sc.get("/livez")
        assert live.status == 200 and "not judged" in live.body, live
        ready = sc.get("/readyz")
        assert ready.status == 503, ready
        j = sc.get("/readyz", headers={"Accept": "application/json"}).json()
        assert j["segment"]["status"] == status, j
        health = sc.get("/healthz")
        self.slowest = max(self.slowest, health.elapsed)
        assert health.status == 200, health
        assert sc.alive()
        return seg

    def expect_logged(self, needle):
        """A "segment unreadable" log line whose error names `needle`."""
        return wait_for("'segment unreadable' naming %r" % needle,
                        lambda: [l for l in self.sc.logged("segment unreadable")
                                 if needle in l.get("error", "")], 1)


def overwrite(path, data):
    """Writes in place: same file, same inode, as a buggy or hostile writer
    with the segment mapped would."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))


def test_segment_abuse_while_serving(world, measure):
    seg = world.segment
    # The app, not the sidecar, creates the segment here: truncated to zero
    # it stays "not initialised" instead of being re-created.
    sc = world.sidecar("--create-slots", "0")
    abuse = Abuse(sc, measure)

    abuse.expect("missing", ["does not exist yet"])

    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)
    app.signal(signal.SIGTERM)  # closes its slot
    app.wait(5)
    sc.wait_log("loop gone", timeout=2, pid=app.pid)
    valid = seg.read_bytes()
    assert valid[:8] == MAGIC and len(valid) == 256 + 64 * 8192

    rng = random.Random(20261122)
    garbage = bytearray(rng.randbytes(len(valid)))
    garbage[0:8] = b"\xde\xad\xbe\xef\x01\x02\x03\x04"
    overwrite(seg, bytes(garbage))
    abuse.expect("bad_magic", ["magic 0x04030201efbeadde"])
    abuse.expect_logged("not a loopwatch segment")

    # A valid header over random slots: nothing to judge, nothing to crash.
    for round_ in range(5):
        junk = valid[:256] + rng.randbytes(len(valid) - 256)
        overwrite(seg, junk)
        poll = sc.loops()["poll"]
        wait_for("2 polls", lambda: sc.loops()["poll"] >= poll + 2, 2)
        for path in PROBES + ("/healthz", "/metrics"):
            r = sc.get(path)
            assert r.elapsed < QUICK and r.status in (200, 503), (path, r)
        assert sc.get("/healthz").status == 200
        assert sc.admin("/debug/stalls").status == 200
        assert sc.alive()

    os.truncate(seg, 100)
    abuse.expect("corrupt", ["100 bytes, shorter than its header"])
    abuse.expect_logged("shorter than its header")

    os.truncate(seg, 0)
    abuse.expect("not_initialised", ["is empty"])

    v2 = bytearray(valid)
    v2[8:12] = struct.pack("<HH", 2, 0)  # major 2, minor 0
    overwrite(seg, bytes(v2))
    abuse.expect("version_mismatch", ["format version 2.0", "understands version 1."])
    abuse.expect_logged("format version 2.0")

    # A header that lies about its geometry.
    bad = bytearray(valid)
    bad[20:24] = struct.pack("<I", 1000)  # 1000 slots in a 64-slot file
    overwrite(seg, bytes(bad))
    abuse.expect("corrupt", ["is corrupt", "1000 slots"])

    m = sc.metrics()
    errors = metric(m, "loopwatch_segment_errors_total")
    measure("segment errors counted", errors)
    assert errors >= 6, errors
    measure("slowest probe during the abuse", abuse.slowest * 1e3, "ms")

    # Recovery: a new file (new inode) created by a new app.
    os.unlink(seg)
    abuse.expect("missing", ["does not exist yet"])
    app2 = world.app()
    sc.wait_loop_state(app2.pid, "live", timeout=5)
    assert sc.loops()["segment"]["status"] == "ok"
    ok = sc.wait_livez(200, timeout=1)
    assert "1 live" in ok.body, ok
    assert sc.get("/readyz").status == 200
    sc.wait_log("segment readable", timeout=1)
    assert sc.alive()


def test_sidecar_recreates_a_deleted_or_emptied_segment(world):
    seg = world.segment
    sc = world.sidecar()  # create_slots 64 by default
    wait_for("segment ok", lambda: sc.loops()["segment"]["status"] == "ok", 2)
    size = seg.stat().st_size
    assert size == 256 + 64 * 8192, size

    ino = seg.stat().st_ino
    os.unlink(seg)
    wait_for("a new segment file", lambda: seg.exists() and seg.stat().st_ino != ino, 2)
    wait_for("segment ok", lambda: sc.loops()["segment"]["status"] == "ok"
             and sc.loops()["segment"]["slot_count"] == 64, 2)

    os.truncate(seg, 0)
    wait_for("segment re-initialised", lambda: seg.stat().st_size == size, 2)
    wait_for("segment ok", lambda: sc.loops()["segment"]["status"] == "ok", 2)
    assert seg.read_bytes()[:8] == MAGIC

    # An app opens the re-created segment and is watched.
    app = world.app()
    sc.wait_loop_state(app.pid, "live", timeout=5)
    assert sc.livez().status == 200


def test_symlinked_segment_shows_nothing_of_the_target(world, measure):
    """The segment path a symbolic link to a file the caller may not read:
    the sidecar does not follow it, the public port says only that the
    segment cannot be read (before, it printed the target's first 8 bytes as
    the "magic"), and a dangling link makes the sidecar create nothing."""
    secret = world.tmp / "secret"
    secret.write_bytes(b"S3CR3T!!" + b"\x00" * 300)
    world.segment.symlink_to(secret)
    sc = world.sidecar()  # creates the segment when missing (create_slots)
    seg = wait_for("segment error", lambda: (lambda s: s if s["status"] == "error" else None)(
        sc.loops()["segment"]), 3)
    assert "is a symbolic link" in seg["error"], seg
    for path in PROBES + ("/healthz", "/metrics"):
        body = sc.get(path).body
        for leak in ("S3CR3T", "5333435233542121", "2121543352433353"):
            assert leak not in body, (path, body)
    assert "segment error (" in sc.get("/livez").body
    assert secret.read_bytes().startswith(b"S3CR3T!!")

    world.segment.unlink()
    target = world.tmp / "created-elsewhere"
    world.segment.symlink_to(target)
    poll = sc.loops()["poll"]
    wait_for("3 polls", lambda: sc.loops()["poll"] >= poll + 3, 2)
    assert not target.exists(), "the sidecar created the link's target"
    assert sc.loops()["segment"]["status"] == "error"

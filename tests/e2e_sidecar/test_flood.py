# SPDX-License-Identifier: Apache-2.0
"""No client can make a kubelet probe fail: 1,000 hostile connections from
other addresses (idle, trickling, churning as fast as they can) against the
public port, while 10,000 probes come the kubelet's way (a fresh connection
each, "Connection: close", 1 s for the whole exchange) from the probe peer's
address, which has a lane of its own (--probe-peers, docs/kubernetes.md).
flood.c is both sides; the test fails on a single failed probe."""

import json
import os
import pathlib
import subprocess

import pytest

from sidecar_harness import metric

HERE = pathlib.Path(__file__).resolve().parent
PROBES = 10000
RATE = 250  # probes a second: 40 s


@pytest.fixture(scope="session")
def flood_bin(tmp_path_factory):
    """The flood binary: built by CMake (LOOPWATCH_FLOOD_BIN), else here."""
    given = os.environ.get("LOOPWATCH_FLOOD_BIN")
    if given:
        return given
    out = tmp_path_factory.mktemp("flood") / "flood"
    subprocess.run(["cc", "-O2", "-pthread", str(HERE / "flood.c"), "-o", str(out)], check=True)
    return str(out)


def test_probes_from_the_node_pass_through_a_flood(world, flood_bin, measure):
    app = world.app()
    sc = world.sidecar("--probe-peers", "127.0.0.1")
    sc.wait_livez(200, timeout=10)

    r = subprocess.run([flood_bin, "--port", str(sc.port), "--path", "/livez",
                        "--probe-src", "127.0.0.1", "--hostile", "1000", "--hostile-peers", "1",
                        "--probes", str(PROBES), "--rate", str(RATE), "--timeout-ms", "1000"],
                       capture_output=True, text=True, timeout=PROBES / RATE + 120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    measure("probe p50 under the flood", result["p50_ms"], "ms")
    measure("probe p99 under the flood", result["p99_ms"], "ms")
    measure("probe max under the flood", result["max_ms"], "ms")
    measure("hostile connections opened", result["hostile"]["connects"])

    assert result["failures"] == 0, result
    assert result["codes"] == {"200": PROBES}, result
    # The hostile side really was busy, and the probes really used the lane.
    assert result["hostile"]["connects"] > 10000, result
    m = sc.metrics()
    assert metric(m, "loopwatch_http_connections_total", listener="probe_lane") >= PROBES
    assert metric(m, "loopwatch_http_connections_total", listener="public") > 10000
    assert app.alive()

# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the end-to-end tests.

Paths come from the environment (ctest sets them; see CMakeLists.txt):
  LOOPWATCH_SOURCE_DIR  the source tree (default: two levels up from here)
  LOOPWATCH_BUILD_DIR   a build tree of it (default: SOURCE/build)
  LOOPWATCH_BIN         the sidecar binary (default: BUILD/sidecar/loopwatch)
  LOOPWATCH_ASIO_APP    an already built asio example (optional; otherwise
                        examples/asio/build.sh builds one per session)
  LOOPWATCH_E2E_CXXFLAGS / LOOPWATCH_E2E_LDFLAGS
                        compiler and linker flags for that build (a sanitizer
                        build's libloopwatch needs its sanitizer runtime)
"""

import os
import pathlib
import subprocess
import time

import pytest

import sidecar_harness

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = pathlib.Path(os.environ.get("LOOPWATCH_SOURCE_DIR") or HERE.parent.parent)
BUILD_DIR = pathlib.Path(os.environ.get("LOOPWATCH_BUILD_DIR") or SOURCE_DIR / "build")
SIDECAR_BIN = pathlib.Path(os.environ.get("LOOPWATCH_BIN") or BUILD_DIR / "sidecar" / "loopwatch")

# (test id, name, value, unit) of what the tests measured; printed at the end.
_MEASUREMENTS = []


def pytest_terminal_summary(terminalreporter):
    if not _MEASUREMENTS:
        return
    terminalreporter.section("loopwatch e2e measurements")
    for test, name, value, unit in _MEASUREMENTS:
        shown = str(value)
        if isinstance(value, float):
            shown = "%.3f" % value if unit == "s" else "%.1f" % value
        terminalreporter.write_line("%-40s %-36s %s %s" % (test.split("::")[-1], name, shown, unit))


@pytest.fixture
def measure(request):
    """measure(name, value, unit): records a figure for the summary."""
    def record(name, value, unit=""):
        _MEASUREMENTS.append((request.node.nodeid, name, value, unit))
        request.node.user_properties.append((name, value))
        print("%s: %s %s" % (name, value, unit))
    return record


@pytest.fixture(scope="session")
def sidecar_bin():
    if not SIDECAR_BIN.is_file():
        pytest.fail("no sidecar binary at %s (build it, or set LOOPWATCH_BIN)" % SIDECAR_BIN)
    return str(SIDECAR_BIN)


@pytest.fixture(scope="session")
def asio_app_bin(tmp_path_factory):
    """The asio example app, built once per session with
    examples/asio/build.sh against libloopwatch installed from BUILD_DIR."""
    given = os.environ.get("LOOPWATCH_ASIO_APP")
    if given:
        return given
    work = tmp_path_factory.mktemp("asio")
    log = work / "build.log"
    env = dict(os.environ)
    if os.environ.get("LOOPWATCH_E2E_CXXFLAGS"):
        env["CXXFLAGS"] = os.environ["LOOPWATCH_E2E_CXXFLAGS"]
    if os.environ.get("LOOPWATCH_E2E_LDFLAGS"):
        env["LDFLAGS"] = os.environ["LOOPWATCH_E2E_LDFLAGS"]
    t0 = time.monotonic()
    with open(log, "wb") as err:
        r = subprocess.run(
            ["sh", str(SOURCE_DIR / "examples" / "asio" / "build.sh"), str(BUILD_DIR),
             str(work / "prefix"), str(work / "build")],
            stdout=subprocess.PIPE, stderr=err, env=env, timeout=900)
    if r.returncode != 0:
        pytest.fail("examples/asio/build.sh failed (%d):\n%s"
                    % (r.returncode, log.read_text(errors="replace")[-4000:]))
    _MEASUREMENTS.append(("session", "asio example build (build.sh)",
                          time.monotonic() - t0, "s"))
    path = r.stdout.decode().strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="session")
def loops_app_bin():
    """bench/sidecar/loops_app: built by CMake (LOOPWATCH_LOOPS_APP), or
    found in the default build tree."""
    given = os.environ.get("LOOPWATCH_LOOPS_APP")
    if given:
        return given
    root = pathlib.Path(__file__).resolve().parent.parent.parent
    build = pathlib.Path(os.environ.get("LOOPWATCH_BUILD_DIR") or root / "build")
    path = build / "bench" / "sidecar" / "loopwatch_loops_app"
    if not path.is_file():
        # The sanitizer presets build no benchmarks; the default build
        # (LOOPWATCH_BUILD_BENCH on) sets LOOPWATCH_LOOPS_APP above.
        pytest.skip("no loops_app at %s (build with -DLOOPWATCH_BUILD_BENCH=ON, or set "
                    "LOOPWATCH_LOOPS_APP)" % path)
    return str(path)



class World:
    """A temp dir with one segment path, and every process a test started
    there: sidecars and apps are killed at teardown whatever happened."""

    def __init__(self, tmp, sidecar_bin, request):
        self.tmp = tmp
        self.segment = tmp / "segment"
        self.sidecar_bin = sidecar_bin
        self._request = request
        self.procs = []

    def sidecar(self, *extra, start=True, **kw):
        s = sidecar_harness.Sidecar(self.sidecar_bin, self.tmp, self.segment,
                          name="sidecar%d" % len(self.procs))
        self.procs.append(s)
        return s.start(*extra, **kw) if start else s

    def app(self, name="asio-main", start=True, cpus=None):
        binary = self._request.getfixturevalue("asio_app_bin")
        a = sidecar_harness.App(binary, self.tmp, self.segment, name=name, label="app%d" % len(self.procs))
        self.procs.append(a)
        return a.start(cpus=cpus) if start else a

    def burner(self, cpus):
        b = sidecar_harness.Burner(cpus)
        self.procs.append(b)
        return b

    def teardown(self):
        """Kills the apps, stops the sidecars with SIGTERM (SIGKILL if that
        does not work) and returns what went wrong with a sidecar: exited on
        its own (a crash), did not stop cleanly, or a sanitizer report."""
        problems = []
        sidecars = [p for p in self.procs if isinstance(p, sidecar_harness.Sidecar) and p.proc]
        for s in sidecars:
            if not s.expect_exit and s.proc.poll() is not None:
                problems.append("%s exited by itself with %s" % (s.name, s.proc.returncode))
        for p in self.procs:
            if not isinstance(p, sidecar_harness.Sidecar):
                p.teardown()
        for s in sidecars:
            if s.alive():
                s.signal(sidecar_harness.signal.SIGTERM)
                try:
                    rc = s.wait(5)
                except sidecar_harness.subprocess.TimeoutExpired:
                    rc = "no exit 5 s after SIGTERM"
                    s.teardown()
                if rc != 0:
                    problems.append("%s did not stop cleanly on SIGTERM: %s" % (s.name, rc))
        for s in sidecars:
            text = s.log_text()
            if any(m in text for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                       "runtime error:", "WARNING: ThreadSanitizer")):
                problems.append("%s: sanitizer report" % s.name)
        if problems:
            for s in sidecars:
                problems.append("--- %s log (%s):\n%s" % (s.name, s.log_path, s.log_text()[-6000:]))
        return problems


@pytest.fixture
def world(tmp_path, sidecar_bin, request):
    w = World(tmp_path, sidecar_bin, request)
    yield w
    problems = w.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)

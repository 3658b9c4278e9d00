# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the Python package's tests.

The package keeps process-wide state (a process keeps its first segment for
life, loops are counted for names, the reporter thread), so the code under
test runs in a fresh Python per case (the one running pytest: ctest runs these
tests on every CPython the machine has, see tests/python/CMakeLists.txt), with its own
LOOPWATCH_SEGMENT under tmp_path; the test reads the segment back with the
real reader (`loopwatch status --json`, see script_support.py).

Paths come from the environment (ctest sets them; see
tests/python/CMakeLists.txt):
  PYTHONPATH            where the built package is (build/python)
  LOOPWATCH_BIN         the sidecar binary (default BUILD/sidecar/loopwatch)
  LOOPWATCH_SOURCE_DIR / LOOPWATCH_BUILD_DIR
"""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = pathlib.Path(os.environ.get("LOOPWATCH_SOURCE_DIR") or HERE.parents[2])
BUILD_DIR = pathlib.Path(os.environ.get("LOOPWATCH_BUILD_DIR") or SOURCE_DIR / "build")
BIN = pathlib.Path(os.environ.get("LOOPWATCH_BIN") or BUILD_DIR / "sidecar" / "loopwatch").resolve()
# The Python under test runs the cases too.
PY = sys.executable
# uvloop comes from Debian, for Debian's Python only: cases named for it are
# skipped on the others.
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
# The system call of time.sleep(): select() until 3.10, clock_nanosleep() since.
SLEEP_SYSCALL = "clock_nanosleep" if sys.version_info >= (3, 11) else "pselect6"


def pytest_collection_modifyitems(config, items):
    if HAVE_UVLOOP:
        return
    skip = pytest.mark.skip(reason="no uvloop for %s (Debian's 3.11 has it)" % PY)
    for item in items:
        if "uvloop" in item.nodeid:
            item.add_marker(skip)

os.environ["LW_TEST_BIN"] = str(BIN)
sys.path.insert(0, str(HERE))
import script_support  # noqa: E402

script_support.BIN = str(BIN)


def _package_parent():
    spec = importlib.util.find_spec("loopwatch")
    if spec is None or not spec.origin:
        pytest.exit("the loopwatch package is not importable: put build/python on "
                    "PYTHONPATH (see tests/python/CMakeLists.txt)", returncode=1)
    return str(pathlib.Path(spec.origin).resolve().parent.parent)


PKG_PARENT = _package_parent()


def pytest_configure(config):
    if not BIN.is_file():
        pytest.exit("no sidecar binary at %s (build loopwatch_sidecar or set "
                    "LOOPWATCH_BIN)" % BIN, returncode=1)


def child_env(segment=None, **extra):
    """The environment of a script under test: no LOOPWATCH_* of ours (the
    test decides them all), the package and script_support on PYTHONPATH.
    A value of None removes the variable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LOOPWATCH_") and k not in ("PYTHONSTARTUP", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([PKG_PARENT, str(HERE)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["LW_TEST_BIN"] = str(BIN)
    if segment is not None:
        env["LOOPWATCH_SEGMENT"] = str(segment)
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def write_script(directory, name, text):
    """Writes a dedented script; returns its absolute path (as a str: the
    path stack frames show)."""
    path = pathlib.Path(directory) / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def line_of(path, marker):
    """The 1-based line of the script holding the comment `# <marker>`."""
    lines = pathlib.Path(path).read_text().splitlines()
    hits = [i + 1 for i, l in enumerate(lines) if l.rstrip().endswith("# " + marker)]
    assert len(hits) == 1, "marker %r found %d times in %s" % (marker, len(hits), path)
    return hits[0]


def results(stdout):
    """The RESULT lines a script printed (script_support.result), parsed."""
    found = [json.loads(l[len("RESULT "):]) for l in stdout.splitlines()
             if l.startswith("RESULT ")]
    return found


def one_result(proc_result):
    rc, out, err = proc_result
    found = results(out)
    assert rc == 0 and len(found) == 1, (
        "script failed (exit %s)\nstdout:\n%s\nstderr:\n%s" % (rc, out, err))
    return found[0]


class Child:
    """A script running in the background (in its own process group). Its
    output is collected by threads; wait_line() waits for a stdout line."""

    def __init__(self, argv, env, cwd=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=cwd,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.cond = threading.Condition()
        self.out = []          # stdout lines, in order
        self.taken = set()     # indexes of the lines wait_line() returned
        self.err = []
        self.closed = 0        # streams at EOF
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self.cond:
                sink.append(raw.decode("utf-8", "replace"))
                self.cond.notify_all()
        stream.close()
        with self.cond:
            self.closed += 1
            self.cond.notify_all()

    def wait_line(self, prefix, timeout=30):
        """The first stdout line starting with prefix not returned before
        (lines printed by several processes may come in any order)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, line in enumerate(self.out):
                    if i not in self.taken and line.startswith(prefix):
                        self.taken.add(i)
                        return line.rstrip("\n")
                if self.closed == 2:
                    raise AssertionError("%s ended its output (exit %s) without a line %r\n%s"
                                         % (self.argv, self.proc.poll(), prefix, self._describe()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no line %r from %s within %ss\n%s"
                                         % (prefix, self.argv, timeout, self._describe()))
                self.cond.wait(min(left, 0.5))

    def wait(self, timeout=30):
        """(returncode, stdout, stderr) once it exits; fails (and kills it)
        if that takes longer than timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s still running after %ss (hang?)\n%s"
                                 % (self.argv, timeout, self.describe()))
        for t in self._threads:
            t.join(5)
        return self.proc.returncode, "".join(self.out), "".join(self.err)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stderr(self):
        with self.cond:
            return "".join(self.err)

    def _describe(self):
        return "stdout:\n%s\nstderr:\n%s" % ("".join(self.out), "".join(self.err))

    def describe(self):
        with self.cond:
            return self._describe()


@pytest.fixture
def spawn():
    """spawn(argv, env, cwd=None) -> Child; every child (and its process
    group) is killed at the end of the test."""
    children = []

    def start(argv, env, cwd=None):
        c = Child([str(a) for a in argv], env, cwd)
        children.append(c)
        return c

    yield start
    for c in children:
        c.kill()


@pytest.fixture
def segment(tmp_path):
    return tmp_path / "segment"


def run_all(spawn, jobs, timeout=60):
    """Runs (argv, env[, cwd]) jobs at once; returns their
    (returncode, stdout, stderr) in order."""
    children = [spawn(*job) for job in jobs]
    return [c.wait(timeout) for c in children]


def status(segment, stall_after="250ms"):
    return script_support.status(segment, stall_after=stall_after)


def loops_of(st, **kw):
    return script_support.loops_of(st, **kw)


def wait_until(fn, timeout=20, interval=0.05, what="condition"):
    return script_support.wait_until(fn, timeout, interval, what)


def warnings_in(stderr):
    """The records of the "loopwatch" logger, as the scripts format them
    (logging.basicConfig(format=LOG_FORMAT))."""
    return [l for l in stderr.splitlines() if l.startswith("loopwatch:")]


LOG_FORMAT = "%(name)s:%(levelname)s:%(message)s"

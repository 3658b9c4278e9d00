# SPDX-License-Identifier: Apache-2.0
"""Activation by environment alone: the payload `loopwatch python-payload`
copies (the package and its start-up hook) with its bootstrap directory
first on PYTHONPATH and LOOPWATCH_SEGMENT set watches an unchanged app with
an unchanged command; the app's own sitecustomize still runs (also when it
raises), its path keeps its order and nothing of it is shadowed; a Python
the build cannot serve gets one line and runs as before."""

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import BIN, PKG_PARENT, PY, loops_of, status, wait_until, write_script

APP = """
import asyncio, json, os, sys
async def main():
    await asyncio.sleep(0.6)
    print("RESULT " + json.dumps({
        "pid": os.getpid(),
        "path": sys.path,
        "app_sitecustomize": getattr(sys, "app_sitecustomize", None),
        "loopwatch": sys.modules["loopwatch"].__file__ if "loopwatch" in sys.modules else None,
    }), flush=True)
    if os.environ.get("LINGER"):
        sys.stdin.read()  # until the test has read the segment
asyncio.run(main())
"""

APP_SITECUSTOMIZE = """
import os, sys
sys.app_sitecustomize = os.getpid()
"""

RAISING_SITECUSTOMIZE = """
raise RuntimeError("the app's own sitecustomize is broken")
"""


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """The payload as the init container lays it out, from this build."""
    dest = tmp_path_factory.mktemp("payload")
    p = subprocess.run([str(BIN), "python-payload", "--from", PKG_PARENT, str(dest)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, p.stderr
    assert "set PYTHONPATH=%s" % (dest / "loopwatch" / "_bootstrap") in p.stdout
    return dest


def env_for(pythonpath, segment=None, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LOOPWATCH_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if segment is not None:
        env["LOOPWATCH_SEGMENT"] = str(segment)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_app(tmp_path, env, python=PY, segment=None):
    """Runs the app; with `segment`, reads it back while the app still runs.
    Returns (completed process, the app's RESULT, the loops of the app)."""
    app = write_script(tmp_path, "shop.py", APP)
    env = dict(env, LINGER="1")
    child = subprocess.Popen([python, app], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        r = json.loads(line[7:]) if line.startswith("RESULT ") else None
        loops = loops_of(status(segment, stall_after="5s"), pid=r["pid"]) if segment and r else None
        out, err = child.communicate("", timeout=60)
    finally:
        child.kill()
    return subprocess.CompletedProcess(child.args, child.returncode, line + out, err), r, loops


def test_the_payload_watches_an_unchanged_app(tmp_path, payload):
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    write_script(app_dir, "sitecustomize.py", APP_SITECUSTOMIZE)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    boot = payload / "loopwatch" / "_bootstrap"
    seg = tmp_path / "segment"
    p, r, loops = run_app(tmp_path, env_for([boot, first, app_dir, second], seg), segment=seg)
    assert p.returncode == 0, p.stderr
    # Watched: a slot named for the program and pid, from the payload's copy.
    assert r["loopwatch"].startswith(str(payload)), r
    assert [l["name"] for l in loops] == ["shop-%d" % r["pid"]], loops
    # The app's own sitecustomize ran, in the app's process.
    assert r["app_sitecustomize"] == r["pid"]
    # Its path: in its order, nothing removed; the package's parent last.
    path = r["path"]
    idx = [path.index(str(d)) for d in (boot, first, app_dir, second)]
    assert idx == sorted(idx), path
    assert path[-1] == str(payload), path
    # The bootstrap directory shadows nothing but sitecustomize (chained).
    assert sorted(os.listdir(boot)) in (["__init__.py", "sitecustomize.py"],
                                        ["__init__.py", "__pycache__", "sitecustomize.py"])


def test_an_app_sitecustomize_that_raises_does_not_stop_the_app(tmp_path, payload):
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    write_script(app_dir, "sitecustomize.py", RAISING_SITECUSTOMIZE)
    seg = tmp_path / "segment"
    p, r, loops = run_app(tmp_path, env_for([payload / "loopwatch" / "_bootstrap", app_dir], seg),
                          segment=seg)
    assert p.returncode == 0, p.stderr
    # As Python itself says it when it has no loopwatch in front.
    assert "Error in sitecustomize; set PYTHONVERBOSE for traceback:" in p.stderr
    assert "RuntimeError: the app's own sitecustomize is broken" in p.stderr
    assert len(loops) == 1, loops


def test_without_a_segment_nothing_is_loaded(tmp_path, payload):
    p, r, _ = run_app(tmp_path, env_for([payload / "loopwatch" / "_bootstrap"]))
    assert p.returncode == 0, p.stderr
    assert r["loopwatch"] is None
    assert str(payload) not in r["path"]
    assert p.stderr == ""


def test_loopwatch_auto_0_turns_it_off(tmp_path, payload):
    seg = tmp_path / "segment"
    p, r, _ = run_app(tmp_path, env_for([payload / "loopwatch" / "_bootstrap"], seg,
                                        LOOPWATCH_AUTO="0"))
    assert p.returncode == 0, p.stderr
    assert r["loopwatch"] is None


def test_workers_of_the_app_are_watched_as_workers(tmp_path, payload):
    app = write_script(tmp_path, "pool.py", """
        import asyncio, multiprocessing, os, sys
        def worker():
            async def main():
                await asyncio.sleep(0.6)
            asyncio.run(main())
        if __name__ == "__main__":
            multiprocessing.set_start_method("spawn")
            p = multiprocessing.Process(target=worker)
            p.start()
            print("WORKER", p.pid, flush=True)
            asyncio.run(asyncio.sleep(0.6))
            p.join()
    """)
    seg = tmp_path / "segment"
    env = env_for([payload / "loopwatch" / "_bootstrap"], seg)
    child = subprocess.Popen([PY, app], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    worker = int(child.stdout.readline().split()[1])
    def two_loops():
        # One status read for both the count and the names: between two
        # reads the parent's loop may already have closed.
        loops = loops_of(status(seg, stall_after="5s"))
        return sorted(l["name"] for l in loops) if len(loops) == 2 else None
    names = wait_until(two_loops, timeout=20, what="two loops")
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert names == sorted(["pool-%d" % child.pid, "pool-worker-%d" % worker]), names


def _old_pythons():
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for d in sorted(glob.glob(os.path.join(root, "versions", "*"))):
        name = os.path.basename(d)
        if name.startswith(("2.", "3.6.", "3.7.")):
            exe = os.path.join(d, "bin", "python")
            if os.access(exe, os.X_OK):
                found.append(exe)
    return found


@pytest.mark.skipif(not _old_pythons(), reason="no CPython 2.7, 3.6 or 3.7 here (pyenv's)")
@pytest.mark.parametrize("python", _old_pythons())
def test_a_python_it_cannot_serve_gets_one_line_and_runs(tmp_path, payload, python):
    seg = tmp_path / "segment"
    p = subprocess.run([python, "-c", "import sys; sys.stdout.write('ran %d\\n' % sys.version_info[0])"],
                       env=env_for([payload / "loopwatch" / "_bootstrap"], seg),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ran "), p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert "this build serves 3.8 to 3.13" in lines[0], lines
    assert not os.path.exists(seg)


def test_two_copies_of_the_bootstrap_chain_once(tmp_path, payload):
    """The runner's bootstrap in front of the pod's payload (python -m
    loopwatch.run in an injected container): each skips the other, the
    app's own sitecustomize runs once, the loop is watched once."""
    second = tmp_path / "second-payload"
    p = subprocess.run([str(BIN), "python-payload", "--from", PKG_PARENT, str(second)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, p.stderr
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    write_script(app_dir, "sitecustomize.py", """
        import os, sys
        sys.app_sitecustomize_runs = getattr(sys, "app_sitecustomize_runs", 0) + 1
        sys.app_sitecustomize = os.getpid()
    """)
    seg = tmp_path / "segment"
    env = env_for([payload / "loopwatch" / "_bootstrap", second / "loopwatch" / "_bootstrap",
                   app_dir], seg)
    p, r, loops = run_app(tmp_path, env, segment=seg)
    assert p.returncode == 0, p.stderr
    assert "Error in sitecustomize" not in p.stderr and "Recursion" not in p.stderr, p.stderr
    assert r["app_sitecustomize"] == r["pid"]
    assert len(loops) == 1, loops

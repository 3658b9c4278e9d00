# SPDX-License-Identifier: Apache-2.0
"""python -m loopwatch.run: options, exit codes, and the zero-code mode
(names by role and pid, workers, sitecustomize chaining, quiet)."""

import importlib.util
import os
import re

import pytest

from conftest import (PY, Child, child_env, one_result, run_all, results, status,
                      write_script)

RUN = [PY, "-m", "loopwatch.run"]

# The app knows nothing of loopwatch: it runs loops and reads the slots of
# its own pid with the real reader.
APP = """
import asyncio, json, multiprocessing, os, subprocess, sys
import script_support

def loop_report():
    async def main():
        await asyncio.sleep(0.35)
        return await script_support.amine()
    return asyncio.run(main())

def mp_worker(q):
    q.put({"pid": os.getpid(), "mine": loop_report()})

if __name__ == "__main__":
    r = {"pid": os.getpid(),
         "env": {k: os.environ.get(k) for k in
                 ("LOOPWATCH_ROLE", "LOOPWATCH_AUTO", "LOOPWATCH_MIDDLEWARE",
                  "LOOPWATCH_QUIET", "LOOPWATCH_INTERVAL")},
         "user_sitecustomize": getattr(sys, "lw_user_sitecustomize", None)}
    r["mine"] = loop_report()
    if "workers" in sys.argv[1:]:
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=mp_worker, args=(q,))
        p.start()
        r["mp"] = q.get(timeout=60)
        p.join(30)
        out = subprocess.run([sys.executable, __file__, "sub"], stdout=subprocess.PIPE,
                             timeout=60).stdout.decode()
        r["sub"] = json.loads(out.split("RESULT ", 1)[1])
    if "uvicorn" in sys.argv[1:]:
        import uvicorn.config
        async def asgi(scope, receive, send):
            pass
        async def load():
            cfg = uvicorn.config.Config(asgi, log_config=None)
            cfg.load()
            return type(cfg.loaded_app).__name__
        r["loaded_app"] = asyncio.run(load())
    script_support.result(**r)
"""

# The runner itself runs it too (same PYTHONPATH) before it execs the app:
# the mark is a sys attribute, which an exec does not carry over.
USER_SITECUSTOMIZE = """
import os, sys
sys.lw_user_sitecustomize = os.getpid()
sys.stderr.write("user sitecustomize ran\\n")
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("runner")
    write_script(d, "app.py", APP)
    write_script(d, "mymod.py", APP)
    (d / "userpath").mkdir()
    write_script(d / "userpath", "sitecustomize.py", USER_SITECUSTOMIZE)
    return d


# The role a script run by this Python gets: its program name ("python3" for
# Debian's, "python" for a pyenv one).
ROLE = os.path.basename(PY)
# uvicorn comes from Debian, for Debian's Python only.
HAVE_UVICORN = importlib.util.find_spec("uvicorn") is not None

# case: (runner options, command after "--" (APP = the app script), extra env,
#        expected role or None to skip the name check)
CASES = {
    "script": ([], [PY, "APP"], {}, ROLE),
    "module": ([], [PY, "-m", "mymod"], {}, "mymod"),
    "module_after_flags": ([], [PY, "-u", "-m", "mymod"], {}, "mymod"),
    "role": (["--role", "custom"], [PY, "APP"], {}, "custom"),
    "role_equals": (["--role=edge", "--interval=50ms"], [PY, "APP"], {}, "edge"),
    # "-m" after the script is the script's own argument, not python's -m
    # (known bug at the time of writing: the role becomes "x").
    "script_with_m_argument": ([], [PY, "APP", "-m", "x"], {}, ROLE),
    "segment_from_env": (None, [PY, "APP"], {}, ROLE),
    "workers": ([], [PY, "APP", "workers"], {}, ROLE),
    "chain": ([], [PY, "APP"], {"USERPATH": True}, ROLE),
    "quiet": (["-q"], [PY, "APP"], {}, ROLE),
    "quiet_long": (["--quiet"], [PY, "APP"], {}, ROLE),
    "quiet_env": ([], [PY, "APP"], {"LOOPWATCH_QUIET": "1"}, ROLE),
}
if HAVE_UVICORN:
    CASES["uvicorn"] = ([], [PY, "APP", "uvicorn"], {}, ROLE)
    CASES["no_middleware"] = (["--no-middleware"], [PY, "APP", "uvicorn"], {}, ROLE)


@pytest.fixture(scope="module")
def runs(base):
    kids = {}
    try:
        for case, (opts, cmd, extra, _) in CASES.items():
            seg = base / ("seg-" + case)
            env = child_env(**{k: v for k, v in extra.items() if k != "USERPATH"})
            if extra.get("USERPATH"):
                env["PYTHONPATH"] += os.pathsep + str(base / "userpath")
            if opts is None:  # LOOPWATCH_SEGMENT from the environment
                env["LOOPWATCH_SEGMENT"] = str(seg)
                opts = []
            else:  # --segment, relative to the working directory
                opts = ["--segment", seg.name] + opts
            argv = RUN + opts + ["--"] + [str(base / "app.py") if a == "APP" else a for a in cmd]
            kids[case] = (Child(argv, env, str(base)), seg)
        yield {case: (child.pid, child.wait(90), seg) for case, (child, seg) in kids.items()}
    finally:
        for child, _ in kids.values():
            child.kill()


def _slot(r, role, pid):
    assert len(r["mine"]) == 1, r
    slot = r["mine"][0]
    assert slot["name"] == "%s-%d" % (role, pid)
    assert slot["pid"] == pid and slot["kind"] == "asyncio"
    return slot


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_code_names(runs, case):
    opts, cmd, extra, role = CASES[case]
    pid, (rc, out, err), seg = runs[case]
    r = one_result((rc, out, err))
    # The runner execs the command: same pid.
    assert r["pid"] == pid
    assert r["env"]["LOOPWATCH_AUTO"] == "1"
    assert r["user_sitecustomize"] == (pid if extra.get("USERPATH") else None)
    slot = _slot(r, role, pid)
    interval = 0.05 if "--interval=50ms" in (opts or []) else 0.1
    assert slot["interval_seconds"] == pytest.approx(interval)
    assert slot["beats"] >= 2
    assert "Traceback" not in err, err


def test_workers_are_named_role_worker_pid(runs):
    pid, res, seg = runs["workers"]
    r = one_result(res)
    mp, sub = r["mp"], r["sub"]
    assert mp["pid"] != pid and sub["pid"] not in (pid, mp["pid"])
    _slot(mp, ROLE + "-worker", mp["pid"])
    _slot(sub, ROLE + "-worker", sub["pid"])


def test_user_sitecustomize_still_runs(runs):
    pid, (rc, out, err), seg = runs["chain"]
    r = one_result((rc, out, err))
    assert r["user_sitecustomize"] == pid
    # Once in the runner, once in the app (after loopwatch's own).
    assert err.count("user sitecustomize ran") == 2, err
    _slot(r, ROLE, pid)


def test_loopwatch_lines_and_quiet(runs):
    pid, (rc, out, err), seg = runs["script"]
    lines = [l for l in err.splitlines() if l.startswith("loopwatch")]
    assert any(l.startswith("loopwatch.run: watching every event loop") for l in lines), err
    assert any(re.match(r"loopwatch: loop %s-%d \(asyncio\) beats every 100ms into slot \d+ of "
                        % (re.escape(ROLE), pid), l) for l in lines), err
    for case in ("quiet", "quiet_long", "quiet_env"):
        pid, (rc, out, err), seg = runs[case]
        assert rc == 0
        assert [l for l in err.splitlines() if l.startswith("loopwatch")] == [], (case, err)


@pytest.mark.skipif(not HAVE_UVICORN, reason="no uvicorn for this Python (Debian's 3.11 has it)")
def test_uvicorn_app_is_wrapped_unless_no_middleware(runs):
    r = one_result(runs["uvicorn"][1])
    assert r["loaded_app"] == "LoopwatchMiddleware"
    assert r["env"]["LOOPWATCH_MIDDLEWARE"] is None
    r = one_result(runs["no_middleware"][1])
    assert r["loaded_app"] != "LoopwatchMiddleware"
    assert r["env"]["LOOPWATCH_MIDDLEWARE"] == "0"


def test_slots_are_released_when_the_app_exits(runs):
    """Every process (workers too) closed its slots: none is left behind
    for the sidecar to find dead."""
    for case, (pid, res, seg) in runs.items():
        assert status(seg)["loops"] == [], case


# ---- options and exit codes -------------------------------------------------

def _run(spawn, args, env=None, cwd=None):
    (rc, out, err), = run_all(spawn, [(RUN + args, env or child_env(), cwd)], timeout=30)
    return rc, out, err


def _help_options(text):
    """{option: takes a value} from the Options section of --help."""
    section = text.split("Options", 1)[1].split("Exit status", 1)[0]
    found = {}
    for line in section.splitlines():
        m = re.match(r"^  (-\w), (--[\w-]+)(?: ([A-Z]+))?|^  (--[\w-]+)(?: ([A-Z]+))?", line)
        if not m:
            continue
        if m.group(1):
            found[m.group(1)] = found[m.group(2)] = bool(m.group(3))
        else:
            found[m.group(4)] = bool(m.group(5))
    return found


def test_help(spawn):
    for flag in ("--help", "-h"):
        rc, out, err = _run(spawn, [flag])
        assert rc == 0 and err == ""
        assert out.startswith("python -m loopwatch.run [OPTIONS] -- COMMAND")
    opts = _help_options(out)
    assert opts == {"--segment": True, "--interval": True, "--role": True,
                    "--no-middleware": False, "-q": False, "--quiet": False,
                    "-h": False, "--help": False}, opts
    # Environment variables named in the help are the ones the package reads.
    for var in re.findall(r"LOOPWATCH_[A-Z_]+", out):
        assert var in ("LOOPWATCH_SEGMENT", "LOOPWATCH_INTERVAL", "LOOPWATCH_ROLE",
                       "LOOPWATCH_QUIET"), var


def test_every_documented_option_is_accepted(spawn, tmp_path):
    rc, out, err = _run(spawn, ["--help"])
    values = {"--segment": "seg", "--interval": "250ms", "--role": "r"}
    jobs = []
    for opt, takes in sorted(_help_options(out).items()):
        if opt in ("-h", "--help"):
            continue
        args = [opt, values[opt]] if takes else [opt]
        jobs.append((RUN + args + ["--", "sh", "-c", "exit 5"], child_env(), str(tmp_path)))
    for job, (rc, out, err) in zip(jobs, run_all(spawn, jobs)):
        assert rc == 5, (job[0], err)
        assert "unknown option" not in err


@pytest.mark.parametrize("args,message", [
    (["--bogus", "--", "true"], "unknown option '--bogus'"),
    (["-x", "true"], "unknown option '-x'"),
    ([], "no command to run"),
    (["--"], "no command to run"),
    (["--segment", "seg", "--"], "no command to run"),
    (["--interval", "bogus", "--", "true"], "--interval"),
    (["--interval=5", "--", "true"], "--interval"),
    (["--interval", "0ms", "--", "true"], "--interval"),
    (["--interval", "2m", "--", "true"], "--interval"),
    (["--interval"], "--interval needs a value"),
    (["--role", "", "--", "true"], "--role"),
    (["--role", "r" * 41, "--", "true"], "--role"),
    (["--segment=", "--", "true"], "--segment"),
], ids=lambda v: repr(v) if isinstance(v, list) else None)
def test_bad_usage_exits_2(spawn, tmp_path, args, message):
    rc, out, err = _run(spawn, args, cwd=str(tmp_path))
    assert rc == 2, (rc, err)
    assert err.startswith("loopwatch.run: ") and message in err, err
    assert "usage: python -m loopwatch.run" in err
    assert out == ""


def test_command_not_found_is_127_not_executable_is_126(spawn, tmp_path):
    rc, out, err = _run(spawn, ["--", str(tmp_path / "no-such-command"), "x"])
    assert rc == 127 and "command not found" in err, err
    rc, out, err = _run(spawn, ["--", "no-such-command-on-path-4711"])
    assert rc == 127 and "command not found" in err, err
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(plain, 0o644)
    rc, out, err = _run(spawn, ["--", str(plain)])
    assert rc == 126 and "cannot run" in err, err


def test_without_a_segment_warns_and_runs_the_command(spawn, tmp_path):
    rc, out, err = _run(spawn, ["--", "sh", "-c", "echo ran; exit 7"], cwd=str(tmp_path))
    assert rc == 7 and out == "ran\n"
    assert "LOOPWATCH_SEGMENT is not set" in err, err
    # With -q: no warning, same exit code.
    rc, out, err = _run(spawn, ["-q", "--", "sh", "-c", "exit 3"], cwd=str(tmp_path))
    assert (rc, err) == (3, "")
    # No "--": the command starts at the first word that is not an option.
    rc, out, err = _run(spawn, ["-q", "sh", "-c", "exit 4"], cwd=str(tmp_path))
    assert rc == 4


def test_unwatched_python_app_runs_without_segment(spawn, base):
    """Without a segment the zero-code mode is on but every loop is
    unwatched: the app runs normally."""
    rc, out, err = _run(spawn, ["--", PY, str(base / "app.py")], cwd=str(base))
    found = results(out)
    assert rc == 0 and len(found) == 1, err
    assert found[0]["mine"] == []
    assert "Traceback" not in err

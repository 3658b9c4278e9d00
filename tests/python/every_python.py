#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Runs the package's unit suite (tests/python/unit) on every CPython 3.8 to
3.13 on this machine, each loading the same built files:

    every_python.py PACKAGE_DIR [--python PATH]... [--require-all]

PACKAGE_DIR is the built package (build/python). The Pythons: every --python
given, else Debian's /usr/bin/python3 and each $PYENV_ROOT/versions/3.*
(~/.pyenv by default) from 3.8 to 3.13. pytest and its helpers come from
Debian's dist-packages (python3-pytest, python3-exceptiongroup,
python3-tomli), linked into a directory of their own, so that no other
Debian module is on the other Pythons' path. Each run checks that it loaded
PACKAGE_DIR's loopwatch/_native.so with the checksum taken here before any
run (test_same_files.py). Prints a table: Python, suite, result, time.

Exit 0 when every run passed, 1 when one failed, 77 (ctest: skipped) when
there is no pytest, or fewer than two Pythons and --require-all is not set.
"""

import argparse
import glob
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
DIST = "/usr/lib/python3/dist-packages"
# pytest 7 and what it imports on 3.8-3.10 (exceptiongroup, tomli).
PYTEST_PARTS = ["_pytest", "pytest", "pluggy", "iniconfig", "packaging", "py", "py.py",
                "attr", "attrs", "exceptiongroup", "tomli"]


def version_of(python):
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d %s' % (sys.version_info[:3] "
                              "+ (sys.implementation.name,)))"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=30).stdout.split()
        return tuple(int(x) for x in out[0].split(".")), out[1]
    except Exception:
        return None, None


def pythons():
    found = []
    if os.path.exists("/usr/bin/python3"):
        found.append("/usr/bin/python3")
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for d in sorted(glob.glob(os.path.join(root, "versions", "3.*"))):
        exe = os.path.join(d, "bin", "python3")
        if re.fullmatch(r"3\.\d+\.\d+", os.path.basename(d)) and os.access(exe, os.X_OK):
            found.append(exe)
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package_dir")
    ap.add_argument("--python", action="append", default=[])
    ap.add_argument("--require-all", action="store_true",
                    help="fail, not skip, when fewer than two Pythons are found")
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args()

    native = os.path.join(os.path.abspath(a.package_dir), "loopwatch", "_native.so")
    if not os.path.isfile(native):
        sys.exit("every_python: %s is missing: build the package first "
                 "(cmake --build build --target loopwatch_python)" % native)
    with open(native, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if not all(os.path.exists(os.path.join(DIST, p)) for p in ("pytest", "_pytest", "pluggy")):
        print("every_python: skipped, no pytest in %s (apt-get install python3-pytest)" % DIST)
        return 77

    cands = a.python or pythons()
    runs = []
    for py in cands:
        v, impl = version_of(py)
        if v is None:
            print("every_python: %s does not run: left out" % py)
            continue
        if impl != "cpython" or not (3, 8) <= v[:2] <= (3, 13):
            print("every_python: %s is %s %s: not one this build serves, left out"
                  % (py, impl, ".".join(map(str, v))))
            continue
        runs.append((py, v))
    runs.sort(key=lambda r: (r[1], r[0]))
    if len(runs) < 2 and not a.require_all:
        print("every_python: skipped, found %d CPython 3.8-3.13 (pyenv's in $PYENV_ROOT)" % len(runs))
        return 77

    print("every_python: %s (sha256 %s...) on %d Pythons" % (native, digest[:16], len(runs)))
    results = []
    with tempfile.TemporaryDirectory(prefix="lw-every-python-") as shim:
        for part in PYTEST_PARTS:
            if os.path.exists(os.path.join(DIST, part)):
                os.symlink(os.path.join(DIST, part), os.path.join(shim, part))
        for py, v in runs:
            env = dict(os.environ)
            # Debian's own Python has pytest; the others get the shim only.
            path = [os.path.abspath(a.package_dir)]
            if py != "/usr/bin/python3":
                path.insert(0, shim)
            env["PYTHONPATH"] = os.pathsep.join(path)
            env["LOOPWATCH_NATIVE_SHA256"] = digest
            env["LOOPWATCH_NATIVE_PATH"] = native
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            name = "%d.%d.%d (%s)" % (v + ("Debian" if py == "/usr/bin/python3" else "pyenv",))
            print("\n== %s: %s tests/python/unit" % (name, py), flush=True)
            t0 = time.monotonic()
            p = subprocess.run([py, os.path.join(SOURCE, "tests", "run_pytest.py"),
                                os.path.join(SOURCE, "tests", "python", "unit"), "-q",
                                "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                                "--basetemp", tempfile.mkdtemp(prefix="lw-py%d%d-" % v[:2])]
                               + a.pytest_args, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            took = time.monotonic() - t0
            tail = [l for l in p.stdout.splitlines() if l.strip()]
            summary = tail[-1] if tail else "(no output)"
            if p.returncode != 0:
                print(p.stdout)
            else:
                print(summary)
            results.append((name, p.returncode, summary.strip("= "), took))

    print("\n%-24s %-22s %-40s %s" % ("CPython", "suite", "result", "time"))
    for name, rc, summary, took in results:
        print("%-24s %-22s %-40s %.0f s" % (name, "tests/python/unit", summary[:40], took))
    failed = [r for r in results if r[1] != 0]
    print("\nevery_python: %d of %d Pythons passed, each on the same %s"
          % (len(results) - len(failed), len(results), os.path.basename(native)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The documented install, exactly: `python3 -m pip install --no-build-isolation
# ./lib/python`, offline, with Debian's Python, pip and setuptools and nothing
# else. Debian marks its system Python as externally managed (PEP 668), so the
# command runs in a venv that sees the system's packages (setuptools, wheel),
# as a user would; the index is an address that refuses connections, so any
# download attempt fails the test.
#
#   tests/python/pip_install_test.sh SOURCE_DIR WORK_DIR [PYTHON]
set -euo pipefail

src=$1 work=$2 python=${3:-/usr/bin/python3}
rm -rf "$work"
mkdir -p "$work/checkout/lib"
# A copy of lib/ (python, src, include): the build writes build/ and
# egg-info next to setup.py, which must not land in the source tree.
cp -r "$src/lib/python" "$src/lib/src" "$src/lib/include" "$work/checkout/lib/"
rm -rf "$work/checkout/lib/python/build" "$work/checkout/lib/python/"*.egg-info

if ! "$python" -m venv --system-site-packages "$work/venv" >"$work/venv.log" 2>&1; then
  echo "skipped: $python -m venv failed (Debian: python3-venv)"; cat "$work/venv.log"
  exit 77
fi
cd "$work/checkout"
PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
  "$work/venv/bin/python3" -m pip install --no-build-isolation ./lib/python 2>&1 |
  tee "$work/pip.log"
grep -q "Successfully installed loopwatch-" "$work/pip.log"

cd "$work"  # not next to lib/python: the installed package, not the source
"$work/venv/bin/python3" - <<'PY'
import os, subprocess, sys
import loopwatch, loopwatch._native as native
assert "site-packages" in loopwatch.__file__, loopwatch.__file__
print("imported", loopwatch.__version__, "from", os.path.dirname(loopwatch.__file__))
# The native module carries the C core: it needs libc and pthreads only.
libs = subprocess.run(["ldd", native.__file__], capture_output=True, text=True).stdout
names = sorted({l.split()[0] for l in libs.splitlines() if l.strip()})
print("links:", " ".join(names))
extra = [n for n in names if not n.startswith(("linux-vdso", "libc.so", "libpthread", "/lib64/ld-linux", "ld-linux"))]
assert not extra, "unexpected libraries: %s" % extra
# Only the module's init function is exported; the core stays private.
syms = subprocess.run(["nm", "-D", "--defined-only", native.__file__], capture_output=True, text=True).stdout.split()
exported = [s for s in syms if s.startswith(("lw_", "PyInit"))]
assert exported == ["PyInit__native"], exported
r = subprocess.run([sys.executable, "-m", "loopwatch.run", "--help"], capture_output=True, text=True)
assert r.returncode == 0 and "loopwatch.run" in r.stdout, r
print("python -m loopwatch.run --help: ok")
PY
echo "pip install: ok"

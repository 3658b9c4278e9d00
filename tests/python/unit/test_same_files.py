# SPDX-License-Identifier: Apache-2.0
"""One build for every CPython: the module this Python loaded is the file
tests/python/every_python.py hashed before running the suite on each
version (LOOPWATCH_NATIVE_PATH, LOOPWATCH_NATIVE_SHA256), and it found what
it needs in this Python."""

import hashlib
import os
import sys

import pytest

import loopwatch
from loopwatch import _native


def test_this_python_loaded_the_native_module():
    # Not the stand-in of an unsupported Python.
    assert hasattr(_native, "runtime"), (loopwatch._off, sys.version)
    rt = _native.runtime()
    assert rt["minor"] == sys.version_info[1]
    # 3.11+ has the kernel's thread id in PyThreadState; 3.8-3.10 the pthread.
    assert rt["thread_ids"] == ("native_thread_id" if sys.version_info >= (3, 11) else "thread_id")
    # The stack without the GIL: exported by 3.8, 3.11, 3.12; a local symbol
    # of 3.9, 3.10, 3.13, found in libpython's symbol table (unstripped here).
    assert rt["dump_traceback"] in ("exported symbol", "ELF symbol table"), rt


@pytest.mark.skipif(not os.environ.get("LOOPWATCH_NATIVE_SHA256"),
                    reason="run by tests/python/every_python.py, which hashes the build first")
def test_the_same_built_file_on_every_python():
    path = os.path.realpath(_native.__file__)
    assert path == os.path.realpath(os.environ["LOOPWATCH_NATIVE_PATH"])
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == os.environ["LOOPWATCH_NATIVE_SHA256"]
    assert os.path.basename(path) == "_native.so"  # no version tag in the name


FALLBACK = """
import asyncio, sys
import loopwatch, script_support
from loopwatch import _native

async def where_am_i(native):
    return _native.report_now(native)  # report-here

async def main():
    assert loopwatch.install()
    hb = loopwatch._heartbeat.current()
    script_support.result(report=await where_am_i(hb.native), runtime=_native.runtime())
asyncio.run(main())
"""


def test_without_the_stack_dumper_the_frames_are_read_with_the_gil(tmp_path, spawn, segment):
    """A libpython stripped of _Py_DumpTraceback (simulated: the module is
    told not to look for it): with the GIL, 3.9+ reads the frames with its
    public frame functions, in the same format; 3.8 says it cannot."""
    from conftest import PY, child_env, line_of, one_result, write_script
    script = write_script(tmp_path, "fallback.py", FALLBACK)
    r = one_result(spawn([PY, script], child_env(segment, LOOPWATCH_PY_NO_DUMP_TRACEBACK="1"))
                   .wait(60))
    if sys.version_info >= (3, 9):
        assert r["runtime"]["dump_traceback"] == "none: frame getters, with the GIL only", r
        here = line_of(script, "report-here")
        assert "Stack (most recent call first):\n" in r["report"], r["report"]
        assert '  File "%s", line %d in where_am_i\n' % (script, here) in r["report"], r["report"]
        assert ' in main\n' in r["report"]
    else:
        assert r["runtime"]["dump_traceback"] == "none", r
        assert "Stack: unavailable (this Python 3.8 has neither" in r["report"], r["report"]

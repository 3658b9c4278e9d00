# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the Python end-to-end tests: the real failures of async Python
services (docs/design.md, "The problem"), on real uvicorn / gunicorn / FastAPI (Debian
packages) started through `python -m loopwatch.run`, against the real
sidecar. Helpers are in python_servers.py.

Environment (ctest sets it, see tests/python/CMakeLists.txt):
  PYTHONPATH            must hold the built package (build/python)
  LOOPWATCH_BIN         the sidecar binary (default: BUILD/sidecar/loopwatch)
  LOOPWATCH_BUILD_DIR   the build tree (default: SOURCE/build)
  LOOPWATCH_SOURCE_DIR  the source tree (default: three levels up from here)
"""

import importlib.util
import pathlib

import pytest

import python_servers
from python_servers import PYTHON, PyWorld, Server

# Fixtures and the summary hook of tests/e2e_sidecar/conftest.py.
sidecar_bin = python_servers.e2e_conftest.sidecar_bin
measure = python_servers.e2e_conftest.measure
pytest_terminal_summary = python_servers.e2e_conftest.pytest_terminal_summary


def _missing_modules():
    missing = []
    for mod in ("fastapi", "uvicorn", "gunicorn", "uvloop", "httpx", "requests", "aiohttp"):
        if importlib.util.find_spec(mod) is None:
            missing.append(mod)
    return missing


def pytest_collection_modifyitems(config, items):
    missing = _missing_modules()
    if missing:
        skip = pytest.mark.skip(reason="%s has no %s (Debian: python3-fastapi, python3-uvicorn, "
                                "gunicorn, python3-uvloop, python3-httpx, python3-requests, "
                                "python3-aiohttp)"
                                % (PYTHON, ", ".join(missing)))
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def package_dir():
    """Where the built loopwatch package is (the runner and the apps import
    it from PYTHONPATH)."""
    spec = importlib.util.find_spec("loopwatch")
    if spec is None or not spec.origin:
        pytest.fail("loopwatch is not importable by %s: put the built package on PYTHONPATH "
                    "(build/python)" % PYTHON)
    if importlib.util.find_spec("loopwatch._native") is None:
        pytest.fail("loopwatch._native is missing next to %s (build loopwatch_python)" % spec.origin)
    return pathlib.Path(spec.origin).parent


@pytest.fixture
def world(tmp_path, sidecar_bin, request):
    w = PyWorld(tmp_path, sidecar_bin, request)
    yield w
    problems = w.teardown()
    for p in w.procs:
        if isinstance(p, Server):
            print("--- %s (%s): %s\n%s" % (p.label, p.log_path, " ".join(p.cmd or []),
                                          p.log_text()[-6000:]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)

# SPDX-License-Identifier: Apache-2.0
"""Fixtures of tests/deploy/monitoring: the end-to-end suite's own
(tests/e2e_sidecar/conftest.py: the real sidecar binary, the asio example app built
once per session, a World that cleans up), loaded from there, not copied.
Paths come from the same environment variables (see that file)."""

import importlib.util
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
E2E_DIR = HERE.parent.parent / "e2e_sidecar"
sys.path.insert(0, str(E2E_DIR))  # sidecar_harness

_spec = importlib.util.spec_from_file_location("lw_e2e_conftest", E2E_DIR / "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

SOURCE_DIR = _e2e.SOURCE_DIR
sidecar_bin = _e2e.sidecar_bin
asio_app_bin = _e2e.asio_app_bin
world = _e2e.world
measure = _e2e.measure
pytest_terminal_summary = _e2e.pytest_terminal_summary

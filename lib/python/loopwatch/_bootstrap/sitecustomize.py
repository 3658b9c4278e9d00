# SPDX-License-Identifier: Apache-2.0
"""Imported at start-up by every Python process below `python -m loopwatch.run`
(the runner puts this directory first on PYTHONPATH): turns on zero-code
mode, then runs the sitecustomize this one hides, if there is one."""

import importlib.util
import os
import sys


def _enable():
    if os.environ.get("LOOPWATCH_AUTO") != "1":
        return
    try:
        from loopwatch import _auto
        _auto.enable()
    except Exception as e:  # the app must start regardless
        sys.stderr.write("loopwatch: zero-code mode is off in pid %d: %r\n" % (os.getpid(), e))


def _chain():
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if os.path.abspath(entry or ".") == here:
            continue
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [entry])
        if spec is not None and spec.origin and os.path.dirname(spec.origin) != here:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


_enable()
try:
    _chain()
except Exception as e:
    sys.stderr.write("loopwatch: the hidden sitecustomize failed: %r\n" % (e,))

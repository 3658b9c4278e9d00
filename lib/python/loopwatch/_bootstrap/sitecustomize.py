# SPDX-License-Identifier: Apache-2.0
"""loopwatch's start-up hook. Python imports the first `sitecustomize` on
its path when it starts, so with this directory first on PYTHONPATH every
Python process of an app, and every worker it starts, runs this file:

- with LOOPWATCH_SEGMENT set (and LOOPWATCH_AUTO not "0"), it turns on
  zero-code mode: every asyncio and uvloop loop gets a heartbeat, servers get
  the request middleware (what `python -m loopwatch.run` does; the runner
  puts this directory on PYTHONPATH too);
- then it runs the app's own sitecustomize, the one this file hides (from
  the image or later on the path), and lets what that raises be reported,
  not stop the app.

It adds one entry to sys.path, last: the directory that holds the loopwatch
package, when `loopwatch` is not importable already. So it shadows nothing
of the app's and removes nothing. A Python that loopwatch cannot serve gets
one line on stderr and runs as if this file were not there. This file is
read by every Python that finds it, so it is written for all of them.
"""

import os
import sys


def _say(text):
    if os.environ.get("LOOPWATCH_QUIET", "") in ("", "0"):
        sys.stderr.write("loopwatch: %s\n" % text)


def _package_parent():
    # <parent>/loopwatch/_bootstrap/sitecustomize.py
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _unsupported():
    """Why this Python cannot load the package, or None. Kept in step with
    loopwatch/_compat.py, which cannot be imported before this check."""
    impl = getattr(sys, "implementation", None)
    name = getattr(impl, "name", "cpython" if sys.version_info[0] == 2 else "unknown")
    version = "%d.%d.%d" % tuple(sys.version_info[:3])
    if name != "cpython":
        return "%s %s is not CPython" % (name, version)
    if sys.version_info[:2] < (3, 8) or sys.version_info[:2] > (3, 13):
        return "CPython %s: this build serves 3.8 to 3.13" % version
    try:
        from loopwatch import _compat  # noqa: the check itself, with every case
    except Exception as e:
        return "the loopwatch package did not import: %r" % (e,)
    return _compat.unsupported()


def _enable():
    if not os.environ.get("LOOPWATCH_SEGMENT"):
        return
    if os.environ.get("LOOPWATCH_AUTO") == "0":
        return
    parent = _package_parent()
    try:
        import importlib.util
        if importlib.util.find_spec("loopwatch") is None:
            sys.path.append(parent)
    except Exception:
        sys.path.append(parent)
    why = _unsupported()
    if why:
        _say("off in pid %d: %s" % (os.getpid(), why))
        return
    # The first Python process of the app (the one the runner or the pod
    # starts); processes below it see this and name their loops "-worker".
    os.environ.setdefault("LOOPWATCH_ROOT_PID", str(os.getpid()))
    try:
        from loopwatch import _auto
        _auto.enable()
    except Exception as e:  # the app must start regardless
        _say("zero-code mode is off in pid %d: %r" % (os.getpid(), e))


def _is_bootstrap(directory):
    """A loopwatch bootstrap directory (this one, or another copy: the runner's
    and the pod's payload may both be on the path), never chained to."""
    d = os.path.abspath(directory)
    return (os.path.basename(d) == "_bootstrap"
            and os.path.basename(os.path.dirname(d)) == "loopwatch")


def _chain():
    """Run the sitecustomize this file hides: the next one on sys.path that
    is not a loopwatch bootstrap."""
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.version_info < (3, 4):  # no importlib.machinery: imp's way
        import imp
        for entry in sys.path:
            if os.path.abspath(entry or ".") == here:
                continue
            try:
                found = imp.find_module("sitecustomize", [entry])
            except ImportError:
                continue
            if not _is_bootstrap(os.path.dirname(found[1])):
                imp.load_module("sitecustomize", *found)
                return
        return
    import importlib.machinery
    import importlib.util
    for entry in sys.path:
        if os.path.abspath(entry or ".") == here:
            continue
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [entry])
        if spec is not None and spec.origin and not _is_bootstrap(os.path.dirname(spec.origin)):
            module = importlib.util.module_from_spec(spec)
            # As Python would have it: the app's module is `sitecustomize`,
            # and one that raised is not left in sys.modules.
            sys.modules["sitecustomize"] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop("sitecustomize", None)
                raise
            return


try:
    _enable()
except Exception as e:  # noqa: nothing ever raises into the app
    _say("zero-code mode is off in pid %d: %r" % (os.getpid(), e))
try:
    _chain()
except Exception as e:
    # Python itself would print this and go on; so do we.
    sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n%s: %s\n"
                     % (type(e).__name__, e))

# SPDX-License-Identifier: Apache-2.0
"""loopwatch: a heartbeat for asyncio event loops, read by the loopwatch sidecar.

From inside a running loop (a FastAPI startup handler, say)::

    import loopwatch
    loopwatch.install()

starts a timer on the loop that writes a heartbeat, and the loop's lag, into
the shared-memory segment named by ``LOOPWATCH_SEGMENT``. When the loop stops
beating, a watchdog thread writes a stall report with the loop thread's
Python stack, the running task and the requests in flight
(:class:`loopwatch.asgi.LoopwatchMiddleware`). The sidecar answers the pod's
probes from the segment, so a frozen loop fails liveness, with the reason.

With ``LOOPWATCH_SEGMENT`` unset every call is a no-op, and no call ever
raises into the app: problems are logged once on the ``loopwatch`` logger.
``python -m loopwatch.run -- CMD ...`` does the same with no code change.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Optional

from . import _compat

# The native module is loaded only on a Python it serves; any other gets the
# stand-in (every call a no-op) and one line saying why.
_off = _compat.unsupported()
if _off is None:
    try:
        from . import _native
    except ImportError as e:
        _off = "its native module did not load: %s" % e
        if "GLIBC_" in str(e):  # built on a newer system than this one
            import os
            _off += (" (this system has %s; the payload of the loopwatch image needs glibc "
                     "2.34 or later)" % os.confstr("CS_GNU_LIBC_VERSION"))
if _off is not None:
    from . import _inert as _native
    _native.WHY = _off
    sys.modules[__name__ + "._native"] = _native
    logging.getLogger("loopwatch").warning("loopwatch is off in this Python: %s", _off)

from . import _heartbeat  # noqa: E402 (after _native is settled)

__all__ = ["install", "uninstall", "set_ready", "activity", "enabled", "__version__"]

__version__: str = _native.version()


def enabled() -> bool:
    """Whether loopwatch is on in this process (``LOOPWATCH_SEGMENT`` is set)."""
    return bool(_native.enabled())


def install(name: Optional[str] = None, *, interval: Optional[float] = None) -> bool:
    """Start the heartbeat of the running event loop (asyncio or uvloop).

    Call it from inside the loop, e.g. in a startup handler.

    :param name: the loop's name in the sidecar (at most 63 bytes). Default:
        ``LOOPWATCH_NAME``, else the process's role and pid, e.g. ``uvicorn-7``
        (``gunicorn-worker-12`` in a worker).
    :param interval: seconds between beats, from 0.001 to 60. Default:
        ``LOOPWATCH_INTERVAL`` (a duration such as ``100ms``), else 0.1.
    :returns: True if the loop is now watched; False when loopwatch is off,
        there is no running loop, or the segment could not be used (logged).

    Calling it again for the same loop does nothing. The slot is released when
    the loop stops or closes, and taken again if it runs again; after
    ``fork()`` a child running the loop takes a slot of its own.
    """
    try:
        return _heartbeat.install(name, interval=interval)
    except Exception as e:  # never into the app
        _heartbeat._warn_once("install", "install() failed: %r", e)
        return False


def uninstall() -> bool:
    """Stop the heartbeat of the running loop and release its slot (the
    sidecar sees the loop leave cleanly). Returns whether there was one."""
    try:
        return _heartbeat.uninstall()
    except Exception as e:
        _heartbeat._warn_once("uninstall", "uninstall() failed: %r", e)
        return False


def set_ready(ready: bool) -> None:
    """Say whether this process is ready for traffic.

    ``set_ready(False)`` makes the sidecar's ``/readyz`` fail (``/livez`` is
    not affected) until ``set_ready(True)``. It applies to every loop of the
    process, including loops installed later.
    """
    try:
        _heartbeat.set_ready(ready)
    except Exception as e:
        _heartbeat._warn_once("set_ready", "set_ready() failed: %r", e)


@contextlib.contextmanager
def activity(label: str) -> Iterator[None]:
    """Label what the running loop is doing, for stall reports::

        with loopwatch.activity("render invoice PDF"):
            render(invoice)          # blocking: a stall names the label

    The label belongs to the loop, not to a task: it is meant for code that
    does not ``await`` inside the block (the code that can stall the loop).
    Labels longer than 63 bytes are cut. Nesting restores the outer label.
    """
    previous = None
    try:
        previous = _heartbeat.set_activity(label)
    except Exception as e:
        _heartbeat._warn_once("activity", "activity() failed: %r", e)
    try:
        yield
    finally:
        try:
            _heartbeat.set_activity(previous)
        except Exception:
            pass


# Loops that stop running release their slot; see _heartbeat.hook_running_loop.
_heartbeat.hook_running_loop()

# SPDX-License-Identifier: Apache-2.0
"""The heartbeat: a timer on each watched asyncio (or uvloop) loop that beats
its slot in the segment, and the bookkeeping around it.

Everything here runs on the loop's own thread except the fork handler and
the at-exit handler. Nothing raises into the app: failures are logged once
on the "loopwatch" logger and the app goes on unwatched.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import atexit
import logging
import os
import re
import sys
import threading
import weakref
from typing import Optional

from . import _native

log = logging.getLogger("loopwatch")

DEFAULT_INTERVAL = 0.1  # seconds

def parse_duration(text: str) -> float:
    """Seconds from "100ms", "1.5s", "1m30s" or "0".

    The project's one duration grammar, the library's and the sidecar's
    too (lib/src/parse_duration.c, through the native module). Raises
    ValueError naming the expected form."""
    return _native.parse_duration(text) / 1e9


def _env_interval() -> float:
    raw = os.environ.get("LOOPWATCH_INTERVAL", "")
    if not raw:
        return DEFAULT_INTERVAL
    try:
        v = parse_duration(raw)
        if not 0.001 <= v <= 60:
            raise ValueError("%r: expected a duration from 1ms to 60s" % raw)
        return v
    except ValueError as e:
        _warn_once("env-interval", "LOOPWATCH_INTERVAL=%s; using %gms", e,
                   DEFAULT_INTERVAL * 1e3)
        return DEFAULT_INTERVAL


_warned = set()


def _warn_once(key, fmt, *args):
    if key in _warned:
        return
    _warned.add(key)
    try:
        log.warning(fmt, *args)
    except Exception:  # a broken logging setup is not our failure to raise
        pass


def _role() -> str:
    """What this process is: the runner's LOOPWATCH_ROLE, else the program
    name; "-worker" for a process below the one the runner started."""
    role = os.environ.get("LOOPWATCH_ROLE", "").strip()
    if not role:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if prog in ("", "-c", "-m", "__main__.py"):
            prog = "python"
        role = re.sub(r"\.py$", "", prog) or "python"
    root = os.environ.get("LOOPWATCH_ROOT_PID", "")
    worker = False
    if root.isdigit():
        worker = int(root) != os.getpid()
    else:
        try:
            import multiprocessing
            worker = multiprocessing.parent_process() is not None
        except Exception:
            worker = False
    if worker and not role.endswith("-worker"):
        role += "-worker"
    return role


def _task_line(loop_ref) -> str:
    """The "task:" line of a stall report (called by the reporter thread,
    with the GIL, while the loop thread is stuck)."""
    loop = loop_ref()
    if loop is None:
        return "unknown (the loop is gone)"
    task = asyncio.tasks._current_tasks.get(loop)
    if task is None:
        return "none (the loop is running a callback, not a task)"
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", None) or type(coro).__name__
    frame = getattr(coro, "cr_frame", None)
    if frame is not None:
        where += " (%s:%d)" % (frame.f_code.co_filename, frame.f_lineno)
    return "%s running %s" % (task.get_name(), where)


class Heartbeat:
    """The heartbeat of one loop: a slot and the timer that beats it."""

    __slots__ = ("loop_ref", "name", "interval", "native", "handle", "pid",
                 "forked", "auto", "paused", "activity", "__weakref__")

    def __init__(self, loop, name: str, interval: float, auto: bool):
        self.loop_ref = weakref.ref(loop)
        self.name = name
        self.interval = interval
        self.native: Optional[_native.Loop] = None
        self.handle = None
        self.pid = os.getpid()
        self.forked = False
        self.auto = auto
        self.paused = False
        self.activity: Optional[str] = None

    def open(self, loop) -> bool:
        kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        if self.pid != os.getpid():
            # A child of fork() opens (3.12+ reports the loop stopping and
            # starting again across the fork): a slot named for the child.
            self.forked = False
            self.native = None  # the parent's slot: inert here, never written
            self.name = _next_name(None)
        try:
            native = _native.Loop(self.name, int(self.interval * 1e9), kind,
                                  _bound_task_line(self.loop_ref))
        except OSError as e:
            _warn_once(("open", e.errno), "loop %s is not watched: %s", self.name,
                       e.strerror or e)
            return False
        if not _ready:
            native.set_ready(False)
        self.native = native
        self.pid = os.getpid()
        self.forked = False
        native.beat()
        self.handle = loop.call_later(self.interval, self.tick)
        return True

    def tick(self) -> None:
        """The timer callback: beat, and come back in one interval."""
        native = self.native
        if self.forked:  # a child of fork() runs this loop: its own slot
            self.reopen()
            return
        if native is not None:
            native.beat()
        loop = self.loop_ref()
        if loop is not None:
            self.handle = loop.call_later(self.interval, self.tick)

    def reopen(self) -> None:
        self.forked = False
        self.native = None  # the parent's slot: inert here, never written
        loop = self.loop_ref()
        if loop is None:
            return
        self.open(loop)  # a slot named for this process (open() sees the new pid)

    def stop(self) -> None:
        """Cancels the timer and releases the slot."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        native, self.native = self.native, None
        if native is not None:
            native.close()


def _bound_task_line(loop_ref):
    return lambda: _task_line(loop_ref)


# Loop -> Heartbeat, for the loops of this process. Weak on the loop: a loop
# dropped without close() takes its entry with it.
_beats: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_count = 0  # loops opened by this process, for names
_ready = True
_auto = False


def _next_name(explicit: Optional[str]) -> str:
    global _count
    with _lock:
        _count += 1
        n = _count
    if explicit:
        return explicit
    base = os.environ.get("LOOPWATCH_NAME") or "%s-%d" % (_role(), os.getpid())
    return base if n == 1 else "%s-%d" % (base, n)


def current() -> Optional[Heartbeat]:
    """The heartbeat of the loop running on this thread, if any."""
    loop = asyncio.events._get_running_loop()
    if loop is None:
        return None
    return _beats.get(loop)


def install(name: Optional[str] = None, *, interval: Optional[float] = None,
            loop=None, auto: bool = False) -> bool:
    if not _native.enabled():
        return False
    if loop is None:
        loop = asyncio.events._get_running_loop()
        if loop is None:
            _warn_once("no-loop", "loopwatch.install() called outside a running "
                       "event loop: call it from a coroutine or callback on the loop")
            return False
    hb = _beats.get(loop)
    if hb is not None:
        if hb.paused:
            hb.paused = False
            return hb.open(loop)
        return hb.native is not None
    if interval is None:
        interval = _env_interval()
    elif not 0.001 <= interval <= 60:
        _warn_once("bad-interval", "interval=%r: expected seconds from 0.001 to 60; "
                   "using %gs", interval, _env_interval())
        interval = _env_interval()
    hb = Heartbeat(loop, _next_name(name), interval, auto)
    if not hb.open(loop):
        global _count
        with _lock:
            _count -= 1  # the name's number goes to the next loop that opens
        return False  # not remembered: a later install() may succeed
    _beats[loop] = hb
    _wrap_close(loop)
    if auto:
        log.info("loop %s (%s) beats every %gms into slot %d of %s", hb.name,
                 type(loop).__module__.split(".")[0], hb.interval * 1e3,
                 hb.native.slot, os.environ.get("LOOPWATCH_SEGMENT"))
    return True


def uninstall(loop=None) -> bool:
    if loop is None:
        loop = asyncio.events._get_running_loop()
    if loop is None:
        return False
    hb = _beats.pop(loop, None)
    if hb is None:
        return False
    hb.stop()
    return True


def set_ready(ready: bool) -> None:
    global _ready
    _ready = bool(ready)
    for hb in list(_beats.values()):
        if hb.native is not None:
            hb.native.set_ready(_ready)


def set_activity(label: Optional[str]) -> Optional[str]:
    """Sets the running loop's label; returns the one it replaces."""
    hb = current()
    if hb is None:
        return None
    previous, hb.activity = hb.activity, label
    if hb.native is not None:
        hb.native.set_activity(label)
    return previous


def _wrap_close(loop) -> None:
    """loop.close() releases the slot, whatever started the heartbeat."""
    original = loop.close

    def close(*args, **kwargs):
        result = original(*args, **kwargs)  # may refuse (a running loop)
        try:
            uninstall(loop)
        except Exception:
            pass
        return result

    try:
        loop.close = close
    except (AttributeError, TypeError):
        pass  # a loop class without __dict__: the weak entry still goes


# ---- running and stopping loops ---------------------------------------------
#
# BaseEventLoop.run_forever() (asyncio) calls asyncio.events._set_running_loop
# with the loop when it starts and with None when it stops; uvloop calls the
# asyncio._set_running_loop it found when it was imported. Wrapping both
# tells us, on the loop thread, when a loop starts (the runner installs the
# heartbeat there) and stops (a stopped loop does not beat: its slot is
# released until it runs again, instead of looking stalled).

_original_set_running_loop = None


def _set_running_loop(loop):
    if loop is None:
        running = asyncio.events._get_running_loop()
        if running is not None:
            try:
                _loop_stopping(running)
            except Exception:
                pass
        return _original_set_running_loop(loop)
    result = _original_set_running_loop(loop)
    try:
        _loop_starting(loop)
    except Exception:
        pass
    return result


def _loop_starting(loop) -> None:
    global _on_start
    hb = _beats.get(loop)
    if hb is not None:
        if hb.paused:
            hb.paused = False
            hb.open(loop)
    elif _auto:
        if _on_start is not None and _on_start():
            _on_start = None
        # After what is already scheduled: the first step of the server's
        # main task, which (uvicorn) imports the app on the loop. The slot
        # appears once the app is loaded, so /startupz means "loaded", and
        # a slow import is start-up, not a stall.
        loop.call_soon(_auto_install, loop)


def _auto_install(loop) -> None:
    try:
        if loop.is_running() and loop not in _beats:
            install(loop=loop, auto=True)
    except Exception as e:
        _warn_once("auto-install", "a loop is not watched: %r", e)


def _loop_stopping(loop) -> None:
    hb = _beats.get(loop)
    if hb is not None and not hb.paused:
        hb.paused = True
        hb.stop()


def hook_running_loop() -> None:
    global _original_set_running_loop
    if _original_set_running_loop is not None:
        return
    _original_set_running_loop = asyncio.events._set_running_loop
    asyncio.events._set_running_loop = _set_running_loop
    asyncio._set_running_loop = _set_running_loop
    if "uvloop" in sys.modules:
        # uvloop keeps the function it saw at import: its loops are still
        # watched (install, close), but a stopped one is not seen stopping.
        _warn_once("uvloop-first", "uvloop was imported before loopwatch: a uvloop "
                   "loop that stops without closing keeps its slot")


_on_start = None


def enable_auto(on_start=None) -> None:
    """Every loop that starts running in this process gets a heartbeat;
    on_start() is called as each starts until it returns True."""
    global _auto, _on_start
    _auto = True
    _on_start = on_start
    hook_running_loop()


# ---- fork and exit ----------------------------------------------------------

def _after_fork_in_child() -> None:
    global _count
    _count = 0
    for hb in list(_beats.values()):
        hb.forked = True  # its next tick, if the child runs it, reopens


def _at_exit() -> None:
    for loop, hb in list(_beats.items()):
        try:
            hb.stop()
        except Exception:
            pass
    _native.shutdown()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)

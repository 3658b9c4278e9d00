# SPDX-License-Identifier: Apache-2.0
"""Zero-code mode, set up by the runner's sitecustomize in every Python
process the command starts: each event loop gets a heartbeat when it starts
running, uvicorn's app gets LoopwatchMiddleware and every aiohttp
Application loopwatch.aiohttp.middleware."""

import logging
import os
import sys

from . import _heartbeat, _native
from .aiohttp import middleware as aiohttp_middleware
from .asgi import LoopwatchMiddleware


def _wrap_once(module_name: str, class_name: str, method: str, wrap) -> bool:
    """Replaces module.class.method by wrap(original), once per process.
    True once done (now or before); False if the module is not loaded."""
    module = sys.modules.get(module_name)
    if module is None:
        return False
    cls = getattr(module, class_name)
    original = getattr(cls, method)
    if not getattr(original, "_loopwatch_wrapped", False):
        wrapper = wrap(original)
        wrapper._loopwatch_wrapped = True
        setattr(cls, method, wrapper)
    return True


def _uvicorn_load(original):
    """uvicorn's Config.load, then its app wrapped in LoopwatchMiddleware."""

    def load(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        try:
            if not isinstance(self.loaded_app, LoopwatchMiddleware):
                self.loaded_app = LoopwatchMiddleware(self.loaded_app)
        except Exception:
            pass
        return result

    return load


def _aiohttp_pre_freeze(original):
    """aiohttp's Application.pre_freeze, with loopwatch's middleware put
    first when the application freezes its middlewares."""

    def pre_freeze(self):
        try:
            if not self.pre_frozen and aiohttp_middleware not in self._middlewares:
                self._middlewares.insert(0, aiohttp_middleware)
                _native.set_requests_recorded()
        except Exception:
            pass
        return original(self)

    return pre_freeze


def _patch_servers() -> bool:
    """Whichever of uvicorn and aiohttp.web the process has loaded by the
    time its first loop runs gets the middleware."""
    uvicorn = _wrap_once("uvicorn.config", "Config", "load", _uvicorn_load)
    aiohttp = _wrap_once("aiohttp.web_app", "Application", "pre_freeze", _aiohttp_pre_freeze)
    return uvicorn or aiohttp


def enable() -> None:
    log = logging.getLogger("loopwatch")
    if not log.handlers and os.environ.get("LOOPWATCH_QUIET", "") in ("", "0"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("loopwatch: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    wrap = os.environ.get("LOOPWATCH_MIDDLEWARE", "1") != "0"
    _heartbeat.enable_auto(on_start=_patch_servers if wrap else None)

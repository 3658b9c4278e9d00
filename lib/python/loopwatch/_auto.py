# SPDX-License-Identifier: Apache-2.0
"""Zero-code mode, set up by the runner's sitecustomize in every Python
process the command starts: each event loop gets a heartbeat when it starts
running, uvicorn's app gets LoopwatchMiddleware and every aiohttp
Application loopwatch.aiohttp.middleware."""

import logging
import os
import sys

from . import _heartbeat, asgi
from . import aiohttp as aiohttp_middleware


def _patch_servers() -> bool:
    """Whichever of uvicorn and aiohttp.web the process has loaded by the
    time its first loop runs gets the middleware."""
    uvicorn = asgi.patch_uvicorn()
    aiohttp = aiohttp_middleware.patch_aiohttp()
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

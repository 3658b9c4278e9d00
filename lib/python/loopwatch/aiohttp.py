# SPDX-License-Identifier: Apache-2.0
"""aiohttp middleware that records the requests in flight, for stall reports.

aiohttp.web::

    import loopwatch.aiohttp
    app = web.Application(middlewares=[loopwatch.aiohttp.middleware])

A stall report then lists every request the loop was serving, oldest first,
as ``GET /path?query (2.041 s)``, with query values REDACTED unless
LOOPWATCH_REDACT_QUERY is false: what loopwatch.asgi.LoopwatchMiddleware
gives ASGI servers. The runner (``python -m loopwatch.run``) puts it first in
every aiohttp Application by itself. A request that passes through it twice
(a sub-application's) is recorded once.

This module does not import aiohttp: a middleware is any coroutine function
marked ``__middleware_version__ = 1``, as ``aiohttp.web.middleware`` marks it.
"""

from __future__ import annotations

import os

from . import _heartbeat, _native

__all__ = ["middleware"]

_KEY = "loopwatch.request"


def _redacting() -> bool:
    return os.environ.get("LOOPWATCH_REDACT_QUERY", "").strip().lower() not in (
        "false", "0", "no", "off")


async def middleware(request, handler):
    """Records `request` in the loop's requests in flight while `handler`
    runs (the aiohttp middleware signature)."""
    hb = _heartbeat.current()
    native = hb.native if hb is not None else None
    if native is None or _KEY in request:
        return await handler(request)
    path = request.raw_path or "/"
    if "?" in path and _redacting():
        path = _native.redact_query(path)
    token = native.request_begin(request.method, path)
    request[_KEY] = token
    try:
        return await handler(request)
    finally:
        native.request_end(token)


middleware.__middleware_version__ = 1  # type: ignore[attr-defined]


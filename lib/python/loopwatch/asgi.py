# SPDX-License-Identifier: Apache-2.0
"""ASGI middleware that records the requests in flight, for stall reports.

FastAPI / Starlette::

    from loopwatch.asgi import LoopwatchMiddleware
    app.add_middleware(LoopwatchMiddleware)

or wrap any ASGI app: ``app = LoopwatchMiddleware(app)``. A stall report then
lists every HTTP or WebSocket request the loop was serving, oldest first, as
``GET /path?query (2.041 s)``, with the value of every query parameter
recorded as REDACTED (``?api_key=REDACTED``) unless LOOPWATCH_REDACT_QUERY
is false. The runner (``python -m loopwatch.run``) adds it to uvicorn apps
(and gunicorn's UvicornWorker) by itself.

Per request it costs two calls into the native module (a few hundred ns);
with loopwatch off, or on a loop without a heartbeat, one dictionary lookup.
"""

from __future__ import annotations

import os

from . import _heartbeat, _native

__all__ = ["LoopwatchMiddleware"]


def _redacting() -> bool:
    return os.environ.get("LOOPWATCH_REDACT_QUERY", "").strip().lower() not in (
        "false", "0", "no", "off")


class LoopwatchMiddleware:
    """Wraps an ASGI app; records each http/websocket request while it runs."""

    def __init__(self, app) -> None:
        self.app = app
        self.redact = _redacting()
        _native.set_requests_recorded()

    async def __call__(self, scope, receive, send) -> None:
        kind = scope.get("type")
        hb = _heartbeat.current() if kind in ("http", "websocket") else None
        native = hb.native if hb is not None else None
        if native is None:
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or "/"
        query = scope.get("query_string") or b""
        if query:
            path += "?" + query.decode("latin-1")
            if self.redact:
                path = _native.redact_query(path)
        method = scope.get("method") or "WEBSOCKET"
        token = native.request_begin(method, path)
        try:
            await self.app(scope, receive, send)
        finally:
            native.request_end(token)


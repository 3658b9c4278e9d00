# SPDX-License-Identifier: Apache-2.0
"""The aiohttp app of the end-to-end tests (Debian's python3-aiohttp), run
as `python -m loopwatch.run -- python3 aioapp.py PORT` with no loopwatch
code in it: the runner gives every Application loopwatch.aiohttp.middleware.
/sleep blocks the loop; /wait awaits (a request in flight that is not the
culprit); /sub/sleep is the same blocking handler in a sub-application. The
tests find the blocking line by its "# LINE:<tag>" marker."""

import asyncio
import os
import sys
import time

from aiohttp import web


async def health(request):
    return web.json_response({"ok": True, "pid": os.getpid()})


async def blocking_sleep(request):
    s = float(request.query.get("s", "1"))
    time.sleep(s)  # LINE:aio-sleep
    return web.json_response({"slept": s, "pid": os.getpid()})


async def waiting(request):
    s = float(request.query.get("s", "10"))
    await asyncio.sleep(s)
    return web.json_response({"waited": s, "pid": os.getpid()})


def make_app():
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/sleep", blocking_sleep)
    app.router.add_get("/wait", waiting)
    sub = web.Application()
    sub.router.add_get("/sleep", blocking_sleep)
    app.add_subapp("/sub/", sub)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None)

# SPDX-License-Identifier: Apache-2.0
"""The FastAPI app of the end-to-end tests: each endpoint is one of the
mistakes users make in `async def` code (docs/design.md, "The problem") or in
a sync endpoint that starves the loop of the GIL, plus a /health
that runs on the same loop and a readiness switch.

No loopwatch import at module level: the runner (python -m loopwatch.run)
watches the loop with no change to the app. The tests find the line of each
blocking call by its "# LINE:<tag>" marker, so edits here cannot leave them
checking a stale line number."""

import asyncio
import os
import re
import time

import httpx
import requests
from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health():
    return {"ok": True, "pid": os.getpid()}


@app.get("/sleep")
async def blocking_sleep(s: float = 1.0):
    time.sleep(s)  # LINE:sleep
    return {"slept": s, "pid": os.getpid()}


@app.get("/upstream")
async def blocking_upstream(url: str):
    r = requests.get(url, timeout=30)  # LINE:requests
    return {"status": r.status_code, "body": r.text, "pid": os.getpid()}


@app.get("/upstream-async")
async def async_upstream(url: str):
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(url)
    return {"status": r.status_code, "body": r.text, "pid": os.getpid()}


def spin(seconds):
    """Pure-Python CPU work: no system call to wait in."""
    end = time.monotonic() + seconds
    n = 0
    x = 1.0
    while True:  # LINE:cpu-loop
        for _ in range(20000):
            x = x * 1.0000001 + 1e-9  # LINE:cpu
        n += 1
        if time.monotonic() >= end:
            return n, x


@app.get("/cpu")
async def cpu_bound(s: float = 1.0):
    rounds, _ = spin(s)  # LINE:cpu-call
    return {"rounds": rounds, "pid": os.getpid()}


@app.get("/regex")
def regex_in_the_threadpool(n: int = 26):
    """A sync `def` endpoint, which FastAPI runs in its thread pool: a
    catastrophic regular expression keeps the GIL in C code there (some
    3 s for n=26), and the loop thread can only wait for it."""
    matched = re.match(r"(a+)+$", "a" * n + "b")  # LINE:regex
    return {"matched": bool(matched), "pid": os.getpid()}


@app.get("/timeout")
async def guarded_by_timeout(s: float = 1.0, limit: float = 0.2):
    """asyncio.timeout cannot interrupt code that never awaits: the deadline
    passes while the loop is blocked, and nothing fires."""
    t0 = time.monotonic()
    timed_out = False
    try:
        async with asyncio.timeout(limit):
            time.sleep(s)  # LINE:timeout
    except TimeoutError:
        timed_out = True
    return {"timed_out": timed_out, "elapsed": time.monotonic() - t0,
            "limit": limit, "pid": os.getpid()}


@app.get("/secret")
async def secret_stall(s: float = 1.0):
    """A stall whose activity label, request and report text (the running
    task's name) all hold a secret in a query string: the canaries of
    test_secrets.py."""
    import loopwatch
    asyncio.current_task().set_name("fetch https://pay.example/v1?token=CANARY-TASK")
    with loopwatch.activity("charge https://pay.example/v1?api_key=CANARY-ACTIVITY"):
        time.sleep(s)  # LINE:secret
    return {"slept": s, "pid": os.getpid()}


@app.get("/ready")
async def ready(on: int):
    import loopwatch
    loopwatch.set_ready(bool(on))
    return {"ready": bool(on), "pid": os.getpid()}


@app.get("/loop")
async def loop_kind():
    loop = asyncio.get_running_loop()
    return {"loop": type(loop).__module__ + "." + type(loop).__name__, "pid": os.getpid()}

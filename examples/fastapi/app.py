# SPDX-License-Identifier: Apache-2.0
"""A small orders service on FastAPI, with the classic event-loop bug.

Run it watched by loopwatch, with no change to the code:

    LOOPWATCH_SEGMENT=/tmp/segment python3 -m loopwatch.run -- uvicorn app:app

GET /health and GET /orders/{id} are well-behaved async endpoints. Two are
not:

- POST /orders/{id}/invoice calls a synchronous "billing SDK" from an
  `async def`: the call sleeps in the kernel while holding the event loop's
  only thread (a stall of class `blocked`);
- GET /orders/{id}/export renders a report in pure Python on the loop (a
  stall of class `cpu`).

For as long as either runs, this worker answers nothing else, not even
/health.
"""

import asyncio
import os
import time

from fastapi import FastAPI, HTTPException

# How long the billing provider takes to render an invoice (seconds).
BILLING_LATENCY = float(os.environ.get("BILLING_LATENCY_SECONDS", "7"))
# How long rendering an export keeps the CPU busy (seconds).
EXPORT_SECONDS = float(os.environ.get("EXPORT_SECONDS", "7"))

app = FastAPI(title="orders")

ORDERS = {
    41: {"id": 41, "customer": "ada@example.com", "items": 3, "total": 129.90},
    42: {"id": 42, "customer": "linus@example.com", "items": 1, "total": 24.50},
}


async def load_order(order_id: int) -> dict:
    await asyncio.sleep(0.02)  # a database round trip; the loop serves others meanwhile
    order = ORDERS.get(order_id)
    if order is None:
        raise HTTPException(status_code=404, detail="no such order")
    return order


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/orders/{order_id}")
async def get_order(order_id: int):
    return await load_order(order_id)


@app.post("/orders/{order_id}/invoice")
async def create_invoice(order_id: int):
    order = await load_order(order_id)
    # The bug: a blocking call inside `async def`. time.sleep stands in for a
    # synchronous SDK call (requests.post, boto3, a PDF renderer): it never
    # yields to the event loop, so every other request on this worker waits.
    time.sleep(BILLING_LATENCY)  # BUG: blocks the event loop
    return {"order": order["id"], "invoice": "INV-%d" % order["id"], "status": "issued"}


def render_export(order: dict) -> str:
    """CPU-bound work (formatting a large report) run on the loop's thread."""
    deadline = time.monotonic() + EXPORT_SECONDS
    rows = []
    while time.monotonic() < deadline:
        rows.append("%(id)d,%(customer)s,%(items)d,%(total).2f" % order)
        del rows[:-1000]
    return rows[-1]


@app.get("/orders/{order_id}/export")
async def export_order(order_id: int):
    order = await load_order(order_id)
    # The same bug, CPU-bound this time: nothing awaits until it is done.
    return {"order": order["id"], "export": render_export(order)}  # BUG: CPU on the loop

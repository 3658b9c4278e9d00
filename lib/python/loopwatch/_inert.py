# SPDX-License-Identifier: Apache-2.0
"""Stands in for loopwatch._native on a Python the build cannot serve
(loopwatch/_compat.py says which): every call is the no-op it is with
LOOPWATCH_SEGMENT unset, so the app runs as if loopwatch were not there."""

import re
import time

WHY = "unknown"

_UNITS = {"ns": 1, "us": 1000, "ms": 1000000, "s": 1000000000, "m": 60000000000,
          "h": 3600000000000}


class Loop:
    def __init__(self, *args, **kwargs):
        raise OSError(95, "loopwatch is off in this Python: %s" % WHY)


def enabled() -> bool:
    return False


def set_requests_recorded() -> None:
    pass


def version() -> str:
    return "unknown"


def now_ns() -> int:
    return time.monotonic_ns()


def parse_duration(text: str) -> int:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError("%r: expected a duration with a unit, like 100ms, 1.5s or 1m30s" % text)
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


def redact_query(text: str) -> str:
    path, sep, query = text.partition("?")
    return path + sep + re.sub(r"=[^&;]*", "=REDACTED", query) if sep else text


def shutdown() -> None:
    pass


def report_now(loop: Loop) -> str:
    raise TypeError("report_now(loop: Loop)")

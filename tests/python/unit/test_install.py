# SPDX-License-Identifier: Apache-2.0
"""install(): names, kinds, intervals, warnings; read back from the segment."""

import json

import pytest

from conftest import (LOG_FORMAT, PY, child_env, one_result, run_all, warnings_in,
                      write_script)

# Installs the heartbeat as told by argv[1] (JSON), looks at its own slot,
# waits, looks again.
PROBE = """
import asyncio, json, logging, os, sys
logging.basicConfig(format=%r)
import loopwatch
from loopwatch import _heartbeat
import script_support

cfg = json.loads(sys.argv[1])

async def main():
    ok = loopwatch.install(*cfg.get("args", []), **cfg.get("kwargs", {}))
    again = loopwatch.install() if cfg.get("twice") else None
    hb = _heartbeat.current()
    slot = hb.native.slot if hb is not None and hb.native is not None else None
    first = await script_support.amine()
    await asyncio.sleep(0.6)
    second = await script_support.amine()
    script_support.result(ok=ok, again=again, slot=slot, pid=os.getpid(), first=first,
                  second=second, enabled=loopwatch.enabled(),
                  loop_type=type(asyncio.get_running_loop()).__module__)

mode = cfg.get("mode", "asyncio")
if mode == "asyncio":
    asyncio.run(main())
elif mode == "uvloop-new":
    import uvloop
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main())
    loop.close()
elif mode == "uvloop-install":
    import uvloop
    uvloop.install()
    asyncio.run(main())
""" % LOG_FORMAT

# name: (env, config, expected name (None: default), interval, kind, warning or None)
CASES = {
    "default": ({}, {}, None, 0.1, "asyncio", None),
    "env_interval": ({"LOOPWATCH_INTERVAL": "250ms"}, {}, None, 0.25, "asyncio", None),
    "env_interval_compound": ({"LOOPWATCH_INTERVAL": "1s500ms"}, {}, None, 1.5, "asyncio", None),
    "env_interval_no_unit": ({"LOOPWATCH_INTERVAL": "250"}, {}, None, 0.1, "asyncio",
                             "LOOPWATCH_INTERVAL"),
    "env_interval_bogus": ({"LOOPWATCH_INTERVAL": "bogus"}, {}, None, 0.1, "asyncio",
                           "LOOPWATCH_INTERVAL"),
    "env_interval_too_long": ({"LOOPWATCH_INTERVAL": "2m"}, {}, None, 0.1, "asyncio",
                              "LOOPWATCH_INTERVAL"),
    "env_interval_zero": ({"LOOPWATCH_INTERVAL": "0ms"}, {}, None, 0.1, "asyncio",
                          "LOOPWATCH_INTERVAL"),
    "env_name": ({"LOOPWATCH_NAME": "billing-api"}, {}, "billing-api", 0.1, "asyncio", None),
    "explicit": ({"LOOPWATCH_NAME": "not-this", "LOOPWATCH_INTERVAL": "300ms"},
                 {"args": ["orders"], "kwargs": {"interval": 0.05}}, "orders", 0.05,
                 "asyncio", None),
    "explicit_kw_name": ({}, {"kwargs": {"name": "kw-name", "interval": 0.2}}, "kw-name", 0.2,
                         "asyncio", None),
    "bad_interval_arg": ({}, {"kwargs": {"interval": 0}}, None, 0.1, "asyncio", "interval=0"),
    "bad_interval_arg_env": ({"LOOPWATCH_INTERVAL": "50ms"}, {"kwargs": {"interval": 61.0}},
                             None, 0.05, "asyncio", "interval=61"),
    "twice": ({}, {"twice": True}, None, 0.1, "asyncio", None),
    "uvloop_new_event_loop": ({}, {"mode": "uvloop-new"}, None, 0.1, "uvloop", None),
    "uvloop_install": ({}, {"mode": "uvloop-install"}, None, 0.1, "uvloop", None),
}


@pytest.fixture(scope="module")
def probe_results(tmp_path_factory):
    """All CASES, run at once (each in its own process and segment)."""
    from conftest import Child
    base = tmp_path_factory.mktemp("install")
    script = write_script(base, "app_main.py", PROBE)
    children = {}
    try:
        for case, (env, cfg, *_rest) in CASES.items():
            seg = base / ("seg-" + case)
            children[case] = Child([PY, script, json.dumps(cfg)], child_env(seg, **env),
                                   str(base))
        out = {case: c.wait(60) for case, c in children.items()}
    finally:
        for c in children.values():
            c.kill()
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_install_case(probe_results, case):
    env, cfg, name, interval, kind, warning = CASES[case]
    rc, out, err = probe_results[case]
    r = one_result((rc, out, err))
    assert r["ok"] is True and r["enabled"] is True
    pid = r["pid"]
    assert len(r["first"]) == 1, "expected exactly one slot of pid %d: %r" % (pid, r["first"])
    slot = r["first"][0]
    assert slot["name"] == (name or "app_main-%d" % pid)
    assert slot["pid"] == pid
    assert slot["kind"] == kind
    assert r["loop_type"].split(".")[0] == ("uvloop" if kind == "uvloop" else "asyncio")
    assert slot["interval_seconds"] == pytest.approx(interval)
    assert slot["ready"] is True
    assert slot["slot"] == r["slot"]
    # It beats: at least one beat at once (install), then about one per
    # interval over the 0.6 s the script waited.
    assert slot["beats"] >= 1
    later = r["second"]
    assert len(later) == 1 and later[0]["slot"] == slot["slot"]
    expected_more = int(0.6 / interval) // 3  # generous: a third of the beats due
    assert later[0]["beats"] - slot["beats"] >= max(1, expected_more) or interval > 0.6, (
        slot, later)
    warns = [l for l in warnings_in(err) if "WARNING" in l]
    if warning is None:
        assert warns == [], err
    else:
        assert len(warns) == 1 and warning in warns[0], err
    if cfg.get("twice"):
        assert r["again"] is True


NAMES = """
import asyncio, logging, os
logging.basicConfig(format=%r)
import loopwatch
import script_support

def attempt(name):
    async def main():
        ok = loopwatch.install(name)
        return ok, [l["name"] for l in await script_support.amine()]
    return asyncio.run(main())

r = {}
for label, name in [("ascii63", "a" * 63), ("ascii64", "b" * 64),
                    ("utf8_63", "\\u00e9" * 31 + "x"), ("utf8_64", "\\u00e9" * 32)]:
    r[label] = attempt(name)
script_support.result(**r)
""" % LOG_FORMAT


def test_name_limit_is_63_bytes(tmp_path, spawn, segment):
    script = write_script(tmp_path, "names.py", NAMES)
    (rc, out, err), = run_all(spawn, [([PY, script], child_env(segment))])
    r = one_result((rc, out, err))
    assert r["ascii63"] == [True, ["a" * 63]]
    assert r["utf8_63"] == [True, ["\u00e9" * 31 + "x"]]
    # Over 63 bytes: not watched, no slot, a warning (once), no exception.
    assert r["ascii64"] == [False, []]
    assert r["utf8_64"] == [False, []]
    warns = [l for l in warnings_in(err) if "WARNING" in l]
    assert len(warns) == 1 and "63 bytes" in warns[0], err
    assert "Traceback" not in err


OUTSIDE = """
import logging
logging.basicConfig(format=%r)
import loopwatch, script_support
r = [loopwatch.install(), loopwatch.install("x", interval=0.5)]
script_support.result(install=r, enabled=loopwatch.enabled(), uninstall=loopwatch.uninstall())
""" % LOG_FORMAT


def test_install_outside_a_running_loop_warns(tmp_path, spawn, segment):
    script = write_script(tmp_path, "outside.py", OUTSIDE)
    (rc, out, err), = run_all(spawn, [([PY, script], child_env(segment))])
    r = one_result((rc, out, err))
    assert r == {"install": [False, False], "enabled": True, "uninstall": False}
    warns = warnings_in(err)
    assert len(warns) == 1, err
    assert warns[0].startswith("loopwatch:WARNING:") and "outside a running event loop" in warns[0]
    assert "Traceback" not in err
    # No loop, no slot: the segment was not even created.
    assert not segment.exists()


RETRY = """
import asyncio, logging, os
logging.basicConfig(format=%r)
import loopwatch, script_support

async def main():
    bad = loopwatch.install("n" * 64)
    good = loopwatch.install()
    script_support.result(bad=bad, good=good, pid=os.getpid(),
                  names=[l["name"] for l in await script_support.amine()])
asyncio.run(main())
""" % LOG_FORMAT


def test_failed_install_does_not_poison_the_loop(tmp_path, spawn, segment):
    """install() that fails (a name over 63 bytes: False and a warning)
    leaves nothing behind: a later install() with a good name on the same
    loop watches it. (Known bug at the time of writing: the failed attempt
    stays registered for the loop, so every later install() returns False.)"""
    script = write_script(tmp_path, "retry.py", RETRY)
    (rc, out, err), = run_all(spawn, [([PY, script], child_env(segment))])
    r = one_result((rc, out, err))
    assert r["bad"] is False
    assert r["good"] is True, "install() after a failed install() on the same loop: %r" % r
    assert r["names"] == ["retry-%d" % r["pid"]]

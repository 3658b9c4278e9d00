#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
r"""What the Python heartbeat costs: the CPU of an idle asyncio / uvloop loop
with loopwatch's heartbeat against the same loop without it, and the cost of
one tick, taken apart. Prints each figure beside the target of
docs/design.md ("Python heartbeat at the default interval: under 0.1% of
one core"), with PASS/MISS.

Started by scripts/bench-python, which builds the package, the sidecar binary
and wake_floor.c and passes their paths; see bench/python/README.md. Every
measurement runs in a fresh subprocess of /usr/bin/python3 (this file in
"child" mode), which reads its own CPU time (every thread: the watchdog
thread counts) over a window and prints one JSON line. Every process started
here is waited for here.

  bench_heartbeat.py --pythonpath DIR [--status-bin BIN] [--wake-floor BIN]
      [--quick] [--seconds S] [--repeat N] [--loops asyncio,uvloop] [--json F]
"""
import argparse
import itertools
import json
import mmap
import os
import resource
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time

# docs/design.md, "Performance targets".
TARGET_PCT = 0.1          # % of one core, heartbeat at the default interval
DEFAULT_INTERVAL = 0.1    # loopwatch's default (lib/python/loopwatch/_heartbeat.py)

# lib/FORMAT.md: slot i starts at 256 + i * 8192; beat_count is the u64 at
# slot offset 136.
HEADER_SIZE, SLOT_SIZE, BEAT_COUNT_OFF = 256, 8192, 136

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from run_info import (HZ, machine, machine_line, save_results,  # noqa: E402
                      system_busy, wait_quiet)


# ===========================================================================
# child: one measurement in a fresh process

def _thread_names():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                out[int(tid)] = f.read().strip()
        except OSError:
            pass
    return out


def _thread_cpu_ns(tid):
    """CPU time of one thread of this process: the clock id that
    pthread_getcpuclockid builds from a tid (CPUCLOCK_PERTHREAD | SCHED).
    Unlike /proc/.../schedstat it includes the slice running now."""
    try:
        return time.clock_gettime_ns(((~tid) << 3) | 6)
    except OSError:
        return 0


class BeatReader:
    """beat_count of one slot, read from the segment file (lib/FORMAT.md).
    Read on the loop thread, the slot's only writer: no torn reads."""

    def __init__(self, path, slot):
        self.f = open(path, "rb")
        self.m = mmap.mmap(self.f.fileno(), 0, prot=mmap.PROT_READ)
        self.off = HEADER_SIZE + slot * SLOT_SIZE + BEAT_COUNT_OFF

    def count(self):
        return struct.unpack_from("<Q", self.m, self.off)[0]


def child(a):
    """One variant of one loop in this process; prints one JSON object.

    bare   an idle loop; loopwatch is not even importable
    off    loopwatch imported and install() called, LOOPWATCH_SEGMENT unset
    empty  a timer whose callback only reschedules itself (and bumps a C
           counter to count the ticks): the floor of any timer heartbeat
    hb     loopwatch.install(): the real heartbeat
    With --interval 0 ("spin"), empty and hb reschedule at delay 0: the loop
    never sleeps, so a tick costs its dispatch and nothing else."""
    import asyncio
    lw = None
    if a.variant in ("off", "hb"):
        import loopwatch as lw  # before uvloop, as loopwatch.run does
    if a.loop == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    res = {"loop": a.loop, "variant": a.variant, "mode": a.mode,
           "interval": a.interval if a.variant in ("empty", "hb") else None}

    async def main():
        reader = None
        counter = None
        if a.variant in ("off", "hb"):
            if a.mode == "idle" and a.interval == DEFAULT_INTERVAL:
                ok = lw.install()  # the default interval, as an app calls it
            else:
                ok = lw.install(interval=max(a.interval, 0.001))
            res["installed"] = ok
            if a.variant == "hb":
                if not ok:
                    raise SystemExit("loopwatch.install() returned False")
                hb = lw._heartbeat.current()
                res["interval"] = hb.interval
                res["slot"] = hb.native.slot
                reader = BeatReader(os.environ["LOOPWATCH_SEGMENT"], hb.native.slot)
                if a.interval == 0:
                    hb.interval = 0.0  # spin: its next tick reschedules at 0
            elif ok:
                raise SystemExit("loopwatch.install() returned True without a segment")
        elif a.variant == "empty":
            counter = itertools.count()
            bump = counter.__next__
            iv = a.interval

            def cb():
                bump()
                loop.call_later(iv, cb)
            loop.call_later(iv, cb)

        def ticks():
            if reader is not None:
                return reader.count()
            if counter is not None:
                return counter.__reduce__()[1][0]
            return 0

        await asyncio.sleep(a.settle)
        names = _thread_names()
        t0 = {tid: _thread_cpu_ns(tid) for tid in names}
        c0 = time.process_time_ns()
        w0 = time.monotonic_ns()
        n0 = ticks()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(a.seconds)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        n1 = ticks()
        w1 = time.monotonic_ns()
        c1 = time.process_time_ns()
        t1 = {tid: _thread_cpu_ns(tid) for tid in names}
        pid = os.getpid()
        by = {}
        for tid, name in names.items():
            key = "loop" if tid == pid else name
            by[key] = by.get(key, 0) + t1[tid] - t0[tid]
        for tid, name in _thread_names().items():
            if tid not in names:  # started inside the window: all of it
                by[name] = by.get(name, 0) + _thread_cpu_ns(tid)
        res.update({
            "wall_ns": w1 - w0, "cpu_ns": c1 - c0, "ticks": n1 - n0,
            "threads_ns": by,
            "vol_ctxt": r1.ru_nvcsw - r0.ru_nvcsw,
            "invol_ctxt": r1.ru_nivcsw - r0.ru_nivcsw,
        })
        if reader is not None:
            res["beats_total"] = n1
            if a.status_bin:
                # Cross-check with the sidecar's own reader. The loop is
                # blocked here, so no beat happens meanwhile.
                p = subprocess.run([a.status_bin, "status", "--json", "--segment",
                                    os.environ["LOOPWATCH_SEGMENT"]],
                                   capture_output=True, text=True, timeout=10)
                try:
                    mine = [x for x in json.loads(p.stdout)["loops"]
                            if x["slot"] == res["slot"]]
                    res["beats_status"] = mine[0]["beats"] if mine else None
                except (ValueError, KeyError, IndexError):
                    res["beats_status"] = None

    loop.run_until_complete(main())
    loop.close()
    print(json.dumps(res), flush=True)


def micro(a):
    """timeit, in one process with a real segment: the native beat() alone,
    and a do-nothing C method (the cost of calling C from Python)."""
    import asyncio
    import timeit
    import loopwatch
    loop = asyncio.new_event_loop()
    out = {}

    async def main():
        if not loopwatch.install(interval=DEFAULT_INTERVAL):
            raise SystemExit("loopwatch.install() returned False")
        hb = loopwatch._heartbeat.current()
        reader = BeatReader(os.environ["LOOPWATCH_SEGMENT"], hb.native.slot)
        cases = (("beat", "f()", {"f": hb.native.beat}),
                 ("c_call", "f()", {"f": (0).bit_length}))
        for name, stmt, g in cases:
            t = timeit.Timer(stmt, globals=g)
            n, _ = t.autorange()  # calls for at least 0.2 s
            b0 = reader.count()
            runs = t.repeat(repeat=a.micro_repeat, number=n)
            out[name] = {"ns": [r / n * 1e9 for r in runs], "number": n}
            if name == "beat":
                out[name]["beats_counted"] = reader.count() - b0
                out[name]["beats_expected"] = n * a.micro_repeat

    loop.run_until_complete(main())
    loop.close()
    print(json.dumps(out), flush=True)


# ===========================================================================
# driver

def versions(python, pythonpath):
    code = ("import sys, json, loopwatch\n"
            "try:\n import uvloop; uv = uvloop.__version__\n"
            "except ImportError:\n uv = None\n"
            "print(json.dumps({'python': sys.version.split()[0],"
            " 'python_path': sys.executable, 'uvloop': uv,"
            " 'loopwatch': loopwatch.__version__, 'loopwatch_file': loopwatch.__file__}))")
    env = dict(os.environ, PYTHONPATH=pythonpath)
    p = subprocess.run([python, "-s", "-c", code], capture_output=True, text=True,
                       env=env, timeout=30)
    if p.returncode:
        raise SystemExit(f"bench_heartbeat: {python} cannot import "
                         f"loopwatch from {pythonpath}:\n{p.stderr}")
    v = json.loads(p.stdout)
    p = subprocess.run([python, "-s", "-c", "import loopwatch"], capture_output=True,
                       env={k: x for k, x in os.environ.items() if k != "PYTHONPATH"},
                       timeout=30)
    v["loopwatch_importable_without_pythonpath"] = p.returncode == 0
    return v


class Load:
    """Cores kept busy on the whole machine during a section."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.b0, self.s0 = system_busy()

    def stop(self):
        dt = time.monotonic() - self.t0
        b, s = system_busy()
        return {"cores_busy": round((b - self.b0) / HZ / dt, 3),
                "steal": round((s - self.s0) / HZ / dt, 4), "seconds": round(dt, 1)}


def load_note(ld):
    return (f"machine during this part: {ld['cores_busy']:.2f} of {os.cpu_count()} "
            f"cores busy (every process, this benchmark included), "
            f"steal {ld['steal']:.3f}")


def child_env(a, variant, segdir, tag):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LOOPWATCH_") and k != "PYTHONPATH"}
    if variant != "bare":
        env["PYTHONPATH"] = a.pythonpath  # bare: loopwatch is not importable
    if variant in ("hb", "micro"):
        env["LOOPWATCH_SEGMENT"] = os.path.join(segdir, f"segment-{tag}")
    return env


def child_argv(a, mode, loop, variant, seconds, interval, settle):
    argv = [a.python, "-s", os.path.abspath(__file__), "child", "--mode", mode,
            "--loop", loop, "--variant", variant, "--seconds", repr(seconds),
            "--interval", repr(interval), "--settle", repr(settle)]
    if variant == "hb" and a.status_bin:
        argv += ["--status-bin", a.status_bin]
    return argv


def run_children(specs, segdir, parallel):
    """specs: [(key, argv, env)]. Returns {key: result}; all at once if
    parallel, else one after the other."""
    results = {}

    def start(argv, env):
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def collect(key, p, argv):
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"{key} failed ({p.returncode}): "
                               f"{' '.join(map(shlex.quote, argv))}\n{err}")
        results[key] = json.loads(out.strip().splitlines()[-1])

    procs = []
    try:
        if parallel:
            procs = [(key, start(argv, env), argv) for key, argv, env in specs]
            for key, p, argv in procs:
                collect(key, p, argv)
        else:
            for key, argv, env in specs:
                procs = [(key, start(argv, env), argv)]
                collect(key, procs[0][1], argv)
    finally:
        for _, p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in os.listdir(segdir):
            os.unlink(os.path.join(segdir, f))
    return results


def med(v):
    return statistics.median(v) if v else float("nan")


def rng(v, nd):
    return f"{min(v):.{nd}f} .. {max(v):.{nd}f}" if v else "-"


def pct(r):
    return r["cpu_ns"] / r["wall_ns"] * 100


def check_beats(r, problems):
    """Every beat counted must be in the segment as the sidecar reads it."""
    if r.get("variant") != "hb" or "beats_status" not in r:
        return
    if r["beats_status"] != r["beats_total"]:
        problems.append(f"{r['loop']} {r['mode']} {r['interval']}: "
                        f"{r['beats_total']} beats read from the segment, "
                        f"`loopwatch status --json` says {r['beats_status']}")


# ---- 1. CPU at the default interval -----------------------------------------

P1_VARIANTS = (
    ("bare", "idle loop, loopwatch not importable"),
    ("off", "loopwatch.install(), SEGMENT unset"),
    ("empty", "empty-callback timer, 100 ms"),
    ("hb", "loopwatch heartbeat, 100 ms"),
)


def bench_overhead(a, segdir):
    runs = {(lp, v): [] for lp in a.loops for v, _ in P1_VARIANTS}
    floor = []
    problems = []
    load = Load()
    for rep in range(a.repeat):
        spec = {}
        for lp in a.loops:
            for v, _ in P1_VARIANTS:
                argv = child_argv(a, "idle", lp, v, a.seconds, DEFAULT_INTERVAL, a.settle)
                spec[(lp, v)] = ((lp, v), argv, child_env(a, v, segdir, f"{lp}-{v}-{rep}"))
        if a.wake_floor and (a.parallel or rep == 0):
            # It sleeps through the others' settle time, then runs as long.
            spec[("c", "floor")] = (("c", "floor"), [
                "/bin/sh", "-c", 'sleep "$0"; exec "$@"', str(a.settle + 0.3),
                a.wake_floor, str(int(DEFAULT_INTERVAL * 1e9)), repr(a.seconds)],
                dict(os.environ))
        if a.parallel:
            slots = [list(spec.values())]
        else:
            # A process that wakes runs alone, so that no other one keeps the
            # CPUs out of their idle state; the baselines (they never wake)
            # run beside the first. The order turns from run to run.
            waking = [k for k in spec if k[1] in ("hb", "empty", "floor")]
            quiet = [spec[k] for k in spec if k not in waking]
            shift = rep % len(waking)
            waking = waking[shift:] + waking[:shift]
            slots = [[spec[waking[0]]] + quiet] + [[spec[k]] for k in waking[1:]]
        res = {}
        for slot in slots:
            res.update(run_children(slot, segdir, True))
        for k, r in res.items():
            if k == ("c", "floor"):
                floor.append(r)
                continue
            runs[k].append(r)
            check_beats(r, problems)
        line = "  ".join(
            f"{lp}: " + " ".join(f"{v} {pct(runs[(lp, v)][-1]):.4f}%" for v, _ in P1_VARIANTS)
            for lp in a.loops)
        print(f"  run {rep + 1}/{a.repeat}: {line}", flush=True)
    ld = load.stop()

    out = {"seconds": a.seconds, "repeat": a.repeat, "parallel": a.parallel,
           "load": ld, "problems": problems, "loops": {}, "runs": {}}
    for (lp, v), rs in runs.items():
        out["runs"][f"{lp}-{v}"] = rs
    print()
    print(f"  {'loop':8s} {'process':38s} {'CPU % of a core':>15s} {'min .. max':>17s} "
          f"{'us/tick':>8s} {'wakeups/s':>9s}")
    for lp in a.loops:
        o = {}
        base = runs[(lp, "bare")]
        for v, label in P1_VARIANTS:
            rs = runs[(lp, v)]
            p = [pct(r) for r in rs]
            wk = [r["vol_ctxt"] / (r["wall_ns"] / 1e9) for r in rs]
            per = [(r["cpu_ns"] / r["wall_ns"] - b["cpu_ns"] / b["wall_ns"])
                   * r["wall_ns"] / r["ticks"] / 1e3 for r, b in zip(rs, base) if r["ticks"]]
            thr = {}
            for r in rs:
                for name, ns in r["threads_ns"].items():
                    thr.setdefault(name, []).append(ns / r["wall_ns"] * 1e6)
            o[v] = {"pct": p, "pct_median": med(p), "wakeups_per_s": med(wk),
                    "us_per_tick_over_idle": med(per) if per else None,
                    "threads_us_per_s": {k: med(x) for k, x in thr.items()},
                    "ticks_per_s": med([r["ticks"] / (r["wall_ns"] / 1e9) for r in rs])}
            print(f"  {lp:8s} {label:38s} {med(p):14.4f}% {rng(p, 4):>17s} "
                  f"{(f'{med(per):.1f}' if per else '-'):>8s} {med(wk):9.1f}")
        for key, minus, label in (("overhead", "bare", "heartbeat - idle loop  (the target)"),
                                  ("timer_floor", "bare", "empty timer - idle loop"),
                                  ("loopwatch_own", "empty", "heartbeat - empty timer")):
            top = "hb" if key != "timer_floor" else "empty"
            d = [pct(h) - pct(b) for h, b in zip(runs[(lp, top)], runs[(lp, minus)])]
            o[key] = {"pct": d, "pct_median": med(d)}
            print(f"  {lp:8s} {label:38s} {med(d):14.4f}% {rng(d, 4):>17s}")
        th = o["hb"]["threads_us_per_s"]
        o["watchdog_us_per_s"] = th.get("loopwatch-wd", 0.0)
        print(f"  {'':8s}   heartbeat process by thread: loop thread {th.get('loop', 0):.0f} us/s "
              f"(idle loop {o['bare']['threads_us_per_s'].get('loop', 0):.0f}, empty timer "
              f"{o['empty']['threads_us_per_s'].get('loop', 0):.0f}), watchdog thread "
              f"{o['watchdog_us_per_s']:.0f} us/s"
              + "".join(f", {k} {x:.0f} us/s" for k, x in th.items()
                        if k not in ("loop", "loopwatch-wd")))
        out["loops"][lp] = o
    if floor:
        p = [pct(r) for r in floor]
        per = [r["cpu_ns"] / r["ticks"] / 1e3 for r in floor]
        out["wake_floor"] = {"pct": p, "pct_median": med(p), "us_per_wake": med(per)}
        print(f"  {'C':8s} {'wake_floor: clock_nanosleep, 100 ms':38s} {med(p):14.4f}% "
              f"{rng(p, 4):>17s} {med(per):8.1f} {10.0:9.1f}")
    print("  (us/tick: the process's CPU above the idle loop's, per tick of its timer)")
    print(f"    {load_note(ld)}")
    for p_ in problems:
        print(f"  PROBLEM: {p_}")
    return out


# ---- 2. the cost of one tick -------------------------------------------------

def bench_tick(a, segdir, idle):
    out = {"loops": {}}
    problems = []

    # 2a. timeit in one process.
    argv = [a.python, "-s", os.path.abspath(__file__), "micro",
            "--micro-repeat", str(a.micro_repeat)]
    m = run_children([("micro", argv, child_env(a, "micro", segdir, "micro"))],
                     segdir, False)["micro"]
    out["micro"] = m
    if m["beat"]["beats_counted"] != m["beat"]["beats_expected"]:
        problems.append(f"timeit beat(): {m['beat']['beats_expected']} calls but "
                        f"{m['beat']['beats_counted']} beats in the segment")
    beat_ns, ccall_ns = med(m["beat"]["ns"]), med(m["c_call"]["ns"])
    print(f"  timeit in one process (asyncio, real segment on tmpfs), median of "
          f"{a.micro_repeat} repeats:")
    print(f"    native beat() called from Python (lw_beat inside)   {beat_ns:7.1f} ns"
          f"   ({rng(m['beat']['ns'], 1)})")
    print(f"    a do-nothing C method, (0).bit_length()             {ccall_ns:7.1f} ns"
          f"   -> lw_beat itself about {beat_ns - ccall_ns:.0f} ns")

    # 2b. spin: reschedule at delay 0, the loop never sleeps; one process at a
    # time (each keeps a core busy).
    spin = {(lp, v): [] for lp in a.loops for v in ("empty", "hb")}
    load = Load()
    for rep in range(a.fast_repeat):
        for lp in a.loops:
            for v in ("empty", "hb"):
                argv = child_argv(a, "timer", lp, v, a.spin_seconds, 0.0, 0.1)
                env = child_env(a, v, segdir, f"s-{lp}-{v}-{rep}")
                r = run_children([((lp, v), argv, env)], segdir, False)[(lp, v)]
                spin[(lp, v)].append(r)
                check_beats(r, problems)
    ld_spin = load.stop()

    # 2c. fast timers (1 ms, 10 ms): empty callback vs heartbeat, all side by
    # side (each keeps a core a few % busy), the loop sleeping between ticks.
    fast = {(lp, v, iv): [] for lp in a.loops for v in ("empty", "hb")
            for iv in a.fast_intervals}
    load = Load()
    for rep in range(a.fast_repeat):
        specs = []
        for key in fast:
            lp, v, iv = key
            argv = child_argv(a, "timer", lp, v, a.fast_seconds, iv, 0.3)
            specs.append((key, argv, child_env(a, v, segdir, f"f-{lp}-{v}-{iv}-{rep}")))
        for k, r in run_children(specs, segdir, True).items():
            fast[k].append(r)
            check_beats(r, problems)
    ld_fast = load.stop()

    def per_tick(rs, thread=None):
        """CPU per tick in us: the process's (or one thread's)."""
        v = []
        for r in rs:
            if not r["ticks"]:
                continue
            ns = r["cpu_ns"] if thread is None else r["threads_ns"].get(thread, 0)
            v.append(ns / r["ticks"] / 1e3)
        return v

    print()
    print(f"  CPU per tick: the process's CPU time (every thread) / ticks, "
          f"median of {a.fast_repeat} runs")
    print(f"  {'loop':8s} {'timer':44s} {'empty cb':>9s} {'heartbeat':>10s} "
          f"{'difference':>10s} {'ticks/s':>8s}")
    for lp in a.loops:
        o = {}
        cases = [("spin", "delay 0: dispatch only, never sleeps", spin[(lp, "empty")],
                  spin[(lp, "hb")])]
        for iv in a.fast_intervals:
            cases.append((f"{iv * 1e3:g}ms", f"{iv * 1e3:g} ms: sleeps in epoll_wait, woken",
                          fast[(lp, "empty", iv)], fast[(lp, "hb", iv)]))
        for key, label, re_, rh in cases:
            e, h = per_tick(re_), per_tick(rh)
            rate = med([r["ticks"] / (r["wall_ns"] / 1e9) for r in rh])
            o[key] = {"empty_us": e, "hb_us": h, "empty_us_median": med(e),
                      "hb_us_median": med(h), "diff_us": med(h) - med(e),
                      "hb_loop_thread_us_median": med(per_tick(rh, "loop")),
                      "hb_watchdog_us_per_s": med([r["threads_ns"].get("loopwatch-wd", 0)
                                                   / r["wall_ns"] * 1e6 for r in rh]),
                      "ticks_per_s": rate}
            print(f"  {lp:8s} {label:44s} {med(e):9.2f} {med(h):10.2f} "
                  f"{med(h) - med(e):10.2f} {rate:8.0f}")
        if idle:
            i = idle["loops"][lp]
            e, h = i["empty"]["us_per_tick_over_idle"], i["hb"]["us_per_tick_over_idle"]
            print(f"  {lp:8s} {'100 ms (part 1; CPU above the idle loop)':44s} {e:9.2f} "
                  f"{h:10.2f} {h - e:10.2f} {i['hb']['ticks_per_s']:8.0f}")
        out["loops"][lp] = o
    print("  (us per tick; heartbeat: loopwatch.install(interval=...); spin: its interval "
          "set to 0 after install.\n   uvloop turns call_later(0) into call_soon, so its "
          "spin rows dispatch a Handle, not a libuv timer)")
    print(f"    {load_note(ld_spin)} (spin runs, one at a time)")
    print(f"    {load_note(ld_fast)} (timer runs, side by side)")
    out.update({"load_spin": ld_spin, "load_fast": ld_fast, "problems": problems,
                "spin_runs": {f"{k[0]}-{k[1]}": v for k, v in spin.items()},
                "fast_runs": {f"{k[0]}-{k[1]}-{k[2]}": v for k, v in fast.items()}})
    for p_ in problems:
        print(f"  PROBLEM: {p_}")
    return out


# ---- main --------------------------------------------------------------------

def child_main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["child", "micro"])
    ap.add_argument("--mode", choices=["idle", "timer"], default="idle")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--variant", choices=["bare", "off", "empty", "hb"], default="bare")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--status-bin")
    ap.add_argument("--micro-repeat", type=int, default=7)
    a = ap.parse_args()
    (micro if a.what == "micro" else child)(a)
    return 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("child", "micro"):
        return child_main()
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pythonpath", required=True,
                    help="directory holding the built loopwatch package (build/python)")
    ap.add_argument("--status-bin", help="the sidecar binary: every run's beat count is "
                    "checked against `loopwatch status --json`")
    ap.add_argument("--wake-floor", help="wake_floor binary (wake_floor.c): the CPU of a "
                    "C thread waking every 100 ms, beside part 1")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="the Python to measure (default /usr/bin/python3)")
    ap.add_argument("--quick", action="store_true",
                    help="short windows, fewer runs, --side-by-side (about 25 s): a "
                    "smoke test, not a result")
    ap.add_argument("--seconds", type=float,
                    help="part 1: window of each process, s (default 6; --quick 3)")
    ap.add_argument("--repeat", type=int, help="part 1: runs (default 3; --quick 2)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="part 1: seconds each process runs before its window (default 1)")
    ap.add_argument("--fast-intervals", default="0.001,0.01",
                    help="part 2: timer intervals, s (default 0.001,0.01)")
    ap.add_argument("--fast-seconds", type=float,
                    help="part 2: window of each timer run, s (default 3; --quick 1.5)")
    ap.add_argument("--spin-seconds", type=float,
                    help="part 2: window of each spin run, s (default 0.5; --quick 0.3)")
    ap.add_argument("--fast-repeat", type=int,
                    help="part 2: runs of each case (default 3; --quick 2)")
    ap.add_argument("--micro-repeat", type=int,
                    help="part 2: timeit repeats of 0.2 s or more (default 7; --quick 3)")
    ap.add_argument("--loops", default="asyncio,uvloop",
                    help="loops to measure (default asyncio,uvloop)")
    ap.add_argument("--side-by-side", dest="parallel", action="store_true",
                    help="part 1: run all the processes of a run at once (faster; "
                    "--quick does). Default: each process that wakes runs alone")
    ap.add_argument("--quiet-wait", type=float, default=10,
                    help="wait up to S s for the machine to go quiet before each "
                    "part (default 10)")
    ap.add_argument("--only", choices=["overhead", "tick"], help="one part only")
    ap.add_argument("--json", help="write every result to this file")
    ap.add_argument("--reproduce", default="", help="the command line to print")
    a = ap.parse_args()
    q = a.quick
    a.seconds = a.seconds or (3 if q else 6)
    a.repeat = a.repeat or (2 if q else 3)
    a.fast_seconds = a.fast_seconds or (1.5 if q else 3)
    a.spin_seconds = a.spin_seconds or (0.3 if q else 0.5)
    a.parallel = a.parallel or q
    a.fast_repeat = a.fast_repeat or (2 if q else 3)
    a.micro_repeat = a.micro_repeat or (3 if q else 7)
    a.fast_intervals = [float(x) for x in a.fast_intervals.split(",") if x]
    a.loops = [x for x in a.loops.split(",") if x]
    a.pythonpath = os.path.abspath(a.pythonpath)
    if any(iv < 0.001 or iv > 60 for iv in a.fast_intervals):
        ap.error("--fast-intervals: from 0.001 to 60 s (loopwatch's range)")

    t_start = time.monotonic()
    m = machine()
    v = versions(a.python, a.pythonpath)
    head = [f"machine:   {machine_line(m)}",
            f"python:    {v['python_path']} {v['python']}, uvloop {v['uvloop']}, "
            f"loopwatch {v['loopwatch']} from {os.path.dirname(v['loopwatch_file'])}"]
    print("\n".join(head))
    if v["loopwatch_importable_without_pythonpath"]:
        print("WARNING: loopwatch is importable without PYTHONPATH: the 'bare' variant "
              "does not import it all the same")
    print(f"settings:  part 1 {a.repeat} runs x {a.seconds:g} s, "
          f"{'all processes of a run side by side' if a.parallel else 'each process that wakes alone'}"
          f"; part 2 {a.fast_repeat} runs x {a.spin_seconds:g} s spinning (one at a time) "
          f"and x {a.fast_seconds:g} s (side by side) at "
          + ", ".join(f"{iv * 1e3:g} ms" for iv in a.fast_intervals)
          + ("; --quick: a smoke test, not a result" if q else ""))
    if a.reproduce:
        print(f"reproduce: {a.reproduce}")
    results = {"machine": m, "versions": v, "args": vars(a).copy(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    segdir = tempfile.mkdtemp(prefix="lw-bench-python-", dir="/dev/shm")
    idle = tick = None
    try:
        if a.only in (None, "overhead"):
            print(f"\n== 1. CPU of an idle loop with and without the heartbeat "
                  f"(default interval {DEFAULT_INTERVAL * 1e3:g} ms) ==", flush=True)
            if a.quiet_wait > 0:
                print(f"  before the run: {wait_quiet(a.quiet_wait):.2f} cores busy", flush=True)
            print(f"  each: a fresh {a.python} running an idle loop (await asyncio.sleep); "
                  f"after {a.settle:g} s, its CPU time (process_time: every thread, "
                  f"loopwatch's watchdog thread included) over {a.seconds:g} s")
            idle = bench_overhead(a, segdir)
            results["overhead"] = idle
        if a.only in (None, "tick"):
            print("\n== 2. the cost of one tick ==", flush=True)
            if a.quiet_wait > 0:
                print(f"  before the run: {wait_quiet(a.quiet_wait):.2f} cores busy", flush=True)
            tick = bench_tick(a, segdir, idle)
            results["tick"] = tick
    except KeyboardInterrupt:
        print("  interrupted")
        return 130
    except RuntimeError as e:
        print(f"ERROR: {e}")
        return 2
    finally:
        for f in os.listdir(segdir):
            os.unlink(os.path.join(segdir, f))
        os.rmdir(segdir)

    # ---- summary
    print("\n== summary ==")
    print("\n".join(head))
    rows = []
    ok_all = True
    ivs = 1 / DEFAULT_INTERVAL
    for lp in a.loops:
        if idle:
            o = idle["loops"][lp]
            d = o["overhead"]["pct_median"]
            ok = d < TARGET_PCT
            ok_all &= ok
            rows.append((f"{lp}: heartbeat at 100 ms, CPU above an idle loop", f"{d:.4f}%",
                         f"< {TARGET_PCT:g}% of one core", "PASS" if ok else "MISS"))
            rows.append((f"{lp}:   the process itself / the idle loop",
                         f"{o['hb']['pct_median']:.4f}% / {o['bare']['pct_median']:.4f}%",
                         "", "info"))
            rows.append((f"{lp}:   of which any 100 ms timer (empty callback)",
                         f"{o['timer_floor']['pct_median']:.4f}%", "", "info"))
            rows.append((f"{lp}:   of which loopwatch's own (heartbeat - empty timer)",
                         f"{o['loopwatch_own']['pct_median']:.4f}%",
                         f"watchdog thread {o['watchdog_us_per_s'] / 1e4:.4f}%", "info"))
        if tick:
            t = tick["loops"][lp]
            f1 = t[f"{a.fast_intervals[0] * 1e3:g}ms"]
            proj = (ivs * f1["hb_loop_thread_us_median"] + f1["hb_watchdog_us_per_s"]) / 1e4
            t["projected_pct"] = proj
            rows.append((f"{lp}: projected from the {a.fast_intervals[0] * 1e3:g} ms run: "
                         f"10/s x {f1['hb_loop_thread_us_median']:.1f} us + watchdog",
                         f"{proj:.4f}%", "(cross-check, see README)", "info"))
            rows.append((f"{lp}:   one tick without the wake-up: empty / heartbeat",
                         f"{t['spin']['empty_us_median']:.2f} / {t['spin']['hb_us_median']:.2f} us",
                         "", "info"))
    if tick:
        rows.append(("native beat() called from Python",
                     f"{med(tick['micro']['beat']['ns']):.0f} ns", "", "info"))
    if idle and "wake_floor" in idle:
        wf = idle["wake_floor"]
        rows.append(("a C thread waking every 100 ms (wake_floor)",
                     f"{wf['pct_median']:.4f}%", f"{wf['us_per_wake']:.1f} us per wake-up",
                     "info"))
    w = max(len(r[0]) for r in rows)
    wm = max(len(r[1]) for r in rows)
    wt = max(len(r[2]) for r in rows)
    for r in rows:
        print(f"  {r[0]:<{w}}  {r[1]:>{wm}}  {r[2]:<{wt}}  {r[3]}")
    problems = (idle or {}).get("problems", []) + (tick or {}).get("problems", [])
    for p_ in problems:
        print(f"  PROBLEM: {p_}")
    if a.status_bin and not problems:
        print("  beat counts: every heartbeat run's count read from the segment matches "
              "`loopwatch status --json`")
    if a.reproduce:
        print(f"reproduce: {a.reproduce}")
    print(f"took {time.monotonic() - t_start:.0f} s")
    results["rows"] = rows
    save_results(results, a.json)
    if problems:
        print("RESULT: ERROR (beat counts disagree)")
        return 2
    if not idle:
        print("RESULT: not judged (part 1 was not run)")
        return 0
    print(f"RESULT: {'PASS' if ok_all else 'MISS'}: Python heartbeat at the default "
          f"interval under {TARGET_PCT:g}% of one core ({', '.join(a.loops)})")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())

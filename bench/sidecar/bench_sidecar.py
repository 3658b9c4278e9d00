#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
r"""Sidecar benchmarks: runs real processes on 127.0.0.1 and prints what it
measured beside the targets of docs/design.md, with PASS/FAIL.

Started by scripts/bench-sidecar, which builds the binaries and passes their
paths; see bench/sidecar/README.md. Every load is bounded in time and goes to
127.0.0.1 only. Every process started here is stopped here, by its pid.

  bench_sidecar.py --sidecar BIN --loops-app BIN --http-probe BIN \
      [--wrk BIN] [--json FILE] [--quiet-wait S] {all,probe,detect,idle,metrics,memory}
"""
import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from run_info import (HZ, machine, machine_line, save_results,  # noqa: E402
                      system_busy, wait_quiet)
PAGE = os.sysconf("SC_PAGE_SIZE")

# Targets of docs/design.md, "Performance targets".
TARGET_PROBE_P99_MS = 2.0          # at 1,000 requests/s, app fully stalled
TARGET_PROBE_RATE = 1000
TARGET_RPS = 20000                 # /livez per second on 2 cores
TARGET_DETECT_EXTRA_MS = 10.0      # beyond stall_after + poll_interval
TARGET_RSS_MB = 10.0               # with 64 loops
TARGET_IDLE_CPU_PCT = 0.2          # of one core
TARGET_METRICS_MS = 5.0            # /metrics with 256 loops
TARGET_RSS_SCRAPED_MB = {64: 10.0, 256: 12.0}  # after 1,000 scrapes


# ---------------------------------------------------------------------------
# machine and processes

def proc_jiffies(pid):
    """utime+stime of a process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def proc_sched_ns(pid):
    """On-CPU time of every thread of a process, in ns (schedstat)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def thread_sched_ns(pid):
    """On-CPU ns per thread name (threads of one name summed)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[name] = out.get(name, 0) + ns
    return out


def proc_ctxt(pid):
    """Voluntary and involuntary context switches over every thread."""
    vol = invol = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except OSError:
            pass
    return vol, invol


def threads_of(pid):
    names = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    n = f.read().strip()
                names[n] = names.get(n, 0) + 1
            except OSError:
                pass
    except OSError:
        pass
    return names


class LoadMeter:
    """CPU used on the machine during a measurement, split into ours (the
    processes of this benchmark, this script included) and the rest (other
    work on the machine), in cores."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = system_busy()
        self.own0 = self._own()

    def _own(self):
        ticks = sum(proc_jiffies(p) for p in self.pids)
        ru_c = resource.getrusage(resource.RUSAGE_CHILDREN)
        ru_s = resource.getrusage(resource.RUSAGE_SELF)
        # Children that exited (clients) count through RUSAGE_CHILDREN; the
        # long-lived ones are read from /proc while they run.
        secs = ru_c.ru_utime + ru_c.ru_stime + ru_s.ru_utime + ru_s.ru_stime
        return ticks / HZ + secs

    def stop(self):
        dt = time.monotonic() - self.t0
        busy, steal = system_busy()
        total = (busy - self.busy0) / HZ
        own = self._own() - self.own0
        return {
            "seconds": round(dt, 2),
            "all_cores_busy": round(total / dt, 2),
            "ours_cores": round(own / dt, 2),
            "others_cores": round(max(0.0, total - own) / dt, 2),
            "steal_cores": round((steal - self.steal0) / HZ / dt, 3),
        }


def load_note(load):
    return (f"machine during the run: {load['all_cores_busy']:.2f} of "
            f"{os.cpu_count()} cores busy, of which this benchmark "
            f"{load['ours_cores']:.2f} and other processes "
            f"{load['others_cores']:.2f}; steal {load['steal_cores']:.3f}")


class Procs:
    """Processes started by this run, stopped by pid on exit."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=3.0):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in reversed(list(self.procs)):
            self.stop(p)


class LoopsApp:
    """loops_app with its JSON events read on a thread."""

    def __init__(self, procs, binary, segment, args, slots=None, env_extra=None):
        env = dict(os.environ)
        env["LOOPWATCH_SEGMENT"] = segment
        env.update(env_extra or {})
        if slots:
            env["LOOPWATCH_SLOTS"] = str(slots)
        self.argv = [binary] + [str(a) for a in args]
        self.cmd = ("".join(f"{k}={shlex.quote(v)} " for k, v in (env_extra or {}).items()) +
                    "LOOPWATCH_SEGMENT=" + shlex.quote(segment) + " " +
                    (f"LOOPWATCH_SLOTS={slots} " if slots else "") +
                    " ".join(shlex.quote(a) for a in self.argv))
        self.events = []
        self.cv = threading.Condition()
        self.proc = procs.start(self.argv, env=env, stdout=subprocess.PIPE,
                                text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cv:
                self.events.append(ev)
                self.cv.notify_all()

    def wait_event(self, kind, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for ev in self.events:
                    if ev.get("event") == kind:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"loops_app: no {kind!r} event "
                                       f"(exit code {self.proc.poll()})")
                self.cv.wait(min(left, 0.2))

    def of_kind(self, kind):
        with self.cv:
            return [e for e in self.events if e.get("event") == kind]


class Sidecar:
    def __init__(self, procs, binary, segment, workdir, flags):
        self.log_path = os.path.join(workdir, "sidecar.log")
        self.argv = [binary, "run", "--segment", segment,
                     "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                     "--log-format", "json"] + flags
        self.cmd = " ".join(shlex.quote(a) for a in self.argv)
        self.log = open(self.log_path, "w")
        self.proc = procs.start(self.argv, stdout=self.log,
                                stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.port = self.admin_port = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sidecar exited: " + self._tail())
            for rec in self.records():
                if rec.get("msg") == "loopwatch started":
                    self.port = rec["port"]
                    self.admin_port = rec.get("admin_port")
            if self.port:
                break
            time.sleep(0.05)
        if not self.port:
            raise RuntimeError("sidecar did not start: " + self._tail())

    def _tail(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def records(self):
        out = []
        try:
            with open(self.log_path) as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        except OSError:
            pass
        return out

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path, timeout=2.0):
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def wait_for(self, path, pred, timeout, what):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.get(path)
            if pred(*last):
                return last
            time.sleep(0.05)
        raise RuntimeError(f"sidecar: {what} not reached in {timeout}s; "
                           f"last {path}: {last}")


def run_json(argv, timeout):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def pct(values, p):
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def verdict(ok):
    return "PASS" if ok else "FAIL"


def row(name, measured, target, ok):
    return {"name": name, "measured": measured, "target": target,
            "result": verdict(ok)}


def print_rows(rows):
    w = max(len(r["name"]) for r in rows)
    wm = max(len(r["measured"]) for r in rows)
    wt = max(len(r["target"]) for r in rows)
    for r in rows:
        print(f"  {r['name']:<{w}}  {r['measured']:>{wm}}  "
              f"target {r['target']:<{wt}}  {r['result']}")


# ---------------------------------------------------------------------------
# a. probe latency and throughput while the app is fully stalled

def bench_probe(a, procs, workdir):
    seg = os.path.join(workdir, "segment")
    app = LoopsApp(procs, a.loops_app, seg,
                   [1, 100, "--stall-every", "0.5", "--stall-forever"])
    app.wait_event("ready", 10)
    sc = Sidecar(procs, a.sidecar, seg, workdir,
                 ["--stall-after", "2s", "--poll-interval", "100ms"])
    app.wait_event("stall", 10)
    status, body = sc.wait_for("/livez", lambda s, b: s == 503, 10,
                               "/livez 503 (app stalled)")
    print(f"  app stalled; /livez -> {status} {body.strip()}")
    result = {"livez_body": body.strip(), "sidecar_cmd": sc.cmd,
              "app_cmd": app.cmd}
    rows = []

    # 1,000 requests/s, open loop, over 8 kept-alive connections.
    paced = {}
    for label, extra in (("keepalive", []), ("fresh", ["--fresh"])):
        argv = [a.http_probe, "paced", "--port", str(sc.port), "--path",
                "/livez", "--rate", str(TARGET_PROBE_RATE), "--duration",
                str(a.paced_seconds), "--connections", "8"] + extra
        meter = LoadMeter([sc.pid, app.proc.pid])
        r = run_json(argv, a.paced_seconds + 30)
        r["load"] = meter.stop()
        r["cmd"] = " ".join(shlex.quote(x) for x in argv)
        paced[label] = r
        lat, svc = r["latency"], r["service"]
        print(f"  paced {label:9s} {r['achieved_rate']:.0f} req/s "
              f"({r['requests']} requests, status {r['status']}, errors "
              f"{r['errors']}): service p50 {svc['p50_us'] / 1000:.3f} ms, "
              f"p99 {svc['p99_us'] / 1000:.3f} ms, max "
              f"{svc['max_us'] / 1000:.3f} ms; from the due time p50 "
              f"{lat['p50_us'] / 1000:.3f} ms, p99 {lat['p99_us'] / 1000:.3f}"
              f" ms, max {lat['max_us'] / 1000:.3f} ms")
        print(f"    {load_note(r['load'])}")
    result["paced"] = paced
    ka = paced["keepalive"]
    p99 = ka["service"]["p99_us"] / 1000
    all503 = set(ka["status"]) == {"503"} and ka["errors"] == 0
    rows.append(row("probe p99, stalled app, 1000 req/s keep-alive",
                    f"{p99:.3f} ms", f"< {TARGET_PROBE_P99_MS:g} ms",
                    p99 < TARGET_PROBE_P99_MS and all503))

    # A control: the same paced load against a minimal server (one thread,
    # epoll, a canned answer), to tell the machine's tail from the sidecar's.
    if a.baseline_server:
        bp = procs.start([a.baseline_server], stdout=subprocess.PIPE, text=True)
        bport = int(bp.stdout.readline())
        argv = [a.http_probe, "paced", "--port", str(bport), "--path",
                "/livez", "--rate", str(TARGET_PROBE_RATE), "--duration",
                str(a.paced_seconds), "--connections", "8"]
        meter = LoadMeter([sc.pid, app.proc.pid, bp.pid])
        r = run_json(argv, a.paced_seconds + 30)
        r["load"] = meter.stop()
        r["cmd"] = " ".join(shlex.quote(x) for x in argv)
        procs.stop(bp)
        result["paced_baseline"] = r
        svc = r["service"]
        print(f"  paced control (minimal epoll server, same load): service "
              f"p50 {svc['p50_us'] / 1000:.3f} ms, p99 "
              f"{svc['p99_us'] / 1000:.3f} ms, max {svc['max_us'] / 1000:.3f}"
              f" ms")
        print(f"    {load_note(r['load'])}")

    # Maximum throughput with wrk, as asked: -t2 -c16 -d10s on both cores,
    # shared by wrk and the sidecar.
    if a.wrk:
        runs = {}
        for label, wrk_cpus, sc_cpus, threads in (
                ("shared", None, None, 2), ("pinned", "1", "0", 1)):
            if sc_cpus is not None and (os.cpu_count() or 1) < 2:
                continue
            if sc_cpus is not None:
                subprocess.run(["taskset", "-a", "-p", "-c", sc_cpus,
                                str(sc.pid)], capture_output=True, check=True)
            argv = ([a.wrk, "-t", str(threads), "-c16",
                     f"-d{a.wrk_seconds}s", "--latency", sc.url("/livez")])
            if wrk_cpus is not None:
                argv = ["taskset", "-c", wrk_cpus] + argv
            j0 = proc_jiffies(sc.pid)
            s0 = proc_sched_ns(sc.pid)
            c0 = proc_ctxt(sc.pid)
            meter = LoadMeter([sc.pid, app.proc.pid])
            p = subprocess.run(argv, capture_output=True, text=True,
                               timeout=a.wrk_seconds + 30)
            load = meter.stop()
            sc_cores = (proc_sched_ns(sc.pid) - s0) / 1e9 / load["seconds"]
            c1 = proc_ctxt(sc.pid)
            if sc_cpus is not None:
                subprocess.run(["taskset", "-a", "-p", "-c",
                                f"0-{os.cpu_count() - 1}", str(sc.pid)],
                               capture_output=True)
            w = parse_wrk(p.stdout)
            w["cmd"] = " ".join(shlex.quote(x) for x in argv)
            w["load"] = load
            w["sidecar_cores"] = round(sc_cores, 2)
            w["sidecar_jiffies_cores"] = round(
                (proc_jiffies(sc.pid) - j0) / HZ / load["seconds"], 2)
            reqs = max(1, w.get("requests", 1))
            w["sidecar_ctxt_per_request"] = round(
                ((c1[0] - c0[0]) + (c1[1] - c0[1])) / reqs, 2)
            w["rps_per_sidecar_core"] = round(
                w.get("rps", 0) / sc_cores) if sc_cores > 0 else None
            runs[label] = w
            where = ("wrk and sidecar share both cores" if sc_cpus is None
                     else "sidecar pinned to CPU 0, wrk -t1 to CPU 1")
            print(f"  wrk ({where}): {w.get('rps', 0):,.0f} req/s, latency "
                  f"p50 {w.get('p50_ms', 0):.3f} ms p99 "
                  f"{w.get('p99_ms', 0):.3f} ms, non-2xx "
                  f"{w.get('non2xx', 0)} of {w.get('requests', 0)}, socket "
                  f"errors {w.get('socket_errors', 'none')}; sidecar used "
                  f"{sc_cores:.2f} cores ({w['rps_per_sidecar_core'] or 0:,} "
                  f"req/s per core), {w['sidecar_ctxt_per_request']} context "
                  f"switches per request")
            print(f"    {load_note(load)}")
        result["wrk"] = runs
        sh = runs.get("shared", {})
        rps = sh.get("rps", 0)
        ok = rps >= TARGET_RPS and sh.get("requests", 0) == sh.get("non2xx", -1)
        rows.append(row("/livez throughput, wrk -t2 -c16, 2 shared cores",
                        f"{rps:,.0f} req/s", f">= {TARGET_RPS:,} req/s", ok))
    else:
        rows.append({"name": "/livez throughput (wrk)", "measured":
                     "not run: wrk missing", "target": f">= {TARGET_RPS:,} req/s",
                     "result": "SKIP"})
    result["rows"] = rows
    return result


def parse_wrk(out):
    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s)$", s)
        if not m:
            return None
        v = float(m.group(1))
        return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]

    r = {"raw": out}
    for pctl in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pctl}%\s+(\S+)", out, re.M)
        if m:
            r[f"p{pctl}_ms"] = dur(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    if m:
        r["socket_errors"] = m.group(1).strip()
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if m:
        r["avg_ms"], r["max_ms"] = dur(m.group(1)), dur(m.group(3))
    return r


# ---------------------------------------------------------------------------
# b. detection latency over N stalls

def bench_detect(a, procs, workdir):
    seg = os.path.join(workdir, "segment")
    stall_after_ms, poll_ms = 1000, 100
    every, stall_ms = a.stall_every, a.stall_ms
    n = a.stalls
    app = LoopsApp(procs, a.loops_app, seg,
                   [1, 100, "--stall-every", every, "--stall-ms", stall_ms,
                    "--stalls", n])
    app.wait_event("ready", 10)
    sc = Sidecar(procs, a.sidecar, seg, workdir,
                 ["--stall-after", f"{stall_after_ms}ms", "--poll-interval",
                  f"{poll_ms}ms"])
    watch_argv = [a.http_probe, "watch", "--port", str(sc.port), "--path",
                  "/livez", "--every-us", str(a.watch_every_us)]
    watch = procs.start(watch_argv, stdout=subprocess.PIPE, text=True,
                        bufsize=1)
    changes = []

    def read_watch():
        for line in watch.stdout:
            try:
                changes.append(json.loads(line))
            except ValueError:
                pass
    t = threading.Thread(target=read_watch, daemon=True)
    t.start()
    meter = LoadMeter([sc.pid, app.proc.pid, watch.pid])
    total_s = float(every) * n + 5
    print(f"  {n} stalls of {stall_ms} ms every {every} s (about "
          f"{total_s:.0f} s); stall_after {stall_after_ms} ms, poll "
          f"{poll_ms} ms; /livez polled every {a.watch_every_us} us",
          flush=True)
    deadline = time.monotonic() + total_s + 10
    while time.monotonic() < deadline:
        if len(app.of_kind("resume")) >= n:
            break
        time.sleep(0.2)
    time.sleep(0.3)  # the last recovery
    load = meter.stop()
    procs.stop(watch)
    t.join(2)

    stalls = app.of_kind("stall")
    resumes = {e["n"]: e["end_ns"] for e in app.of_kind("resume")}
    lat, lower, recov, missed = [], [], [], 0
    per = []
    for s in stalls:
        start = s["start_ns"]
        due = start + stall_after_ms * 1_000_000
        end = resumes.get(s["n"], start + int(stall_ms) * 1_000_000)
        hit = next((c for c in changes if c["status"] == 503
                    and start < c["recv_ns"] <= end + 200_000_000), None)
        if not hit:
            missed += 1
            per.append({"n": s["n"], "detected": False})
            continue
        d = (hit["recv_ns"] - due) / 1e6
        lat.append(d)
        lower.append((hit["sent_ns"] - due) / 1e6)
        back = next((c for c in changes if c["status"] == 200
                     and c["recv_ns"] > hit["recv_ns"]), None)
        if back:
            recov.append((back["recv_ns"] - end) / 1e6)
        per.append({"n": s["n"], "detected": True, "latency_ms": round(d, 3)})
    logged = sum(1 for r in sc.records() if r.get("msg") == "stall started")
    limit = poll_ms + TARGET_DETECT_EXTRA_MS
    res = {
        "stalls": len(stalls), "detected": len(lat), "missed": missed,
        "stall_after_ms": stall_after_ms, "poll_interval_ms": poll_ms,
        "stall_ms": int(stall_ms), "stall_every_s": float(every),
        "latency_ms": _summary(lat), "latency_lower_bound_ms": _summary(lower),
        "recovery_ms": _summary(recov), "logged_stall_started": logged,
        "early": sum(1 for x in lat if x < 0), "load": load,
        "sidecar_cmd": sc.cmd, "app_cmd": app.cmd,
        "watch_cmd": " ".join(shlex.quote(x) for x in watch_argv),
        "per_stall": per,
    }
    L = res["latency_ms"]
    print(f"  detected {len(lat)} of {len(stalls)} stalls ({logged} logged as "
          f"'stall started'); detection latency beyond stall_after: min "
          f"{L['min']:.1f} ms, p50 {L['p50']:.1f} ms, p99 {L['p99']:.1f} ms, "
          f"max {L['max']:.1f} ms (mean {L['mean']:.1f})")
    if recov:
        R = res["recovery_ms"]
        print(f"  recovery (loop beats again -> /livez 200): p50 "
              f"{R['p50']:.1f} ms, max {R['max']:.1f} ms")
    print(f"    {load_note(load)}")
    ok = missed == 0 and len(stalls) == n and lat and max(lat) <= limit
    res["rows"] = [row(f"detection latency beyond stall_after, max of {n}",
                       f"{L['max']:.1f} ms (p99 {L['p99']:.1f})",
                       f"<= poll {poll_ms} + {TARGET_DETECT_EXTRA_MS:g} ms",
                       bool(ok))]
    return res


def _summary(v):
    if not v:
        return {"n": 0, "min": float("nan"), "p50": float("nan"),
                "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {"n": len(v), "min": round(min(v), 3), "p50": round(pct(v, 50), 3),
            "p99": round(pct(v, 99), 3), "max": round(max(v), 3),
            "mean": round(sum(v) / len(v), 3)}


# ---------------------------------------------------------------------------
# c. RSS and idle CPU with 64 loops

def smaps_rollup(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                m = re.match(r"(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    except OSError:
        pass
    return out


def status_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            m = re.match(r"(Vm\w+|Rss\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def smaps_by_object(pid):
    """Rss and private bytes per mapped object (file, [heap], anon...)."""
    objs = {}
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    parts = line.split(None, 5)
                    name = parts[5].strip() if len(parts) > 5 else "[anon]"
                    if not name:
                        name = "[anon]"
                    if name.startswith("/"):
                        name = os.path.basename(name)
                    cur = objs.setdefault(name, {"rss": 0, "private": 0,
                                                 "pss": 0})
                    continue
                m = re.match(r"(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+)",
                             line)
                if m and cur is not None:
                    k, v = m.group(1), int(m.group(2))
                    if k == "Rss":
                        cur["rss"] += v
                    elif k == "Pss":
                        cur["pss"] += v
                    else:
                        cur["private"] += v
    except OSError:
        pass
    return objs


def idle_cpu(a, sc, app):
    """The sidecar's CPU over --idle-seconds with no HTTP traffic."""
    j0, s0, c0 = proc_jiffies(sc.pid), proc_sched_ns(sc.pid), proc_ctxt(sc.pid)
    th0 = thread_sched_ns(sc.pid)
    meter = LoadMeter([sc.pid, app.proc.pid])
    t0 = time.monotonic()
    time.sleep(a.idle_seconds)
    dt = time.monotonic() - t0
    load = meter.stop()
    j1, s1, c1 = proc_jiffies(sc.pid), proc_sched_ns(sc.pid), proc_ctxt(sc.pid)
    th1 = thread_sched_ns(sc.pid)
    per_thread = {k: round((v - th0.get(k, 0)) / 1e6, 2)
                  for k, v in th1.items()}
    polls = dt / 0.1
    cpu_pct = (s1 - s0) / 1e9 / dt * 100
    cpu_pct_ticks = (j1 - j0) / HZ / dt * 100
    wake = ((c1[0] - c0[0]) + (c1[1] - c0[1])) / dt
    print(f"  idle CPU over {dt:.1f} s: {cpu_pct:.3f}% of one core "
          f"(schedstat; utime+stime ticks say {cpu_pct_ticks:.3f}%, "
          f"{j1 - j0} ticks of 1/{HZ} s); {wake:.1f} context switches/s")
    print("  CPU by thread (ms over the window): " + ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(per_thread.items(),
                                          key=lambda kv: -kv[1])))
    poll_us = per_thread.get("lw-poll", 0) * 1000 / polls
    print(f"  lw-poll: {poll_us:.0f} us of CPU per poll (64 slots, "
          f"{polls:.0f} polls)")
    print(f"    {load_note(load)}")
    return {"idle_seconds": round(dt, 2), "cpu_pct": round(cpu_pct, 4),
            "cpu_pct_ticks": round(cpu_pct_ticks, 4),
            "context_switches_per_s": round(wake, 1), "load": load,
            "cpu_ms_by_thread": per_thread, "poll_cpu_us": round(poll_us, 1)}


def idle_cpu_with_history(a, procs, workdir):
    """Idle CPU again, once the sidecar keeps a full stall history (32
    stalls, each report with 3 KiB of stack, as a Python app's): a poll must
    not cost more because of what happened before it."""
    print("  the same, after 32 stalls with 3 KiB reports (a full /debug/stalls):")
    seg = os.path.join(workdir, "segment-history")
    app = LoopsApp(procs, a.loops_app, seg,
                   [64, 100, "--stall-every", "0.6", "--stall-ms", "400",
                    "--stalls", 32, "--report-bytes", 3072],
                   env_extra={"LOOPWATCH_REPORT_AFTER": "100ms"})
    app.wait_event("ready", 10)
    sc = Sidecar(procs, a.sidecar, seg, workdir,
                 ["--stall-after", "250ms", "--poll-interval", "100ms"])
    deadline = time.monotonic() + 60
    while len(app.of_kind("resume")) < 32 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    url = f"http://127.0.0.1:{sc.admin_port}/debug/stalls"
    with urllib.request.urlopen(url, timeout=5) as r:
        stalls = json.loads(r.read())["stalls"]
    text = sum(len(s.get("text") or "") for s in stalls)
    print(f"  /debug/stalls: {len(stalls)} stalls, {text} bytes of report text")
    if len(stalls) < 32 or text < 32 * 3000:
        raise RuntimeError(f"expected 32 stalls with 3 KiB reports, got {len(stalls)} "
                           f"with {text} bytes")
    res = idle_cpu(a, sc, app)
    res["history_stalls"] = len(stalls)
    res["history_text_bytes"] = text
    res["sidecar_cmd"], res["app_cmd"] = sc.cmd, app.cmd
    procs.stop(sc.proc)
    procs.stop(app.proc)
    return res


def bench_idle(a, procs, workdir):
    seg = os.path.join(workdir, "segment")
    app = LoopsApp(procs, a.loops_app, seg, [64, 100])
    app.wait_event("ready", 10)
    sc = Sidecar(procs, a.sidecar, seg, workdir,
                 ["--stall-after", "2s", "--poll-interval", "100ms"])
    status, body = sc.wait_for(
        "/livez", lambda s, b: s == 200 and "64 loops, 64 live" in b, 10,
        "64 live loops")
    print(f"  /livez -> {status} {body.strip()}; no HTTP traffic from now on")
    time.sleep(a.settle_seconds)
    st = status_kb(sc.pid)
    roll = smaps_rollup(sc.pid)
    objs = smaps_by_object(sc.pid)
    top = sorted(objs.items(), key=lambda kv: -kv[1]["rss"])[:12]
    priv = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)
    print(f"  after {a.settle_seconds} s: VmRSS {st['VmRSS'] / 1024:.2f} MiB "
          f"(RssAnon {st.get('RssAnon', 0) / 1024:.2f}, RssFile "
          f"{st.get('RssFile', 0) / 1024:.2f}, RssShmem "
          f"{st.get('RssShmem', 0) / 1024:.2f}); Pss "
          f"{roll.get('Pss', 0) / 1024:.2f} MiB; private (clean+dirty) "
          f"{priv / 1024:.2f} MiB; VmHWM {st.get('VmHWM', 0) / 1024:.2f} MiB")
    print("  largest mappings by Rss (KiB): " + ", ".join(
        f"{k} {v['rss']} (private {v['private']})" for k, v in top))
    # cpp-httplib as Debian builds it (TLS, zlib, brotli) and what it pulls in.
    httplib_libs = ("libcpp-httplib", "libcrypto", "libssl", "libbrotli", "libz.")
    httplib_kb = sum(v["rss"] for k, v in objs.items()
                     if k.startswith(httplib_libs))
    print(f"  of VmRSS, {httplib_kb / 1024:.2f} MiB are libcpp-httplib and the "
          f"TLS/compression libraries it links (libcrypto, libssl, zlib, "
          f"brotli); the sidecar serves plain HTTP and uses none of them")
    threads = threads_of(sc.pid)
    print("  sidecar threads: " + ", ".join(
        f"{k} x{v}" if v > 1 else k for k, v in sorted(threads.items())))

    cpu = idle_cpu(a, sc, app)
    procs.stop(sc.proc)
    procs.stop(app.proc)
    hist = idle_cpu_with_history(a, procs, workdir)
    rss_mb = st["VmRSS"] / 1024
    priv_mb = priv / 1024
    res = {
        "status_kb": st, "smaps_rollup_kb": roll,
        "top_mappings_kb": dict(top), "threads": threads,
        **cpu, "with_history": hist, "httplib_deps_rss_kb": httplib_kb,
        "sidecar_cmd": sc.cmd, "app_cmd": app.cmd,
    }
    res["rows"] = [
        row("sidecar VmRSS, 64 loops", f"{rss_mb:.2f} MiB",
            f"< {TARGET_RSS_MB:g} MB", rss_mb < TARGET_RSS_MB),
        {"name": "sidecar private memory (smaps), 64 loops",
         "measured": f"{priv_mb:.2f} MiB", "target": "(for comparison)",
         "result": "info"},
        row(f"sidecar idle CPU, 64 loops, {cpu['idle_seconds']:.0f} s",
            f"{cpu['cpu_pct']:.3f}%", f"< {TARGET_IDLE_CPU_PCT:g}% of a core",
            cpu["cpu_pct"] < TARGET_IDLE_CPU_PCT),
        row("sidecar idle CPU, 64 loops, 32 stalls of 3 KiB kept",
            f"{hist['cpu_pct']:.3f}%", f"< {TARGET_IDLE_CPU_PCT:g}% of a core",
            hist["cpu_pct"] < TARGET_IDLE_CPU_PCT),
    ]
    return res


# ---------------------------------------------------------------------------
# d. /metrics with 256 loops

def bench_metrics(a, procs, workdir):
    seg = os.path.join(workdir, "segment")
    app = LoopsApp(procs, a.loops_app, seg, [256, 100], slots=256)
    app.wait_event("ready", 20)
    sc = Sidecar(procs, a.sidecar, seg, workdir,
                 ["--stall-after", "2s", "--poll-interval", "100ms",
                  "--create-slots", "256"])
    status, body = sc.wait_for(
        "/livez", lambda s, b: s == 200 and "256 loops, 256 live" in b, 20,
        "256 live loops")
    print(f"  /livez -> {status} {body.strip()}")
    _, text = sc.get("/metrics")
    series = [l for l in text.splitlines() if l and not l.startswith("#")]
    print(f"  /metrics: {len(text):,} bytes, {len(series):,} series")
    res = {"sidecar_cmd": sc.cmd, "app_cmd": app.cmd,
           "metrics_bytes": len(text), "metrics_series": len(series)}
    meter = LoadMeter([sc.pid, app.proc.pid])
    for path in ("/metrics", "/healthz"):
        argv = [a.http_probe, "seq", "--port", str(sc.port), "--path", path,
                "--requests", str(a.metrics_requests), "--warmup", "20"]
        r = run_json(argv, 120)
        r["cmd"] = " ".join(shlex.quote(x) for x in argv)
        res[path] = r
        lat, fb = r["service"], r["first_byte"]
        print(f"  {path:9s} x{r['measured']} sequential, keep-alive: p50 "
              f"{lat['p50_us'] / 1000:.3f} ms, p90 {lat['p90_us'] / 1000:.3f}"
              f" ms, p99 {lat['p99_us'] / 1000:.3f} ms, max "
              f"{lat['max_us'] / 1000:.3f} ms ({r['body_bytes_mean']:.0f} "
              f"bytes, status {r['status']}); first byte p50 "
              f"{fb['p50_us'] / 1000:.3f} ms, p99 {fb['p99_us'] / 1000:.3f} ms")
    res["load"] = meter.stop()
    print(f"    {load_note(res['load'])}")
    m, h = res["/metrics"]["service"], res["/healthz"]["service"]
    mf, hf = res["/metrics"]["first_byte"], res["/healthz"]["first_byte"]
    render = (mf["p50_us"] - hf["p50_us"]) / 1000
    transfer = (m["p50_us"] - mf["p50_us"]) / 1000
    res["render_estimate_ms_p50"] = round(render, 3)
    res["transfer_ms_p50"] = round(transfer, 3)
    print(f"  split at p50: render (first byte of /metrics minus first byte "
          f"of /healthz; the body is rendered before the first byte is "
          f"sent) {render:.3f} ms, transfer of the body {transfer:.3f} ms")
    p99 = m["p99_us"] / 1000
    ok = res["/metrics"]["errors"] == 0 and set(res["/metrics"]["status"]) == {"200"}
    res["rows"] = [row("/metrics with 256 loops, client p99 (incl. transfer)",
                       f"{p99:.3f} ms", f"< {TARGET_METRICS_MS:g} ms",
                       ok and p99 < TARGET_METRICS_MS)]
    return res


# ---------------------------------------------------------------------------
# e. memory after scrapes, 64 and 256 loops

def unused_libs_kb(pid):
    """Resident KiB of the TLS and compression libraries the sidecar maps
    but never calls (see sidecar/memory.h)."""
    return sum(v["rss"] for k, v in smaps_by_object(pid).items()
               if k.startswith(("libssl", "libcrypto", "libbrotli")))


def bench_memory(a, procs, workdir):
    res = {"rows": []}
    for n in (64, 256):
        seg = os.path.join(workdir, f"segment-{n}")
        app = LoopsApp(procs, a.loops_app, seg, [n, 100], slots=n)
        app.wait_event("ready", 20)
        sc = Sidecar(procs, a.sidecar, seg, workdir,
                     ["--stall-after", "2s", "--poll-interval", "100ms"])
        sc.wait_for("/livez", lambda s, b: s == 200 and f"{n} loops, {n} live" in b,
                    20, f"{n} live loops")
        started = [r for r in sc.records() if r.get("msg") == "loopwatch started"][-1]
        time.sleep(1)
        steps = [("idle", status_kb(sc.pid))]
        seq = [a.http_probe, "seq", "--port", str(sc.port), "--path", "/metrics",
               "--requests", str(a.scrapes), "--warmup", "0"]
        r = run_json(seq, 300)
        if r["errors"]:
            raise RuntimeError(f"{r['errors']} failed scrapes")
        time.sleep(1)
        steps.append((f"after {a.scrapes:,} scrapes", status_kb(sc.pid)))
        # Scrapes on fresh connections, 8 at a time: every HTTP worker
        # thread renders some.
        par = [a.http_probe, "paced", "--port", str(sc.port), "--path", "/metrics",
               "--rate", "100", "--duration", "3", "--connections", "8", "--fresh"]
        run_json(par, 60)
        time.sleep(1)
        steps.append(("+300 on 8 fresh connections", status_kb(sc.pid)))
        libs = unused_libs_kb(sc.pid)
        print(f"  {n} loops (allocator {started.get('allocator', '?')}; "
              f"{started.get('unused_library_bytes_released', 0) / 1048576:.1f} MiB "
              f"of unused libraries released, {libs / 1024:.2f} MiB of them "
              f"resident): " + "; ".join(
                  f"{name} VmRSS {st['VmRSS'] / 1024:.2f} MiB (anon "
                  f"{st.get('RssAnon', 0) / 1024:.2f})" for name, st in steps))
        res[f"loops_{n}"] = {"steps": {k: v for k, v in steps},
                             "unused_libraries_rss_kb": libs,
                             "started": started, "sidecar_cmd": sc.cmd,
                             "app_cmd": app.cmd}
        worst = max(st["VmRSS"] for _, st in steps[1:]) / 1024
        target = TARGET_RSS_SCRAPED_MB[n]
        res["rows"].append(row(f"sidecar VmRSS, {n} loops, after {a.scrapes:,} scrapes",
                               f"{worst:.2f} MiB", f"< {target:g} MB", worst < target))
        procs.stop(sc.proc)
        procs.stop(app.proc)
    return res


# ---------------------------------------------------------------------------

BENCHES = {
    "probe": ("a. /livez latency and throughput while the app is stalled",
              bench_probe),
    "detect": ("b. detection latency", bench_detect),
    "idle": ("c. RSS and idle CPU with 64 loops", bench_idle),
    "metrics": ("d. /metrics render time with 256 loops", bench_metrics),
    "memory": ("e. RSS after scrapes with 64 and 256 loops", bench_memory),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("bench", nargs="*", default=["all"],
                    help="all (default), probe, detect, idle, metrics, memory")
    ap.add_argument("--sidecar", required=True)
    ap.add_argument("--loops-app", required=True)
    ap.add_argument("--http-probe", required=True)
    ap.add_argument("--baseline-server")
    ap.add_argument("--wrk", default=shutil.which("wrk"))
    ap.add_argument("--json", help="write every result to this file")
    ap.add_argument("--reproduce", default="",
                    help="the command line to print for reproduction")
    ap.add_argument("--quiet-wait", type=float, default=20,
                    help="wait up to S seconds for other processes to go "
                    "quiet before each benchmark (default 20)")
    ap.add_argument("--paced-seconds", type=float, default=10,
                    help="length of each 1,000 req/s run (default 10)")
    ap.add_argument("--wrk-seconds", type=int, default=10,
                    help="length of each wrk run (default 10)")
    ap.add_argument("--stalls", type=int, default=50,
                    help="stalls in the detection run (default 50)")
    ap.add_argument("--stall-every", default="1.8",
                    help="seconds between stall starts (default 1.8)")
    ap.add_argument("--stall-ms", default="1300",
                    help="length of each stall; more than stall_after 1s + "
                    "poll 100ms (default 1300)")
    ap.add_argument("--watch-every-us", type=int, default=1000,
                    help="/livez polling period of the watcher (default 1000)")
    ap.add_argument("--settle-seconds", type=float, default=10,
                    help="wait before reading RSS (default 10)")
    ap.add_argument("--idle-seconds", type=float, default=30,
                    help="window of the idle CPU measurement (default 30)")
    ap.add_argument("--metrics-requests", type=int, default=200,
                    help="sequential GET /metrics, after 20 warm-up (default "
                    "200)")
    ap.add_argument("--scrapes", type=int, default=1000,
                    help="sequential GET /metrics before the memory reading "
                    "(default 1000)")
    a = ap.parse_args()
    names = list(BENCHES) if a.bench in ([], ["all"]) else a.bench
    for n in names:
        if n not in BENCHES:
            ap.error(f"unknown benchmark {n!r}; choose from all, "
                     + ", ".join(BENCHES))

    def on_term(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    m = machine()
    print(f"machine: {machine_line(m)}")
    print(f"sidecar: {a.sidecar}")
    if a.reproduce:
        print(f"reproduce: {a.reproduce}")
    results = {"machine": m, "sidecar": a.sidecar, "reproduce": a.reproduce,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benches": {}}
    all_rows = []
    failed_to_run = []
    for n in names:
        title, fn = BENCHES[n]
        print(f"\n== {title} ==", flush=True)
        if a.quiet_wait > 0:
            busy = wait_quiet(a.quiet_wait)
            print(f"  before the run, other processes kept {busy:.2f} cores "
                  f"busy", flush=True)
        procs = Procs()
        workdir = tempfile.mkdtemp(prefix=f"lw-bench-{n}-", dir="/dev/shm")
        try:
            r = fn(a, procs, workdir)
        except KeyboardInterrupt:
            print("  interrupted")
            procs.stop_all()
            shutil.rmtree(workdir, ignore_errors=True)
            return 130
        except (RuntimeError, OSError, subprocess.SubprocessError,
                KeyError, ValueError) as e:
            print(f"  ERROR: {e}")
            failed_to_run.append(n)
            r = {"error": str(e), "rows": [row(title, "error", "-", False)]}
        finally:
            procs.stop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        results["benches"][n] = r
        print_rows(r["rows"])
        all_rows += r["rows"]
    print("\n== summary ==")
    print(f"machine: {machine_line(m)}")
    print_rows(all_rows)
    if a.reproduce:
        print(f"reproduce: {a.reproduce}")
    results["rows"] = all_rows
    save_results(results, a.json)
    return 0 if all(r["result"] in ("PASS", "info") for r in all_rows) else 1


if __name__ == "__main__":
    sys.exit(main())

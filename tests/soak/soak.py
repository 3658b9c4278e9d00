# SPDX-License-Identifier: Apache-2.0
"""Soak: the real sidecar for a given time under a changing world, checked
for leaks and slow probes. Started by scripts/soak, which builds the
binaries; see there for the options.

What happens, all at once, for --duration seconds:
  apps      loops_app processes (libloopwatch) come and go: 1 to 6 loops
            each, living 5 to 60 s; a third of them stall now and then
            (1.5 s, longer than stall_after), a quarter are killed with
            SIGKILL (their loops dead), the rest end with SIGTERM (gone);
  segment   deleted every --recreate-every seconds: the apps re-attach to
            the file the sidecar creates again;
  probes    GET /livez and /readyz the kubelet's way (a fresh connection
            each), 10 a second in 30 s windows, from the probe peer's address;
  scrapes   GET /metrics every second, /debug/loops and /debug/stalls on
            the admin port every 5 s.
Every 10 s the sidecar's VmRSS and open descriptors are sampled.

Fails (exit 1) on: a probe over --probe-limit-ms (50) or a failed probe; an
RSS slope over --rss-slope-kib-h (1024 KiB an hour) or a descriptor slope
over --fd-slope-h (2 an hour), fitted by least squares after the first
--warmup seconds; the sidecar dying; induced stalls not seen. Prints what it
measured and the command to reproduce; --json writes it all.
"""

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

STALL_AFTER = "1s"


def now():
    return time.monotonic()


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def slope_per_hour(points):
    """Least-squares slope of [(t seconds, value)], per hour."""
    n = len(points)
    if n < 3:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / den * 3600


class Soak:
    def __init__(self, a, workdir):
        self.a = a
        self.workdir = workdir
        self.segment = os.path.join(workdir, "segment")
        self.rng = random.Random(a.seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.apps = []            # (Popen, fate, end time)
        self.counts = {"apps": 0, "killed": 0, "terminated": 0, "stalling_apps": 0,
                       "recreated": 0, "scrapes": 0, "scrape_errors": 0,
                       "admin_reads": 0, "admin_errors": 0}
        self.probe_windows = []
        self.samples = []         # (t, rss_kib, fds)
        self.problems = []
        self.t0 = now()

    # ---- the sidecar

    def start_sidecar(self):
        self.sc_log = open(os.path.join(self.workdir, "sidecar.log"), "w")
        self.sc_argv = [self.a.sidecar, "run", "--segment", self.segment,
                        "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                        "--probe-peers", "127.0.0.1", "--stall-after", STALL_AFTER,
                        "--poll-interval", "100ms", "--log-format", "json",
                        "--forget-after", "30s"]
        self.sc = subprocess.Popen(self.sc_argv, stdout=self.sc_log, stderr=subprocess.STDOUT)
        deadline = now() + 10
        while now() < deadline:
            with open(self.sc_log.name) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("msg") == "loopwatch started":
                        self.port, self.admin_port = rec["port"], rec["admin_port"]
                        return
            time.sleep(0.05)
        raise RuntimeError("the sidecar did not start")

    def log_lines(self, msg):
        """Log lines whose msg starts with `msg`."""
        out = []
        with open(self.sc_log.name) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if str(rec.get("msg", "")).startswith(msg):
                    out.append(rec)
        return out

    # ---- the world

    def spawn_app(self):
        loops = self.rng.randint(1, 6)
        life = self.rng.uniform(5, 60)
        r = self.rng.random()
        fate = "kill" if r < 0.25 else "term"
        argv = [self.a.loops_app, str(loops), "100", "--duration", "%.1f" % (life + 30),
                "--seed", str(self.rng.randint(1, 1 << 30))]
        if self.rng.random() < 0.33:
            argv += ["--stall-every", "%.1f" % self.rng.uniform(4, 12), "--stall-ms", "1500"]
            self.counts["stalling_apps"] += 1
        env = dict(os.environ, LOOPWATCH_SEGMENT=self.segment, LOOPWATCH_REPORT_AFTER="300ms")
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.apps.append((p, fate, now() + life))
        self.counts["apps"] += 1

    def world(self):
        next_recreate = now() + self.a.recreate_every
        while not self.stop.is_set():
            t = now()
            for entry in list(self.apps):
                p, fate, end = entry
                if p.poll() is not None:
                    self.apps.remove(entry)
                elif t >= end:
                    p.send_signal(signal.SIGKILL if fate == "kill" else signal.SIGTERM)
                    p.wait()
                    self.counts["killed" if fate == "kill" else "terminated"] += 1
                    self.apps.remove(entry)
            while len(self.apps) < self.a.apps:
                self.spawn_app()
            if t >= next_recreate:
                try:
                    os.unlink(self.segment)
                    self.counts["recreated"] += 1
                except FileNotFoundError:
                    pass
                next_recreate = t + self.a.recreate_every
            self.stop.wait(0.5)

    # ---- clients

    def probes(self):
        while not self.stop.is_set():
            for path in ("/livez", "/readyz"):
                if self.stop.is_set():
                    break
                argv = [self.a.http_probe, "paced", "--port", str(self.port), "--path", path,
                        "--rate", "10", "--duration", "30", "--connections", "4", "--fresh"]
                r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
                try:
                    res = json.loads(r.stdout.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    self.problems.append("http_probe failed: %s" % r.stderr[-500:])
                    continue
                svc = res["service"]
                self.probe_windows.append({
                    "t": round(now() - self.t0, 1), "path": path, "n": res["measured"],
                    "errors": res["errors"], "status": res["status"],
                    "p50_ms": svc["p50_us"] / 1000, "p99_ms": svc["p99_us"] / 1000,
                    "max_ms": svc["max_us"] / 1000})

    def scrapes(self):
        k = 0
        while not self.stop.wait(1.0):
            k += 1
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port,
                                            timeout=5) as r:
                    r.read()
                self.counts["scrapes"] += 1
            except OSError:
                self.counts["scrape_errors"] += 1
            if k % 5 == 0:
                for path in ("/debug/loops", "/debug/stalls"):
                    try:
                        with urllib.request.urlopen(
                                "http://127.0.0.1:%d%s" % (self.admin_port, path),
                                timeout=5) as r:
                            json.loads(r.read())
                        self.counts["admin_reads"] += 1
                    except (OSError, ValueError):
                        self.counts["admin_errors"] += 1

    def sampler(self):
        while not self.stop.wait(10.0):
            if self.sc.poll() is not None:
                self.problems.append("the sidecar exited with %s" % self.sc.returncode)
                self.stop.set()
                return
            t = now() - self.t0
            self.samples.append((round(t, 1), status_kb(self.sc.pid, "VmRSS"),
                                 fd_count(self.sc.pid)))
            if self.a.progress and int(t) % 300 < 10:
                s = self.samples[-1]
                print("  %5.0f s: VmRSS %.2f MiB, %d descriptors, %d apps so far, %d probe "
                      "windows" % (t, s[1] / 1024, s[2], self.counts["apps"],
                                   len(self.probe_windows)), flush=True)

    # ---- the run

    def run(self):
        self.start_sidecar()
        threads = [threading.Thread(target=f, daemon=True)
                   for f in (self.world, self.probes, self.scrapes, self.sampler)]
        for t in threads:
            t.start()
        try:
            self.stop.wait(self.a.duration)
        finally:
            self.stop.set()
            for t in threads:
                t.join(150)
            for p, _, _ in self.apps:
                p.kill()
                p.wait()
            self.sc.send_signal(signal.SIGTERM)
            try:
                rc = self.sc.wait(10)
            except subprocess.TimeoutExpired:
                self.sc.kill()
                rc = "no exit 10 s after SIGTERM"
            if rc != 0:
                self.problems.append("the sidecar did not stop cleanly: %s" % rc)

    def verdict(self):
        a = self.a
        res = {"duration_s": a.duration, "counts": self.counts, "samples": self.samples,
               "probe_windows": self.probe_windows, "sidecar_cmd": shlex.join(self.sc_argv)}
        probes = sum(w["n"] for w in self.probe_windows)
        errors = sum(w["errors"] for w in self.probe_windows)
        worst = max((w["max_ms"] for w in self.probe_windows), default=0.0)
        p99 = max((w["p99_ms"] for w in self.probe_windows), default=0.0)
        over = [w for w in self.probe_windows if w["max_ms"] > a.probe_limit_ms]
        after = [(t, r, f) for t, r, f in self.samples if t >= a.warmup]
        rss_slope = slope_per_hour([(t, r) for t, r, _ in after])
        fd_slope = slope_per_hour([(t, f) for t, _, f in after])
        stalls = len(self.log_lines("stall started"))
        deaths = len(self.log_lines("loop died"))
        res.update({"probes": probes, "probe_errors": errors, "probe_max_ms": worst,
                    "probe_window_p99_max_ms": p99, "rss_slope_kib_h": rss_slope,
                    "fd_slope_h": fd_slope, "stalls_logged": stalls, "deaths_logged": deaths})
        print("\n== soak: %.0f s ==" % a.duration)
        print("  apps %(apps)d (%(stalling_apps)d stalling now and then, %(killed)d killed, "
              "%(terminated)d ended), segment deleted %(recreated)d times" % self.counts)
        print("  stalls logged %d, deaths logged %d" % (stalls, deaths))
        print("  probes %d (fresh connections, /livez and /readyz): %d failed; worst window "
              "p99 %.2f ms; max %.2f ms (limit %g ms)" % (probes, errors, p99, worst,
                                                         a.probe_limit_ms))
        print("  scrapes %(scrapes)d (%(scrape_errors)d failed), admin reads %(admin_reads)d "
              "(%(admin_errors)d failed)" % self.counts)
        if after:
            print("  VmRSS %.2f -> %.2f MiB (min %.2f, max %.2f after %d s); slope %.0f KiB/h "
                  "(limit %d)" % (after[0][1] / 1024, after[-1][1] / 1024,
                                  min(r for _, r, _ in after) / 1024,
                                  max(r for _, r, _ in after) / 1024, a.warmup, rss_slope,
                                  a.rss_slope_kib_h))
            print("  descriptors %d -> %d (min %d, max %d); slope %.2f/h (limit %g)" % (
                after[0][2], after[-1][2], min(f for _, _, f in after),
                max(f for _, _, f in after), fd_slope, a.fd_slope_h))
        problems = list(self.problems)
        if errors:
            problems.append("%d probes failed" % errors)
        if over:
            problems.append("%d probe windows had a probe over %g ms (worst %.2f ms)"
                            % (len(over), a.probe_limit_ms, worst))
        if len(after) >= 3 and rss_slope > a.rss_slope_kib_h:
            problems.append("VmRSS grows %.0f KiB an hour" % rss_slope)
        if len(after) >= 3 and fd_slope > a.fd_slope_h:
            problems.append("descriptors grow %.2f an hour" % fd_slope)
        if self.counts["stalling_apps"] and stalls == 0:
            problems.append("apps stalled, and no stall was logged")
        if self.counts["killed"] and deaths == 0:
            problems.append("apps were killed, and no death was logged")
        if self.counts["scrape_errors"] > self.counts["scrapes"] // 100:
            problems.append("%d scrapes failed" % self.counts["scrape_errors"])
        res["problems"] = problems
        if a.reproduce:
            print("  reproduce: " + a.reproduce)
        print("RESULT: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
            print("results: " + a.json)
        return 0 if not problems else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sidecar", required=True)
    ap.add_argument("--loops-app", required=True)
    ap.add_argument("--http-probe", required=True)
    ap.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    ap.add_argument("--warmup", type=float, default=60,
                    help="seconds left out of the slopes (default 60)")
    ap.add_argument("--apps", type=int, default=6, help="apps at any time (default 6)")
    ap.add_argument("--recreate-every", type=float, default=120,
                    help="seconds between deletions of the segment (default 120)")
    ap.add_argument("--probe-limit-ms", type=float, default=50)
    ap.add_argument("--rss-slope-kib-h", type=float, default=1024)
    ap.add_argument("--fd-slope-h", type=float, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--reproduce", default="")
    ap.add_argument("--progress", action="store_true", help="a line every 5 minutes")
    a = ap.parse_args()
    if a.duration < 30:
        ap.error("--duration: at least 30 seconds")
    with tempfile.TemporaryDirectory(prefix="lw-soak-", dir="/dev/shm") as workdir:
        s = Soak(a, workdir)
        try:
            s.run()
        except KeyboardInterrupt:
            s.stop.set()
            return 130
        return s.verdict()


if __name__ == "__main__":
    sys.exit(main())

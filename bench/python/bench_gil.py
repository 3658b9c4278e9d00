# SPDX-License-Identifier: Apache-2.0
"""Who is blamed for a stall when threads compete for the GIL.

Each scenario is a fresh asyncio app (/usr/bin/python3, loopwatch installed,
LOOPWATCH_REPORT_AFTER=200ms) watched by a real `loopwatch run`
(--stall-after 1s --poll-interval 50ms --report-limit 1000); what is counted
comes from the sidecar's own log lines, "stall report" and "stall ended":

  regex-thread   the loop awaits run_in_executor() of a catastrophic regular
                 expression (as FastAPI runs a sync `def` endpoint): the
                 worker keeps the GIL in C code, the loop thread waits for
                 it. Wanted: class gil, the worker's stack in the report.
  regex-loop     the same expression on the loop thread itself. Wanted:
                 class cpu, the loop's own stack.
  pbkdf2-thread  hashlib.pbkdf2_hmac in a thread (it releases the GIL), then
  pure-thread    a pure-Python loop in a thread (the GIL changes hands every
                 switch interval, 5 ms): neither stalls the loop (its lag is
                 measured); then, with the thread still busy, the loop blocks
                 in time.sleep() on its own. Wanted: class blocked, no
                 thread blamed.

  bench_gil.py --pythonpath build/python --sidecar build/sidecar/loopwatch
               [--stalls 20] [--json FILE]

scripts/bench-python gil builds both and runs this. Exit 0 when every
stall got the wanted class and blame, 1 otherwise.
"""

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time

APP = r'''
import asyncio, hashlib, json, re, sys, threading, time
import loopwatch

def regex(n):
    return re.match(r"(a+)+$", "a" * n + "b")  # the line that holds the GIL

def pure(end):
    while time.monotonic() < end:
        pass

def pbkdf2(end):
    while time.monotonic() < end:
        hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 200_000)

async def max_lag(seconds):
    worst, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - t - 0.01)
    return worst

async def main():
    scenario, stalls, n, busy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    assert loopwatch.install()
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    out = {"scenario": scenario}
    t0 = time.monotonic()
    if scenario == "regex-thread":
        for _ in range(stalls):
            await loop.run_in_executor(None, regex, n)
            await asyncio.sleep(0.6)
    elif scenario == "regex-loop":
        for _ in range(stalls):
            regex(n)
            await asyncio.sleep(0.6)
    else:
        work = pure if scenario == "pure-thread" else pbkdf2
        end = time.monotonic() + busy + stalls * 2.2 + 1
        threading.Thread(target=work, args=(end,), daemon=True).start()
        out["max_lag_ms"] = round(await max_lag(busy) * 1000, 1)
        for _ in range(stalls):
            time.sleep(1.5)  # the loop's own fault
            await asyncio.sleep(0.6)
    out["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(out), flush=True)

asyncio.run(main())
'''

WANT = {"regex-thread": "gil", "regex-loop": "cpu", "pbkdf2-thread": "blocked",
        "pure-thread": "blocked"}


def regex_seconds(python, n):
    t = time.monotonic()
    subprocess.run([python, "-c", 'import re; re.match(r"(a+)+$", "a" * %d + "b")' % n],
                   check=True)
    return time.monotonic() - t


def run_scenario(a, scenario, n, workdir):
    seg = os.path.join(workdir, scenario + ".seg")
    log_path = os.path.join(workdir, scenario + ".log")
    script = os.path.join(workdir, "app.py")
    with open(script, "w") as f:
        f.write(APP)
    sc_argv = [a.sidecar, "run", "--segment", seg, "--listen", "127.0.0.1:0",
               "--admin-listen", "off", "--stall-after", "1s", "--poll-interval", "50ms",
               "--report-limit", "1000",
               "--log-format", "json"]
    env = dict(os.environ, PYTHONPATH=a.pythonpath, LOOPWATCH_SEGMENT=seg,
               LOOPWATCH_REPORT_AFTER="200ms")
    stalls = 0 if scenario in ("pbkdf2-thread", "pure-thread") and a.stalls == 0 else a.stalls
    app_argv = [a.python, script, scenario, str(stalls), str(n), str(a.busy_seconds)]
    with open(log_path, "w") as log:
        sc = subprocess.Popen(sc_argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(0.3)
            app = subprocess.run(app_argv, env=env, capture_output=True, text=True,
                                 timeout=600)
            if app.returncode != 0:
                raise RuntimeError("app failed: " + app.stderr[-2000:])
            time.sleep(0.5)
        finally:
            sc.send_signal(signal.SIGTERM)
            sc.wait(10)
    out = json.loads(app.stdout.strip().splitlines()[-1])
    lines = []
    with open(log_path) as f:
        for line in f:
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    reports = [l for l in lines if l.get("msg") == "stall report"]
    ended = [l for l in lines if l.get("msg") == "stall ended"]
    classes = {}
    for e in ended:
        classes[e["class"]] = classes.get(e["class"], 0) + 1
    named = 0
    for r in reports:
        text = r.get("stack", "")
        m = re.search(r"Thread (\d+) holds the GIL", text)
        if m and re.search(r'line \d+ in regex\n', text[m.end():].split(
                "The loop thread, waiting for the GIL:")[0]):
            named += 1
    blamed = sum(1 for r in reports if "holds the GIL" in r.get("stack", ""))
    cpu = [r.get("loop_cpu_seconds", 0) * 1000 for r in reports]
    out.update({
        "stalls_ended": len(ended), "reports": len(reports), "classes": classes,
        "holder_named": named, "another_thread_blamed": blamed,
        "loop_cpu_ms_median": round(statistics.median(cpu), 1) if cpu else None,
        "loop_cpu_ms_max": round(max(cpu), 1) if cpu else None,
        "app_cmd": "LOOPWATCH_SEGMENT=%s LOOPWATCH_REPORT_AFTER=200ms %s" % (
            shlex.quote(seg), " ".join(shlex.quote(x) for x in app_argv)),
        "sidecar_cmd": " ".join(shlex.quote(x) for x in sc_argv),
    })
    want = WANT[scenario]
    ok = len(ended) == stalls and classes.get(want, 0) == stalls
    if scenario == "regex-thread":
        ok = ok and named == len(reports) == stalls
    else:
        ok = ok and blamed == 0
    out["ok"] = ok
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pythonpath", required=True, help="the built package (build/python)")
    ap.add_argument("--sidecar", required=True, help="the loopwatch binary")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--stalls", type=int, default=20, help="stalls per scenario (default 20)")
    ap.add_argument("--busy-seconds", type=float, default=5,
                    help="how long the lag of the loop is measured beside a busy "
                    "thread (default 5)")
    ap.add_argument("--only", help="comma-separated scenarios (default: all)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--reproduce", default="", help="the command line to print")
    a = ap.parse_args()
    scenarios = a.only.split(",") if a.only else list(WANT)
    for s in scenarios:
        if s not in WANT:
            ap.error("unknown scenario %r; choose from %s" % (s, ", ".join(WANT)))

    # A regex of about 1.5 s on this machine: longer than --stall-after.
    n = 22
    while regex_seconds(a.python, n) < 1.5 and n < 32:
        n += 1
    took = regex_seconds(a.python, n)
    print("machine: %s, %d cores; python %s" % (os.uname().release, os.cpu_count(),
                                                 a.python))
    if a.reproduce:
        print("reproduce: " + a.reproduce)
    print("regular expression (a+)+$ on 'a' * %d + 'b': %.2f s" % (n, took))
    results = {"regex_n": n, "regex_seconds": round(took, 3), "scenarios": {}}
    failed = False
    with tempfile.TemporaryDirectory(prefix="lw-bench-gil-", dir="/dev/shm") as workdir:
        for s in scenarios:
            print("\n== %s (%d stalls; wanted: class %s%s)" % (
                s, a.stalls, WANT[s],
                ", the holder's stack" if s == "regex-thread" else ", nobody else blamed"),
                flush=True)
            r = run_scenario(a, s, n, workdir)
            results["scenarios"][s] = r
            failed |= not r["ok"]
            if "max_lag_ms" in r:
                print("  busy thread for %g s: the loop's worst lag %.1f ms (no stall: %s)"
                      % (a.busy_seconds, r["max_lag_ms"], "yes" if r["max_lag_ms"] < 500
                         else "NO"))
            print("  stalls ended %d, classes %s; reports %d, holder named in %d, another "
                  "thread blamed in %d; loop CPU per report median %s ms, max %s ms -> %s"
                  % (r["stalls_ended"], json.dumps(r["classes"], sort_keys=True), r["reports"],
                     r["holder_named"], r["another_thread_blamed"], r["loop_cpu_ms_median"],
                     r["loop_cpu_ms_max"], "PASS" if r["ok"] else "FAIL"))
            print("  app:     " + r["app_cmd"])
            print("  sidecar: " + r["sidecar_cmd"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
        print("\nresults: " + a.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

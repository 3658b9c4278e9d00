# SPDX-License-Identifier: Apache-2.0
"""What a benchmark run says about itself: the machine it ran on, how busy
the machine was, and the file of its results. Shared by
bench/python/bench_heartbeat.py and bench/sidecar/bench_sidecar.py (each
puts bench/ on sys.path).

Standard library only."""

import json
import os
import platform
import re
import resource
import subprocess
import time

HZ = os.sysconf("SC_CLK_TCK")


def _read_first(path, key, sep):
    """The value of the first `key SEP value` line of `path` ("model name\t:
    AMD ...", 'PRETTY_NAME="Debian ..."'), or None."""
    try:
        with open(path) as f:
            for line in f:
                name, found, value = line.partition(sep)
                if found and name.strip() == key:
                    return value.strip().strip('"')
    except OSError:
        pass
    return None


def machine():
    """CPU model, cores, kernel, OS, hypervisor and clock source."""
    hyper = "none"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"Hypervisor vendor:\s*(\S+)", out)
        if m:
            hyper = m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            clocksource = f.read().strip()
    except OSError:
        clocksource = "?"
    return {
        "cpu": _read_first("/proc/cpuinfo", "model name", ":") or "unknown",
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": _read_first("/etc/os-release", "PRETTY_NAME", "=") or platform.system(),
        "hypervisor": hyper,
        "clocksource": clocksource,
    }


def machine_line(m):
    return (f"{m['cpu']}, {m['cores']} cores, kernel {m['kernel']}, "
            f"{m['os']}, hypervisor {m['hypervisor']}, clocksource {m['clocksource']}")


def system_busy():
    """(busy ticks, steal ticks) over all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq, steal


def wait_quiet(max_wait, threshold=0.25):
    """Waits (at most max_wait s) for one second in which other processes
    keep less than `threshold` cores busy. Returns the last reading."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = system_busy()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(1.0)
        b1, _ = system_busy()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        own = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        busy = max(0.0, (b1 - b0) / HZ - own)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"  (waiting for a quiet machine: other processes keep "
              f"{busy:.2f} cores busy)", flush=True)


def save_results(results, path):
    """Writes every result to `path` (the benchmarks' --json), if given."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"results: {path}")

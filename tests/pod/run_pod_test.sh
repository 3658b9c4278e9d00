#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Real-pod end-to-end test: the example pod of deploy/examples/fastapi, built
# from this tree and run by podman.
#
#   1. a Debian base image, made with debootstrap from the machine's own
#      Debian mirror (reused when present; --rebuild-base makes it again),
#   2. the sidecar image from ./Dockerfile and the demo app image from
#      deploy/examples/fastapi/Dockerfile, both on that base,
#   3. `podman kube play` of the example's pod (the plain-container form,
#      rendered by render_pod.py), then checks: /startupz and /livez pass;
#      the sidecar runs as uid 65532 with no capabilities on a read-only
#      root; the two containers have separate PID and mount namespaces and
#      share the segment; a blocking endpoint turns /livez 503 while the
#      app's own /health hangs, and the sidecar's log carries the stall
#      report with the Python stack; a CPU-bound endpoint gives class cpu;
#      SIGKILL of the app process gives a dead loop and podman's restart a
#      new one,
#   4. `loopwatch inject` of a Deployment with no loopwatch in it
#      (orders-plain.yaml), played twice: with the app under the Python
#      package's runner (probes judged on its loop; a stall gives 503 and a
#      report), and without it (probes answered by the app's own /health),
#   5. the Python payload: an app image with no loopwatch in it
#      (deploy/examples/fastapi/Dockerfile.plain), its Deployment
#      (orders-python.yaml) injected with config.loopwatch.io/python, played
#      under uvicorn and under gunicorn with two UvicornWorkers: the payload
#      init container copies the package in, the loops beat, a blocking call
#      gives 503 and a report naming the blocking line of app.py,
#   6. the Helm chart (helm/loopwatch) as `helm template` renders it: the
#      injector played from its Deployment with the rendered certificate,
#      a review of orders-plain.yaml's pod sent over HTTPS trusting only the
#      rendered caBundle, the patch applied with python3-jsonpatch, the pod
#      played (a stall gives 503 and a report), and the `helm test` Pod,
#   7. teardown of the pods and their volumes, also when a check fails.
#
#   tests/pod/run_pod_test.sh [--workdir DIR] [--rebuild-base] [--keep]
#
#   --workdir DIR    scratch space (default: build/pod)
#   --rebuild-base   debootstrap the base image even if it exists
#   --keep           leave the pod running after the checks (to look around)
#
# Needs root (debootstrap, rootful podman), and the Debian packages podman,
# runc, catatonit, debootstrap and curl (scripts/deps.sh installs them),
# python3-jsonpatch, and the npm packages (npm ci) for helm.
# Exit 0 when every check passed, 1 when one failed, 2 on bad usage.
set -euo pipefail

usage() { sed -n '3,44s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$root/build/pod
rebuild_base=0
keep=0
while (($#)); do
  case $1 in
    --workdir) [[ $# -ge 2 ]] || { echo "run_pod_test: --workdir needs a directory" >&2; exit 2; }
               work=$2; shift ;;
    --rebuild-base) rebuild_base=1 ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run_pod_test: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if ((EUID != 0)); then
  echo "run_pod_test: needs root (debootstrap and rootful podman); run it with sudo" >&2
  exit 2
fi
for tool in podman /usr/sbin/runc catatonit debootstrap curl; do
  command -v "$tool" >/dev/null || {
    echo "run_pod_test: '$tool' not found: install the Debian packages of scripts/deps.sh" >&2
    exit 2
  }
done

py=/usr/bin/python3
mkdir -p "$work"
work=$(cd "$work" && pwd)

# podman on Debian 12 CI machines: runc (crun refuses their hybrid cgroup
# layout) and no default ulimits (the sandbox refuses to raise them).
export CONTAINERS_CONF=$work/containers.conf
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF
podman() { command podman --runtime /usr/sbin/runc "$@"; }

base_image=localhost/loopwatch-base:bookworm
mapfile -t images < <("$py" "$root/tests/pod/render_pod.py" --images)
sidecar_image=${images[0]}
app_image=${images[1]}
pod=loopwatch-e2e
pod_yaml=$work/pod.yaml
sidecar_ctr=$pod-loopwatch
app_ctr=$pod-app

start_all=$SECONDS
timings=()
failures=0
step_name=
step() {
  end_step
  step_name=$1
  step_start=$SECONDS
  printf '\n--- %s  [%s]\n' "$step_name" "$(date +%H:%M:%S)"
}
end_step() {
  [[ -n $step_name ]] || return 0
  timings+=("$(printf '%-34s %4ss' "$step_name" $((SECONDS - step_start)))")
  step_name=
}
pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); }
# check DESCRIPTION COMMAND...: PASS or FAIL, never exits.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
die() { fail "$1"; exit 1; }

teardown() {
  local rc=$?
  end_step
  if ((rc != 0 || failures)); then
    echo
    echo "--- diagnostics"
    podman pod ps --filter "name=^$pod\$" 2>/dev/null || true
    podman ps -a --filter "pod=$pod" --format '{{.Names}}  {{.Status}}' 2>/dev/null || true
    for ctr in "$sidecar_ctr" "$app_ctr"; do
      echo "--- last log lines of $ctr"
      podman logs --tail 30 "$ctr" 2>&1 | cut -c1-600 || true
    done
  fi
  if ((keep)); then
    echo "--keep: pod $pod left running (podman kube down $pod_yaml)"
  else
    remove_pod
    local p
    for p in "${extra_pods[@]}"; do remove_pod_named "${p%%=*}" "${p#*=}"; done
  fi
  echo
  echo "--- real-pod test timings"
  printf '  %s\n' "${timings[@]}"
  if ((rc == 0 && failures == 0)); then
    printf 'real-pod test PASSED in %ss\n' $((SECONDS - start_all))
  else
    printf 'real-pod test FAILED in %ss (%s failed checks)\n' $((SECONDS - start_all)) "$failures"
    ((rc != 0)) || rc=1
  fi
  exit "$rc"
}
trap teardown EXIT

# Removes the pod, its containers and the volumes kube play made for it
# (the ConfigMap's and the emptyDir's), so no state leaks into the next run.
remove_pod() { remove_pod_named "$pod" "$pod_yaml"; }
# remove_pod_named NAME YAML: the same for another pod (the chart's injector).
remove_pod_named() {
  if [[ -f $2 ]]; then
    podman kube down "$2" >/dev/null 2>&1 || true
  fi
  podman pod rm -f "$1" >/dev/null 2>&1 || true
  local vol
  for vol in $(podman volume ls --format '{{.Name}}' 2>/dev/null); do
    # render_pod.py and play_chart.py give the pod's volumes and ConfigMaps
    # the pod's name as a prefix: only those are removed.
    case $vol in "$1"-*) podman volume rm -f "$vol" >/dev/null 2>&1 || true ;; esac
  done
}
# Pods besides $pod that teardown removes: NAME=YAML.
extra_pods=()

# The first Debian mirror of the machine's apt sources that serves
# bookworm's main component (deb822 .sources files, then sources.list).
debian_mirror() {
  "$py" - <<'EOF'
import glob, re, sys
def deb822(path):
    for para in re.split(r"\n\s*\n", open(path, encoding="utf-8").read()):
        f = {}
        for line in para.splitlines():
            m = re.match(r"([A-Za-z-]+):\s*(.*)", line)
            if m:
                f[m.group(1).lower()] = m.group(2).split()
        if ("deb" in f.get("types", []) and "bookworm" in f.get("suites", [])
                and "main" in f.get("components", [])):
            yield from f.get("uris", [])
def one_line(path):
    for line in open(path, encoding="utf-8"):
        w = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(w) >= 4 and w[0] == "deb" and w[2] == "bookworm" and "main" in w[3:]:
            yield w[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for uri in deb822(path):
        print(uri); sys.exit(0)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        for uri in one_line(path):
            print(uri); sys.exit(0)
    except FileNotFoundError:
        pass
sys.exit("no apt source for bookworm main in /etc/apt")
EOF
}

image_size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1 / 1e6}'; }
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# http PORT PATH [curl args...]: prints "CODE BODY" (CODE 000 when no answer).
http() {
  local port=$1 path=$2
  shift 2
  rm -f "$work/body"
  curl -s -m 2 -o "$work/body" -w '%{http_code}' "$@" "http://127.0.0.1:$port$path" >"$work/code" 2>/dev/null || true
  printf '%s %s\n' "$(cat "$work/code")" "$(cat "$work/body" 2>/dev/null)"
}
# wait_code PORT PATH CODE TIMEOUT: polls every 50 ms; prints seconds waited.
wait_code() {
  local port=$1 path=$2 want=$3 timeout=$4 t0 out
  t0=$(date +%s.%N)
  while :; do
    out=$(http "$port" "$path")
    if [[ ${out%% *} == "$want" ]]; then
      since "$t0"
      return 0
    fi
    if awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$timeout" 'BEGIN {exit !(b - a > t)}'; then
      echo "timeout; last answer: $out"
      return 1
    fi
    sleep 0.05
  done
}
# wait_answer PORT PATH "CODE BODY" TIMEOUT: polls every 100 ms until the whole
# answer is the one given (a loop may appear after the probe first passes).
wait_answer() {
  local port=$1 path=$2 want=$3 deadline=$((SECONDS + $4))
  until [[ $(http "$port" "$path") == "$want" ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}
# Seconds since a `date +%s.%N` timestamp.
since() { echo "$1 $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}'; }
# Host PID of a container's main process.
host_pid() { podman inspect --format '{{.State.Pid}}' "$1"; }
# JSON log lines of the sidecar with the given "msg" (prefix match).
sidecar_log() {
  podman logs "$sidecar_ctr" 2>&1 | "$py" -c '
import json, sys
want = sys.argv[1]
for line in sys.stdin:
    try:
        obj = json.loads(line)
    except ValueError:
        continue
    if obj.get("msg", "").startswith(want):
        print(json.dumps(obj))' "$1"
}
# wait_log MSG COUNT TIMEOUT: until the sidecar has logged MSG COUNT times.
wait_log() {
  local msg=$1 count=$2 timeout=$3 deadline=$((SECONDS + $3))
  while (($(sidecar_log "$msg" | wc -l) < count)); do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# ---------------------------------------------------------------- images
step "base image (debootstrap)"
if ((rebuild_base == 0)) && podman image exists "$base_image"; then
  echo "reusing $base_image ($(image_size "$base_image")); --rebuild-base makes it again"
else
  mirror=$(debian_mirror)
  echo "debootstrap --variant=minbase bookworm from $mirror"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; die "debootstrap failed (log: $work/debootstrap.log)"; }
  tar -C "$work/rootfs" -c . | podman import - "$base_image" >/dev/null
  rm -rf "$work/rootfs"
  echo "imported $base_image ($(image_size "$base_image"))"
fi

step "sidecar image (Dockerfile)"
podman build --build-arg BASE_IMAGE="$base_image" -t "$sidecar_image" \
  -f "$root/Dockerfile" "$root" >"$work/build-sidecar.log" 2>&1 ||
  { tail -30 "$work/build-sidecar.log"; die "podman build of the sidecar image failed (log: $work/build-sidecar.log)"; }
sidecar_size=$(image_size "$sidecar_image")
echo "built $sidecar_image: $sidecar_size"

step "app image (deploy/examples/fastapi)"
podman build --build-arg BASE_IMAGE="$base_image" -t "$app_image" \
  -f "$root/deploy/examples/fastapi/Dockerfile" "$root" >"$work/build-app.log" 2>&1 ||
  { tail -30 "$work/build-app.log"; die "podman build of the app image failed (log: $work/build-app.log)"; }
echo "built $app_image: $(image_size "$app_image")"

# ---------------------------------------------------------------- the pod
step "podman kube play"
remove_pod
lw_port=$(free_port)
app_port=$(free_port)
while [[ $app_port == "$lw_port" ]]; do app_port=$(free_port); done
# The blocking endpoints hold the loop 8 s (stall_after is 5 s in the
# example's ConfigMap), so each stall is seen and ends within the test.
"$py" "$root/tests/pod/render_pod.py" --name "$pod" --sidecar-port "$lw_port" --app-port "$app_port" \
  --env BILLING_LATENCY_SECONDS=8 --env EXPORT_SECONDS=8 >"$pod_yaml"
# kube play turns httpGet probes into podman healthchecks, which need
# systemd timers; without systemd it says so on stderr and goes on. The
# kubelet's part (acting on the probes) is not podman's to play here: the
# checks below query the probe endpoints themselves.
podman kube play "$pod_yaml" >"$work/play.log" 2>&1 ||
  { cat "$work/play.log"; die "podman kube play failed"; }
grep -v 'systemd connection' "$work/play.log" || true

# ---------------------------------------------------------------- checks
step "start-up probes"
if t=$(wait_code "$lw_port" /startupz 200 60); then
  pass "/startupz 200, ${t}s after kube play"
else
  die "/startupz never 200: $t"
fi
out=$(http "$lw_port" /livez)
check "/livez 200 with one live loop ($out)" [ "$out" = "200 ok: 1 loops, 1 live" ]
out=$(http "$app_port" /health)
check "the app answers on its own port ($out)" [ "${out%% *}" = 200 ]
status=$(podman exec "$sidecar_ctr" loopwatch status 2>&1 || true)
printf '%s\n' "$status" | sed 's/^/  /'
check "\`loopwatch status\` in the sidecar container lists the live loop" \
  grep -Eq ' uvicorn-1 +asyncio +1 +live ' <<<"$status"

step "security of both containers"
lw_pid=$(host_pid "$sidecar_ctr")
app_pid=$(host_pid "$app_ctr")
for ctr in "$sidecar_ctr" "$app_ctr"; do
  pid=$(host_pid "$ctr")
  status=$(cat "/proc/$pid/status")
  check "$ctr runs as uid and gid 65532" \
    grep -Eq $'^Uid:\t65532\t65532\t65532\t65532$' <<<"$status"
  grep -Eq $'^Gid:\t65532\t65532\t65532\t65532$' <<<"$status" || fail "$ctr gid is not 65532"
  check "$ctr has no capabilities (effective, permitted, bounding)" \
    "$py" -c 'import sys; s = dict(l.split(":\t") for l in sys.argv[1].splitlines() if ":\t" in l); sys.exit(any(int(s[k], 16) for k in ("CapEff", "CapPrm", "CapBnd")))' "$status"
  check "$ctr has no_new_privs and a seccomp filter" \
    grep -Pzq 'NoNewPrivs:\t1\n(.*\n)*Seccomp:\t2\n' <<<"$status"
  check "$ctr's root filesystem is mounted read-only" \
    awk '$5 == "/" { split($6, o, ","); ro = (o[1] == "ro") } END { exit !ro }' "/proc/$pid/mountinfo"
done

step "one segment across two namespaces"
check "separate PID namespaces" [ "$(readlink /proc/$lw_pid/ns/pid)" != "$(readlink /proc/$app_pid/ns/pid)" ]
check "separate mount namespaces" [ "$(readlink /proc/$lw_pid/ns/mnt)" != "$(readlink /proc/$app_pid/ns/mnt)" ]
seg_lw=$(stat -c '%d:%i' "/proc/$lw_pid/root/run/loopwatch/segment")
seg_app=$(stat -c '%d:%i' "/proc/$app_pid/root/run/loopwatch/segment")
check "both containers see the same segment file ($seg_lw)" [ "$seg_lw" = "$seg_app" ]
# /proc/PID/maps: address perms offset dev inode path. The app maps the
# segment read-write, the sidecar read-only, both the same inode.
seg_ino=${seg_lw#*:}
maps_lw=$(awk -v ino="$seg_ino" '$5 == ino && $6 == "/run/loopwatch/segment" {print $2}' "/proc/$lw_pid/maps" | sort -u | tr '\n' ' ')
maps_app=$(awk -v ino="$seg_ino" '$5 == ino && $6 == "/run/loopwatch/segment" {print $2}' "/proc/$app_pid/maps" | sort -u | tr '\n' ' ')
check "the app maps that inode read-write (${maps_app:-not mapped})" grep -q '^rw.s' <<<"$maps_app"
check "the sidecar maps it read-only (${maps_lw:-not mapped})" [ "$maps_lw" = "r--s " ]
echo "the volume at /run/loopwatch in the app: $(awk '$5 == "/run/loopwatch" {print $9, $10}' "/proc/$app_pid/mountinfo")"
appeared=$(sidecar_log "loop appeared" | head -1)
[[ -n $appeared ]] || appeared='{}'
echo "sidecar: $appeared"
# The pid in the slot is the app's own-namespace pid (the runner execs
# uvicorn as the container's first process); the host pid differs, and the
# sidecar cannot see the app's /proc either way.
check "the sidecar sees the app's loop under the app's own PID (1, host PID $app_pid)" \
  "$py" -c 'import json, sys; o = json.loads(sys.argv[1]); sys.exit(not (o["pid"] == 1 and o["kind"] == "asyncio"))' "$appeared"

step "a blocking call freezes the loop"
called=$(date +%s.%N)
curl -s -m 30 -o "$work/invoice.out" -w '%{http_code}' -X POST "http://127.0.0.1:$app_port/orders/42/invoice" \
  >"$work/invoice.code" 2>/dev/null &
invoice=$!
sleep 0.5
out=$(http "$app_port" /health)
check "the app's own /health does not answer while its loop is blocked (${out%% *})" [ "${out%% *}" = 000 ]
# Not before stall_after (a /livez failing on lag alone would be wrong),
# and no later than stall_after + poll_interval + a margin.
if t=$(wait_code "$lw_port" /livez 503 10); then
  after=$(since "$called")
  check "/livez 503, ${after}s after the call (stall_after 5s, poll 100ms)" \
    awk -v t="$after" 'BEGIN {exit !(t >= 4.9 && t <= 6.6)}'
else
  fail "/livez never 503: $t"
fi
out=$(http "$lw_port" /livez)
check "/livez says why: $out" grep -Eq '^503 loop uvicorn-1 stalled [0-9.]+s \(blocked in clock_nanosleep\)$' <<<"$out"
out=$(http "$lw_port" /readyz)
check "/readyz 503 too (${out%% *})" [ "${out%% *}" = 503 ]
check "the sidecar logs the stall report" wait_log "stall report" 1 5
report=$(sidecar_log "stall report" | head -1)
[[ -n $report ]] || report='{}'
check "the report: class blocked, in clock_nanosleep, stack down to app.py's create_invoice, request in flight" \
  "$py" -c '
import json, sys
r = json.loads(sys.argv[1])
stack = r.get("stack", "")
print("  report:", {k: r.get(k) for k in ("loop", "class", "syscall", "wchan", "silent_seconds")})
print("  stack:", "\n         ".join(stack.splitlines()[:8]))
ok = (r.get("class") == "blocked" and r.get("syscall") == "clock_nanosleep"
      and "/app/app.py" in stack and "create_invoice" in stack
      and "POST /orders/42/invoice" in stack)
sys.exit(not ok)' "$report"
wait "$invoice" || true
check "the blocked request completes ($(cat "$work/invoice.code"))" [ "$(cat "$work/invoice.code")" = 200 ]
if t=$(wait_code "$lw_port" /livez 200 5); then pass "/livez 200 again"; else fail "/livez stays failing: $t"; fi
check "the sidecar logs the end of the stall" wait_log "stall ended" 1 5

step "a CPU-bound call freezes the loop"
curl -s -m 30 -o /dev/null "http://127.0.0.1:$app_port/orders/41/export" &
export_req=$!
check "the sidecar logs a second stall report" wait_log "stall report" 2 15
report=$(sidecar_log "stall report" | sed -n 2p)
[[ -n $report ]] || report='{}'
check "its class is cpu, the stack in render_export" \
  "$py" -c 'import json, sys; r = json.loads(sys.argv[1]); print("  report:", r.get("class"), r.get("loop_cpu_seconds"), "s CPU"); sys.exit(not (r.get("class") == "cpu" and "render_export" in r.get("stack", "")))' "$report"
wait "$export_req" || true
check "the sidecar logs the end of the second stall" wait_log "stall ended" 2 10

step "the app process killed"
# The app's host pid, read again now: it must still be the app's process.
app_pid=$(host_pid "$app_ctr")
[[ $app_pid =~ ^[1-9][0-9]*$ ]] || die "no pid for $app_ctr: '$app_pid'"
kill -KILL "$app_pid"
check "the sidecar logs the loop as died" wait_log "loop died" 1 10
died=$(sidecar_log "loop died" | head -1)
echo "sidecar: $died"
out=$(curl -s -m 2 -H 'Accept: application/json' "http://127.0.0.1:$lw_port/livez" || true)
[[ -n $out ]] || out='{}'
check "/livez lists the killed loop as dead" \
  "$py" -c 'import json, sys; d = json.loads(sys.argv[1]); sys.exit(not any(l["state"] == "dead" for l in d["loops"]))' "$out"
# restartPolicy Always: podman starts the app again, as the kubelet would.
check "the restarted app's loop appears" wait_log "loop appeared" 2 30
slots=$(sidecar_log "loop appeared" | "$py" -c 'import json, sys; print(" ".join(str(json.loads(l)["slot"]) for l in sys.stdin))')
check "in a new slot (slots: $slots)" "$py" -c 'import sys; s = sys.argv[1].split(); sys.exit(not (len(s) == 2 and s[0] != s[1]))' "$slots"
if t=$(wait_code "$lw_port" /livez 200 10); then pass "/livez 200 with the new loop"; else fail "/livez: $t"; fi
metrics=$(curl -s -m 2 "http://127.0.0.1:$lw_port/metrics" || true)
check "/metrics counts the death and both stalls" "$py" -c '
import re, sys
m = sys.argv[1]
def v(pat):
    x = re.search("^" + pat + r" ([0-9.e+]+)$", m, re.M)
    return float(x.group(1)) if x else 0.0
got = (v("loopwatch_loop_deaths_total"), v(r"loopwatch_stalls_total\{class=\"blocked\"\}"),
       v(r"loopwatch_stalls_total\{class=\"cpu\"\}"))
print("  deaths, blocked stalls, cpu stalls:", got)
sys.exit(got != (1.0, 1.0, 1.0))' "$metrics"

# ---------------------------------------------------------------- inject
# A Deployment with no loopwatch in it (tests/pod/orders-plain.yaml), the
# demo app's image untouched, injected by `loopwatch inject` from this build
# and played: first as the image runs it (under the Python package's
# runner, so the loops beat), then with the runner left out (the app does
# not use the library: its probes go to its own /health, as before).
lw_bin=${LOOPWATCH_BIN:-$root/build/sidecar/loopwatch}
[[ -x $lw_bin ]] || die "no loopwatch binary at $lw_bin (build first, or set LOOPWATCH_BIN)"
remove_pod
"$lw_bin" inject --all --image "$sidecar_image" -f "$root/tests/pod/orders-plain.yaml" \
  >"$work/orders-injected.yaml" 2>"$work/inject.log" || { cat "$work/inject.log"; die "loopwatch inject failed"; }
cat "$work/inject.log"

# play_injected NAME [render args...]: plays the injected Deployment
# ($injected) as pod NAME.
injected=$work/orders-injected.yaml
play_injected() {
  remove_pod  # the pod played before this one
  pod=$1
  shift
  pod_yaml=$work/$pod.yaml
  sidecar_ctr=$pod-loopwatch
  app_ctr=$pod-app
  remove_pod  # one of this name left by an earlier run
  # Fresh host ports: the last pod's may not be free again yet.
  lw_port=$(free_port)
  app_port=$(free_port)
  while [[ $app_port == "$lw_port" ]]; do app_port=$(free_port); done
  "$py" "$root/tests/pod/render_pod.py" --deployment "$injected" --name "$pod" \
    --sidecar-port "$lw_port" --app-port "$app_port" --env BILLING_LATENCY_SECONDS=8 "$@" >"$pod_yaml"
  podman kube play "$pod_yaml" >"$work/play-$pod.log" 2>&1 ||
    { cat "$work/play-$pod.log"; die "podman kube play of $pod failed"; }
}

blocking_line=$(grep -n 'BUG: blocks the event loop' "$root/examples/fastapi/app.py" | cut -d: -f1)

# app_started [NOTE]: /startupz?container=app passes within 60 s, or the
# test stops (nothing after it can pass).
app_started() {
  local t
  if t=$(wait_code "$lw_port" "/startupz?container=app" 200 60); then
    pass "/startupz?container=app 200, ${t}s after kube play${1:-}"
  else
    die "/startupz?container=app never 200: $t"
  fi
}

# app_stall ROLE_RE: a blocking call gives 503 naming a loop of ROLE_RE
# and a stall report whose stack names the blocking line of app.py.
app_stall() {
  local role_re=$1 called after out report invoice
  called=$(date +%s.%N)
  curl -s -m 30 -o /dev/null -X POST "http://127.0.0.1:$app_port/orders/42/invoice" &
  invoice=$!
  if t=$(wait_code "$lw_port" "/livez?container=app" 503 10); then
    after=$(since "$called")
    check "/livez?container=app 503, ${after}s after the blocking call" \
      awk -v t="$after" 'BEGIN {exit !(t >= 4.9 && t <= 6.6)}'
  else
    fail "/livez?container=app never 503: $t"
  fi
  out=$(http "$lw_port" "/livez?container=app")
  check "it says why: $out" grep -Eq "^503 loop $role_re stalled [0-9.]+s \(blocked in clock_nanosleep\)\$" <<<"$out"
  check "the sidecar logs the stall report" wait_log "stall report" 1 5
  report=$(sidecar_log "stall report" | head -1)
  [[ -n $report ]] || report='{}'
  printf '%s\n' "$report" | "$py" -c 'import json, sys; print("  " + json.load(sys.stdin).get("stack", "").replace("\n", "\n  ")[:900])'
  check "the report names the blocking line: app.py line $blocking_line in create_invoice" \
    "$py" -c 'import json, sys; r = json.loads(sys.argv[1]); sys.exit(not ("File \"/app/app.py\", line %s in create_invoice" % sys.argv[2] in r.get("stack", "") and r.get("class") == "blocked"))' "$report" "$blocking_line"
  wait "$invoice" || true
  if t=$(wait_code "$lw_port" "/livez?container=app" 200 5); then pass "/livez?container=app 200 again"; else fail "/livez?container=app stays failing: $t"; fi
}

step "inject: the app with the library"
play_injected loopwatch-inj
app_started
# Until the loop beats, the app's own probe answers for it.
wait_answer "$lw_port" "/livez?container=app" "200 ok: 1 loops, 1 live" 30 || true
out=$(http "$lw_port" "/livez?container=app")
check "the sidecar judges the app on its loop ($out)" [ "$out" = "200 ok: 1 loops, 1 live" ]
app_stall 'uvicorn-1'

step "inject: the app without the library"
play_injected loopwatch-inj-plain --app-command "uvicorn app:app --host 0.0.0.0 --port 8000"
app_started
if t=$(wait_code "$lw_port" "/livez?container=app" 200 30); then :; else fail "/livez?container=app: $t"; fi
out=$(http "$lw_port" "/livez?container=app")
check "no loop beats: the app's own /health answers ($out)" \
  grep -Eq "^200 ok: container app's own livez probe \(no loop of it has beaten yet\): GET http://127.0.0.1:8000/health answered 200 in " <<<"$out"
out=$(http "$lw_port" "/readyz?container=app")
check "readiness too (${out%% *})" [ "${out%% *}" = 200 ]
curl -s -m 30 -o /dev/null -X POST "http://127.0.0.1:$app_port/orders/42/invoice" &
invoice=$!
sleep 0.5
out=$(http "$lw_port" "/livez?container=app")
check "its loop blocked, its own probe times out as the kubelet's would: ${out:0:120}" \
  grep -Eq "^503 container app's own livez probe .*/health: .*after" <<<"$out"
wait "$invoice" || true
if t=$(wait_code "$lw_port" "/livez?container=app" 200 5); then pass "and passes again after"; else fail "/livez?container=app: $t"; fi
check "the sidecar saw no loop at all" [ -z "$(sidecar_log "loop appeared")" ]

# ---------------------------------------------------------------- python payload
step "python payload: images"
plain_image=loopwatch-orders-plain:0.1.0
podman build --build-arg BASE_IMAGE="$base_image" -t "$plain_image" \
  -f "$root/deploy/examples/fastapi/Dockerfile.plain" "$root" >"$work/build-plain.log" 2>&1 ||
  { tail -30 "$work/build-plain.log"; die "podman build of the plain app image failed (log: $work/build-plain.log)"; }
echo "built $plain_image: $(image_size "$plain_image")"
check "the plain app image has no loopwatch in it" \
  podman run --rm "$plain_image" python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("loopwatch") is not None)'
rm -rf "$work/payload" && mkdir -m 1777 "$work/payload"
out=$(podman run --rm -v "$work/payload:/out" "$sidecar_image" python-payload /out 2>&1) || fail "python-payload in the sidecar image: $out"
echo "$out"
check "the sidecar image carries the payload" test -f "$work/payload/loopwatch/_bootstrap/sitecustomize.py"
echo "payload size: $(du -sk "$work/payload" | cut -f1) KiB on disk ($(du -sk "$work/payload/loopwatch/_native.so" | cut -f1) KiB of it _native.so)"
"$lw_bin" inject --all --image "$sidecar_image" -f "$root/tests/pod/orders-python.yaml" \
  >"$work/orders-python-injected.yaml" 2>"$work/inject-python.log" ||
  { cat "$work/inject-python.log"; die "loopwatch inject of orders-python.yaml failed"; }
cat "$work/inject-python.log"
injected=$work/orders-python-injected.yaml
step "python payload: uvicorn"
play_injected loopwatch-py
app_started " (the payload copied in first)"
wait_answer "$lw_port" "/livez?container=app" "200 ok: 1 loops, 1 live" 30 || true
out=$(http "$lw_port" "/livez?container=app")
check "the loop of an image with no loopwatch beats ($out)" [ "$out" = "200 ok: 1 loops, 1 live" ]
status=$(podman exec "$sidecar_ctr" loopwatch status 2>&1 || true)
printf '%s\n' "$status" | sed 's/^/  /'
check "named for uvicorn, as the runner names it" grep -Eq ' uvicorn-1 +asyncio +1 +live ' <<<"$status"
app_stall 'uvicorn-1'

# gunicorn keeps its workers' heartbeat files in a temporary directory: on
# a read-only root filesystem, /dev/shm.
step "python payload: gunicorn, 2 workers"
play_injected loopwatch-py-gunicorn \
  --app-command "gunicorn -k uvicorn.workers.UvicornWorker -w 2 -b 0.0.0.0:8000 --worker-tmp-dir /dev/shm app:app"
app_started
wait_answer "$lw_port" "/livez?container=app" "200 ok: 2 loops, 2 live" 30 || true
out=$(http "$lw_port" "/livez?container=app")
check "both workers' loops beat ($out)" [ "$out" = "200 ok: 2 loops, 2 live" ]
status=$(podman exec "$sidecar_ctr" loopwatch status 2>&1 || true)
printf '%s\n' "$status" | sed 's/^/  /'
check "named gunicorn-worker-PID" [ "$(grep -Ec ' gunicorn-worker-[0-9]+ +asyncio +[0-9]+ +live ' <<<"$status")" = 2 ]
app_stall 'gunicorn-worker-[0-9]+'

# ---------------------------------------------------------------- helm chart
# The chart as `helm template` renders it, installed as far as a machine
# without an API server allows: the injector's Deployment played by podman
# with the rendered Secret's certificate and ConfigMap's settings; the
# review the API server would send for a pod of the Deployment with no
# loopwatch in it (orders-plain.yaml, labelled loopwatch.io/inject:
# enabled) sent over HTTPS, trusting only the webhook entries' caBundle
# and checking the certificate against the Service's DNS name as the API
# server does; the returned JSONPatch applied by python3-jsonpatch; the
# resulting pod played. Then the chart's `helm test` Pod, played too.
step "helm chart: the injector from the rendered chart"
helm_bin=$(cd "$root" && node --input-type=module -e \
  'import { layerTool } from "./tests/deploy/lib/layer-tool.mjs"; console.log(layerTool("helm/helm"))') ||
  die "no helm: run npm ci in $root first"
chart_yaml=$work/chart.yaml
"$helm_bin" template loopwatch "$root/helm/loopwatch" --namespace loopwatch \
  --set image.repository="${sidecar_image%:*}" --set image.tag="${sidecar_image##*:}" \
  >"$chart_yaml" 2>"$work/helm.log" || { cat "$work/helm.log"; die "helm template failed"; }
echo "helm template: $(grep -c '^kind:' "$chart_yaml") objects ($(grep '^kind:' "$chart_yaml" | cut -d' ' -f2 | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}'))"
injector_pod=loopwatch-helm-injector
injector_yaml=$work/$injector_pod.yaml
extra_pods+=("$injector_pod=$injector_yaml")
remove_pod_named "$injector_pod" "$injector_yaml"
injector_port=$(free_port)
"$py" "$root/tests/helm/play_chart.py" injector --rendered "$chart_yaml" --name "$injector_pod" \
  --port "$injector_port" >"$injector_yaml" || die "play_chart.py injector failed"
podman kube play "$injector_yaml" >"$work/play-$injector_pod.log" 2>&1 ||
  { cat "$work/play-$injector_pod.log"; die "podman kube play of the injector failed"; }
"$py" "$root/tests/helm/play_chart.py" ca --rendered "$chart_yaml" >"$work/chart-ca.crt"
svc=$("$py" "$root/tests/helm/play_chart.py" service --rendered "$chart_yaml")
# curl to the Service's name, resolved to the published port.
webhook_curl() {
  curl -s -m 5 --cacert "$work/chart-ca.crt" --resolve "$svc:$injector_port:127.0.0.1" "$@"
}
healthz=000
for _ in $(seq 1 100); do
  healthz=$(webhook_curl -o /dev/null -w '%{http_code}' "https://$svc:$injector_port/healthz" || true)
  [[ $healthz == 200 ]] && break
  sleep 0.1
done
check "the injector answers /healthz over HTTPS as $svc, trusted through caBundle ($healthz)" [ "$healthz" = 200 ]
injector_pid=$(host_pid "$injector_pod-injector")
check "the injector runs as uid 65532 with no capabilities on a read-only root" "$py" -c '
import sys
pid = sys.argv[1]
s = dict(l.split(":\t", 1) for l in open("/proc/%s/status" % pid).read().splitlines() if ":\t" in l)
root_ro = any(l.split()[4] == "/" and l.split()[5].split(",")[0] == "ro" for l in open("/proc/%s/mountinfo" % pid))
sys.exit(not (s["Uid"].split() == ["65532"] * 4 and int(s["CapEff"], 16) == 0 and root_ro))' "$injector_pid"
"$py" "$root/tests/helm/play_chart.py" review --deployment "$root/tests/pod/orders-plain.yaml" \
  --namespace shop >"$work/review.json"
code=$(webhook_curl -o "$work/response.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary "@$work/review.json" "https://$svc:$injector_port/inject" || true)
check "POST /inject of the orders pod: HTTP $code" [ "$code" = 200 ]
"$py" -c 'import json, sys; r = json.load(open(sys.argv[1]))["response"]; print("  response: allowed=%s patchType=%s patch=%d bytes of base64" % (r.get("allowed"), r.get("patchType"), len(r.get("patch", ""))))' "$work/response.json" || true
podman logs "$injector_pod-injector" 2>&1 | grep '"msg":"review"' | tail -1 | cut -c1-400 || true
injected=$work/orders-helm.yaml
"$py" "$root/tests/helm/play_chart.py" apply --deployment "$root/tests/pod/orders-plain.yaml" \
  --review "$work/review.json" --response "$work/response.json" >"$injected" ||
  die "the injector's answer could not be applied"
check "the patched pod: the chart's sidecar image, probes on 9321, the labels the PodMonitor selects" "$py" -c '
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
spec = d["spec"]["template"]["spec"]
labels = d["spec"]["template"]["metadata"]["labels"]
side = [c for c in spec.get("initContainers", []) if c["name"] == "loopwatch"]
app = [c for c in spec["containers"] if c["name"] == "app"][0]
ok = (len(side) == 1 and side[0]["image"] == sys.argv[2] and side[0].get("restartPolicy") == "Always"
      and app["livenessProbe"]["httpGet"]["port"] == 9321
      and labels.get("loopwatch.io/injected") == "true" and labels.get("loopwatch.io/sidecar") == "true")
print("  sidecar:", side[0]["image"] if side else None, " app liveness:", app["livenessProbe"]["httpGet"])
print("  labels:", {k: v for k, v in labels.items() if k.startswith("loopwatch.io/")})
sys.exit(not ok)' "$injected" "$sidecar_image"

step "helm chart: the injected pod"
play_injected loopwatch-helm-app
app_started
wait_answer "$lw_port" "/livez?container=app" "200 ok: 1 loops, 1 live" 30 || true
out=$(http "$lw_port" "/livez?container=app")
check "the sidecar judges the app on its loop ($out)" [ "$out" = "200 ok: 1 loops, 1 live" ]
app_stall 'uvicorn-1'

step "helm chart: helm test"
test_pod=loopwatch-helm-test
test_yaml=$work/$test_pod.yaml
extra_pods+=("$test_pod=$test_yaml")
remove_pod_named "$test_pod" "$test_yaml"
"$py" "$root/tests/helm/play_chart.py" test-pod --rendered "$chart_yaml" --name "$test_pod" \
  --port "$injector_port" --hosts-file "$work/$test_pod.hosts" >"$test_yaml" || die "play_chart.py test-pod failed"
podman kube play "$test_yaml" >"$work/play-$test_pod.log" 2>&1 ||
  { cat "$work/play-$test_pod.log"; die "podman kube play of the test pod failed"; }
test_rc=$(timeout 60 podman wait "$test_pod-review" 2>/dev/null || echo timeout)
podman logs "$test_pod-review" 2>&1 | sed 's/^/  /'
check "the helm test Pod exits 0 ($test_rc)" [ "$test_rc" = 0 ]

end_step
((failures == 0)) || exit 1

#!/usr/bin/env bash
# Checks that lw_beat() and lw_beat_at() make no system call: runs
# `loopwatch_beat_bench --beat-loop=N` under strace for growing N and counts
#  (1) the system calls the loop thread makes between the two marker calls
#      write(-1, "LW_BEAT_LOOP_BEGIN") and write(-1, "LW_BEAT_LOOP_END")
#      that bracket the N beats: must be 0 for every N;
#  (2) all system calls of the process, every thread, from start to exit
#      (strace -f -c): must not grow with N.
# A clock_gettime that is a real system call (a clock source without vDSO
# support) would show up in (1) too.
#
#   bench/check_no_syscalls.sh [BINARY]     default: built by scripts/bench
# Needs strace (apt-get install -y strace). Exit 0 when both hold.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-}
if [[ -z $bin ]]; then
  bin=$("$root/scripts/bench" --build-only)
fi
if ! command -v strace >/dev/null; then
  echo "check_no_syscalls: strace not found (apt-get install -y strace)" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Syscalls of the marker thread strictly between the two markers. With -f and
# -o, every line starts with the thread id; "<... resumed>" lines finish a call
# that was already counted, and "+++"/"---" lines are exits and signals.
between_markers() {
  awk '
    /LW_BEAT_LOOP_BEGIN/ { tid = $1; inside = 1; n = 0; next }
    /LW_BEAT_LOOP_END/   { if ($1 == tid) { print n; found = 1; exit } }
    inside && $1 == tid && $2 !~ /^(<\.\.\.|\+\+\+|---)/ { n++; print "  loop thread: " $0 > "/dev/stderr" }
    END { if (!found) print "no-markers" }
  ' "$1"
}

total_calls() {  # the "total" line of strace -c
  awk '$NF == "total" { print ($4 ~ /^[0-9]+$/ ? $4 : $3) }' "$1"
}

status=0
printf '%-9s %12s %28s %30s\n' mode beats "loop-thread syscalls in loop" "process syscalls (all threads)"
for mode in beat beat_at; do
  for n in 1000 1000000 10000000; do
    strace -f -qq -o "$tmp/trace" "$bin" --beat-loop="$n" --beat-mode="$mode" >"$tmp/out"
    inside=$(between_markers "$tmp/trace")
    strace -f -qq -c -o "$tmp/count" "$bin" --beat-loop="$n" --beat-mode="$mode" >/dev/null
    total=$(total_calls "$tmp/count")
    printf '%-9s %12s %28s %30s\n' "$mode" "$n" "$inside" "$total"
    grep -q "beat_count in the segment: $n\$" "$tmp/out" || {
      echo "  the segment did not record $n beats: $(cat "$tmp/out")"
      status=1
    }
    [[ $inside == 0 ]] || status=1
  done
done
if [[ $status == 0 ]]; then
  echo "PASS: no system call inside the beat loop; the process total does not grow with the beat count"
else
  echo "FAIL"
fi
exit $status

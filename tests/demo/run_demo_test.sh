#!/usr/bin/env bash
# Runs scripts/demo --no-setup against an existing build, with a short
# stall_after, and checks that its output shows the key facts: /livez turned
# 503 during the stall, the stall report's stack names the blocking line of
# examples/fastapi/app.py (in create_invoice), the loop recovered, and every
# process the demo started is gone afterwards.
#
#   tests/demo/run_demo_test.sh [BUILD_DIR]     (default: build)
#
# Needs build/sidecar/loopwatch and build/python (targets loopwatch_sidecar
# and loopwatch_python), /usr/bin/python3 with fastapi and uvicorn, and curl.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$root/build}
out=$(mktemp /tmp/loopwatch-demo-test.XXXXXX)
trap 'rm -f "$out"' EXIT

"$root/scripts/demo" --no-setup --build-dir "$build" --stall-after 2s --block 4.5 >"$out" 2>&1
rc=$?

failures=0
check() {  # check DESCRIPTION EXTENDED-REGEX
  if grep -Eq -- "$2" "$out"; then
    echo "ok:   $1"
  else
    echo "FAIL: $1 (no line matching: $2)"
    failures=$((failures + 1))
  fi
}

blocking_line=$(grep -n 'BUG: blocks the event loop' "$root/examples/fastapi/app.py" | head -1 | cut -d: -f1)
if ((rc == 0)); then echo "ok:   scripts/demo exited 0"; else echo "FAIL: scripts/demo exited $rc"; failures=$((failures + 1)); fi
check "healthy: /livez 200" '^\[t= *[0-9.]+s\] /livez 200 in [0-9.]+ ms: ok'
check "the app's /health timed out while its loop was blocked" 'app GET /health: no answer within 1 s'
check "/livez turned 503 with the reason" '/livez 503 in [0-9.]+ ms: loop uvicorn-[0-9]+ stalled [0-9.]+s \(blocked in clock_nanosleep\)'
check "a burst of probes during the stall: all 503" '100 more /livez probes while the loop is stalled: 100 answered 503,'
check "the sidecar logged the stall report" '"msg":"stall report"'
check "the report is classed blocked" '^  class +blocked'
check "the report lists the request in flight" '^    POST /orders/42/invoice \([0-9.]+ s\)'
check "the report's stack names app.py:$blocking_line in create_invoice" \
  "^=> *File \"[^\"]*/examples/fastapi/app.py\", line $blocking_line in create_invoice"
check "the blocking source line is shown" 'time\.sleep\(BILLING_LATENCY\)'
check "the blocking request completed" 'app POST /orders/42/invoice: 200 after'
check "the sidecar logged the end of the stall" '"msg":"stall ended".*"duration_seconds":[4-9]\.'
check "metrics counted the stall" '^loopwatch_stall_duration_seconds_count\{class="blocked"\} 1$'
check "the demo said OK" '^Demo OK\.'
# Recovery: a /livez 200 after the recovery header.
if sed -n '/^== 4\. Recovery/,$p' "$out" | grep -Eq '/livez 200 in'; then
  echo "ok:   /livez 200 again after the stall"
else
  echo "FAIL: no /livez 200 after the stall"; failures=$((failures + 1))
fi
# No colour: stdout is not a terminal.
if grep -q $'\e' "$out"; then echo "FAIL: escape sequences in output that is not a terminal"; failures=$((failures + 1)); fi
# Everything stopped: the pids on the "stopped:" line are gone.
stopped=$(grep '^stopped:' "$out" | grep -o 'pid [0-9]*' | cut -d' ' -f2)
if [[ -z $stopped ]]; then
  echo "FAIL: no 'stopped:' line"; failures=$((failures + 1))
fi
for pid in $stopped; do
  if kill -0 "$pid" 2>/dev/null; then
    echo "FAIL: pid $pid ($(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null)) still runs after the demo"
    failures=$((failures + 1))
  fi
done
[[ -n $stopped ]] && echo "ok:   the demo's processes are gone ($(tr '\n' ' ' <<<"$stopped"))"

if ((failures)); then
  echo
  echo "$failures checks failed; the demo's output:"
  cat "$out"
  exit 1
fi
echo "all checks passed"

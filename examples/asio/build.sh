#!/bin/sh
# Builds the asio example against an installed libloopwatch, as a user would:
# install the library into PREFIX, then build the example with
# find_package(loopwatch CONFIG).
#
#   examples/asio/build.sh BUILD_DIR PREFIX OUT_DIR
#
# BUILD_DIR  a build tree of this project. Reused if it exists (only the two
#            library targets are built); otherwise configured with the sidecar,
#            tests and benchmarks off.
# PREFIX     where the library is installed (its runtime and dev components).
# OUT_DIR    build tree of the example; the binary is OUT_DIR/asio_example,
#            and its path is the only line this script prints on stdout
#            (build logs go to stderr).
set -eu

if [ $# -ne 3 ]; then
  echo "usage: $0 BUILD_DIR PREFIX OUT_DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$1 prefix=$2 out=$3
jobs=$(nproc 2>/dev/null || echo 2)

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DLOOPWATCH_BUILD_SIDECAR=OFF \
    -DLOOPWATCH_BUILD_TESTS=OFF -DLOOPWATCH_BUILD_BENCH=OFF >&2
fi
cmake --build "$build" --target loopwatch loopwatch_static -j "$jobs" >&2
# Components, not a full install: a reused tree may hold unbuilt targets.
for component in loopwatch_runtime loopwatch_dev; do
  cmake --install "$build" --prefix "$prefix" --component "$component" >&2
done
cmake -S "$here" -B "$out" -DCMAKE_PREFIX_PATH="$(cd "$prefix" && pwd)" >&2
cmake --build "$out" -j "$jobs" >&2
echo "$(cd "$out" && pwd)/asio_example"

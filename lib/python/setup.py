# SPDX-License-Identifier: Apache-2.0
"""Builds loopwatch._native from the C core in ../src and ../include (the
same sources as libloopwatch) plus src/ (_native.c and its parts).
Metadata: pyproject.toml."""

import os
import re

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.dirname(HERE)  # lib/: the C core


def core_version():
    """MAJOR.MINOR.PATCH from loopwatch.h: one version for C and Python."""
    with open(os.path.join(LIB, "include", "loopwatch", "loopwatch.h")) as f:
        text = f.read()
    parts = [re.search(r"#define LW_VERSION_%s (\d+)" % p, text).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


# The C core: the same files as libloopwatch (lib/CMakeLists.txt).
CORE_SOURCES = ["attach.c", "loopwatch.c", "parse_duration.c", "redact_query.c", "segment.c", "syscall_names.c", "watchdog.c"]


def rel(*parts):
    # Relative to setup.py, which setuptools wants for sources.
    return os.path.relpath(os.path.join(*parts), HERE)


if not os.path.isfile(os.path.join(LIB, "src", "loopwatch.c")):
    raise SystemExit("loopwatch: the C core (lib/src) is not next to lib/python; "
                     "build from a checkout of the repository")

native = Extension(
    "loopwatch._native",
    sources=[rel("src", c) for c in ("_native.c", "pyruntime.c", "gil.c", "requests.c")] +
            [rel(LIB, "src", c) for c in CORE_SOURCES],
    include_dirs=[rel(LIB, "include"), rel(LIB, "src")],
    # The core's symbols stay inside this module: it may share a process
    # with a libloopwatch.so that another extension loaded.
    define_macros=[("_GNU_SOURCE", None), ("LOOPWATCH_STATIC_DEFINE", None)],
    extra_compile_args=["-std=gnu11", "-fvisibility=hidden", "-O2",
                        "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                        "-Wno-unused-parameter", "-Wno-cast-function-type"],
    extra_link_args=["-pthread"],
)



class one_build_for_every_python(build_ext):
    """`_native.so`, not `_native.cpython-311-x86_64-linux-gnu.so`: the module
    uses only what CPython 3.8 to 3.13 share (see src/pyruntime.c), and every
    one of them imports a plain `.so`. The same files serve all six."""

    def get_ext_filename(self, ext_name):
        return os.path.join(*ext_name.split(".")) + ".so"


setup(version=core_version(), ext_modules=[native],
      cmdclass={"build_ext": one_build_for_every_python})

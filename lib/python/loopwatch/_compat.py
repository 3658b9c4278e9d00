# SPDX-License-Identifier: Apache-2.0
"""Which Pythons the one build of loopwatch._native serves: CPython 3.8 to
3.13 with the GIL, release builds, glibc, x86-64 (see src/pyruntime.c for why
one build loads on all of them). Any other gets a package that does nothing,
with one line saying why, never an exception."""

import os
import sys
from typing import Optional

FIRST, LAST = (3, 8), (3, 13)


def unsupported() -> Optional[str]:
    """Why this Python cannot load loopwatch._native, or None."""
    version = "%d.%d.%d" % tuple(sys.version_info[:3])
    if sys.implementation.name != "cpython":
        return "%s %s is not CPython" % (sys.implementation.name, version)
    if not FIRST <= sys.version_info[:2] <= LAST:
        return "CPython %s: this build serves %d.%d to %d.%d" % ((version,) + FIRST + LAST)
    if sys.version_info[:2] >= (3, 13):
        import sysconfig
        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            return "CPython %s is a free-threaded build (objects are laid out otherwise)" % version
    if hasattr(sys, "gettotalrefcount"):
        return "CPython %s is a debug build (objects are laid out otherwise)" % version
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        libc = None
    if not libc:
        return "this Python does not run on glibc (musl?): the module is built for glibc"
    machine = os.uname().machine
    if machine != "x86_64":
        return "this machine is %s: the module is built for x86-64" % machine
    return None

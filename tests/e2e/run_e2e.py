# SPDX-License-Identifier: Apache-2.0
"""ctest's entry point of the pytest suites: runs pytest on this directory
(or on the directory given first) with the given arguments, or exits 77 (ctest: skipped) when the
Python running it has no pytest (Debian: python3-pytest)."""

import os
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree

try:
    import pytest
except ImportError:
    print("e2e_sidecar: skipped, %s has no pytest (apt-get install python3-pytest)"
          % sys.executable)
    sys.exit(77)

if __name__ == "__main__":
    # run_e2e.py [DIR] [PYTEST ARGS]: DIR defaults to this directory.
    args = sys.argv[1:]
    target = os.path.dirname(os.path.abspath(__file__))
    if args and os.path.isdir(args[0]):
        target = args.pop(0)
    sys.exit(pytest.main([target, *args]))

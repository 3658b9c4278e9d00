# SPDX-License-Identifier: Apache-2.0
"""ctest's entry point of the pytest suites (tests/e2e_sidecar,
tests/e2e_python, tests/python/unit, tests/deploy/monitoring):

    run_pytest.py DIR [PYTEST ARGS]

runs pytest on DIR, or exits 77 (ctest: skipped) when the Python running it
has no pytest (Debian: python3-pytest)."""

import os
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree

try:
    import pytest
except ImportError:
    print("%s: skipped, %s has no pytest (apt-get install python3-pytest)"
          % (" ".join(sys.argv[1:2]) or "pytest", sys.executable))
    sys.exit(77)

if __name__ == "__main__":
    if len(sys.argv) < 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: run_pytest.py DIR [PYTEST ARGS]")
    sys.exit(pytest.main([sys.argv[1], *sys.argv[2:]]))

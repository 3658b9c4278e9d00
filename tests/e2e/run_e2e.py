# SPDX-License-Identifier: Apache-2.0
"""ctest's entry point of the end-to-end tests: runs pytest on this
directory with the given arguments, or exits 77 (ctest: skipped) when the
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
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(pytest.main([here, *sys.argv[1:]]))

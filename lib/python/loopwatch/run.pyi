# SPDX-License-Identifier: Apache-2.0
from typing import List, Optional

def main(argv: Optional[List[str]] = ...) -> int: ...

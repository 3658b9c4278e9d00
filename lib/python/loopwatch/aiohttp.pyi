# SPDX-License-Identifier: Apache-2.0
from typing import Any, Awaitable, Callable

__all__ = ["middleware"]

async def middleware(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any: ...


"""The ASGI app aioquic's example server runs for the interop cases: files from a folder.

aioquic's own ``demo:app`` needs starlette; this serves ``$INTEROP_WWW/<name>``
and nothing else, so the QUIC and hq-interop handling stay aioquic's.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["app"]


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Answer a GET with the named file's bytes, or 404."""
    root = os.environ["INTEROP_WWW"]
    name = str(scope.get("path", "")).lstrip("/")
    path = os.path.join(root, name)
    body, status = b"not found", 404
    # Only plain names in the folder: no subfolders, no way out of it.
    if name and "/" not in name and not name.startswith(".") and os.path.isfile(path):
        with open(path, "rb") as f:
            body, status = f.read(), 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})

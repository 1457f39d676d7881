"""The QUIC interop runner's hq-interop protocol, on the blocking harness interface.

A client opens a bidirectional stream, sends ``GET /path\\r\\n`` and finishes
it; the server answers with the file's bytes and FIN, or resets the stream
with :data:`NOT_FOUND` for an unknown path. ALPN is ``hq-interop``.
"""

from __future__ import annotations

from typing import Any

import sansquic

__all__ = ["ALPN", "NOT_FOUND", "get", "parse_request", "serve_files"]

ALPN = "hq-interop"
NOT_FOUND = 0x10  # H3_REQUEST_REJECTED's value, used here as "no such file"
_MAX_REQUEST = 1024


def parse_request(request: bytes) -> str | None:
    """The path of a well-formed ``GET /path\\r\\n`` request, else None."""
    if not request.startswith(b"GET /") or not request.endswith(b"\r\n"):
        return None
    try:
        return request[4:-2].decode("ascii")
    except UnicodeDecodeError:
        return None


def serve_files(files: dict[str, bytes]) -> Any:
    """A connection handler answering hq-interop requests for ``files`` (path -> bytes)."""

    def handler(conn: Any) -> None:
        for stream in conn:
            request = bytearray()
            while len(request) <= _MAX_REQUEST and (chunk := stream.receive(timeout=10)):
                request += chunk
            body = files.get(parse_request(bytes(request)) or "")
            if body is None:
                stream.reset(NOT_FOUND)
            else:
                stream.send(body)
                stream.finish()

    return handler


def get(conn: Any, path: str, timeout: float = 30.0) -> bytes:
    """Fetch ``path`` over hq-interop; raises StreamResetError for an unknown path."""
    stream = conn.open_stream()
    stream.send(f"GET {path}\r\n".encode("ascii"))
    stream.finish()
    body = bytearray()
    while chunk := stream.receive(timeout=timeout):
        body += chunk
    return bytes(body)


CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True, alpn=(ALPN,))

"""Just enough HTTP/3 (RFC 9114) on sansquic to fetch and serve files with an h3-only peer.

Debian packages ngtcp2's HTTP/3 examples, not its hq-interop ones, so to
move files with them sansquic's side speaks h3: a control stream with an
empty SETTINGS frame (no QPACK dynamic table, so no blocked streams), one
GET per request stream, a HEADERS frame and DATA frames back. Field
sections are QPACK-coded by pylsqpack (aioquic's own dependency). Server
push, trailers, GOAWAY and the rest are out of scope: the interop cases do
not need them.
"""

from __future__ import annotations

import threading
from typing import Any

import pylsqpack

from .wire import varint

__all__ = ["ALPN", "H3Error", "get_all", "serve_files"]

ALPN = "h3"
_DATA, _HEADERS, _SETTINGS = 0x00, 0x01, 0x04
_CONTROL_STREAM = 0x00
_MAX_FIELD_SECTION = 64 * 1024
_TIMEOUT = 60.0


class H3Error(Exception):
    """The peer sent HTTP/3 this module does not understand."""


def _encode_varint(value: int) -> bytes:
    for size, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            return (value | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise ValueError(f"{value} does not fit a varint")


def frame(kind: int, payload: bytes) -> bytes:
    """One HTTP/3 frame."""
    return _encode_varint(kind) + _encode_varint(len(payload)) + payload


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a request or response stream into its frames."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos < len(data):
            kind, pos = varint(data, pos)
            length, pos = varint(data, pos)
            if pos + length > len(data):
                raise H3Error("frame cut short")
            out.append((kind, data[pos : pos + length]))
            pos += length
    except ValueError as exc:
        raise H3Error(str(exc)) from None
    return out


def _open_control(conn: Any) -> Any:
    control = conn.open_stream(bidirectional=False)
    control.send(_encode_varint(_CONTROL_STREAM) + frame(_SETTINGS, b""))
    return control  # never finished: closing it is a connection error (RFC 9114 6.2.1)


def _read_all(stream: Any) -> bytes:
    data = bytearray()
    while chunk := stream.receive(timeout=_TIMEOUT):
        data += chunk
    return bytes(data)


def _decode(decoder: Any, stream_id: int, block: bytes) -> dict[bytes, bytes]:
    try:
        _, headers = decoder.feed_header(stream_id, block)
    except (pylsqpack.DecompressionFailed, pylsqpack.StreamBlocked) as exc:
        raise H3Error(f"QPACK: {exc!r}") from None
    return dict(headers)


def get_all(conn: Any, paths: list[str], authority: str = "localhost") -> dict[str, bytes]:
    """GET every path at once, each on its own request stream; path -> body.

    Call it once per connection (it opens the connection's control stream);
    any status but 200 raises :class:`H3Error`.
    """
    _open_control(conn)
    encoder, decoder = pylsqpack.Encoder(), pylsqpack.Decoder(0, 0)
    streams = []
    for path in paths:
        stream = conn.open_stream()
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        _, block = encoder.encode(stream.id, fields)
        stream.send(frame(_HEADERS, block))
        stream.finish()
        streams.append((path, stream))
    bodies: dict[str, bytes] = {}
    for path, stream in streams:
        status, body = b"", bytearray()
        for kind, payload in frames(_read_all(stream)):
            if kind == _HEADERS and not status:
                status = _decode(decoder, stream.id, payload).get(b":status", b"?")
            elif kind == _DATA:
                body += payload
        if status != b"200":
            raise H3Error(f"GET {path}: status {status.decode(errors='replace')}")
        bodies[path] = bytes(body)
    return bodies


def serve_files(files: dict[str, bytes]) -> Any:
    """A connection handler answering h3 GETs for ``files`` (path -> bytes)."""

    def handler(conn: Any) -> None:
        _open_control(conn)
        encoder, decoder = pylsqpack.Encoder(), pylsqpack.Decoder(0, 0)
        lock = threading.Lock()
        for stream in conn:
            if stream.id & 0x2:
                continue  # the peer's control and QPACK streams: nothing here needs them
            threading.Thread(
                target=_answer, args=(stream, files, encoder, decoder, lock), daemon=True
            ).start()

    return handler


def _answer(
    stream: Any, files: dict[str, bytes], encoder: Any, decoder: Any, lock: threading.Lock
) -> None:
    try:
        request = _read_all(stream)
        with lock:
            path = b""
            for kind, payload in frames(request[: _MAX_FIELD_SECTION + 16]):
                if kind == _HEADERS:
                    path = _decode(decoder, stream.id, payload).get(b":path", b"")
                    break
            body = files.get(path.decode(errors="replace"))
            status = b"200" if body is not None else b"404"
            _, block = encoder.encode(stream.id, [(b":status", status)])
        stream.send(frame(_HEADERS, block) + frame(_DATA, body or b""))
        stream.finish()
    except Exception:
        # The connection is going away or the request was garbage: the
        # client's check (bytes compared) is what reports it.
        return

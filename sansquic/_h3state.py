"""The HTTP/3 layer's bookkeeping: its transport protocol, per-stream and per-session
records, and small helpers (``sansquic/_h3.py`` is the layer itself)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from . import _h3wire as w
from ._errors import LocalProtocolError
from ._wtflow import SessionFlow

__all__ = ["H3Transport"]


class H3Transport(Protocol):
    """What the layer needs of the QUIC connection below it (a ``Connection`` is one)."""

    def open_stream(self, bidirectional: bool = True, priority: int = ...) -> int: ...

    def send(self, stream_id: int, data: bytes, end: bool = False) -> int: ...

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes: ...

    def reset(self, stream_id: int, error_code: int = 0) -> None: ...

    def stop(self, stream_id: int, error_code: int = 0) -> None: ...

    def send_datagram(self, data: bytes) -> None: ...

    def close(self, error_code: int = 0, reason: str = "") -> None: ...


class _Kind(enum.Enum):
    UNI_TYPE = "uni-type"  # a peer uni stream whose type varint is still coming
    CONTROL = "control"
    IGNORED = "ignored"  # QPACK streams (no dynamic table) and unknown types
    WT_HEADER = "wt-header"  # a WebTransport stream whose session id is still coming
    WT = "wt"  # session data
    REQUEST = "request"  # a bidi stream read as HTTP/3 frames
    SESSION = "session"  # a CONNECT stream: DATA frames carrying capsules


class _Stream:
    __slots__ = (
        "capsules",
        "frames",
        "held",
        "id",
        "kind",
        "recv_done",
        "send_done",
        "session",
        "varint",
    )

    def __init__(self, stream_id: int, kind: _Kind) -> None:
        self.id = stream_id
        self.kind = kind
        self.varint = w.VarintReader()
        self.frames = w.FrameReader(signal=w.WT_BIDI_SIGNAL)
        self.capsules = w.CapsuleReader()
        self.session = -1
        self.held: list[tuple[bytes, bool]] = []
        # Which directions are over; the record goes once both are (a uni stream has one).
        self.recv_done = self.send_done = False


#: Not-yet-done peer stream ids a :class:`_DoneSet` keeps below the highest one seen.
MAX_PENDING = 1 << 14


class _TooManyPending(Exception):
    """The peer left more streams unfinished below its newest than a _DoneSet keeps."""


class _DoneSet:
    """Peer stream ids done with, kept small: per kind, every id below ``next`` that
    is not in ``pending`` is done. Storing the (few) unfinished ids rather than the
    finished ones keeps it small when one stream (a session's CONNECT) stays open
    while thousands after it finish."""

    def __init__(self) -> None:
        self._next = [0, 1, 2, 3]  # by stream id & 3, the id above the highest seen done
        self._pending: set[int] = set()  # ids below their kind's next, not done

    def add(self, sid: int) -> None:
        """Mark ``sid`` done; raises _TooManyPending past MAX_PENDING unfinished ids."""
        kind = sid & 3
        start = self._next[kind]
        if sid < start:
            self._pending.discard(sid)
            return
        if len(self._pending) + (sid - start) // 4 > MAX_PENDING:
            raise _TooManyPending(f"more than {MAX_PENDING} unfinished streams below {sid}")
        self._pending.update(range(start, sid, 4))
        self._next[kind] = sid + 4

    def stored(self) -> int:
        """How many ids it holds in memory (for tests of its bound)."""
        return len(self._pending)

    def __contains__(self, sid: int) -> bool:
        return sid < self._next[sid & 3] and sid not in self._pending


class _Session:
    __slots__ = ("draining", "flow", "id", "open", "path", "streams")

    def __init__(self, session_id: int, path: str) -> None:
        self.id = session_id
        self.path = path
        self.open = False
        self.streams: set[int] = set()
        # Flow control, once both sides' SETTINGS turned it on (None: off).
        self.flow: SessionFlow | None = None
        self.draining = False  # told to wind down (drain capsule or GOAWAY)


def _is_bidi(stream_id: int) -> bool:
    return not stream_id & 2


def _token(fields: Mapping[str, str], path: str, query_key: str) -> bytes:
    auth = fields.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip().encode()
    values = parse_qs(urlsplit(path).query).get(query_key)
    return values[0].encode() if values else b""


def _without_token(path: str, query_key: str) -> str:
    """``path`` without its ``query_key`` parameter: the token is a secret, and the
    path reaches the application (and its logs)."""
    head, sep, query = path.partition("?")
    if not sep:
        return path
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != query_key]
    return head + ("?" + urlencode(kept) if kept else "")


def _wt_code(code: int) -> int:
    if not isinstance(code, int) or not 0 <= code < 1 << 32:
        raise LocalProtocolError(f"a WebTransport error code is 0 to 2**32 - 1, not {code!r}")
    return w.wt_error_to_h3(code)


def _check_fields(fields: Sequence[tuple[str, str]]) -> None:
    for name, value in fields:
        try:
            raw = (name + value).encode("latin-1")
        except (UnicodeEncodeError, TypeError, AttributeError):
            raise LocalProtocolError(f"header {name!r} is not latin-1 text") from None
        if b"\r" in raw or b"\n" in raw or b"\0" in raw or not name or name != name.lower():
            raise LocalProtocolError(f"header {name!r} must be lower-case, without CR/LF/NUL")

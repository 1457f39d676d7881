"""Stream bookkeeping: id allocation, per-stream records and receive buffers."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from ._errors import LocalProtocolError
from ._state import RECV_TERMINAL, SEND_TERMINAL, RecvState, SendState

DEFAULT_PRIORITY = 128  # Priority.NORMAL

__all__ = [
    "NO_BYTES",
    "ReceiveBuffer",
    "SendQueue",
    "StreamRecord",
    "StreamTable",
    "fillable",
    "is_bidirectional",
    "is_client_initiated",
]


def is_client_initiated(stream_id: int) -> bool:
    """Stream ids with bit 0 clear are opened by the client (RFC 9000 section 2.1)."""
    return not stream_id & 1


def is_bidirectional(stream_id: int) -> bool:
    """Stream ids with bit 1 clear are bidirectional."""
    return not stream_id & 2


class ReceiveBuffer:
    """A queue of bytes in chunks: appends never copy, and taking part of a chunk
    slices a memoryview instead of copying the rest (which turned quadratic when
    large writes were handed out a packet or two at a time).

    The chunk deque exists only while bytes are queued: an empty deque costs
    760 bytes, and every idle stream has two buffers.
    """

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] | None = None
        self.size = 0

    def append(self, data: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = deque()
        chunks.append(data)
        self.size += len(data)

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` (all when negative)."""
        chunks = self._chunks
        if chunks is None:
            return b""
        if max_bytes < 0 or max_bytes >= self.size:
            head = chunks[0] if len(chunks) == 1 else None
            data = head if isinstance(head, bytes) else b"".join(chunks)
            self.clear()
            return data
        out: list[bytes | memoryview] = []
        need = max_bytes
        while need:
            head = chunks[0]
            if len(head) <= need:
                out.append(chunks.popleft())
                need -= len(head)
            else:
                view = head if isinstance(head, memoryview) else memoryview(head)
                out.append(view[:need])
                chunks[0] = view[need:]
                need = 0
        self.size -= max_bytes
        return b"".join(out)

    def clear(self) -> None:
        self._chunks = None
        self.size = 0


class _NoBytes(ReceiveBuffer):
    """The one empty buffer that every stream holding no bytes shares, so that an
    idle stream keeps no buffer object of its own. It refuses bytes: a holder swaps
    in a real buffer first (:func:`fillable`) and back once drained."""

    __slots__ = ()

    def append(self, data: bytes) -> None:
        raise AssertionError("the shared empty buffer takes no bytes: use fillable()")


#: The shared empty :class:`ReceiveBuffer` (see :class:`_NoBytes`).
NO_BYTES: ReceiveBuffer = _NoBytes()


class _HoldsBytes(Protocol):
    buffer: ReceiveBuffer


def fillable(holder: _HoldsBytes) -> ReceiveBuffer:
    """``holder``'s buffer, made its own first if it was the shared empty one."""
    buffer = holder.buffer
    if buffer is NO_BYTES:
        buffer = holder.buffer = ReceiveBuffer()
    return buffer


class SendQueue:
    """One stream's bytes waiting in the core, and whether a FIN follows them."""

    __slots__ = ("buffer", "fin", "priority", "queued")

    def __init__(self, priority: int) -> None:
        # The same chunked byte queue serves both directions (NO_BYTES while empty).
        self.buffer = NO_BYTES
        self.fin = False
        self.priority = priority
        self.queued = False  # in the scheduler's round-robin for its priority


class StreamRecord:
    """What the core keeps for one live stream."""

    __slots__ = (
        "buffer",
        "outgoing",
        "readable_signalled",
        "recv",
        "send",
        "stop_code",
        "stream_id",
    )

    def __init__(self, stream_id: int, send: SendState, recv: RecvState, priority: int) -> None:
        self.stream_id = stream_id
        self.send = send
        self.recv = recv
        self.buffer = NO_BYTES  # its own ReceiveBuffer while bytes wait to be read
        # Bytes queued in the core for sending (None: the stream has no sending half).
        self.outgoing = None if send is SendState.NONE else SendQueue(priority)
        # Edge trigger for StreamReadable: set when announced, cleared when drained.
        self.readable_signalled = False
        # The peer's STOP_SENDING code, for the StreamStoppedError a later send raises.
        self.stop_code = 0

    @property
    def done(self) -> bool:
        """Both directions over, and nothing left in the core to hand the engine."""
        outgoing = self.outgoing
        return (
            self.send in SEND_TERMINAL
            and self.recv in RECV_TERMINAL
            and (outgoing is None or not outgoing.queued)
        )


class StreamTable:
    """Live stream records, plus enough history to tell closed ids from unknown ones.

    Ids are never reused, so a stream is *closed* when its id was allocated
    (locally) or seen (from the peer) and its record is gone. Peer ids may
    arrive out of order; the ids skipped below the highest seen are kept in
    a set, bounded by the stream credit this side grants.
    """

    __slots__ = ("_is_client", "_next_local", "_next_peer", "_peer_skipped", "records")

    def __init__(self, *, is_client: bool) -> None:
        self._is_client = is_client
        self.records: dict[int, StreamRecord] = {}
        base = 0 if is_client else 1
        # Indexed by bidirectional (False: 0, True: 1): two-item lists, not dicts,
        # which cost three times as much on every connection.
        self._next_local = [base | 2, base]
        self._next_peer = [(base ^ 1) | 2, base ^ 1]
        self._peer_skipped: set[int] = set()

    def opened_local(self, bidirectional: bool) -> int:
        """How many streams of this kind this side has opened."""
        return self._next_local[bidirectional] // 4

    def is_local(self, stream_id: int) -> bool:
        return is_client_initiated(stream_id) == self._is_client

    def open_local(self, bidirectional: bool, priority: int) -> StreamRecord:
        stream_id = self._next_local[bidirectional]
        self._next_local[bidirectional] = stream_id + 4
        record = StreamRecord(
            stream_id,
            SendState.OPEN,
            RecvState.OPEN if bidirectional else RecvState.NONE,
            priority,
        )
        self.records[stream_id] = record
        return record

    def lookup(self, stream_id: int) -> StreamRecord | None:
        """Return the live record, ``None`` for a closed stream; raise for an unknown id."""
        record = self.records.get(stream_id)
        if record is not None:
            return record
        if not isinstance(stream_id, int) or isinstance(stream_id, bool) or stream_id < 0:
            raise LocalProtocolError(f"{stream_id!r} is not a stream id")
        bidi = is_bidirectional(stream_id)
        if self.is_local(stream_id):
            if stream_id < self._next_local[bidi]:
                return None
            raise LocalProtocolError(f"stream {stream_id} was never opened by this side")
        if stream_id < self._next_peer[bidi] and stream_id not in self._peer_skipped:
            return None
        raise LocalProtocolError(f"stream {stream_id} was never opened by the peer")

    def peer_record(self, stream_id: int) -> tuple[StreamRecord | None, bool]:
        """The record for an id the engine reported; (record, newly opened by the peer).

        ``None`` means the stream is closed and the report is stale.
        """
        record = self.records.get(stream_id)
        if record is not None or self.is_local(stream_id):
            return record, False
        bidi = is_bidirectional(stream_id)
        next_id = self._next_peer[bidi]
        if stream_id >= next_id:
            self._peer_skipped.update(range(next_id, stream_id, 4))
            self._next_peer[bidi] = stream_id + 4
        elif stream_id in self._peer_skipped:
            self._peer_skipped.discard(stream_id)
        else:
            return None, False
        send = SendState.OPEN if bidi else SendState.NONE
        record = StreamRecord(stream_id, send, RecvState.OPEN, DEFAULT_PRIORITY)
        self.records[stream_id] = record
        return record, True

    def drop_if_done(self, record: StreamRecord) -> None:
        if record.done:
            del self.records[record.stream_id]

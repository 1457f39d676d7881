"""Many byte streams and datagrams over one WebSocket, as a sans-IO state machine.

The runtime feeds every binary message in (:meth:`Mux.receive_message`) and
writes out :meth:`Mux.messages_to_send`; commands (``open_stream``, ``send``,
``finish``, ...) only queue frames. Each stream has its own flow-control window
(CREDIT frames), so a slow reader holds at most ``window`` bytes per stream.
Queries answer what a waiting task needs, and return None for "wait"; the keys
that :meth:`receive_message` returns name what to wake, as
:meth:`sansquic.Dispatcher.process` does.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable

from .._errors import (
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
    StreamResetError,
    StreamStoppedError,
)
from ._frames import MAX_U32, Frame, FrameError, FrameKind, encode_frame, parse_frame

__all__ = ["INITIAL_WINDOW", "MAX_FRAME_DATA", "Mux"]

#: Bytes a sender may send on a new stream before the first CREDIT (both sides assume it).
INITIAL_WINDOW = 256 * 1024
#: The largest DATA body one message carries (larger sends are split).
MAX_FRAME_DATA = 16 * 1024
_STOPPED_MEMORY = 1024  # peer-stopped stream ids remembered after they are forgotten
PROTOCOL_ERROR = 1002  # the WebSocket close code for a peer's violation (RFC 6455 7.4.1)


class _Stream:
    __slots__ = (
        "buffer",
        "can_receive",
        "can_send",
        "credit",
        "limit",
        "received",
        "recv_done",
        "recv_end",
        "reset_code",
        "send_done",
        "unacked",
    )

    def __init__(self, *, can_send: bool, can_receive: bool, window: int) -> None:
        # Both sides assume the same window, so no frame needs to announce it.
        self.can_send, self.can_receive = can_send, can_receive
        self.credit = INITIAL_WINDOW  # what the peer lets this side send
        self.send_done = not can_send
        self.buffer = bytearray()
        self.received = 0
        self.limit = window  # total bytes the peer may send (grows with CREDIT)
        self.unacked = 0  # read by the application, not yet credited back
        self.recv_end = False
        self.reset_code: int | None = None
        self.recv_done = not can_receive  # the application saw the end (or stopped)


def _check_code(code: int) -> None:
    if not 0 <= code <= MAX_U32:
        raise LocalProtocolError(f"a code must fit 4 bytes, not {code}")


class Mux:
    """One side (``client`` or not) of the multiplexing over a WebSocket."""

    def __init__(
        self,
        *,
        client: bool,
        max_streams: int = 1000,
        max_datagrams: int = 64,
    ) -> None:
        self.client = client
        self._window = INITIAL_WINDOW
        self._max_streams = max_streams
        self._max_datagrams = max_datagrams
        self._streams: dict[int, _Stream] = {}
        self._next_own = {False: 0 if client else 1, True: 2 if client else 3}  # by "uni"
        self._next_peer = {False: 1 if client else 0, True: 3 if client else 2}
        self._incoming: deque[int] = deque()
        self._datagrams: deque[bytes] = deque()
        self._stopped: OrderedDict[int, int] = OrderedDict()
        self._out: list[bytes] = []
        #: Why the mux ended (None while open); every query raises it from then on.
        self.closed: ConnectionClosed | None = None

    # -- commands --------------------------------------------------------------------

    def open_stream(self, bidirectional: bool = True) -> int:
        """A new stream's id; the peer hears of it with the first data or FIN.
        Next: :meth:`send`."""
        self._raise_if_closed()
        uni = not bidirectional
        stream_id = self._next_own[uni]
        if stream_id > MAX_U32:
            raise LocalProtocolError("no stream ids left on this connection")
        self._next_own[uni] += 4
        self._streams[stream_id] = _Stream(can_send=True, can_receive=not uni, window=self._window)
        return stream_id

    def _sending(self, stream_id: int) -> _Stream | None:
        """The stream to send on; None once this side's sending ended (after the
        peer stopped it: raises StreamStoppedError)."""
        self._raise_if_closed()
        if stream_id in self._stopped:
            raise StreamStoppedError(stream_id, self._stopped[stream_id])
        stream = self._streams.get(stream_id)
        if stream is None:
            if not self._is_known(stream_id):
                raise LocalProtocolError(f"stream {stream_id} does not exist")
            raise LocalProtocolError(f"stream {stream_id} is finished")
        if not stream.can_send:
            raise LocalProtocolError(f"stream {stream_id} is receive-only")
        if stream.send_done:
            raise LocalProtocolError(f"stream {stream_id} is finished")
        return stream

    def send_capacity(self, stream_id: int) -> int:
        """How many bytes :meth:`send` takes now (0: wait for "write"); raises
        ``StreamStoppedError`` once the peer stopped the stream."""
        stream = self._sending(stream_id)
        assert stream is not None
        return stream.credit

    def send(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as the stream's credit allows; how many bytes.
        Next: :meth:`messages_to_send`, then more :meth:`send` or :meth:`finish`."""
        stream = self._sending(stream_id)
        assert stream is not None
        view = memoryview(data).cast("B")
        taken = min(len(view), stream.credit)
        for start in range(0, taken, MAX_FRAME_DATA):
            chunk = bytes(view[start : min(taken, start + MAX_FRAME_DATA)])
            self._queue(Frame(kind=FrameKind.DATA, stream_id=stream_id, data=chunk))
        stream.credit -= taken
        return taken

    def finish(self, stream_id: int) -> None:
        """End this side's sending (FIN); a stream the peer stopped is left as it is."""
        self._raise_if_closed()
        if stream_id in self._stopped:
            return  # the peer stopped it: this side reset it already
        stream = self._sending(stream_id)
        assert stream is not None
        stream.send_done = True
        self._queue(Frame(kind=FrameKind.FIN, stream_id=stream_id))
        self._maybe_forget(stream_id, stream)

    def reset(self, stream_id: int, code: int = 0) -> None:
        """Abandon this side's sending: the peer's reads raise ``StreamResetError``."""
        _check_code(code)
        stream = self._sending(stream_id)
        assert stream is not None
        stream.send_done = True
        self._queue(Frame(kind=FrameKind.RESET, stream_id=stream_id, number=code))
        self._maybe_forget(stream_id, stream)

    def stop(self, stream_id: int, code: int = 0) -> None:
        """Ask the peer to stop sending; what arrives from now on is dropped."""
        _check_code(code)
        self._raise_if_closed()
        stream = self._streams.get(stream_id)
        if stream is None or not stream.can_receive:
            if stream is None and self._is_known(stream_id):
                return  # over already: nothing to stop
            raise LocalProtocolError(f"stream {stream_id} cannot be stopped (not receiving)")
        if stream.recv_done:
            return
        stream.recv_done = True
        stream.buffer.clear()
        if not stream.recv_end and stream.reset_code is None:
            self._queue(Frame(kind=FrameKind.STOP, stream_id=stream_id, number=code))
        self._maybe_forget(stream_id, stream)

    def send_datagram(self, data: bytes) -> None:
        """Queue one datagram (delivered in order over TCP, but a full peer drops it)."""
        self._raise_if_closed()
        if len(data) > MAX_FRAME_DATA:
            raise LocalProtocolError(f"a datagram is at most {MAX_FRAME_DATA} bytes")
        self._queue(Frame(kind=FrameKind.DATAGRAM, data=bytes(data)))

    def close(self, error: ConnectionClosed) -> None:
        """The WebSocket ended (either side): from now on every query raises ``error``."""
        if self.closed is None:
            self.closed = error
            self._out.clear()

    def messages_to_send(self) -> list[bytes]:
        """The binary messages queued since the last call, in order."""
        out, self._out = self._out, []
        return out

    # -- queries ---------------------------------------------------------------------

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes | None:
        """Stream bytes (at most ``max_bytes`` when positive); ``b""`` at the end; None
        to wait ("read"). Raises ``StreamResetError`` when the peer reset it."""
        if max_bytes == 0:
            raise ValueError("max_bytes must be positive, or negative for all that arrived")
        stream = self._streams.get(stream_id)
        if stream is None:
            if not self._is_known(stream_id):
                raise LocalProtocolError(f"stream {stream_id} does not exist")
            return b""  # read to its end before
        if not stream.can_receive:
            raise LocalProtocolError(f"stream {stream_id} is send-only")
        if stream.buffer:
            size = len(stream.buffer) if max_bytes < 0 else min(max_bytes, len(stream.buffer))
            data = bytes(stream.buffer[:size])
            del stream.buffer[:size]
            self._credit(stream_id, stream, size)
            return data
        if stream.reset_code is not None:
            stream.recv_done = True
            self._maybe_forget(stream_id, stream)
            raise StreamResetError(stream_id, stream.reset_code)
        if stream.recv_end or stream.recv_done:
            stream.recv_done = True
            self._maybe_forget(stream_id, stream)
            return b""
        self._raise_if_closed()
        return None

    def next_stream(self) -> int | None:
        """The next stream the peer opened, or None to wait ("accept")."""
        if self._incoming:
            return self._incoming.popleft()
        self._raise_if_closed()
        return None

    def next_datagram(self) -> bytes | None:
        """The next datagram, or None to wait ("datagram")."""
        if self._datagrams:
            return self._datagrams.popleft()
        self._raise_if_closed()
        return None

    @property
    def streams(self) -> int:
        """Streams this side keeps state for (zero once every stream is over)."""
        return len(self._streams)

    # -- input -----------------------------------------------------------------------

    def receive_message(self, message: bytes) -> set[Hashable]:
        """Take one binary message from the peer; the keys of the waiters to wake.

        A violation closes the mux and raises ``RemoteProtocolError`` (close the
        WebSocket with code 1002 then). Messages after the close are ignored.
        """
        if self.closed is not None:
            return set()
        try:
            return self._receive(parse_frame(message))
        except FrameError as exc:
            return self._violation(str(exc))

    def _violation(self, reason: str) -> set[Hashable]:
        error = RemoteProtocolError(PROTOCOL_ERROR, reason, application=False)
        self.close(error)
        raise error

    def _receive(self, frame: Frame) -> set[Hashable]:
        kind, sid = frame.kind, frame.stream_id
        if kind is FrameKind.DATAGRAM:
            if len(self._datagrams) < self._max_datagrams:  # full: dropped, as UDP would
                self._datagrams.append(frame.data)
            return {("datagram",)}
        stream = self._streams.get(sid)
        peers = bool(sid & 1) == self.client  # opened by the peer
        uni = bool(sid & 2)
        if stream is None:
            if not peers or sid < self._next_peer[uni]:
                if self._is_known(sid):
                    return set()  # a late frame for a stream already over: harmless
                return self._violation(f"a frame for stream {sid}, which this side never opened")
            if kind in (FrameKind.STOP, FrameKind.CREDIT) and uni:
                return self._violation(f"{kind.name} on the peer's receive-only stream {sid}")
            # As in QUIC, a stream opens every lower one of its kind not seen yet (their
            # first frames may simply come later).
            opened = range(self._next_peer[uni], sid + 4, 4)
            if len(self._streams) + len(opened) > self._max_streams:
                return self._violation(f"more than {self._max_streams} streams at once")
            for new_id in opened:
                self._streams[new_id] = _Stream(
                    can_send=not uni, can_receive=True, window=self._window
                )
                self._incoming.append(new_id)
            self._next_peer[uni] = sid + 4
            stream = self._streams[sid]
            woken: set[Hashable] = {("accept",)}
        else:
            woken = set()
        if kind in (FrameKind.DATA, FrameKind.FIN, FrameKind.RESET):
            if not stream.can_receive:
                return self._violation(f"{kind.name} on this side's send-only stream {sid}")
            if stream.recv_end or stream.reset_code is not None:
                return self._violation(f"{kind.name} after the end of stream {sid}")
            if kind is FrameKind.DATA:
                stream.received += len(frame.data)
                if stream.received > stream.limit:
                    return self._violation(f"stream {sid} exceeded its flow-control window")
                if not stream.recv_done:  # stopped by this side: dropped
                    stream.buffer += frame.data
            elif kind is FrameKind.FIN:
                stream.recv_end = True
            elif stream.recv_done:
                # Stopped by this side, which reads b"" from now on (as on QUIC): the
                # reset only ends the peer's side, and one more frame is a violation.
                stream.recv_end = True
            else:
                stream.reset_code = frame.number
                stream.buffer.clear()  # a reset discards what was not read
            woken.add(("read", sid))
        else:  # STOP or CREDIT: about this side's sending
            if not stream.can_send:
                return self._violation(f"{kind.name} on this side's receive-only stream {sid}")
            if kind is FrameKind.CREDIT:
                if not stream.send_done:
                    stream.credit += frame.number
                    if stream.credit > MAX_U32:
                        return self._violation(f"credit on stream {sid} beyond 4 GiB")
            elif not stream.send_done:
                # As QUIC does: a stopped sender resets, and its next send() raises.
                stream.send_done = True
                self._queue(Frame(kind=FrameKind.RESET, stream_id=sid, number=frame.number))
                self._stopped[sid] = frame.number
                if len(self._stopped) > _STOPPED_MEMORY:
                    self._stopped.popitem(last=False)
            woken.add(("write", sid))
        self._maybe_forget(sid, stream)
        return woken

    # -- internals -------------------------------------------------------------------

    def _queue(self, frame: Frame) -> None:
        self._out.append(encode_frame(frame))

    def _credit(self, stream_id: int, stream: _Stream, size: int) -> None:
        """Give read bytes back to the sender, in batches of half a window."""
        stream.unacked += size
        if stream.unacked >= self._window // 2 and not stream.recv_end and self.closed is None:
            stream.limit += stream.unacked
            self._queue(Frame(kind=FrameKind.CREDIT, stream_id=stream_id, number=stream.unacked))
            stream.unacked = 0

    def _is_known(self, stream_id: int) -> bool:
        """Whether ``stream_id`` was opened before (by either side)."""
        uni = bool(stream_id & 2)
        own = bool(stream_id & 1) != self.client
        return stream_id < (self._next_own[uni] if own else self._next_peer[uni])

    def _maybe_forget(self, stream_id: int, stream: _Stream) -> None:
        if stream.send_done and stream.recv_done:
            del self._streams[stream_id]

    def _raise_if_closed(self) -> None:
        if self.closed is not None:
            raise self.closed

"""``MessageChannel``: one peer's messaging session, sans-IO, surviving reconnects.

Each connection is a *generation*. On it, both sides start with a hello on the
control lane (session id, generation, the highest id they received in order),
then send every message the other may not have got. Acks are cumulative and
ride the control lane. Bytes from an older generation are ignored, so a late
stream of a dead connection can neither reorder nor duplicate anything.
"""

from __future__ import annotations

import struct
from collections import deque

import attrs

from .._errors import LocalProtocolError
from ._envelope import Envelope, decode_envelope, encode_envelope
from ._errors import EnvelopeError, FrameTooLarge, MessageFormatError, MessageTooLarge
from ._framing import _PREFIX, DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from ._queue import ReceiveWindow, SendQueue
from ._routing import DEFAULT_LANES, Lane, LaneTable

__all__ = ["Hello", "MessageChannel", "first_envelope"]

HELLO, ACK, LANE = "sq.hello", "sq.ack", "sq.lane"
_HELLO = struct.Struct(">IQ")
_ACK = struct.Struct(">Q")
_MAX_SESSION_ID = 64
#: How far a peer's hello may move the generation at once: a client's rises by one per
#: connection, so a larger jump is a peer trying to lock the real client out.
_MAX_GENERATION_JUMP = 1 << 16


@attrs.frozen(kw_only=True, slots=True)
class Hello:
    """What a side says first on each connection."""

    session_id: bytes
    generation: int
    #: Every id up to this one arrived at the sender of the hello.
    received: int

    def encode(self) -> bytes:
        """The hello's payload bytes."""
        return (
            bytes([len(self.session_id)])
            + self.session_id
            + _HELLO.pack(self.generation, self.received)
        )

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        """Parse a hello payload; raises :class:`EnvelopeError` on junk (including a
        session id over 64 bytes)."""
        if not payload or len(payload) != 1 + payload[0] + _HELLO.size or payload[0] == 0:
            raise EnvelopeError("malformed hello")
        n = payload[0]
        if n > _MAX_SESSION_ID:
            # A channel could never be made for it: refuse it here, as the peer's junk.
            raise EnvelopeError(f"a hello's session id is over {_MAX_SESSION_ID} bytes")
        generation, received = _HELLO.unpack_from(payload, 1 + n)
        return cls(session_id=bytes(payload[1 : 1 + n]), generation=generation, received=received)


def first_envelope(data: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Envelope | None:
    """The first envelope in a stream's opening bytes, or ``None`` until it is whole:
    a server reads the hello with it to find the session before it attaches a channel.
    Raises :class:`MessageFormatError` on junk; only the first frame counts against
    ``max_frame_size`` (the messages after it are the channel's to check)."""
    if len(data) < _PREFIX:
        return None
    size = int.from_bytes(data[:_PREFIX], "big")
    if size > max_frame_size:
        raise FrameTooLarge(size, max_frame_size)
    if len(data) < _PREFIX + size:
        return None
    return decode_envelope(bytes(data[_PREFIX : _PREFIX + size]))


class MessageChannel:
    """A lossless, duplicate-free message session with one peer, across connections.

    Drive it per connection: :meth:`attach` (a new connection), :meth:`receive` the
    bytes each lane's stream delivers, send what :meth:`data_to_send` returns on each
    lane's stream, :meth:`detach` when the connection is gone. Take delivered
    messages with :meth:`next_message`. Promise: every message :meth:`send` accepted
    is delivered exactly once, in id order per lane, as long as connections keep
    coming back (ids above ``max_unacked`` wait in :class:`QueueFull`).
    """

    def __init__(
        self,
        session_id: bytes,
        *,
        lanes: LaneTable = DEFAULT_LANES,
        max_unacked: int = 1024,
        window: int = 1024,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        if not 0 < len(session_id) <= _MAX_SESSION_ID:
            raise LocalProtocolError(f"a session id is 1 to {_MAX_SESSION_ID} bytes")
        if max_unacked > window:
            raise LocalProtocolError("max_unacked must not exceed window (the peer's window)")
        self.session_id = session_id
        self.lanes = lanes
        self.max_frame_size = max_frame_size
        self.queue: SendQueue = SendQueue(max_unacked)
        self.window: ReceiveWindow = ReceiveWindow(window)
        #: The current connection's generation (0: never attached).
        self.generation: int = 0
        self.attached: bool = False
        self._decoders: dict[str, FrameDecoder] = {}
        self._out: dict[str, bytearray] = {}
        self._delivered: deque[Envelope] = deque()
        self._acked_sent = 0
        self._hello_seen = False
        #: Duplicates dropped so far (retransmits the peer already had).
        self.duplicates: int = 0

    # -- commands -------------------------------------------------------------------

    def send(self, message_type: str, payload: bytes, now: float) -> Envelope:
        """Queue a message; raises :class:`~sansquic.LocalProtocolError` for a reserved
        ``"sq."`` type or a bad type, :class:`MessageTooLarge` or :class:`QueueFull` (nothing
        queued). Next: :meth:`data_to_send` once attached."""
        if message_type.startswith("sq."):
            raise LocalProtocolError(f"{message_type!r}: types starting with 'sq.' are reserved")
        probe = Envelope(id=0, type=message_type, timestamp=now, payload=payload)
        size = len(encode_envelope(probe))  # validates the type and timestamp too
        if size > self.max_frame_size:
            raise MessageTooLarge(f"a {size}-byte message is over the {self.max_frame_size} limit")
        return self.queue.push(message_type, payload, now)

    def attach(self, generation: int | None = None, now: float = 0.0) -> int:
        """A new connection: the client passes nothing (the generation rises by one), the
        server passes the generation of the client's hello. Raises
        :class:`MessageFormatError` for a generation not newer than the current one (a
        stale connection: close it), or one more than 65536 ahead (a lock-out attempt).
        Next: :meth:`data_to_send`."""
        new = self.generation + 1 if generation is None else generation
        if new <= self.generation:
            raise MessageFormatError(f"generation {new} is not newer than {self.generation}")
        if new - self.generation > _MAX_GENERATION_JUMP:
            raise MessageFormatError(f"generation {new} jumps too far past {self.generation}")
        self.generation, self.attached = new, True
        self._decoders = {lane.name: FrameDecoder(self.max_frame_size) for lane in self.lanes.lanes}
        self._out = {lane.name: bytearray() for lane in self.lanes.lanes}
        self._hello_seen = False
        self.queue.rewind()
        hello = Hello(session_id=self.session_id, generation=new, received=self.window.floor)
        self._emit(Envelope(id=0, type=HELLO, timestamp=now, payload=hello.encode()))
        for lane in self.lanes.lanes[1:]:
            # Opens the lane's stream at once, so the peer can send on it too.
            self._emit(Envelope(id=0, type=LANE, timestamp=now, payload=lane.name.encode()), lane)
        self._acked_sent = self.window.floor
        return new

    def detach(self) -> None:
        """The connection is gone; unacked messages wait for the next :meth:`attach`."""
        self.attached = False

    # -- inputs ---------------------------------------------------------------------

    def receive(self, generation: int, lane: str, data: bytes) -> None:
        """Bytes from ``lane``'s stream of connection ``generation`` (ignored when that is
        not the current one). Raises :class:`MessageFormatError` on junk: close the
        connection with :data:`MESSAGING_VIOLATION`. Next: :meth:`next_message`,
        :meth:`data_to_send` (acks)."""
        if generation != self.generation or not self.attached:
            return
        decoder = self._decoders.get(lane)
        if decoder is None:
            raise EnvelopeError(f"no lane is named {lane!r}")
        decoder.feed(data)
        while (frame := decoder.next_frame()) is not None:
            self._handle(lane, decode_envelope(frame))

    def _handle(self, lane: str, envelope: Envelope) -> None:
        kind = envelope.type
        control = lane == self.lanes.control.name
        if kind == HELLO and control and not self._hello_seen:
            hello = Hello.decode(envelope.payload)
            if hello.session_id != self.session_id or hello.generation != self.generation:
                raise EnvelopeError("the hello names another session or generation")
            self._hello_seen = True
            self.queue.ack(hello.received)
        elif not self._hello_seen and control:
            raise EnvelopeError("the control lane must open with a hello")
        elif kind == ACK and control:
            if len(envelope.payload) != _ACK.size:
                raise EnvelopeError("malformed ack")
            self.queue.ack(_ACK.unpack(envelope.payload)[0])
        elif kind == LANE:
            if envelope.payload.decode(errors="replace") != lane:
                raise EnvelopeError("a lane opened under another name")
        elif kind.startswith("sq.") or envelope.id == 0:
            raise EnvelopeError(f"unexpected {kind!r} (id {envelope.id}) on lane {lane!r}")
        elif self.window.accept(envelope.id):
            self._delivered.append(envelope)
        else:
            self.duplicates += 1

    # -- outputs --------------------------------------------------------------------

    def next_message(self) -> Envelope | None:
        """The next delivered message, or ``None``."""
        return self._delivered.popleft() if self._delivered else None

    @property
    def wants_to_send(self) -> bool:
        """True when :meth:`data_to_send` would return bytes (an ack, a hello, a message)."""
        if not self.attached:
            return False
        return (
            self.window.floor > self._acked_sent or self.queue.has_unsent or any(self._out.values())
        )

    def data_to_send(self, now: float = 0.0) -> list[tuple[Lane, bytes]]:
        """Bytes to write on each lane's stream of the current connection (an ack, then
        every message not yet sent on it); empty when detached."""
        if not self.attached:
            return []
        if self.window.floor > self._acked_sent:
            self._acked_sent = self.window.floor
            ack = _ACK.pack(self.window.floor)
            self._emit(Envelope(id=0, type=ACK, timestamp=now, payload=ack))
        for envelope in self.queue.take():
            self._emit(envelope, self.lanes.lane_for(envelope.type))
        out = [(self.lanes.lane(name), bytes(buf)) for name, buf in self._out.items() if buf]
        for buf in self._out.values():
            buf.clear()
        return out

    def _emit(self, envelope: Envelope, lane: Lane | None = None) -> None:
        target = (lane or self.lanes.control).name
        self._out[target] += encode_frame(encode_envelope(envelope), self.max_frame_size)

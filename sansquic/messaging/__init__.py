"""The messaging layer: framed, typed messages that survive reconnects, decided purely.

Pieces, each usable alone: :class:`FrameDecoder` / :func:`encode_frame` (length
prefixes), :class:`Envelope` and its encoding, :class:`LaneTable` (which stream and
priority a type travels on) and :class:`Router` (type -> handler), :class:`Backoff`
and :class:`CircuitBreaker` (when to reconnect), :class:`SendQueue` and
:class:`ReceiveWindow` (no loss, no duplicate), :class:`Pool` (reuse per host:port),
and :class:`MessageChannel`, which ties queue, window and lanes into one session
per peer. Nothing here does I/O or reads a clock; see ``docs/messaging.md``.

>>> a, b = MessageChannel(b"s1"), MessageChannel(b"s1")
>>> g = a.attach(); _ = b.attach(g)
>>> _ = a.send("greet", b"hi", now=0.0)
>>> for lane, data in a.data_to_send():
...     b.receive(g, lane.name, data)
>>> b.next_message().payload
b'hi'
"""

from ._channel import Hello, MessageChannel, first_envelope
from ._envelope import ENVELOPE_VERSION, Envelope, decode_envelope, encode_envelope
from ._errors import (
    MESSAGING_VIOLATION,
    EnvelopeError,
    FrameTooLarge,
    MessageFormatError,
    MessageTooLarge,
    QueueFull,
    WindowExceeded,
)
from ._framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from ._pool import Dial, Pool, PoolStats, Reuse, Wait
from ._queue import ReceiveWindow, SendQueue
from ._reconnect import Backoff, BreakerState, CircuitBreaker
from ._routing import DEFAULT_LANES, Lane, LaneTable, Router

__all__ = [
    "DEFAULT_LANES",
    "DEFAULT_MAX_FRAME_SIZE",
    "ENVELOPE_VERSION",
    "MESSAGING_VIOLATION",
    "Backoff",
    "BreakerState",
    "CircuitBreaker",
    "Dial",
    "Envelope",
    "EnvelopeError",
    "FrameDecoder",
    "FrameTooLarge",
    "Hello",
    "Lane",
    "LaneTable",
    "MessageChannel",
    "MessageFormatError",
    "MessageTooLarge",
    "Pool",
    "PoolStats",
    "QueueFull",
    "ReceiveWindow",
    "Reuse",
    "Router",
    "SendQueue",
    "Wait",
    "WindowExceeded",
    "decode_envelope",
    "encode_envelope",
    "encode_frame",
    "first_envelope",
]

# Public names report the public module, so reprs and docs never show private paths.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("sansquic.messaging._"):
        _obj.__module__ = "sansquic.messaging"
del _name, _obj

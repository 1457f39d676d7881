"""Per-direction stream state machines, as tables.

Each direction of a stream moves through the states below; a
``(state, input)`` pair missing from its table is misuse and raises
:class:`~sansquic.LocalProtocolError` before anything changes. A stream's
state is dropped once both directions are in a terminal state.

The tables also draw the diagrams in ``docs/streams.md``.
"""

from __future__ import annotations

import enum

__all__ = [
    "RECV_TERMINAL",
    "RECV_TRANSITIONS",
    "SEND_TERMINAL",
    "SEND_TRANSITIONS",
    "RecvInput",
    "RecvState",
    "SendInput",
    "SendState",
]


class _Enum(enum.Enum):
    """An enum whose members hash by identity: the tables below are looked up on every
    send, read and FIN, and ``Enum.__hash__`` is a Python-level call per lookup."""

    __hash__ = object.__hash__


class SendState(_Enum):
    """The sending half of a stream."""

    #: The application may send.
    OPEN = "open"
    #: ``send(..., end=True)`` was called; the engine delivers the rest.
    FINISHED = "finished"
    #: ``reset()`` was called.
    RESET = "reset"
    #: The peer sent STOP_SENDING; the engine reset the stream in answer.
    STOPPED = "stopped"
    #: The stream has no sending half (a unidirectional stream the peer opened).
    NONE = "none"


class SendInput(_Enum):
    SEND = "send"
    FINISH = "finish"
    RESET = "reset"
    PEER_STOP = "peer_stop"


class RecvState(_Enum):
    """The receiving half of a stream."""

    #: Data may still arrive.
    OPEN = "open"
    #: The FIN arrived; data is still buffered for ``read()``.
    FIN_RECEIVED = "fin_received"
    #: Everything up to the FIN was read.
    FINISHED = "finished"
    #: The peer reset the stream; unread data was discarded.
    RESET = "reset"
    #: The application called ``stop()``; unread data was discarded.
    STOPPED = "stopped"
    #: The stream has no receiving half (a unidirectional stream this side opened).
    NONE = "none"


class RecvInput(_Enum):
    DATA = "data"
    FIN = "fin"
    DRAINED = "drained"
    PEER_RESET = "peer_reset"
    STOP = "stop"


S, SI = SendState, SendInput
SEND_TRANSITIONS: dict[tuple[SendState, SendInput], SendState] = {
    (S.OPEN, SI.SEND): S.OPEN,
    (S.OPEN, SI.FINISH): S.FINISHED,
    (S.OPEN, SI.RESET): S.RESET,
    (S.OPEN, SI.PEER_STOP): S.STOPPED,
    # Resetting after the FIN abandons retransmission of what is still unacknowledged.
    (S.FINISHED, SI.RESET): S.RESET,
    (S.FINISHED, SI.PEER_STOP): S.STOPPED,
    (S.RESET, SI.PEER_STOP): S.RESET,
    # A reset racing the peer's STOP_SENDING is not the application's fault.
    (S.STOPPED, SI.RESET): S.STOPPED,
    (S.STOPPED, SI.PEER_STOP): S.STOPPED,
}
SEND_TERMINAL = frozenset({S.FINISHED, S.RESET, S.STOPPED, S.NONE})

R, RI = RecvState, RecvInput
RECV_TRANSITIONS: dict[tuple[RecvState, RecvInput], RecvState] = {
    (R.OPEN, RI.DATA): R.OPEN,
    (R.OPEN, RI.FIN): R.FIN_RECEIVED,
    (R.OPEN, RI.PEER_RESET): R.RESET,
    (R.OPEN, RI.STOP): R.STOPPED,
    (R.FIN_RECEIVED, RI.DRAINED): R.FINISHED,
    (R.FIN_RECEIVED, RI.STOP): R.STOPPED,
    # Stopping a stream that already ended races the peer; nothing to do.
    (R.FINISHED, RI.STOP): R.FINISHED,
    (R.RESET, RI.STOP): R.RESET,
    # The engine may report a reset that crossed our STOP_SENDING.
    (R.STOPPED, RI.PEER_RESET): R.STOPPED,
    (R.STOPPED, RI.DATA): R.STOPPED,
    (R.STOPPED, RI.FIN): R.STOPPED,
}
RECV_TERMINAL = frozenset({R.FINISHED, R.RESET, R.STOPPED, R.NONE})
del S, SI, R, RI

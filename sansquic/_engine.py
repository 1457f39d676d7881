"""The contract between the core and a QUIC engine.

An engine module (``_aioquic.py`` today) turns the engine's own events and
exceptions into these plain records, so nothing engine-specific leaves the
seam and a second engine can plug in behind the same names.
"""

from __future__ import annotations

import enum

import attrs

Address = tuple[str, int]


@attrs.frozen(slots=True)
class HandshakeDone:
    alpn: str | None


@attrs.frozen(slots=True)
class StreamData:
    stream_id: int
    data: bytes
    fin: bool


@attrs.frozen(slots=True)
class StreamResetByPeer:
    stream_id: int
    error_code: int


@attrs.frozen(slots=True)
class StopSendingByPeer:
    stream_id: int
    error_code: int


@attrs.frozen(slots=True)
class DatagramIn:
    data: bytes


@attrs.frozen(slots=True)
class CidIssued:
    """The engine gave the peer a new connection id to reach this side by."""

    cid: bytes


@attrs.frozen(slots=True)
class CidRetired:
    """The peer retired one of this side's connection ids."""

    cid: bytes


class ClosedBy(enum.Enum):
    """Who ended a connection, which decides how the core reports it."""

    LOCAL = "local"  # the application called close()
    PEER = "peer"  # the peer sent CONNECTION_CLOSE
    VIOLATION = "violation"  # this side closed because of what the peer sent
    IDLE = "idle"  # nothing was heard for the idle timeout


@attrs.frozen(slots=True)
class Terminated:
    error_code: int
    reason: str
    closed_by: ClosedBy
    application: bool


EngineEvent = (
    HandshakeDone
    | StreamData
    | StreamResetByPeer
    | StopSendingByPeer
    | DatagramIn
    | CidIssued
    | CidRetired
    | Terminated
)

"""WebTransport session flow control (draft-ietf-webtrans-http3 section 5), as counters.

One :class:`SessionFlow` per session once both sides' SETTINGS turned flow
control on. Its receive half is what this side allows the peer: it starts at
this side's SETTINGS_WT_INITIAL_* (:class:`SessionLimits`) and grows, by
capsules this side sends, as the application consumes data and the peer's
streams end. Its send half is what the peer allows this side. Methods return
the capsule bytes to send on the CONNECT stream (``b""`` for none) or raise
:class:`FlowViolation`, after which the session must end with
WT_FLOW_CONTROL_ERROR. ``sansquic/_h3.py`` drives it.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from . import _h3wire as w
from ._validators import int_in

__all__ = ["FlowViolation", "SessionFlow", "SessionLimits", "flow_offered"]

_SETTINGS = (
    w.SETTINGS_WT_INITIAL_MAX_DATA,
    w.SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI,
    w.SETTINGS_WT_INITIAL_MAX_STREAMS_UNI,
)


@attrs.frozen(kw_only=True)
class SessionLimits:
    """What each WebTransport session of a connection may take from this side at once.

    ``max_data``: stream bytes the peer may send ahead of what the application
    consumed; ``max_streams_bidi`` / ``max_streams_uni``: streams the peer may
    have open (credit returns as they end). Sent as the SETTINGS_WT_INITIAL_*
    values; zero everywhere offers no flow control.
    """

    max_data: int = attrs.field(default=4 * 1024 * 1024, validator=int_in(0, w.MAX_VARINT))
    max_streams_bidi: int = attrs.field(default=256, validator=int_in(0, w.MAX_STREAM_COUNT))
    max_streams_uni: int = attrs.field(default=256, validator=int_in(0, w.MAX_STREAM_COUNT))

    def settings(self) -> dict[int, int]:
        """The SETTINGS entries announcing these limits (the non-zero ones)."""
        values = (self.max_data, self.max_streams_bidi, self.max_streams_uni)
        return {key: value for key, value in zip(_SETTINGS, values, strict=True) if value}


def flow_offered(settings: Mapping[int, int]) -> bool:
    """Whether ``settings`` ask for session flow control (any initial limit non-zero)."""
    return any(settings.get(key, 0) for key in _SETTINGS)


class FlowViolation(Exception):
    """The peer broke the session's flow control; the session ends with WT_FLOW_CONTROL_ERROR."""


class SessionFlow:
    """One session's flow control state: both halves, and the capsules they call for."""

    def __init__(self, local: SessionLimits, peer_settings: Mapping[int, int]) -> None:
        # Receive half: what the peer may do.
        self._window = local.max_data
        self.recv_max = local.max_data
        self.received = 0
        self._stream_windows = (local.max_streams_bidi, local.max_streams_uni)
        self.recv_max_streams = list(self._stream_windows)
        self.peer_opened = [0, 0]
        self.peer_done = [0, 0]
        # Send half: what this side may do.
        self.send_max = peer_settings.get(w.SETTINGS_WT_INITIAL_MAX_DATA, 0)
        self.sent = 0
        self.send_max_streams = [
            peer_settings.get(w.SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI, 0),
            peer_settings.get(w.SETTINGS_WT_INITIAL_MAX_STREAMS_UNI, 0),
        ]
        self.opened = [0, 0]
        # The limit at which a BLOCKED capsule last went out: one per limit value.
        self._data_blocked_at = -1
        self._streams_blocked_at = [-1, -1]

    # -- what the peer does ----------------------------------------------------------

    def peer_stream(self, bidirectional: bool) -> None:
        """The peer opened a stream in the session."""
        kind = 0 if bidirectional else 1
        if self.peer_opened[kind] >= self.recv_max_streams[kind]:
            name = "bidirectional" if bidirectional else "unidirectional"
            limit = self.recv_max_streams[kind]
            raise FlowViolation(f"the peer opened more {name} streams than the {limit} allowed")
        self.peer_opened[kind] += 1

    def peer_stream_done(self, bidirectional: bool) -> bytes:
        """A stream the peer opened is over: its credit returns (a WT_MAX_STREAMS when due)."""
        kind = 0 if bidirectional else 1
        self.peer_done[kind] += 1
        window = self._stream_windows[kind]
        limit = self.peer_done[kind] + window
        if limit - self.recv_max_streams[kind] < max(1, window // 2):
            return b""
        self.recv_max_streams[kind] = limit
        capsule = w.WT_MAX_STREAMS_BIDI if bidirectional else w.WT_MAX_STREAMS_UNI
        return w.encode_flow_capsule(capsule, limit)

    def peer_data(self, size: int) -> bytes:
        """``size`` stream bytes of the peer reached the application: counted against
        the limit, then their credit returns (a WT_MAX_DATA when half the window is used)."""
        total = self.received + size
        if total > self.recv_max:
            raise FlowViolation(
                f"the peer sent {total} session bytes, over the {self.recv_max} allowed"
            )
        self.received = total
        limit = self.received + self._window
        if not self._window or limit - self.recv_max < max(1, self._window // 2):
            return b""
        self.recv_max = limit
        return w.encode_flow_capsule(w.WT_MAX_DATA, limit)

    def capsule(self, kind: int, value: int) -> bool:
        """A flow control capsule from the peer; True when it let this side do more."""
        # A lower limit is the violation; the same one again is only stale (a
        # repeat, or the initial limit announced as a capsule), ignored as QUIC
        # ignores a MAX_DATA that does not raise the limit.
        if kind == w.WT_MAX_DATA:
            if value < self.send_max:
                raise FlowViolation(f"WT_MAX_DATA {value} lowers {self.send_max}")
            raised = value > self.send_max
            self.send_max = value
            return raised
        if kind in (w.WT_MAX_STREAMS_BIDI, w.WT_MAX_STREAMS_UNI):
            index = 0 if kind == w.WT_MAX_STREAMS_BIDI else 1
            if value < self.send_max_streams[index]:
                raise FlowViolation(f"WT_MAX_STREAMS {value} lowers {self.send_max_streams[index]}")
            raised = value > self.send_max_streams[index]
            self.send_max_streams[index] = value
            return raised
        return False  # the BLOCKED capsules only inform

    # -- what this side does ---------------------------------------------------------

    def can_open(self, bidirectional: bool) -> bool:
        """Whether the peer's stream limit leaves room for one more stream."""
        kind = 0 if bidirectional else 1
        return self.opened[kind] < self.send_max_streams[kind]

    def open(self, bidirectional: bool) -> None:
        """Count a stream this side opened (after :meth:`can_open` said yes)."""
        self.opened[0 if bidirectional else 1] += 1

    def streams_blocked(self, bidirectional: bool) -> bytes:
        """The WT_STREAMS_BLOCKED to send when an open was refused (once per limit)."""
        kind = 0 if bidirectional else 1
        limit = self.send_max_streams[kind]
        if self._streams_blocked_at[kind] == limit:
            return b""
        self._streams_blocked_at[kind] = limit
        capsule = w.WT_STREAMS_BLOCKED_BIDI if bidirectional else w.WT_STREAMS_BLOCKED_UNI
        return w.encode_flow_capsule(capsule, limit)

    @property
    def credit(self) -> int:
        """Stream bytes this side may still send in the session."""
        return max(0, self.send_max - self.sent)

    def spend(self, wanted: int) -> tuple[int, bytes]:
        """Take up to ``wanted`` bytes of send credit: ``(granted, capsule)``, the
        capsule a WT_DATA_BLOCKED when less than wanted was left (once per limit)."""
        granted = min(wanted, self.credit)
        self.sent += granted
        if granted == wanted or self._data_blocked_at == self.send_max:
            return granted, b""
        self._data_blocked_at = self.send_max
        return granted, w.encode_flow_capsule(w.WT_DATA_BLOCKED, self.send_max)

    def refund(self, size: int) -> None:
        """Give back credit taken for bytes that were not sent after all."""
        self.sent -= min(size, self.sent)

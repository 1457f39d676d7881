"""The lossless send queue (ids, acks, retransmit) and the receiver's bounded dedupe window."""

from __future__ import annotations

from collections import deque

from ._envelope import Envelope
from ._errors import QueueFull, WindowExceeded

__all__ = ["ReceiveWindow", "SendQueue"]


class SendQueue:
    """Messages keep their envelope until the peer acks them, so a new connection can
    send again everything it may not have got (:meth:`rewind`).

    Ids rise by one from 1; an ack is cumulative ("every id up to N arrived").
    """

    def __init__(self, max_unacked: int = 1024) -> None:
        if max_unacked < 1:
            raise QueueFull("max_unacked must be >= 1")
        self.max_unacked = max_unacked
        self._unacked: deque[Envelope] = deque()
        self._sent = 0  # how many of the oldest unacked went out on this connection
        self._last_id = 0
        #: The highest id the peer acked (every id up to it arrived).
        self.acked: int = 0

    def push(self, message_type: str, payload: bytes, now: float) -> Envelope:
        """Queue a message stamped ``now`` and give it the next id; raises :class:`QueueFull`
        (nothing queued) when ``max_unacked`` messages wait for an ack.
        Next: :meth:`take` to send it."""
        if len(self._unacked) >= self.max_unacked:
            raise QueueFull(f"{len(self._unacked)} messages wait for an ack (the limit)")
        envelope = Envelope(id=self._last_id + 1, type=message_type, timestamp=now, payload=payload)
        self._last_id += 1
        self._unacked.append(envelope)
        return envelope

    def take(self) -> list[Envelope]:
        """The messages not yet sent on this connection, oldest first; marks them sent."""
        fresh = list(self._unacked)[self._sent :]
        self._sent = len(self._unacked)
        return fresh

    def ack(self, upto: int) -> int:
        """The peer got every id up to ``upto``: forget those; returns how many were dropped.
        Raises :class:`WindowExceeded` for an id never queued (a lying peer)."""
        if upto > self._last_id:
            raise WindowExceeded(f"the peer acked id {upto}, but only {self._last_id} exist")
        dropped = 0
        while self._unacked and self._unacked[0].id <= upto:
            self._unacked.popleft()
            dropped += 1
        self._sent = max(0, self._sent - dropped)
        self.acked = max(self.acked, upto)
        return dropped

    def rewind(self) -> None:
        """A new connection: every unacked message goes out again, in id order."""
        self._sent = 0

    @property
    def has_unsent(self) -> bool:
        """True when :meth:`take` would return messages."""
        return self._sent < len(self._unacked)

    @property
    def unacked(self) -> int:
        """Messages queued and not yet acked."""
        return len(self._unacked)


class ReceiveWindow:
    """Receiver-side dedupe with bounded memory.

    ``floor`` is the highest id below which every id arrived; ids above it that
    arrived are remembered, at most ``size`` of them. An id over ``floor + size``
    means the peer ignored its window (:class:`WindowExceeded`): a sender with
    ``max_unacked <= size`` never does that, since its acks come from this floor.
    """

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise WindowExceeded("the window size must be >= 1")
        self.size = size
        #: Every id up to this one arrived.
        self.floor: int = 0
        self._seen: set[int] = set()

    def accept(self, ident: int) -> bool:
        """True the first time ``ident`` arrives (deliver it), False for a duplicate."""
        if ident <= self.floor or ident in self._seen:
            return False
        if ident > self.floor + self.size:
            raise WindowExceeded(
                f"message id {ident} is beyond the window ({self.floor} + {self.size})"
            )
        self._seen.add(ident)
        while self.floor + 1 in self._seen:
            self.floor += 1
            self._seen.discard(self.floor)
        return True

    @property
    def remembered(self) -> int:
        """Ids above the floor held in memory (never more than ``size``)."""
        return len(self._seen)

"""Which lane (stream, priority) a message type travels on, and which handler takes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

import attrs

from .._errors import LocalProtocolError
from .._scheduler import Priority

__all__ = ["DEFAULT_LANES", "Lane", "LaneTable", "Router"]

H = TypeVar("H")


@attrs.frozen(kw_only=True, slots=True)
class Lane:
    """A named stream per connection at one priority; messages on a lane stay in order."""

    name: str
    priority: int


@attrs.frozen(kw_only=True)
class LaneTable:
    """A small declarative table: lanes, ``routes`` from a type *prefix* to a lane name
    (the longest matching prefix wins) and the ``default`` lane for everything else.

    The layer's own messages (``"sq."``) always travel on the first lane, so put the
    control lane first.
    """

    lanes: tuple[Lane, ...]
    routes: Mapping[str, str] = attrs.field(factory=dict)
    default: str = ""

    def __attrs_post_init__(self) -> None:
        names = [lane.name for lane in self.lanes]
        if not names or len(set(names)) != len(names):
            raise LocalProtocolError("a LaneTable needs one or more lanes with distinct names")
        for target in (*self.routes.values(), self.default or names[0]):
            if target not in names:
                raise LocalProtocolError(f"no lane is named {target!r}")
        for lane in self.lanes:
            if not 0 <= lane.priority <= 255:
                raise LocalProtocolError(f"lane {lane.name!r}: priority must be 0..255")

    @property
    def control(self) -> Lane:
        """The first lane: hellos and acks travel here."""
        return self.lanes[0]

    def lane(self, name: str) -> Lane:
        """The lane called ``name``; :class:`~sansquic.LocalProtocolError` if none is."""
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise LocalProtocolError(f"no lane is named {name!r}")

    def lane_for(self, message_type: str) -> Lane:
        """The lane a message of ``message_type`` travels on."""
        if message_type.startswith("sq."):
            return self.control
        best = ""
        for prefix in self.routes:
            if message_type.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return self.lane(self.routes[best] if best else self.default or self.lanes[0].name)


#: Control on CRITICAL (the default lane), anything typed ``"bulk."...`` on LOW.
DEFAULT_LANES = LaneTable(
    lanes=(
        Lane(name="control", priority=Priority.CRITICAL),
        Lane(name="bulk", priority=Priority.LOW),
    ),
    routes={"bulk.": "bulk"},
    default="control",
)


class Router(Generic[H]):
    """Message type -> handler: exact types first, then the longest registered prefix
    (a key ending in ``"."`` or ``"*"``), then the fallback.

    It only chooses; the runtime calls the handler (sync or async, its business).
    """

    def __init__(self, fallback: H | None = None) -> None:
        self._exact: dict[str, H] = {}
        self._prefix: dict[str, H] = {}
        self.fallback = fallback

    def add(self, message_type: str, handler: H) -> None:
        """Route ``message_type`` (or a prefix: ``"job."`` / ``"job.*"``) to ``handler``;
        raises :class:`~sansquic.LocalProtocolError` when it is taken."""
        prefix = message_type.endswith((".", "*"))
        key = message_type.rstrip("*") if prefix else message_type
        table = self._prefix if prefix else self._exact
        if not key or key in table:
            raise LocalProtocolError(f"{message_type!r} is empty or already routed")
        table[key] = handler

    def handler_for(self, message_type: str) -> H | None:
        """The handler for ``message_type``, or ``None`` when nothing matches."""
        if message_type in self._exact:
            return self._exact[message_type]
        best = max((p for p in self._prefix if message_type.startswith(p)), key=len, default=None)
        return self._prefix[best] if best is not None else self.fallback

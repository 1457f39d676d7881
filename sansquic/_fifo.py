"""``Fifo``: a first-in, first-out queue that is cheap while empty.

Every connection keeps a few queues (events, outgoing datagrams, streams and
datagrams waiting for the application) that are empty nearly all the time. A
``collections.deque`` allocates a 64-slot block at birth (760 bytes with the
object); this keeps a plain list (56 bytes) and a read position instead, so an
idle connection pays for none of that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["Fifo"]

_T = TypeVar("_T")
# Consumed items kept at the head before the list is compacted: the copy then
# costs no more than the pops it follows, so popleft stays O(1) amortized.
_COMPACT_AT = 64


class Fifo(Generic[_T]):
    """``append`` at the tail, ``popleft`` at the head (``IndexError`` when empty)."""

    __slots__ = ("_head", "_items")

    def __init__(self, items: Iterable[_T] = ()) -> None:
        self._items: list[_T] = list(items)
        self._head = 0  # index of the oldest item not yet taken

    def append(self, item: _T) -> None:
        self._items.append(item)

    def extend(self, items: Iterable[_T]) -> None:
        self._items.extend(items)

    def popleft(self) -> _T:
        """Remove and return the oldest item."""
        items, head = self._items, self._head
        item = items[head]  # IndexError when empty, as a deque raises
        head += 1
        if head == len(items):
            items.clear()  # drained: the list gives its storage back
            head = 0
        elif head >= _COMPACT_AT and 2 * head >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    def peek(self) -> _T:
        """The oldest item, left in place (``IndexError`` when empty)."""
        return self._items[self._head]

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def __iter__(self) -> Iterator[_T]:
        items = self._items
        return (items[i] for i in range(self._head, len(items)))

    def __repr__(self) -> str:
        return f"Fifo({list(self)!r})"

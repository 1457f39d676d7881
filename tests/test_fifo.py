"""The core's cheap FIFO behaves like a deque under any mix of operations."""

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from sansquic._fifo import Fifo

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers()),
        st.tuples(st.just("extend"), st.lists(st.integers(), max_size=80)),
        st.tuples(st.just("popleft"), st.integers(1, 100)),
    ),
    max_size=60,
)


@given(initial=st.lists(st.integers(), max_size=10), operations=OPERATIONS)
def test_fifo_matches_a_deque(initial: list[int], operations: list[tuple[str, object]]) -> None:
    fifo, model = Fifo(initial), deque(initial)
    for name, argument in operations:
        if name == "append":
            fifo.append(argument)  # type: ignore[arg-type]
            model.append(argument)  # type: ignore[arg-type]
        elif name == "extend":
            fifo.extend(argument)  # type: ignore[arg-type]
            model.extend(argument)  # type: ignore[arg-type]
        else:
            for _ in range(argument):  # type: ignore[call-overload]
                if not model:
                    try:
                        fifo.popleft()
                    except IndexError:
                        break
                    raise AssertionError("popleft on an empty Fifo returned")
                assert fifo.popleft() == model.popleft()
        assert len(fifo) == len(model) and bool(fifo) == bool(model)
        assert list(fifo) == list(model)
        if model:
            assert fifo.peek() == model[0]


def test_a_drained_fifo_lets_go_of_its_items() -> None:
    fifo: Fifo[bytes] = Fifo()
    for _ in range(3):
        fifo.extend([b"x" * 100] * 200)
        while fifo:
            fifo.popleft()
        assert fifo._items == [] and fifo._head == 0

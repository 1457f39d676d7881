"""The simulated network: seeded determinism and each link impairment."""

import random
import subprocess
import sys

import pytest

from sansquic import Config
from sansquic.testing import LinkConditions, SimNetwork, StreamSink, connected_pair


class Recorder:
    """A node that records what it receives and sends what it is told to."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.outbox: list[tuple[bytes, tuple[str, int]]] = []

    def receive_datagram(self, data: bytes, address: tuple[str, int], now: float) -> None:
        self.received.append((now, data))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        out, self.outbox = self.outbox, []
        return out

    def timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


A, B = ("10.0.0.1", 1), ("10.0.0.2", 2)


def blast(
    conditions: LinkConditions, count: int = 2000, seed: int = 0
) -> tuple[SimNetwork, Recorder]:
    net = SimNetwork(seed, conditions=conditions)
    sender, receiver = Recorder(), Recorder()
    net.add(A, sender)
    net.add(B, receiver)
    sender.outbox = [(i.to_bytes(4, "big") * 25, B) for i in range(count)]
    net.run_for(60)
    return net, receiver


def test_same_seed_same_trace_for_a_real_transfer() -> None:
    def run(seed: int) -> list[object]:
        conditions = LinkConditions(
            delay=0.01, jitter=0.003, loss=0.05, reorder=0.05, duplicate=0.02
        )
        pair = connected_pair(conditions, seed=seed)
        sink = StreamSink(pair.server)
        pair.network.step_hooks.append(sink.pump)
        sid = pair.client.open_stream()
        pair.client.send(sid, random.Random(3).randbytes(300_000), end=True)
        assert pair.network.run_until(lambda: sid in sink.ended, 60)
        return [(round(r.time, 9), r.size, r.fate) for r in pair.network.trace]

    first, second, other = run(4), run(4), run(5)
    assert len(first) > 200
    assert first == second
    assert first != other


_MANY_STREAMS_RUN = """
import hashlib, random, sys
from sansquic import Priority
from sansquic.testing import LinkConditions, StreamSink, connected_pair

junk = [object() for _ in range(int(sys.argv[1]))]  # another memory layout each run
conditions = LinkConditions(delay=0.01, jitter=0.003, loss=0.05, reorder=0.05)
pair = connected_pair(conditions, seed=4)
sink = StreamSink(pair.server)
pair.network.step_hooks.append(sink.pump)
ids = []
for i in range(12):
    ids.append(pair.client.open_stream(priority=list(Priority)[i % 5]))
    pair.client.send(ids[-1], random.Random(i).randbytes(50_000), end=True)
assert pair.network.run_until(lambda: set(ids) <= sink.ended, 60)
trace = [(round(r.time, 9), r.size, r.fate) for r in pair.network.trace]
print(len(trace), hashlib.sha256(repr(trace).encode()).hexdigest())
"""


def test_same_seed_same_trace_with_many_streams_in_every_process() -> None:
    """Twelve streams at once, each run in a process of its own with objects laid
    out differently in memory: aioquic moves the streams that sent in a packet to
    the end of its queue in set order, which follows their addresses, and the same
    seed gave different traces from one process to the next (2 of 3 alike, before
    the seam put them in the order they sent)."""
    runs = [
        subprocess.run(
            [sys.executable, "-c", _MANY_STREAMS_RUN, str(junk)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for junk in (0, 1, 777, 4096, 12345)
    ]
    assert int(runs[0].split()[0]) > 500
    assert len(set(runs)) == 1, runs


def test_loss_rate_matches_the_setting() -> None:
    net, receiver = blast(LinkConditions(loss=0.2))
    assert 0.16 < 1 - len(receiver.received) / 2000 < 0.24
    assert sum(r.fate == "lost" for r in net.trace) == 2000 - len(receiver.received)


def test_duplication_delivers_copies() -> None:
    net, receiver = blast(LinkConditions(duplicate=0.1))
    copies = len(receiver.received) - 2000
    assert 120 < copies < 280
    assert copies == sum("duplicated" in r.fate for r in net.trace)


def test_corruption_changes_exactly_one_byte() -> None:
    _, receiver = blast(LinkConditions(corrupt=1.0), count=200)
    originals = [i.to_bytes(4, "big") * 25 for i in range(200)]
    for (_, got), want in zip(
        sorted(receiver.received, key=lambda x: x[0]), originals, strict=True
    ):
        assert sum(a != b for a, b in zip(got, want, strict=True)) == 1


def test_reordering_lets_later_datagrams_overtake() -> None:
    _, receiver = blast(LinkConditions(reorder=0.1, reorder_delay=0.05, delay=0.001))
    order = [int.from_bytes(data[:4], "big") for _, data in receiver.received]
    assert order != sorted(order)
    assert sorted(order) == list(range(2000))


def test_delay_and_jitter_bound_arrival_times() -> None:
    _, receiver = blast(LinkConditions(delay=0.02, jitter=0.01), count=300)
    times = [t for t, _ in receiver.received]
    assert min(times) >= 0.02 and max(times) <= 0.03
    assert max(times) - min(times) > 0.005  # jitter really spreads them


def test_bandwidth_paces_and_the_queue_drops_the_tail() -> None:
    # 2,000 datagrams of 100 bytes at 10 kB/s through a 5 kB queue, all sent at t=0.
    net, receiver = blast(LinkConditions(delay=0.0, bandwidth=10_000, queue_bytes=5_000))
    assert len(receiver.received) == 50
    assert sum(r.fate == "queue-full" for r in net.trace) == 1950
    times = [t for t, _ in receiver.received]
    assert times[-1] == pytest.approx(0.5)  # 50 x 100 bytes at 10 kB/s


def test_bottleneck_throughput_of_a_quic_transfer() -> None:
    # 1 Mbit/s with 20 ms RTT: 250 kB takes at least 2 s of virtual time, and not much more.
    pair = connected_pair(LinkConditions(delay=0.01, bandwidth=125_000, queue_bytes=64_000))
    sink = StreamSink(pair.server)
    pair.network.step_hooks.append(sink.pump)
    sid = pair.client.open_stream()
    start = pair.network.now
    pair.client.send(sid, b"z" * 250_000, end=True)
    assert pair.network.run_until(lambda: sid in sink.ended, 60)
    assert 2.0 <= pair.network.now - start < 4.0


def test_unroutable_destinations_are_traced() -> None:
    net = SimNetwork()
    sender = Recorder()
    net.add(A, sender)
    sender.outbox = [(b"x", ("192.0.2.1", 9))]
    net.run_for(1)
    assert [r.fate for r in net.trace] == ["unroutable"]


def test_rebinding_changes_the_source_and_the_old_address_goes_dark() -> None:
    net = SimNetwork()
    a, b = Recorder(), Recorder()
    net.add(A, a)
    net.add(B, b)
    net.rebind(A, ("10.9.9.9", 7))
    a.outbox = [(b"hi", B)]
    b.outbox = [(b"old", A), (b"new", ("10.9.9.9", 7))]
    net.run_for(1)
    assert [d for _, d in a.received] == [b"new"]
    assert net.trace[0].source == ("10.9.9.9", 7)
    with pytest.raises(ValueError):
        net.rebind(B, ("10.9.9.9", 7))  # taken


def test_per_link_conditions_override_the_default() -> None:
    net = SimNetwork(conditions=LinkConditions(loss=1.0))
    a, b = Recorder(), Recorder()
    net.add(A, a)
    net.add(B, b)
    net.set_link(A, B, LinkConditions(), both_ways=False)
    a.outbox = [(b"through", B)]
    b.outbox = [(b"lost", A)]
    net.run_for(1)
    assert [d for _, d in b.received] == [b"through"] and a.received == []


@pytest.mark.parametrize(
    "bad", [{"loss": 1.5}, {"delay": -1}, {"bandwidth": 0}, {"duplicate": -0.1}]
)
def test_invalid_link_conditions(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LinkConditions(**bad)


def test_handshake_timeout_is_reported() -> None:
    with pytest.raises(TimeoutError):
        connected_pair(
            LinkConditions(loss=1.0),
            timeout=3,
            client_config=Config(dev_mode=True, trust_dev_certificate=True),
        )

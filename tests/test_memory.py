"""What sansquic keeps per idle server connection, against aioquic's own connection.

Measured with tracemalloc on the simulated network: deterministic (no clock,
no sockets), and only what the server side allocated (``idle_servers.py``).
A ratio of bytes, never a time. Server RSS on real sockets, runtimes
included, is in ``benchmarks/runtimes.py`` (the memconn cell).
"""

from __future__ import annotations

import gc
import ssl
import tracemalloc
from types import SimpleNamespace

import pytest
from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from C
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionError
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate

from sansquic import Config, ConnectionState, RateLimits, _aioquic
from sansquic._engine import Address
from sansquic._streams import NO_BYTES
from sansquic.testing import LinkConditions, SimNetwork, StreamSink, connected_pair

from . import idle_servers

SERVER: Address = ("10.0.0.2", 4433)
MAX_STREAMS = 4096
WARM_UP, MEASURED = 2, 8
#: Bytes per idle connection at most this many times aioquic's own (issue 11 asks
#: 1.1x of RSS, runtime included). The core alone measured 0.66x here: 0.84x
#: before the spent key pairs and frame-epoch sets were shared, 1.12x before the
#: 1-RTT TLS output buffer was freed after the handshake, 1.22x before its
#: per-connection objects were slotted and its empty queues made cheap.
MAX_RATIO = 0.75


def _raw_configuration(is_client: bool) -> QuicConfiguration:
    """The settings the benchmark gives raw aioquic: sansquic's windows and packets."""
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=["sansquic"],
        max_data=16 * 1024 * 1024,
        max_stream_data=1024 * 1024,
        max_datagram_size=1200,
        congestion_control_algorithm="reno",
        idle_timeout=30.0,
    )


class _Client:
    """A raw aioquic client: the same peer for both servers."""

    def __init__(self, now: float) -> None:
        configuration = _raw_configuration(is_client=True)
        configuration.server_name = "localhost"
        configuration.verify_mode = ssl.CERT_NONE
        self.quic = QuicConnection(configuration=configuration)
        self.quic.connect(SERVER, now=now)

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self.quic.receive_datagram(data, address, now=now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = self.quic.datagrams_to_send(now=now)
        return out

    def timer(self) -> float | None:
        timer: float | None = self.quic.get_timer()
        return timer

    def handle_timer(self, now: float) -> None:
        self.quic.handle_timer(now=now)

    def pump(self) -> None:
        while self.quic.next_event() is not None:
            pass


def _bytes_per_idle_connection(
    server: idle_servers.SansquicServer | idle_servers.RawServer,
) -> float:
    net = SimNetwork(0, conditions=LinkConditions(delay=0.001, mtu=None), keep_trace=False)
    net.add(SERVER, server)
    net.step_hooks.append(server.pump)
    clients: list[_Client] = []

    def connect(count: int) -> None:
        for _ in range(count):
            client = _Client(net.now)
            address = ("10.0.1.1", 1000 + len(clients))
            net.add(address, client)
            net.step_hooks.append(client.pump)
            clients.append(client)
        net.run_for(1.0)  # handshakes done, acknowledgements settled: idle

    connect(WARM_UP)  # first-use caches (the shared configuration) are not per connection
    gc.collect()
    tracemalloc.start(40)
    try:
        before = tracemalloc.take_snapshot()
        connect(MEASURED)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert server.connected == WARM_UP + MEASURED
    servers_side = [tracemalloc.Filter(True, idle_servers.__file__, all_frames=True)]
    grown = after.filter_traces(servers_side).compare_to(
        before.filter_traces(servers_side), "filename"
    )
    return sum(stat.size_diff for stat in grown) / MEASURED


def test_an_idle_connection_costs_little_more_than_aioquics_own() -> None:
    limits = RateLimits(max_connections_per_address=None, new_connections_per_second=None)
    config = Config(
        dev_mode=True,
        max_streams_bidi=MAX_STREAMS,
        rate_limits=limits,
        max_udp_payload_size=1200,
        pmtu_discovery=False,
    )
    raw_configuration = _raw_configuration(is_client=False)
    assert config.certificate is not None and config.private_key is not None
    raw_configuration.certificate = load_pem_x509_certificate(config.certificate)
    raw_configuration.private_key = load_pem_private_key(config.private_key, password=None)
    ours = _bytes_per_idle_connection(idle_servers.SansquicServer(config))
    raw = _bytes_per_idle_connection(idle_servers.RawServer(raw_configuration, MAX_STREAMS))
    assert raw > 20_000  # it measured the connections at all
    assert ours / raw <= MAX_RATIO, f"{ours:.0f} B per idle connection, aioquic's {raw:.0f} B"


def test_no_tls_output_buffer_or_spent_key_outlives_the_handshake() -> None:
    """Both ends free aioquic's three 16 KiB TLS output buffers once confirmed,
    and its spent key pairs; then they still drop a replayed Initial unread."""
    pair = connected_pair(handshake=False)
    client, server, net = pair.client, pair.server, pair.network
    [(first_initial, _)] = client.datagrams_to_send(net.now)
    server.receive_datagram(first_initial, pair.client_address, net.now)
    net.run_for(1.0)
    assert client.state is server.state is ConnectionState.CONNECTED
    for conn in (pair.client, pair.server):
        quic = conn._engine._quic  # type: ignore[union-attr]
        assert {epoch: buffer.capacity for epoch, buffer in quic._crypto_buffers.items()} == {
            tls.Epoch.INITIAL: 0,
            tls.Epoch.HANDSHAKE: 0,
            tls.Epoch.ONE_RTT: 0,
        }
        spent = [quic._cryptos[epoch] for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE)]
        spent += list(quic._cryptos_initial.values())
        assert not any(pair.recv.is_valid() or pair.send.is_valid() for pair in spent)
        assert len({id(pair) for pair in spent}) == 1  # one shared empty pair
        assert quic._cryptos[tls.Epoch.ONE_RTT].send.is_valid()
    server.receive_datagram(first_initial, pair.client_address, net.now)
    net.run_for(1.0)
    assert server.state is ConnectionState.CONNECTED
    sink = StreamSink(server)
    net.step_hooks.append(sink.pump)
    stream = client.open_stream()
    client.send(stream, b"still here", end=True)
    assert net.run_until(lambda: stream in sink.ended, 5)
    assert sink.received[stream] == b"still here"


@pytest.mark.parametrize("fails", [False, True])
def test_a_late_crypto_frame_borrows_the_1rtt_buffer(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """A CRYPTO frame after the handshake gets a full buffer for TLS to answer
    into, and the buffer is freed again once its bytes went out (or TLS failed)."""
    pair = connected_pair()
    pair.network.run_for(1.0)
    quic = pair.client._engine._quic  # type: ignore[union-attr]
    seen: list[int] = []

    def handle(self: QuicConnection, context: object, frame_type: int, buf: object) -> None:
        output = self._crypto_buffers[tls.Epoch.ONE_RTT]
        seen.append(output.capacity)
        output.push_bytes(b"answer")  # what TLS would write ...
        self._push_crypto_data()  # ... and aioquic moves to the crypto stream
        if fails:
            raise ValueError("alert")

    monkeypatch.setattr(QuicConnection, "_handle_crypto_frame", handle)
    if fails:
        with pytest.raises(ValueError):
            quic._handle_crypto_frame(None, 0x06, None)
    else:
        quic._handle_crypto_frame(None, 0x06, None)
    assert seen == [16384]
    assert quic._crypto_buffers[tls.Epoch.ONE_RTT].capacity == 0


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_late_tls_message_borrows_the_buffer_and_gives_it_back(side: str) -> None:
    """The real path: a post-handshake TLS KeyUpdate (forbidden in QUIC) in a 1-RTT
    CRYPTO frame fails as a connection error, and the shared empty buffer is back
    in place, itself untouched."""
    pair = connected_pair()
    pair.network.run_for(1.0)
    conn = pair.client if side == "client" else pair.server
    quic = conn._engine._quic  # type: ignore[union-attr]
    assert quic._crypto_buffers[tls.Epoch.ONE_RTT] is _aioquic._NO_BUFFER
    key_update = bytes([24, 0, 0, 1, 0])
    offset = quic._crypto_streams[tls.Epoch.ONE_RTT].receiver.starting_offset()
    frame = Buffer(capacity=32)
    frame.push_uint_var(offset)
    frame.push_uint_var(len(key_update))
    frame.push_bytes(key_update)
    context = SimpleNamespace(
        epoch=tls.Epoch.ONE_RTT, quic_logger_frames=None, version=quic._version, time=0.0
    )
    with pytest.raises(QuicConnectionError):
        quic._handle_crypto_frame(context, 0x06, Buffer(data=frame.data))
    assert quic._crypto_buffers[tls.Epoch.ONE_RTT] is _aioquic._NO_BUFFER
    assert (_aioquic._NO_BUFFER.capacity, _aioquic._NO_BUFFER.tell()) == (0, 0)


#: Bytes the core (sansquic/ only, aioquic's own stream left out) keeps per open idle
#: stream that carried a byte each way: its record (88 B), its send queue (64 B) and
#: its entry in the table (about 40 B) measured 189 B. It was 351 B while every
#: stream kept two empty buffers and the engine kept the ids of streams long sent.
MAX_CORE_BYTES_PER_STREAM = 256


def test_an_idle_stream_keeps_no_buffer_of_its_own() -> None:
    """300 streams (more than the engine's id pruning threshold) each carry one byte
    each way and stay open: no stream keeps a buffer, the engine keeps at most 256
    of their ids (before, all of them), and the core's own bytes per stream stay small."""
    count = _aioquic._HANDED_PRUNE + 44
    config = Config(dev_mode=True, trust_dev_certificate=True, max_streams_bidi=MAX_STREAMS)
    pair = connected_pair(server_config=config)
    client, server, net = pair.client, pair.server, pair.network
    sink, client_sink = StreamSink(server), StreamSink(client)

    def answer() -> None:
        sink.pump()
        sink.events.clear()  # what the test keeps is not the core's
        client_sink.events.clear()
        for stream_id in [s for s, data in sink.received.items() if data == b"H"]:
            server.send(stream_id, b"h")
            sink.received[stream_id] = bytearray(b"answered")

    net.step_hooks.append(client_sink.pump)
    net.step_hooks.append(answer)

    def hold(n: int) -> list[int]:
        ids = [client.open_stream() for _ in range(n)]
        for stream_id in ids:
            client.send(stream_id, b"H")
        assert net.run_until(lambda: all(client_sink.received.get(s) == b"h" for s in ids), 10)
        net.run_for(1.0)  # acknowledgements settled
        return ids

    hold(4)  # first-use caches
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        held = hold(count)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    package = _aioquic.__file__.rsplit("/", 1)[0]
    core = [
        tracemalloc.Filter(True, f"{package}/*"),
        tracemalloc.Filter(False, f"{package}/testing/*"),
    ]
    grown = after.filter_traces(core).compare_to(before.filter_traces(core), "filename")
    per_stream = sum(stat.size_diff for stat in grown) / (2 * count)  # both ends hold each
    assert per_stream <= MAX_CORE_BYTES_PER_STREAM, f"{per_stream:.0f} B per idle stream"
    for conn in (client, server):
        records = conn._streams.records
        assert all(sid in records for sid in held)
        assert all(records[sid].buffer is NO_BYTES for sid in held)
        assert all(records[sid].outgoing.buffer is NO_BYTES for sid in held)  # type: ignore[union-attr]
        # Pruned past 256 ids, so a few may stay; here the last pass left none.
        assert len(conn._engine._handed) <= _aioquic._HANDED_PRUNE  # type: ignore[union-attr]
    assert NO_BYTES.size == 0 and NO_BYTES._chunks is None  # the shared one took nothing
    client.send(held[0], b"more", end=True)  # a stream that held nothing still works
    assert net.run_until(lambda: held[0] in sink.ended, 5)
    assert sink.received[held[0]] == b"answeredmore"

"""Conformance cases: each runs one client harness against one server harness on loopback UDP.

A case raises (AssertionError or the runtime's error) on failure. Cases are
written once, against the blocking interface of ``harness.py``.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sansquic
from sansquic import tokens
from sansquic.websocket import Transport

from . import hq
from . import messaging as _messaging
from .harness import Harness
from .relay import Relay

__all__ = ["CASES", "CROSS_CASES", "FAST_CASES", "Case"]

Case = Callable[[Harness, Harness], None]
#: The engine every case runs on: SANSQUIC_CONFORMANCE_ENGINE=qh3 selects qh3 (both sides).
ENGINE = os.environ.get("SANSQUIC_CONFORMANCE_ENGINE", "aioquic")
CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True, engine=ENGINE)  # type: ignore[arg-type]  # checked
_HQ_CONFIG = hq.CONFIG.replace(engine=ENGINE)
_KEYS = {"conformance": b"conformance signing key, 32 bytes"}
_SIGNER = tokens.TokenSigner(_KEYS, key_id="conformance")


@contextlib.contextmanager
def _pair(
    client: Harness,
    server: Harness,
    handler: Callable[[Any], None],
    *,
    server_config: sansquic.Config = CONFIG,
    client_config: sansquic.Config = CONFIG,
    authenticator: Any = None,
    token: str | None = None,
) -> Iterator[tuple[Any, Any]]:
    handle = server.serve(handler, server_config, authenticator)
    try:
        conn = client.connect(handle.address, client_config, token)
        try:
            yield conn, handle
        finally:
            with contextlib.suppress(sansquic.SansQuicError):
                conn.close()
    finally:
        handle.close()


def _read_all(stream: Any, timeout: float = 20.0) -> bytes:
    data = bytearray()
    while chunk := stream.receive(timeout=timeout):
        data += chunk
    return bytes(data)


def _echo(conn: Any) -> None:
    """Echo each stream when it ends (one at a time), and each datagram."""

    def datagrams() -> None:
        with contextlib.suppress(sansquic.SansQuicError, TimeoutError):
            while True:
                conn.send_datagram(conn.receive_datagram(timeout=30))

    threading.Thread(target=datagrams, daemon=True).start()
    for stream in conn:
        stream.send(_read_all(stream))
        stream.finish()


def _digest(conn: Any) -> None:
    """Reply to each stream with the sha256 of what it carried."""
    for stream in conn:
        stream.send(hashlib.sha256(_read_all(stream)).digest())
        stream.finish()


# -- cases ----------------------------------------------------------------------------------


def handshake(client: Harness, server: Harness) -> None:
    with _pair(client, server, _echo) as (conn, _):
        assert conn.identity is None
        assert conn.stats().rtt_smoothed is not None


def echo(client: Harness, server: Harness) -> None:
    with _pair(client, server, _echo) as (conn, _):
        stream = conn.open_stream()
        stream.send(b"hello, conformance")
        stream.finish()
        assert _read_all(stream) == b"hello, conformance"


def versions_and_cipher_suites(client: Harness, server: Harness) -> None:
    """QUIC v2 with ChaCha20 where both sides allow it; a v2-only client cannot reach a
    v1-only server (Version Negotiation offers nothing it speaks)."""
    v2_chacha = {"versions": ("v2",), "cipher_suites": ("CHACHA20_POLY1305_SHA256",)}
    if ENGINE == "qh3":  # the qh3 adapter refuses both rather than ignoring them
        try:
            CONFIG.replace(**v2_chacha)
            raise AssertionError("qh3 accepted versions/cipher_suites it does not pass on")
        except sansquic.ConfigError:
            return
    both = CONFIG.replace(versions=("v1", "v2"))
    with _pair(
        client, server, _echo, server_config=both, client_config=CONFIG.replace(**v2_chacha)
    ) as (conn, _):
        stream = conn.open_stream()
        stream.send(b"over v2")
        stream.finish()
        assert _read_all(stream) == b"over v2"
    handle = server.serve(_echo, CONFIG, None)
    try:
        started = time.monotonic()
        try:
            client.connect(handle.address, CONFIG.replace(versions=("v2",))).close()
            raise AssertionError("a v2-only client connected to a v1-only server")
        except (sansquic.ConnectionClosed, TimeoutError):
            pass
        assert time.monotonic() - started < 15
    finally:
        handle.close()


def streams_1000(client: Harness, server: Harness) -> None:
    with _pair(client, server, _echo) as (conn, _):
        sent = {}
        for i in range(1000):
            stream = conn.open_stream()
            sent[stream.id] = (stream, os.urandom(8) + i.to_bytes(4, "big") * 50)
            stream.send(sent[stream.id][1])
            stream.finish()
        for stream, payload in sent.values():
            assert _read_all(stream) == payload


def transfer_10mb(client: Harness, server: Harness) -> None:
    payload = os.urandom(10_000_000)
    with _pair(client, server, _digest) as (conn, _):
        stream = conn.open_stream()
        stream.send(payload)
        stream.finish()
        assert _read_all(stream, timeout=60) == hashlib.sha256(payload).digest()


def critical_overtakes_low(client: Harness, server: Harness) -> None:
    with _pair(client, server, _digest_each_concurrently) as (conn, _):
        low = conn.open_stream(priority=sansquic.Priority.LOW)
        low_done = threading.Event()

        def saturate() -> None:
            # 60 MB: at large packets a runtime moves 30 MB in the 0.3 s below.
            low.send(os.urandom(1_000_000) * 60)
            low.finish()
            _read_all(low, timeout=60)
            low_done.set()

        worker = threading.Thread(target=saturate)
        worker.start()
        time.sleep(0.3)  # the LOW stream fills every window
        assert not low_done.is_set(), "the LOW transfer ended before CRITICAL began: lengthen it"
        critical = conn.open_stream(priority=sansquic.Priority.CRITICAL)
        message = os.urandom(64 * 1024)
        critical.send(message)
        critical.finish()
        assert _read_all(critical) == hashlib.sha256(message).digest()
        assert not low_done.is_set(), "the LOW transfer finished first: nothing was overtaken"
        worker.join(60)
        assert low_done.is_set()


def _digest_each_concurrently(conn: Any) -> None:
    def one(stream: Any) -> None:
        stream.send(hashlib.sha256(_read_all(stream, timeout=60)).digest())
        stream.finish()

    for stream in conn:
        threading.Thread(target=one, args=(stream,), daemon=True).start()


def slow_reader_bounds_memory(client: Harness, server: Harness) -> None:
    release = threading.Event()

    def late_reader(conn: Any) -> None:
        stream = conn.accept_stream(timeout=10)
        release.wait(10)
        stream.send(hashlib.sha256(_read_all(stream, timeout=60)).digest())
        stream.finish()

    payload = os.urandom(20_000_000)
    with _pair(client, server, late_reader) as (conn, _):
        stream = conn.open_stream()
        progress = {"sent": 0}

        def write() -> None:
            for start in range(0, len(payload), 65_536):
                stream.send(payload[start : start + 65_536])
                progress["sent"] = start + 65_536
            stream.finish()

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(1.0)  # nobody reads on the other side
        stalled_at = progress["sent"]
        buffered = conn.stats().send_buffered
        limit = CONFIG.max_stream_data + CONFIG.send_high_watermark + 1_000_000
        assert stalled_at < limit, f"{stalled_at} bytes accepted with nobody reading"
        assert buffered <= CONFIG.send_high_watermark + 65_536
        release.set()
        writer.join(60)
        assert _read_all(stream, timeout=60) == hashlib.sha256(payload).digest()


def datagrams(client: Harness, server: Harness) -> None:
    with _pair(client, server, _echo) as (conn, _):
        echoed = 0
        for i in range(50):
            conn.send_datagram(b"datagram %d" % i)
            with contextlib.suppress(TimeoutError):
                assert conn.receive_datagram(timeout=0.5).startswith(b"datagram ")
                echoed += 1
        assert echoed >= 40  # loopback rarely loses any; datagrams may be lost by design


def _token_server(**policy: Any) -> sansquic.Config:
    verifier = tokens.TokenVerifier(_KEYS)
    authenticator = tokens.token_authenticator(verifier, token_time=lambda now: time.time())
    return CONFIG.replace(auth=sansquic.AuthPolicy(authenticator=authenticator, **policy))


def auth_accept(client: Harness, server: Harness) -> None:
    token = _SIGNER.sign("agent", scopes=("x",), ttl=60, now=time.time())
    with _pair(client, server, _echo, server_config=_token_server(), token=token) as (conn, _):
        assert conn.identity is not None
        assert conn.identity.subject == "agent"


def auth_reject(client: Harness, server: Harness) -> None:
    expired = _SIGNER.sign("agent", ttl=1, now=time.time() - 3600)
    try:
        with _pair(client, server, _echo, server_config=_token_server(), token=expired):
            raise AssertionError("an expired token was accepted")
    except sansquic.ConnectionClosed as exc:
        assert exc.error_code == sansquic.CloseCode.AUTH_REJECTED, exc


def auth_deadline(client: Harness, server: Harness) -> None:
    config = _token_server(deadline=0.5)
    with _pair(client, server, _echo, server_config=config) as (conn, _):  # presents nothing
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                conn.open_stream().send(b"x")
            except sansquic.ConnectionClosed as exc:
                assert exc.error_code == sansquic.CloseCode.AUTH_TIMEOUT, exc
                return
            time.sleep(0.1)
        raise AssertionError("the server never closed the silent client")


def connect_to_a_closed_port(client: Harness, server: Harness) -> None:
    """A connect to a loopback port nothing listens on fails at once with
    PeerUnreachableError (the socket reports the ICMP port unreachable and the core
    ends the handshake), not after the connect timeout. Only Linux reports ICMP
    errors on an unconnected UDP socket: elsewhere the connect timeout applies."""
    if sys.platform != "linux":
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[:2]
    probe.close()  # nothing listens there now: the kernel answers with ICMP
    start = time.monotonic()
    try:
        conn = client.connect(closed, CONFIG)
    except sansquic.PeerUnreachableError as exc:
        assert exc.closed_by is sansquic.ClosedBy.UNREACHABLE, exc
        assert f"{closed[0]}:{closed[1]}" in str(exc), exc
    else:
        conn.close()
        raise AssertionError(f"connected to {closed}, where nothing listens")
    elapsed = time.monotonic() - start
    assert elapsed < 3.0, f"the unreachable peer took {elapsed:.1f} s to notice"


def unready_connections_leave_nothing(client: Harness, server: Harness) -> None:
    """Clients that finish TLS and never pass auth leave no state once the server dropped them."""
    handle = server.serve(_echo, _token_server(deadline=0.3))
    silent = []
    try:
        for _ in range(3):  # a bad token: rejected at once
            try:
                client.connect(handle.address, CONFIG, "not a token").close()
                raise AssertionError("a bad token was accepted")
            except sansquic.ConnectionClosed as exc:
                assert exc.error_code == sansquic.CloseCode.AUTH_REJECTED, exc
        for _ in range(6):  # no token at all: the deadline closes each
            silent.append(client.connect(handle.address, CONFIG))
        deadline = time.monotonic() + 5
        while (handle.stats().active or handle.tracked()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (handle.stats().active, handle.tracked()) == (0, 0)
        assert handle.stats().auth_failures == 9
    finally:
        for conn in silent:
            conn.close()
        handle.close()


def per_address_limit(client: Harness, server: Harness) -> None:
    limits = sansquic.RateLimits(max_connections_per_address=3, new_connections_per_second=None)
    handle = server.serve(_echo, CONFIG.replace(rate_limits=limits))
    conns = []
    try:
        for _ in range(3):
            conns.append(client.connect(handle.address, CONFIG))
        try:
            conns.append(client.connect(handle.address, CONFIG))
            raise AssertionError("the fourth connection from one address was admitted")
        except sansquic.ConnectionClosed as exc:
            assert exc.error_code == 0x02 and exc.by_peer, exc  # CONNECTION_REFUSED
        assert handle.stats().refused == {"connections per address": 1}
    finally:
        for conn in conns:
            conn.close()
        handle.close()


def reset_and_stop(client: Harness, server: Harness) -> None:
    seen: queue.Queue[object] = queue.Queue()

    def handler(conn: Any) -> None:
        first = conn.accept_stream(timeout=10)
        try:
            _read_all(first)
        except sansquic.StreamResetError as exc:
            seen.put(exc.error_code)
        second = conn.accept_stream(timeout=10)
        second.stop(77)
        _echo(conn)

    with _pair(client, server, handler) as (conn, _):
        first = conn.open_stream()
        first.send(b"partial")
        first.reset(55)
        assert seen.get(timeout=10) == 55
        second = conn.open_stream()
        try:
            for _ in range(200):
                second.send(b"y" * 10_000)
                time.sleep(0.01)
            raise AssertionError("sending went on after STOP_SENDING")
        except sansquic.StreamStoppedError as exc:
            assert exc.error_code == 77


def idle_timeout(client: Harness, server: Harness) -> None:
    config = CONFIG.replace(idle_timeout=1.0)
    with _pair(client, server, _echo, server_config=config, client_config=config) as (conn, _):
        time.sleep(2.5)
        try:
            conn.open_stream().send(b"too late")
            raise AssertionError("the connection outlived its idle timeout")
        except sansquic.IdleTimeoutError as exc:
            assert exc.closed_by is sansquic.ClosedBy.IDLE and exc.reason == "idle timeout", exc


def keep_alive(client: Harness, server: Harness) -> None:
    """The client's PINGs keep a quiet connection open past both idle timeouts
    (``idle_timeout`` above is the same connection without them, closing)."""
    config = CONFIG.replace(idle_timeout=1.0)
    client_config = config.replace(keep_alive=0.3)
    with _pair(client, server, _echo, server_config=config, client_config=client_config) as (
        conn,
        _,
    ):
        time.sleep(2.5)
        stream = conn.open_stream()
        stream.send(b"still open")
        stream.finish()
        assert _read_all(stream, timeout=5) == b"still open"


def qlog_traces(client: Harness, server: Harness) -> None:
    """``Config.qlog`` hands each side one qlog 0.3 trace of its connection when it ends."""
    traces: dict[str, queue.Queue[dict[str, Any]]] = {
        "client": queue.Queue(),
        "server": queue.Queue(),
    }
    client_config = CONFIG.replace(qlog=traces["client"].put)
    server_config = CONFIG.replace(qlog=traces["server"].put)
    with _pair(client, server, _echo, server_config=server_config, client_config=client_config) as (
        conn,
        _,
    ):
        stream = conn.open_stream()
        stream.send(b"traced")
        stream.finish()
        assert _read_all(stream) == b"traced"
    for side, got in traces.items():
        trace = got.get(timeout=10)  # the server's comes after its closing period
        assert trace["qlog_version"] == "0.3", trace.keys()
        (first,) = trace["traces"]
        assert first["vantage_point"]["type"] == side, first["vantage_point"]
        names = {event["name"] for event in first["events"]}
        assert {"transport:packet_sent", "transport:packet_received"} <= names, names
        assert got.empty(), f"the {side} got more than one trace for one connection"


def connection_stats(client: Harness, server: Harness) -> None:
    """``stats()`` reports the path after real traffic, the same on every runtime."""
    with _pair(client, server, _echo) as (conn, _):
        body = os.urandom(200_000)
        stream = conn.open_stream()
        stream.send(body)
        stream.finish()
        assert _read_all(stream) == body
        stats = conn.stats()
    assert stats.rtt_smoothed is not None and stats.rtt_min is not None, stats
    assert 0 < stats.rtt_min <= stats.rtt_smoothed < 1.0, stats
    assert stats.rtt_variance is not None and stats.rtt_variance >= 0, stats
    assert stats.packets_sent is not None and stats.packets_sent >= 10, stats
    assert stats.packets_lost is not None and stats.packets_retransmitted is not None, stats
    assert stats.congestion_window > 0 and stats.udp_payload_size >= 1200, stats
    assert stats.stream_bytes_sent >= len(body) and stats.stream_bytes_received >= len(body)
    assert stats.udp_datagrams_sent >= 10 and stats.udp_bytes_received > len(body), stats


def stream_queued(client: Harness, server: Harness) -> None:
    """``Stream.queued`` counts what the peer's flow control holds back, then drains to 0."""
    go = threading.Event()
    window = 16 * 1024

    def handler(conn: Any) -> None:
        stream = conn.accept_stream(timeout=10)
        go.wait(10)
        stream.send(hashlib.sha256(_read_all(stream)).digest())
        stream.finish()

    server_config = CONFIG.replace(max_stream_data=window, max_stream_window=window)
    with _pair(client, server, handler, server_config=server_config) as (conn, _):
        stream = conn.open_stream()
        body = b"q" * 200_000  # under the send high watermark: send() returns at once
        stream.send(body)
        stream.finish()
        time.sleep(0.5)  # one window's worth leaves; the rest waits for credit
        assert len(body) - window <= stream.queued <= len(body) - window // 2, stream.queued
        go.set()
        assert _read_all(stream, timeout=10) == hashlib.sha256(body).digest()
        assert stream.queued == 0


def graceful_close(client: Harness, server: Harness) -> None:
    seen: queue.Queue[sansquic.ConnectionClosed] = queue.Queue()

    def handler(conn: Any) -> None:
        first = conn.accept_stream(timeout=10)
        first.send(_read_all(first))
        first.finish()
        try:
            conn.accept_stream(timeout=10)
        except sansquic.ConnectionClosed as exc:
            seen.put(exc)

    with _pair(client, server, handler) as (conn, _):
        stream = conn.open_stream()  # one round trip: the handler is surely running
        stream.send(b"ping")
        stream.finish()
        assert _read_all(stream) == b"ping"
        conn.close(42, "bye now")
        closed = seen.get(timeout=10)
        assert isinstance(closed, sansquic.PeerClosedError), closed
        assert (closed.error_code, closed.reason, closed.closed_by) == (
            42,
            "bye now",
            sansquic.ClosedBy.PEER,
        )


def server_close_with_a_distant_peer(client: Harness, server: Harness) -> None:
    """A server closing while a far, silent peer holds a connection returns within its
    bounded wait, although the closing period (3 PTO on a 700 ms round trip, about
    5 s) outlasts it, and keeps nothing of the connection."""
    handle = server.serve(_echo, CONFIG)
    relay = Relay(handle.address, delay=0.35)
    try:
        conn = client.connect(relay.address, CONFIG)
        try:
            # Two round trips: by the second the server has timed the path (the client's
            # ACK of the first reply), and its handler holds the connection.
            for _ in range(2):
                stream = conn.open_stream()
                stream.send(b"far")
                stream.finish()
                assert _read_all(stream) == b"far"
            relay.close()  # the peer goes silent: nothing cuts the closing period short
            began = time.monotonic()
            handle.close()
            elapsed = time.monotonic() - began
            assert handle.tracked() == 0, f"{handle.tracked()} connection(s) kept after close"
            # The runtimes wait up to 2 s in all for their connections to finish closing.
            assert elapsed < 4.0, f"close() took {elapsed:.1f} s"
        finally:
            conn.close()
    finally:
        relay.close()
        handle.close()


def _closed_by_server_within(conn: Any, seconds: float) -> sansquic.ConnectionClosed:
    """Wait until using ``conn`` raises ConnectionClosed; return that error."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            conn.open_stream().send(b"anyone there?")
        except sansquic.ConnectionClosed as exc:
            return exc
        time.sleep(0.05)
    raise AssertionError("the server left the connection open with nothing serving it")


def raising_handler(client: Harness, server: Harness) -> None:
    def handler(conn: Any) -> None:
        _read_all(conn.accept_stream(timeout=10))
        raise RuntimeError("a bug in the handler")

    with _pair(client, server, handler) as (conn, _):
        stream = conn.open_stream()
        stream.send(b"trigger")
        stream.finish()
        closed = _closed_by_server_within(conn, 10)
        assert closed.error_code == sansquic.CloseCode.INTERNAL_ERROR, closed
        assert isinstance(closed, sansquic.PeerClosedError), closed


def uncaught_peer_reset(client: Harness, server: Harness) -> None:
    def handler(conn: Any) -> None:
        _read_all(conn.accept_stream(timeout=10))  # StreamResetError escapes the handler

    with _pair(client, server, handler) as (conn, _):
        stream = conn.open_stream()
        stream.send(b"partial")
        stream.reset(9)
        closed = _closed_by_server_within(conn, 10)
        assert closed.error_code == sansquic.CloseCode.INTERNAL_ERROR, closed
        assert isinstance(closed, sansquic.PeerClosedError), closed


def send_larger_than_the_buffer_limit(client: Harness, server: Harness) -> None:
    """One send() of 1 MiB with a 64 KiB buffer whose watermark is the limit: split, not refused."""
    tight = CONFIG.replace(
        send_high_watermark=64 * 1024,
        send_low_watermark=16 * 1024,
        send_buffer_limit=64 * 1024,
    )
    payload = os.urandom(1 << 20)

    def handler(conn: Any) -> None:
        for stream in conn:
            stream.send(_read_all(stream))  # the reply, 1 MiB in one call too
            stream.finish()

    with _pair(client, server, handler, server_config=tight, client_config=tight) as (conn, _):
        stream = conn.open_stream()
        stream.send(payload, timeout=20)
        stream.finish()
        assert hashlib.sha256(_read_all(stream)).digest() == hashlib.sha256(payload).digest()


def receive_sizes(client: Harness, server: Harness) -> None:
    """receive(0) is refused, receive(n) returns at most n, and the helpers read whole replies."""
    with _pair(client, server, _echo) as (conn, _):
        stream = conn.open_stream()
        stream.send(b"0123456789" * 100)
        stream.finish()
        try:
            stream.receive(0, timeout=5)
            raise AssertionError("receive(0) returned instead of raising")
        except ValueError:
            pass
        first = stream.receive(7, timeout=10)
        assert 1 <= len(first) <= 7
        rest = stream.receive_exactly(1000 - len(first) - 3, timeout=10)
        assert first + rest == (b"0123456789" * 100)[:-3]
        try:
            stream.receive_exactly(10, timeout=10)
            raise AssertionError("receive_exactly read past the end of the stream")
        except sansquic.IncompleteRead as exc:
            assert exc.partial == b"789", exc
        second = conn.open_stream()
        second.send(b"whole reply " * 5000)
        second.finish()
        assert second.read_all(timeout=20) == b"whole reply " * 5000


def concurrent_receive_is_busy(client: Harness, server: Harness) -> None:
    """A second task receiving on the same stream is refused at once; the first is unharmed."""
    release: queue.Queue[bytes] = queue.Queue()

    def handler(conn: Any) -> None:
        stream = conn.accept_stream(timeout=10)
        stream.receive(timeout=10)
        stream.send(release.get(timeout=10))
        stream.finish()

    with _pair(client, server, handler) as (conn, _):
        stream = conn.open_stream()
        stream.send(b"start")
        first: queue.Queue[object] = queue.Queue()
        reader = threading.Thread(target=lambda: first.put(_try(stream.receive, timeout=10)))
        reader.start()
        try:
            time.sleep(0.3)  # the first receive is waiting now
            try:
                stream.receive(timeout=1)
                raise AssertionError("a second concurrent receive was allowed")
            except sansquic.BusyError:
                pass
        finally:
            release.put(b"for the first reader")
            reader.join(15)
        assert first.get(timeout=1) == b"for the first reader"


def _try(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> object:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        return exc


def timeouts_leave_the_connection_usable(client: Harness, server: Harness) -> None:
    """A send or receive that times out (mid-way) leaves the connection usable."""
    hold: queue.Queue[None] = queue.Queue()

    def handler(conn: Any) -> None:
        stalled = conn.accept_stream(timeout=10)  # never read until told: the sender blocks
        hold.get(timeout=20)
        stalled.stop(1)
        _echo(conn)

    with _pair(client, server, handler) as (conn, _):
        stalled = conn.open_stream()
        try:
            stalled.send(os.urandom(8 << 20), timeout=0.5)  # far beyond every window
            raise AssertionError("8 MiB went out to a peer that reads nothing")
        except TimeoutError:
            pass
        silent = conn.open_stream()
        silent.send(b"nobody answers this yet")
        try:
            silent.receive(timeout=0.2)
            raise AssertionError("a reply came from a handler that sends none")
        except TimeoutError:
            pass
        hold.put(None)
        silent.finish()  # the echo handler serves streams in turn: let it past this one
        again = conn.open_stream()
        again.send(b"still usable")
        again.finish()
        assert _read_all(again) == b"still usable"


def local_actions_wake_blocked_tasks(client: Harness, server: Harness) -> None:
    """This side's reset or stop wakes its own task blocked on that stream; a close with a
    bad code raises and changes nothing, so a proper close still works."""
    release: queue.Queue[None] = queue.Queue()

    def handler(conn: Any) -> None:
        conn.accept_stream(timeout=10)  # accepted, never read: its sender blocks
        release.get(timeout=30)

    with _pair(client, server, handler) as (conn, _):
        stalled = conn.open_stream()
        outcome: queue.Queue[object] = queue.Queue()
        sender = threading.Thread(
            target=lambda: outcome.put(_try(stalled.send, os.urandom(8 << 20), timeout=20))
        )
        sender.start()
        time.sleep(0.3)  # the send is blocked on flow control now
        stalled.reset(3)
        sender.join(10)
        assert isinstance(outcome.get(timeout=1), sansquic.LocalProtocolError)
        reading = conn.open_stream()
        reading.send(b"no answer comes")
        reader = threading.Thread(target=lambda: outcome.put(_try(reading.receive, timeout=20)))
        reader.start()
        time.sleep(0.3)
        reading.stop(4)
        reader.join(10)
        assert outcome.get(timeout=1) == b""  # stopped by this side: nothing more to read
        try:
            conn.close(2**62, "too big a code")
            raise AssertionError("an out-of-range close code was accepted")
        except sansquic.LocalProtocolError:
            pass
        release.put(None)
        conn.close(0, "a proper close")  # still possible: the bad one changed nothing
        try:
            conn.open_stream()
            raise AssertionError("the connection is still open after close()")
        except sansquic.ConnectionClosed:
            pass


def stateless_reset(client: Harness, server: Harness) -> None:
    """A client sent to a server that never saw its connection (a restart, behind a
    load balancer) is reset at once and raises StatelessResetError."""
    config = CONFIG.replace(reset_key=os.urandom(32))  # shared by both servers
    first = server.serve(_echo, config)
    try:
        with Relay(first.address) as relay:
            conn = client.connect(relay.address, CONFIG)
            try:
                stream = conn.open_stream()
                stream.send(b"before")
                stream.finish()
                assert _read_all(stream) == b"before"
                second = server.serve(_echo, config)
                try:
                    relay.retarget(second.address)
                    closed = _closed_by_server_within(conn, 10)
                    assert isinstance(closed, sansquic.StatelessResetError), closed
                    assert closed.closed_by is sansquic.ClosedBy.STATELESS_RESET
                    assert second.stats().stateless_resets >= 1
                finally:
                    second.close()
            finally:
                conn.close()
    finally:
        first.close()


def _wait_for_ticket(store: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while len(store) == 0:
        assert time.monotonic() < deadline, "the server sent no session ticket"
        time.sleep(0.01)


def resumption_and_0rtt(client: Harness, server: Harness) -> None:
    """A second connection resumes with the first one's ticket, sends its request in
    0-RTT (connect() returns before the handshake), and the server can tell."""

    def handler(conn: Any) -> None:
        for stream in conn:
            request = _read_all(stream)
            stream.send(f"{int(conn.resumed)} {stream.early_bytes} ".encode() + request)
            stream.finish()

    server_config = CONFIG.replace(early_data=True)
    client_config = CONFIG.replace(early_data=True, ticket_store=sansquic.MemoryTicketStore())
    handle = server.serve(handler, server_config)
    # A 100 ms round trip: the request is sent long before the handshake could end.
    relay = Relay(handle.address, delay=0.05)
    try:
        first = client.connect(relay.address, client_config)
        try:
            assert not first.resumed
            _wait_for_ticket(client_config.ticket_store)
        finally:
            first.close()
        second = client.connect(relay.address, client_config)
        try:
            # connect() returned before the handshake could end (a 100 ms round trip).
            assert second.early_data_accepted is None, second.early_data_accepted
            stream = second.open_stream()
            stream.send(b"GET /early")
            stream.finish()
            reply = _read_all(stream)
            assert reply == b"1 10 GET /early", reply
            assert second.resumed and second.early_data_accepted is True
        finally:
            second.close()
    finally:
        relay.close()
        handle.close()


def hq_interop_transfer(client: Harness, server: Harness) -> None:
    files = {"/small": b"hello, interop", "/large": os.urandom(3_000_000)}
    with _pair(
        client, server, hq.serve_files(files), server_config=_HQ_CONFIG, client_config=_HQ_CONFIG
    ) as (conn, _):
        for path, body in files.items():
            assert hq.get(conn, path) == body
        try:
            hq.get(conn, "/missing")
            raise AssertionError("an unknown path was served")
        except sansquic.StreamResetError as exc:
            assert exc.error_code == hq.NOT_FOUND


def _wait_for(predicate: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.01)


def _update_keys_when_settled(conn: Any) -> None:
    """Update the keys, waiting (bounded) while the last update is unconfirmed."""
    for _ in range(200):
        try:
            conn.update_keys()
            return
        except sansquic.LocalProtocolError:
            time.sleep(0.025)
    raise AssertionError("the keys never settled enough for another update")


def key_update(client: Harness, server: Harness) -> None:
    """Each side updates the keys mid-transfer: the data arrives intact, both count the updates."""
    payload = os.urandom(2_000_000)
    half = len(payload) // 2
    server_stats: queue.Queue[sansquic.ConnectionStats] = queue.Queue()

    def handler(conn: Any) -> None:
        for stream in conn:
            first = stream.receive_exactly(half, timeout=20)
            before = conn.stats().key_updates
            _update_keys_when_settled(conn)
            rest = _read_all(stream)
            # This side's own update counts once its first packet under the new keys left.
            _wait_for(lambda n=before: conn.stats().key_updates > n, 10)  # type: ignore[misc]
            server_stats.put(conn.stats())
            stream.send(hashlib.sha256(first + rest).digest())
            stream.finish()

    with _pair(client, server, handler) as (conn, _):
        stream = conn.open_stream()
        stream.send(payload[:half])
        _update_keys_when_settled(conn)
        stream.send(payload[half:])
        stream.finish()
        assert _read_all(stream, timeout=60) == hashlib.sha256(payload).digest()
        theirs = server_stats.get(timeout=20)
        _wait_for(lambda: conn.stats().key_updates >= theirs.key_updates, 10)
        ours = conn.stats()
        # Two updates, unless both sides started theirs at the same moment (then one).
        assert ours.key_updates >= 1 and theirs.key_updates >= 1, (ours, theirs)
        assert ours.key_updates == theirs.key_updates, (ours, theirs)
        assert ours.key_phase == theirs.key_phase == ours.key_updates % 2


def _address_or_digest(conn: Any) -> None:
    """Answer a stream carrying ``where`` with the address the client is seen at (and
    whether this server connection refused to migrate), any other with its sha256."""
    for stream in conn:
        data = _read_all(stream)
        if data == b"where":
            try:
                conn.migrate()
                refused = False
            except sansquic.LocalProtocolError:
                refused = True
            stream.send(repr((conn.remote_address, refused)).encode())
        else:
            stream.send(_sha(data))
        stream.finish()


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _ask_where(conn: Any) -> tuple[tuple[str, int], bool]:
    stream = conn.open_stream()
    stream.send(b"where")
    stream.finish()
    answer: tuple[tuple[str, int], bool] = ast.literal_eval(_read_all(stream).decode())
    return answer


def migration(client: Harness, server: Harness) -> None:
    """The client moves to a new UDP port mid-transfer: the transfer completes and the
    server sees the client at the new port (and refuses to migrate itself)."""
    payload = os.urandom(2_000_000)
    half = len(payload) // 2
    with _pair(client, server, _address_or_digest) as (conn, _):
        (old_host, old_port), refused = _ask_where(conn)
        assert refused, "a server connection agreed to migrate"
        stream = conn.open_stream()
        stream.send(payload[:half])  # returns with most of it on the wire
        for _ in range(200):  # the server confirms the handshake a round trip after it ends
            try:
                conn.migrate()
                break
            except sansquic.LocalProtocolError as exc:
                assert "confirmed" in str(exc), exc
                time.sleep(0.025)
        else:
            raise AssertionError("the handshake was not confirmed within 5 s: no migration")
        stream.send(payload[half:])
        stream.finish()
        assert _read_all(stream, timeout=60) == _sha(payload)
        (new_host, new_port), _ = _ask_where(conn)
        assert new_host == old_host and new_port != old_port, (old_port, new_port)


def messaging_across_a_disconnect(client: Harness, server: Harness) -> None:
    """Typed messages both ways with a forced disconnect mid-way: no loss, no duplicate
    (the messaging layer, ``sansquic_conformance/messaging.py``)."""
    _messaging.across_a_disconnect(client, server, CONFIG)


# -- the WebSocket fallback (docs/websocket.md) ---------------------------------------------


def _echo_checks(conn: Any) -> None:
    """One stream, twenty at once, one past the flow-control window, and a datagram."""
    stream = conn.open_stream()
    stream.send(b"hello, fallback")
    stream.finish()
    assert _read_all(stream) == b"hello, fallback"
    streams = [conn.open_stream() for _ in range(20)]
    for index, each in enumerate(streams):
        each.send(b"%d;" % index * 50)
        each.finish()
    for index, each in enumerate(streams):
        assert _read_all(each) == b"%d;" % index * 50
    big = os.urandom(1_500_000)  # several windows: credit must flow back
    stream = conn.open_stream()
    stream.send(big)
    stream.finish()
    assert _read_all(stream, timeout=60) == big
    conn.send_datagram(b"ping")
    assert conn.receive_datagram(timeout=10) == b"ping"


def websocket_echo(client: Harness, server: Harness) -> None:
    """Echo, many streams, flow control and datagrams over the WebSocket transport."""
    handle = server.serve_websocket(_echo, CONFIG)
    try:
        conn = client.connect_websocket(handle.address, CONFIG)
        try:
            assert conn.transport is Transport.WEBSOCKET
            _echo_checks(conn)
        finally:
            conn.close()
    finally:
        handle.close()


def websocket_auth(client: Harness, server: Harness) -> None:
    """The same token and Authenticator as QUIC: accepted with an identity, rejected
    (expired, or none) with the QUIC codes, before the handler runs."""
    seen: list[Any] = []

    def handler(conn: Any) -> None:
        seen.append(conn.identity)
        _echo(conn)

    handle = server.serve_websocket(handler, _token_server())
    try:
        token = _SIGNER.sign("agent", scopes=("x",), ttl=60, now=time.time())
        conn = client.connect_websocket(handle.address, CONFIG, token)
        try:
            assert conn.identity is not None and conn.identity.subject == "agent"
            stream = conn.open_stream()
            stream.send(b"authenticated")
            stream.finish()
            assert _read_all(stream) == b"authenticated"
        finally:
            conn.close()
        expired = _SIGNER.sign("agent", ttl=1, now=time.time() - 3600)
        for bad in (expired, None):
            try:
                client.connect_websocket(handle.address, CONFIG, bad).close()
                raise AssertionError(f"the token {bad!r} was accepted")
            except sansquic.ConnectionClosed as exc:
                assert exc.error_code == sansquic.CloseCode.AUTH_REJECTED, exc
        assert [identity.subject for identity in seen] == ["agent"]  # nobody else got in
    finally:
        handle.close()


def fallback_race(client: Harness, server: Harness) -> None:
    """connect_any(): QUIC when UDP works; WebSocket when the UDP port is a black hole
    or nothing listens there."""
    quic = server.serve(_echo, CONFIG)
    ws = server.serve_websocket(_echo, CONFIG)
    try:
        # A generous delay: QUIC must win on a loaded machine too.
        conn = client.connect_any(quic.address, ws.address[1], CONFIG, delay=3.0, timeout=20)
        try:
            assert conn.transport is Transport.QUIC, conn.transport
            stream = conn.open_stream()
            stream.send(b"over quic")
            stream.finish()
            assert _read_all(stream) == b"over quic"
        finally:
            conn.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
            hole.bind(("127.0.0.1", 0))  # bound, never read: every datagram vanishes
            closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            closed.bind(("127.0.0.1", 0))
            nobody = closed.getsockname()
            closed.close()  # nothing listens on this port any more
            for udp in (hole.getsockname(), nobody):
                began = time.monotonic()
                conn = client.connect_any(udp, ws.address[1], CONFIG, delay=0.3, timeout=20)
                try:
                    assert conn.transport is Transport.WEBSOCKET, conn.transport
                    assert time.monotonic() - began < 10  # the delay, not QUIC's timeout
                    stream = conn.open_stream()
                    stream.send(b"over websocket")
                    stream.finish()
                    assert _read_all(stream) == b"over websocket"
                finally:
                    conn.close()
    finally:
        ws.close()
        quic.close()


def _raw_websocket(address: tuple[str, int], *, upgrade: bool = True) -> tuple[ssl.SSLSocket, Any]:
    """A hand-driven TLS + wsproto client (blocking, 10 s per read) for hostile-peer cases."""
    import wsproto
    import wsproto.events

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(address, timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    if upgrade:
        sock.sendall(ws.send(wsproto.events.Request(host="localhost", target="/")))
        while not any(isinstance(e, wsproto.events.AcceptConnection) for e in _ws_events(sock, ws)):
            pass
    return sock, ws


def _ws_events(sock: ssl.SSLSocket, ws: Any) -> list[Any]:
    data = sock.recv(65536)
    ws.receive_data(data or None)
    return list(ws.events())


def _ended(sock: ssl.SSLSocket) -> bool:
    """Whether the server ended the connection without sending anything."""
    try:
        return sock.recv(100) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def _close_code(sock: ssl.SSLSocket, ws: Any) -> int | None:
    """The code of the server's close frame (None: the connection ended without one)."""
    import wsproto.events

    for _ in range(100):
        try:
            events = _ws_events(sock, ws)
        except (OSError, ssl.SSLError):
            return None
        for event in events:
            if isinstance(event, wsproto.events.CloseConnection):
                return int(event.code)
        if ws.state.name == "CLOSED":
            return None
    raise AssertionError("the server never closed")


def websocket_hostile_peer(client: Harness, server: Harness) -> None:
    """Bad frames, text, non-HTTP bytes and a silent peer each get a clean close from the
    server (a close code where one fits), nothing reaches the handler, nothing leaks, and
    the server goes on serving."""
    import wsproto.events

    calls: list[int] = []

    def handler(conn: Any) -> None:
        calls.append(1)
        _echo(conn)

    handle = server.serve_websocket(
        handler, CONFIG.replace(auth=sansquic.AuthPolicy(allow_anonymous=True, deadline=0.5))
    )
    try:
        for bad, code in ((b"\x09\x00\x00\x00\x00", 1002), (b"\x01\x00\x00\x00\x00x", 1002)):
            sock, ws = _raw_websocket(handle.address)
            with sock:
                sock.sendall(ws.send(wsproto.events.Message(data=bad)))
                assert _close_code(sock, ws) == code
        sock, ws = _raw_websocket(handle.address)
        with sock:
            sock.sendall(ws.send(wsproto.events.Message(data="text")))
            assert _close_code(sock, ws) == 1003
        sock, ws = _raw_websocket(handle.address, upgrade=False)
        with sock:
            sock.sendall(b"GARBAGE / HTTP/0.0\r\n\r\n")
            assert _ended(sock)  # closed, no answer
        began = time.monotonic()
        sock, ws = _raw_websocket(handle.address, upgrade=False)
        with sock:  # says nothing after TLS: the auth deadline ends it
            assert _ended(sock)
        assert time.monotonic() - began < 5
        deadline = time.monotonic() + 5
        while handle.tracked() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handle.tracked() == 0, handle.tracked()
        assert len(calls) == 3  # the three that upgraded; the others never reached it
        _echoes(client.connect_websocket(handle.address, CONFIG), b"still serving")
    finally:
        handle.close()


def _echoes(conn: Any, data: bytes) -> None:
    """``data`` comes back on one stream of ``conn``, which is then closed."""
    try:
        stream = conn.open_stream()
        stream.send(data)
        stream.finish()
        assert _read_all(stream) == data
    finally:
        conn.close()


def _refused_with(client: Harness, address: tuple[str, int], reason: str) -> None:
    """A client refused before the upgrade: QUIC's CONNECTION_REFUSED code, from the peer."""
    try:
        client.connect_websocket(address, CONFIG).close()
    except sansquic.ConnectionClosed as exc:
        assert exc.error_code == 0x02 and exc.by_peer and reason in exc.reason, exc
    else:
        raise AssertionError(f"admitted past the {reason!r} limit")


def _http_status(sock: ssl.SSLSocket) -> int:
    """The status of the server's HTTP answer (it must answer, then close)."""
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed without an answer: {head!r}"
        head += chunk
    return int(head.split(b" ", 2)[1])


def _tls_only(address: tuple[str, int]) -> ssl.SSLSocket:
    return _raw_websocket(address, upgrade=False)[0]


def websocket_admission_limits(client: Harness, server: Harness) -> None:
    """The WebSocket server admits by the QUIC server's RateLimits: connections per
    address, at once, per second and handshakes at once are refused before any
    upgrade (HTTP 429/503, CONNECTION_REFUSED for the client) or, past what a refusal
    may cost, dropped; a slow handshake and an oversized request head end cleanly;
    the server counts each, keeps nothing afterwards and goes on serving."""
    import wsproto
    import wsproto.events

    def only(**limits: Any) -> sansquic.Config:
        none: dict[str, Any] = dict.fromkeys(
            ("max_connections", "max_connections_per_address", "new_connections_per_second")
        )
        return CONFIG.replace(rate_limits=sansquic.RateLimits(**{**none, **limits}))

    handle = server.serve_websocket(_echo, only(max_connections_per_address=2))
    try:
        first, second = (client.connect_websocket(handle.address, CONFIG) for _ in range(2))
        _refused_with(client, handle.address, "connections per address")
        assert dict(handle.stats().refused) == {"connections per address": 1}
        first.close()  # its place frees once the server has let go of it
        _wait_for(lambda: handle.stats().active == 1, 10)
        third = client.connect_websocket(handle.address, CONFIG)
        for conn in (second, third):
            _echoes(conn, b"admitted")
        _wait_for(lambda: handle.tracked() == 0 and handle.stats().active == 0, 10)
    finally:
        handle.close()

    handle = server.serve_websocket(_echo, only(max_connections=1))
    try:
        with contextlib.closing(client.connect_websocket(handle.address, CONFIG)):
            _refused_with(client, handle.address, "connections")
    finally:
        handle.close()

    handle = server.serve_websocket(_echo, only(new_connections_per_second=0.05))
    try:
        client.connect_websocket(handle.address, CONFIG).close()
        _refused_with(client, handle.address, "new connection rate")
    finally:
        handle.close()

    tight = only(max_handshakes=2, websocket_handshake_timeout=3.0, websocket_max_header_bytes=1024)
    handle = server.serve_websocket(_echo, tight)
    try:
        big = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        request = wsproto.events.Request(
            host="localhost", target="/", extra_headers=[(b"x-filler", b"f" * 4000)]
        )
        with _tls_only(handle.address) as tls:
            tls.sendall(big.send(request))
            assert _http_status(tls) == 431
            assert _ended(tls)
        _wait_for(lambda: handle.stats().handshakes == 0, 10)
        began = time.monotonic()
        silent = [socket.create_connection(handle.address) for _ in range(2)]
        try:
            _wait_for(lambda: handle.stats().handshakes == 2, 10)
            with socket.create_connection(handle.address, timeout=10) as dropped:
                assert dropped.recv(100) == b""  # closed unanswered: no TLS, no HTTP
            assert dict(handle.stats().dropped) == {"handshakes": 1}
            for sock in silent:  # the handshake timeout ends them
                sock.settimeout(10)
                assert sock.recv(100) == b""
            assert time.monotonic() - began < 10
        finally:
            for sock in silent:
                sock.close()
        _wait_for(lambda: handle.stats().handshakes == 0, 10)
        stats = handle.stats()
        assert dict(stats.refused) == {"request head too large": 1}, stats
        assert stats.active == 0 and stats.tracked_addresses == 0, stats
        _echoes(client.connect_websocket(handle.address, CONFIG), b"still serving")
    finally:
        handle.close()


def messaging_over_websocket(client: Harness, server: Harness) -> None:
    """The messaging case over the fallback: the whole exchange over WebSocket, then one
    session that starts on QUIC through ``connect_any`` and, with UDP blocked, goes on
    over WebSocket: the same ids, acks and dedupe, nothing lost or doubled."""
    _messaging.across_a_disconnect(_OverWebSocket(client), _OverWebSocket(server), CONFIG)
    _messaging.across_transports(client, server, CONFIG)


class _OverWebSocket:
    """A harness whose serve() and connect() are its WebSocket ones: QUIC's cases then
    run unchanged over the fallback."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness
        self.name = f"{harness.name}/ws"

    def serve(
        self, handler: Callable[[Any], None], config: sansquic.Config, authenticator: Any = None
    ) -> Any:
        return self._harness.serve_websocket(handler, config, authenticator)

    def connect(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> Any:
        return self._harness.connect_websocket(address, config, token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._harness, name)


#: QUIC's cases about what a message layer needs, which the fallback passes as they are.
#: The rest are about QUIC itself (stats, versions, per-address admission,
#: 0-RTT, stateless reset, key update, migration, the deferred auth decision).
SAME_OVER_WEBSOCKET = (
    "echo",
    "streams_1000",
    "transfer_10mb",
    "datagrams",
    "auth_accept",
    "auth_reject",
    "reset_and_stop",
    "idle_timeout",
    "keep_alive",
    "graceful_close",
    "raising_handler",
    "uncaught_peer_reset",
    "send_larger_than_the_buffer_limit",
    "receive_sizes",
    "concurrent_receive_is_busy",
    "timeouts_leave_the_connection_usable",
    "local_actions_wake_blocked_tasks",
)


def websocket_same_cases(client: Harness, server: Harness) -> None:
    """The QUIC cases in SAME_OVER_WEBSOCKET, run unchanged over the WebSocket transport."""
    over_client, over_server = _OverWebSocket(client), _OverWebSocket(server)
    for name in SAME_OVER_WEBSOCKET:
        try:
            CASES[name](over_client, over_server)
        except Exception as exc:
            raise AssertionError(f"{name} over WebSocket: {exc}") from exc


CASES: dict[str, Case] = {
    case.__name__: case
    for case in (
        handshake,
        echo,
        versions_and_cipher_suites,
        streams_1000,
        transfer_10mb,
        critical_overtakes_low,
        slow_reader_bounds_memory,
        datagrams,
        auth_accept,
        auth_reject,
        auth_deadline,
        connect_to_a_closed_port,
        unready_connections_leave_nothing,
        per_address_limit,
        reset_and_stop,
        idle_timeout,
        keep_alive,
        stream_queued,
        graceful_close,
        server_close_with_a_distant_peer,
        raising_handler,
        uncaught_peer_reset,
        send_larger_than_the_buffer_limit,
        receive_sizes,
        concurrent_receive_is_busy,
        timeouts_leave_the_connection_usable,
        local_actions_wake_blocked_tasks,
        hq_interop_transfer,
        stateless_reset,
        resumption_and_0rtt,
        qlog_traces,
        connection_stats,
        key_update,
        migration,
        messaging_across_a_disconnect,
        websocket_echo,
        websocket_auth,
        fallback_race,
        websocket_same_cases,
        websocket_hostile_peer,
        websocket_admission_limits,
        messaging_over_websocket,
    )
}
#: What CI runs for every runtime pair: quick, and touching every part.
FAST_CASES = (
    "handshake",
    "echo",
    "versions_and_cipher_suites",
    "datagrams",
    "auth_accept",
    "auth_reject",
    "connect_to_a_closed_port",
    "unready_connections_leave_nothing",
    "per_address_limit",
    "reset_and_stop",
    "idle_timeout",
    "keep_alive",
    "graceful_close",
    "server_close_with_a_distant_peer",
    "raising_handler",
    "send_larger_than_the_buffer_limit",
    "receive_sizes",
    "concurrent_receive_is_busy",
    "hq_interop_transfer",
    "key_update",
    "migration",
    "messaging_across_a_disconnect",
    "websocket_echo",
    "websocket_auth",
    "fallback_race",
    "websocket_hostile_peer",
    "websocket_admission_limits",
    "messaging_over_websocket",
)
#: What CI runs for every pair of different runtimes: the quickest that cross every path.
CROSS_CASES = (
    "handshake",
    "echo",
    "datagrams",
    "auth_reject",
    "reset_and_stop",
    "messaging_across_a_disconnect",
    "websocket_echo",
    "fallback_race",
    "messaging_over_websocket",
)

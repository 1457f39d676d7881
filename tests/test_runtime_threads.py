"""The blocking-threads runtime over real UDP on loopback (127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sansquic_runtime
import sansquic_threads

import sansquic

HOST = "127.0.0.1"
T = 5.0  # every blocking call's limit: a hang fails the test instead of the run
CONFIG = sansquic.Config(
    dev_mode=True, trust_dev_certificate=True
)  # made once: dev mode generates a certificate


def _fds() -> int | None:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


def _ours() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sansquic-")]


def _settle() -> None:
    """Give threads whose work is done a moment to return (no more than that)."""
    deadline = time.monotonic() + 1.0
    while _ours() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test must leave no sansquic thread and no socket behind once it closed all."""
    _settle()  # the previous test's last threads may still be on their way out
    fds = _fds()
    yield
    _settle()
    # Only sansquic's own threads count: other suites' idle workers (anyio's portal
    # threads) come and go on their own schedule.
    assert _ours() == [], threading.enumerate()
    assert _fds() == fds


@contextlib.contextmanager
def running(
    handler: Callable[[sansquic_threads.Connection], object], **kwargs: Any
) -> Iterator[sansquic_threads.Server]:
    with sansquic_threads.serve(handler, HOST, 0, config=CONFIG, **kwargs) as server:
        yield server


def client(server: sansquic_threads.Server, **kwargs: Any) -> sansquic_threads.Connection:
    host, port = server.address
    return sansquic_threads.connect(host, port, config=CONFIG, timeout=T, **kwargs)


def read_all(stream: sansquic_threads.Stream) -> bytes:
    return b"".join(iter(lambda: stream.receive(timeout=T), b""))


def echo(conn: sansquic_threads.Connection) -> None:
    for stream in conn:
        stream.send(read_all(stream), timeout=T)
        stream.finish()


def test_echo_one_stream() -> None:
    with running(echo) as server:
        assert server.address[0] == HOST and server.address[1] != 0
        with client(server) as conn:
            stream = conn.open_stream(priority=sansquic.Priority.HIGH)
            assert stream.priority == sansquic.Priority.HIGH
            stream.send(b"hello", timeout=T)
            stream.finish()
            assert read_all(stream) == b"hello"
            assert stream.receive(timeout=T) == b""  # the end stays the end
            assert conn.identity is None
            assert conn.stats().stream_bytes_received == 5
        assert server.stats().accepted == 1


def test_200_concurrent_streams() -> None:
    def one(i: int) -> bytes:
        stream = conn.open_stream()
        stream.send(payload(i), timeout=T)
        stream.finish()
        return read_all(stream)

    def payload(i: int) -> bytes:
        return f"stream {i}:".encode() * (1 + i * 7 % 500)

    with running(echo) as server, client(server) as conn, ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(one, range(200)))
    assert replies == [payload(i) for i in range(200)]


def test_5mb_transfer_by_sha256() -> None:
    data = os.urandom(5 * 1024 * 1024)
    with running(echo) as server, client(server) as conn:
        stream = conn.open_stream()
        stream.send(data, timeout=T)
        stream.finish()
        reply = read_all(stream)
    assert hashlib.sha256(reply).hexdigest() == hashlib.sha256(data).hexdigest()


def test_datagrams_both_ways() -> None:
    def handler(conn: sansquic_threads.Connection) -> None:
        with contextlib.suppress(sansquic.ConnectionClosed):
            while True:
                conn.send_datagram(b"echo:" + conn.receive_datagram())

    with running(handler) as server, client(server) as conn:
        # Datagrams may be lost, even on loopback: ask again until one comes back.
        for attempt in range(10):
            conn.send_datagram(b"ping %d" % attempt)
            with contextlib.suppress(TimeoutError):
                reply = conn.receive_datagram(timeout=0.5)
                break
        else:
            pytest.fail("no datagram came back")
        assert reply.startswith(b"echo:ping ")
        assert conn.stats().datagrams_received >= 1


def _authenticator(
    request: sansquic.AuthRequest, address: sansquic.Address, now: float
) -> sansquic.Identity | sansquic.AuthRejection:
    if request.credentials == b"good":
        return sansquic.Identity(subject="t")
    return sansquic.AuthRejection(code=7, reason="bad")


def test_auth_accepted() -> None:
    seen: queue.Queue[sansquic.Identity | None] = queue.Queue()

    def handler(conn: sansquic_threads.Connection) -> None:
        seen.put(conn.identity)
        echo(conn)

    with running(handler, authenticator=_authenticator) as server:
        with client(server, token="good") as conn:
            assert conn.identity is not None and conn.identity.subject == "t"
            stream = conn.open_stream()
            stream.send(b"after auth", timeout=T)
            stream.finish()
            assert read_all(stream) == b"after auth"
        identity = seen.get(timeout=T)
        assert identity is not None and identity.subject == "t"


def test_auth_rejected() -> None:
    calls: list[sansquic_threads.Connection] = []
    with running(calls.append, authenticator=_authenticator) as server:
        with pytest.raises(sansquic.ConnectionClosed) as info:
            client(server, token=b"bad")
        assert info.value.error_code == 7 and info.value.reason == "bad"
        assert calls == []  # a rejected client never reaches the handler
        assert server.stats().auth_failures == 1


def test_reset_is_seen_by_the_reader() -> None:
    def handler(conn: sansquic_threads.Connection) -> None:
        stream = conn.accept_stream(timeout=T)
        stream.receive(timeout=T)
        stream.send(b"partial", timeout=T)
        stream.reset(42)

    with running(handler) as server, client(server) as conn:
        stream = conn.open_stream()
        stream.send(b"go", timeout=T)
        with pytest.raises(sansquic.StreamResetError) as info:
            read_all(stream)
        assert info.value.error_code == 42 and info.value.stream_id == stream.id


def test_stop_is_seen_by_the_writer() -> None:
    def handler(conn: sansquic_threads.Connection) -> None:
        stream = conn.accept_stream(timeout=T)
        stream.stop(9)
        for _ in conn:
            pass

    def keep_sending(stream: sansquic_threads.Stream) -> None:
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            stream.send(b"x" * 1000, timeout=T)
            time.sleep(0.01)

    with running(handler) as server, client(server) as conn:
        stream = conn.open_stream()
        with pytest.raises(sansquic.StreamStoppedError) as info:
            keep_sending(stream)
        assert info.value.error_code == 9


def test_close_code_and_reason_reach_the_peer() -> None:
    errors: queue.Queue[BaseException] = queue.Queue()

    def handler(conn: sansquic_threads.Connection) -> None:
        try:
            stream = conn.accept_stream(timeout=T)
            stream.send(read_all(stream), timeout=T)
            stream.finish()
            conn.accept_stream(timeout=T)
        except BaseException as exc:
            errors.put(exc)

    with running(handler) as server:
        conn = client(server)
        # One echo first: a close sent with the handshake's last flight ends the
        # connection before the server hands it to a handler (as the conformance
        # suite's graceful_close does).
        stream = conn.open_stream()
        stream.send(b"ping", timeout=T)
        stream.finish()
        assert read_all(stream) == b"ping"
        conn.close(99, "bye")
        conn.close(1, "again")  # idempotent
        error = errors.get(timeout=T)
    assert isinstance(error, sansquic.ConnectionClosed)
    assert (error.error_code, error.reason, error.by_peer) == (99, "bye", True)
    with pytest.raises(sansquic.ConnectionClosed):
        conn.open_stream()


def test_receive_times_out_on_a_silent_stream() -> None:
    done = threading.Event()

    def handler(conn: sansquic_threads.Connection) -> None:
        conn.accept_stream(timeout=T)
        done.wait(T)  # never answers

    with running(handler) as server, client(server) as conn:
        stream = conn.open_stream()
        stream.send(b"anyone?", timeout=T)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            stream.receive(timeout=0.2)
        assert 0.2 <= time.monotonic() - start < 2.0
        with pytest.raises(ValueError):
            stream.receive(0)
        with pytest.raises(TimeoutError):
            conn.accept_stream(timeout=0.05)
        done.set()


def test_no_thread_or_socket_leaks_after_close() -> None:
    server = sansquic_threads.serve(echo, HOST, 0, config=CONFIG)
    conns = [client(server) for _ in range(3)]
    for conn in conns:
        stream = conn.open_stream()
        stream.send(b"x", timeout=T)
        stream.finish()
        assert read_all(stream) == b"x"
    # The server: I/O and accept threads; each client: an I/O thread; a handler each.
    assert len(_ours()) == 2 + 3 + 3, _ours()
    conns[0].close()
    server.close()  # closes the other two from the server side
    for conn in conns[1:]:
        with pytest.raises(sansquic.ConnectionClosed):
            conn.accept_stream(timeout=T)
    # A client's I/O thread ends with its connection, even before close() is called.
    deadline = time.monotonic() + T
    while _ours() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _ours() == []
    for conn in conns[1:]:
        conn.close()


def test_late_reader_still_returns_credit() -> None:
    # The peer fills the receive window while nobody reads; reading must reopen it.
    data = b"y" * (3 * 1024 * 1024)

    def handler(conn: sansquic_threads.Connection) -> None:
        stream = conn.accept_stream(timeout=T)
        stream.receive(timeout=T)
        stream.send(data, timeout=T)
        stream.finish()
        for _ in conn:
            pass

    with running(handler) as server, client(server) as conn:
        stream = conn.open_stream()
        stream.send(b"go", timeout=T)
        time.sleep(0.5)
        assert read_all(stream) == data


def test_writer_held_by_the_connection_watermark_is_woken() -> None:
    # Stream b is held back only by the connection-wide watermark that a fills.
    config = CONFIG.replace(
        connection_send_high_watermark=100 * 1024, connection_send_low_watermark=50 * 1024
    )

    def handler(conn: sansquic_threads.Connection) -> None:
        first = conn.accept_stream(timeout=T)
        time.sleep(0.5)  # let a's bytes pile up against flow control
        read_all(first)
        read_all(conn.accept_stream(timeout=T))
        for _ in conn:
            pass

    with running(handler) as server:
        host, port = server.address
        with sansquic_threads.connect(host, port, config=config, timeout=T) as conn:
            a, b = conn.open_stream(), conn.open_stream()

            def fill() -> None:
                a.send(b"a" * 1_600_000, timeout=T)  # more than a's flow-control window
                a.finish()

            writer = threading.Thread(target=fill)
            writer.start()
            time.sleep(0.2)
            start = time.monotonic()
            b.send(b"b", timeout=T)
            b.finish()
            writer.join()
            assert time.monotonic() - start < 2.0


def test_bulk_transfer_with_and_without_segmentation_offload() -> None:
    """GSO batches equal-sized datagrams into one sendmsg; without it, one sendto each."""
    import hashlib
    import os

    payload = os.urandom(2_000_000)
    for gso in (True, False):
        sansquic_runtime.UdpSocket.gso = gso
        try:
            config = sansquic.Config(dev_mode=True, trust_dev_certificate=True)

            def handler(conn: sansquic_threads.Connection) -> None:
                for stream in conn:
                    data = bytearray()
                    while chunk := stream.receive(timeout=10):
                        data += chunk
                    stream.send(hashlib.sha256(data).digest())
                    stream.finish()

            server = sansquic_threads.serve(handler, "127.0.0.1", 0, config=config)
            with (
                server,
                sansquic_threads.connect(
                    "127.0.0.1", server.address[1], config=config, server_name="localhost"
                ) as conn,
            ):
                stream = conn.open_stream()
                stream.send(payload)
                stream.finish()
                assert stream.receive(timeout=10) == hashlib.sha256(payload).digest()
                assert conn._driver.sock._gso is (gso and sys.platform == "linux")
        finally:
            sansquic_runtime.UdpSocket.gso = True


def test_server_close_honours_its_timeout_with_a_stuck_handler() -> None:
    stuck, running = threading.Event(), threading.Event()

    def handler(conn: sansquic_threads.Connection) -> None:
        running.set()
        stuck.wait(10)  # blocked on something that is not sansquic's

    server = sansquic_threads.serve(handler, HOST, 0, config=CONFIG)
    conn = client(server)
    try:
        assert running.wait(T)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            server.close(timeout=0.5)
        assert time.monotonic() - started < 4  # the close wait plus the timeout, not 10 s
    finally:
        stuck.set()
        conn.close()
        server.close()


def test_a_handler_may_close_its_own_server() -> None:
    closed = threading.Event()

    def handler(conn: sansquic_threads.Connection) -> None:
        server.close(timeout=5)  # from inside a handler: must not wait for itself
        closed.set()

    server = sansquic_threads.serve(handler, HOST, 0, config=CONFIG)
    conn = client(server)
    try:
        assert closed.wait(8)
    finally:
        conn.close()
        server.close()

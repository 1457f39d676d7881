"""sansquic with blocking calls and threads: ``connect()``, ``serve()``, Connection, Stream.

One I/O thread per UDP socket moves datagrams, sleeps until the endpoint's
timer and wakes the waiters the core's :class:`sansquic.Dispatcher` names;
every protocol decision is the core's. Every blocking call takes
``timeout=`` (seconds, ``None`` for no limit) and raises ``TimeoutError``.

    with sansquic_threads.connect("127.0.0.1", 4433, config=cfg) as conn:
        stream = conn.open_stream(priority=sansquic.Priority.HIGH)
        stream.send(b"hello")
        stream.finish()
        reply = stream.receive()         # b"" at the end of the stream
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import sansquic

__all__ = ["Connection", "Server", "Stream", "connect", "serve"]

_T = TypeVar("_T")
_Wake = tuple[Hashable, ...]
#: Decides a client's auth request at once: (request, peer address, now) -> verdict.
_Authenticator = Callable[
    [sansquic.AuthRequest, sansquic.Address, float], sansquic.Identity | sansquic.AuthRejection
]
_log = logging.getLogger(__name__)
_CLOSE_WAIT = 2.0  # seconds close() waits for the close to complete before letting go
_RECV_SIZE = 65_535  # the largest UDP payload, so no datagram is ever truncated
_RCVBUF = 1 << 20  # room for a congestion window's burst; the kernel may cap it lower
# UDP generic segmentation offload (Linux 4.18+): one sendmsg carries many datagrams.
_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_GSO_MAX_SEGMENTS = 64
#: Set to False before connect()/serve() to send every datagram on its own (for measuring).
GSO = True


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _closed(core: sansquic.Connection) -> Callable[[], bool | None]:
    """A check for :meth:`_Loop.until`: done once ``core`` is CLOSED."""
    return lambda: True if core.state is sansquic.ConnectionState.CLOSED else None


class _Loop:
    """One UDP socket and the thread that drives its Endpoint.

    Everything touching the endpoint, its connections or the dispatcher runs
    under ``lock``, in this thread or in application threads issuing commands.
    """

    def __init__(
        self, endpoint: sansquic.Endpoint, bind: tuple[str, int], family: int, *, client: bool
    ) -> None:
        self.endpoint = endpoint
        # A client's thread ends with its connection, so one never closed cannot keep the
        # process alive past the idle timeout; a server's runs until close().
        self._exit_when_idle = client
        self.dispatcher = sansquic.Dispatcher(endpoint)
        self.lock = threading.Lock()
        #: Called under the lock with every non-empty set of wake keys (the server's hook).
        self.on_wake: Callable[[set[_Wake]], None] | None = None
        self._conds: dict[_Wake, threading.Condition] = {}
        self._waiting: dict[_Wake, int] = {}
        self._sleep_until = math.inf  # when the I/O thread will next look at the timer
        self._stopping = False
        self._stopped = False
        self._failure: BaseException | None = None
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self._wake_r, self._wake_w = socket.socketpair()
        self._gso = GSO and sys.platform == "linux"  # UDP_SEGMENT is Linux-only
        try:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self.sock.bind(bind)
            for s in (self.sock, self._wake_r, self._wake_w):
                s.setblocking(False)
        except BaseException:
            self._close_sockets()
            raise
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        host, port = self.address
        self._thread = threading.Thread(target=self._run, name=f"sansquic-io-{host}:{port}")

    def start(self) -> None:
        self._thread.start()

    # -- the I/O thread ----------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                with self.lock:
                    if self._stopping or (self._exit_when_idle and not self.endpoint.connections):
                        return
                    deadline = self.endpoint.timer()
                    # Commands in other threads compare their new timer against this.
                    self._sleep_until = math.inf if deadline is None else deadline
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                batch: list[tuple[bytes, sansquic.Address]] = []
                for key, _ in selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._drain_wakeups()
                    else:
                        self._receive_all(batch)
                with self.lock:
                    # Awake now and about to recompute the timer: flush() need not poke us.
                    self._sleep_until = -math.inf
                    now = time.monotonic()
                    for data, addr in batch:
                        self.endpoint.receive_datagram(data, addr, now)
                    due = self.endpoint.timer()
                    if due is not None and due <= now:
                        self.endpoint.handle_timer(now)
                    self.flush()
        except BaseException as exc:  # a bug below us: fail every waiter rather than hang it
            _log.exception("sansquic I/O thread failed")
            self._failure = exc
        finally:
            selector.close()
            with self.lock:
                self._stopped = True
                for cond in self._conds.values():
                    cond.notify_all()

    def _receive_all(self, batch: list[tuple[bytes, sansquic.Address]]) -> None:
        # Read outside the lock, every datagram that is ready, so commands are not held up.
        while True:
            try:
                data, addr = self.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error surfacing on UDP: loss recovery covers it
            batch.append((data, (addr[0], addr[1])))

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(4096):
                pass

    # -- shared by every thread, under the lock ------------------------------------------

    def flush(self) -> None:
        """Send what the endpoint has, then wake the waiters the dispatcher names."""
        now = time.monotonic()
        self._send(self.endpoint.datagrams_to_send(now))
        wake = self.dispatcher.process()
        for key in wake:
            cond = self._conds.get(key)
            if cond is not None:
                cond.notify_all()
        if wake and self.on_wake is not None:
            self.on_wake(wake)
        deadline = self.endpoint.timer()
        if deadline is not None and deadline < self._sleep_until:
            # A command moved the timer earlier than the I/O thread's sleep: wake it.
            self._sleep_until = deadline
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _send(self, datagrams: list[tuple[bytes, sansquic.Address]]) -> None:
        """Send a batch: runs of equal-sized datagrams to one address go out as one
        sendmsg with UDP generic segmentation offload where the kernel has it."""
        sock, index = self.sock, 0
        while index < len(datagrams):
            data, addr = datagrams[index]
            run = 1
            if self._gso:
                size = len(data)
                while (
                    index + run < len(datagrams)
                    and run < _GSO_MAX_SEGMENTS
                    and datagrams[index + run][1] == addr
                    and len(datagrams[index + run][0]) <= size
                ):
                    run += 1
                    if len(datagrams[index + run - 1][0]) < size:
                        break  # only the last segment may be shorter
            try:
                if run == 1:
                    sock.sendto(data, addr)
                else:
                    segments = b"".join(d for d, _ in datagrams[index : index + run])
                    option = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", len(data)))]
                    sock.sendmsg([segments], option, 0, addr)
            except OSError as exc:
                if run > 1 and exc.errno in (errno.EINVAL, errno.ENOPROTOOPT, errno.EIO):
                    self._gso = False  # no offload here: send them one by one from now on
                    continue
                # Otherwise a full socket buffer: loss, which QUIC recovers from.
            index += run

    def until(self, check: Callable[[], _T | None], key: _Wake, deadline: float | None) -> _T:
        """Call ``check`` under the lock until it returns non-None, sleeping on ``key``."""
        with self.lock:
            while True:
                result = check()
                if result is not None:
                    return result
                if self._stopped:
                    if self._failure is not None:
                        raise sansquic.SansQuicError("the I/O thread failed") from self._failure
                    raise sansquic.ConnectionClosed(
                        0, "the endpoint was closed", by_peer=False, application=True
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                cond = self._conds.get(key)
                if cond is None:
                    cond = self._conds[key] = threading.Condition(self.lock)
                self._waiting[key] = self._waiting.get(key, 0) + 1
                try:
                    cond.wait(remaining)
                finally:
                    self._waiting[key] -= 1
                    if not self._waiting[key]:
                        del self._waiting[key], self._conds[key]

    def stop(self) -> None:
        """Stop and join the I/O thread, then close the socket."""
        with self.lock:
            self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self.lock:
            self._stopped = True  # in case the thread never started
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()


class Stream:
    """One QUIC stream: :meth:`send` then :meth:`finish`; :meth:`receive` until ``b""``."""

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._loop = conn._loop
        self._core = conn._core
        #: The QUIC stream id.
        self.id = stream_id

    def __repr__(self) -> str:
        return f"<sansquic_threads.Stream id={self.id}>"

    def send(self, data: bytes, timeout: float | None = None) -> None:
        """Queue ``data``, waiting while the stream is above its send high watermark.

        Raises :class:`sansquic.StreamStoppedError` if the peer stopped the
        stream; after ``TimeoutError`` a first part of ``data`` may be queued.
        Next: more :meth:`send` calls, then :meth:`finish`.
        """
        loop, core, sid = self._loop, self._core, self.id
        view, deadline = memoryview(data).cast("B"), _deadline(timeout)
        config = core.config
        offset = 0

        def attempt() -> int | None:
            if not loop.dispatcher.can_send(core, sid):
                return None  # asking subscribed the stream to StreamWritable
            # Pieces that fit under both hard caps, so SendBufferFull can never happen.
            piece = min(
                len(view) - offset,
                config.send_high_watermark,
                config.send_buffer_limit - core.buffered(sid),
                config.connection_send_buffer_limit - core.stats().send_buffered,
            )
            core.send(sid, bytes(view[offset : offset + piece]))
            loop.flush()
            return piece

        while True:
            offset += loop.until(attempt, ("write", core, sid), deadline)
            if offset >= len(view):
                return

    def receive(self, max_bytes: int = -1, timeout: float | None = None) -> bytes:
        """The next bytes received (at most ``max_bytes`` when positive); ``b""`` at the end.

        Raises :class:`sansquic.StreamResetError` if the peer reset the stream
        and :class:`sansquic.ConnectionClosed` once the connection closed.
        """
        if max_bytes == 0:  # b"" means the end of the stream, so it cannot mean "nothing"
            raise ValueError("max_bytes must be positive, or negative for all that arrived")
        loop, core, sid = self._loop, self._core, self.id

        def attempt() -> bytes | None:
            data = loop.dispatcher.receive(core, sid, max_bytes)
            if data:
                loop.flush()  # reading returned credit the peer may be waiting for
            return data

        return loop.until(attempt, ("read", core, sid), _deadline(timeout))

    def finish(self) -> None:
        """End the sending side (FIN). Next: :meth:`receive` the reply, if any."""
        with self._loop.lock:
            self._core.finish(self.id)
            self._loop.flush()

    def reset(self, code: int = 0) -> None:
        """Abandon the sending side with ``code``; unsent data is dropped."""
        with self._loop.lock:
            self._core.reset(self.id, code)
            self._loop.flush()

    def stop(self, code: int = 0) -> None:
        """Ask the peer to stop sending, with ``code``; unread data is dropped."""
        with self._loop.lock:
            self._core.stop(self.id, code)
            self._loop.flush()

    @property
    def priority(self) -> int:
        """Send priority, 0-255, higher first (see :class:`sansquic.Priority`); settable."""
        with self._loop.lock:
            return self._core.priority(self.id)

    @priority.setter
    def priority(self, value: int) -> None:
        with self._loop.lock:
            self._core.set_priority(self.id, value)
            self._loop.flush()


class Connection:
    """A QUIC connection: :meth:`open_stream`, or iterate it to accept the peer's streams.

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, loop: _Loop, core: sansquic.Connection, *, owns_loop: bool) -> None:
        self._loop = loop
        self._core = core
        self._owns_loop = owns_loop
        self._closed = False

    def __repr__(self) -> str:
        return f"<sansquic_threads.Connection {self._core.role.value} {self._core.state.value}>"

    @property
    def identity(self) -> sansquic.Identity | None:
        """Who the auth handshake accepted (both sides), or ``None`` without auth."""
        with self._loop.lock:
            return self._core.identity

    def stats(self) -> sansquic.ConnectionStats:
        """A snapshot of the connection's counters and path estimates."""
        with self._loop.lock:
            return self._core.stats()

    def open_stream(
        self, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> Stream:
        """Open a stream. Next: :meth:`Stream.send` (the peer learns of it with the first data)."""
        with self._loop.lock:
            stream_id = self._core.open_stream(bidirectional, priority)
            self._loop.flush()
        return Stream(self, stream_id)

    def accept_stream(self, timeout: float | None = None) -> Stream:
        """The next stream the peer opened; raises :class:`sansquic.ConnectionClosed` once closed.

        Next: :meth:`Stream.receive`.
        """
        dispatcher, core = self._loop.dispatcher, self._core
        stream_id = self._loop.until(
            lambda: dispatcher.next_stream(core), ("accept", core), _deadline(timeout)
        )
        return Stream(self, stream_id)

    def __iter__(self) -> Iterator[Stream]:
        """Accepted streams, one by one, until the connection closes."""
        while True:
            try:
                yield self.accept_stream()
            except sansquic.ConnectionClosed:
                return

    def send_datagram(self, data: bytes) -> None:
        """Send an unreliable datagram (at most the core's ``max_datagram_size`` bytes)."""
        with self._loop.lock:
            self._core.send_datagram(data)
            self._loop.flush()

    def receive_datagram(self, timeout: float | None = None) -> bytes:
        """The next datagram that arrived; raises :class:`sansquic.ConnectionClosed` once closed."""
        dispatcher, core = self._loop.dispatcher, self._core
        return self._loop.until(
            lambda: dispatcher.next_datagram(core), ("datagram", core), _deadline(timeout)
        )

    def close(self, code: int = 0, reason: str = "") -> None:
        """Close with an application ``code`` and ``reason``, then release what it holds.

        Waits (up to a few seconds) for the close to complete; a client
        connection then stops its I/O thread and closes its socket. Idempotent.
        """
        loop, core = self._loop, self._core
        with loop.lock:
            if self._closed:
                return
            core.close(code, reason)
            self._closed = True
            loop.flush()
        with contextlib.suppress(TimeoutError, sansquic.SansQuicError):
            loop.until(_closed(core), ("closed", core), _deadline(_CLOSE_WAIT))
        with loop.lock:
            loop.dispatcher.forget(core)
        if self._owns_loop:
            loop.stop()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _resolve(host: str, port: int) -> tuple[int, sansquic.Address]:
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def connect(
    host: str,
    port: int,
    *,
    config: sansquic.Config | None = None,
    server_name: str | None = None,
    token: str | bytes | None = None,
    timeout: float | None = 10.0,
) -> Connection:
    """Connect to ``host:port`` and wait until the connection is ready (and authenticated).

    ``token`` is presented as a bearer token; a rejection raises
    :class:`sansquic.ConnectionClosed`. Next: :meth:`Connection.open_stream`.
    """
    config = (config if config is not None else sansquic.Config()).with_token(token)
    family, remote = _resolve(host, port)
    # Bind where the peer can answer: loopback for a loopback peer, else every interface.
    ip = ipaddress.ip_address(remote[0])
    local = str(ip) if ip.is_loopback else ("::" if ip.version == 6 else "0.0.0.0")
    loop = _Loop(sansquic.Endpoint(config, now=time.monotonic()), (local, 0), family, client=True)
    core: sansquic.Connection | None = None
    try:
        # Connect before the thread starts: it ends once its endpoint has no connection.
        core = loop.endpoint.connect(remote, time.monotonic(), server_name=server_name or host)
        loop.dispatcher.watch(core)
        loop.start()
        with loop.lock:
            loop.flush()
        dispatcher, ready = loop.dispatcher, core
        loop.until(
            lambda: True if dispatcher.ready(ready) else None, ("ready", core), _deadline(timeout)
        )
    except BaseException:
        with loop.lock, contextlib.suppress(sansquic.SansQuicError):
            if core is not None:
                core.close()  # tell the server now rather than leave it to its idle timeout
                loop.flush()
        loop.stop()
        raise
    return Connection(loop, core, owns_loop=True)


class Server:
    """A listening endpoint running ``handler(conn)`` in a thread per connection.

    ``address`` is the bound ``(host, port)``. Call :meth:`close` (or use
    ``with``) to close every connection and join every thread.
    """

    def __init__(self, loop: _Loop, handler: Callable[[Connection], object]) -> None:
        self._loop = loop
        self._handler = handler
        self._threads: set[threading.Thread] = set()
        self._lingering: set[sansquic.Connection] = set()  # handler returned, still open
        self._closing = False
        #: The bound ``(host, port)``; the real port when 0 was asked for.
        self.address = loop.address
        loop.on_wake = self._on_wake

    def _on_wake(self, wake: set[_Wake]) -> None:
        # Under the loop's lock, from whichever thread flushed.
        dispatcher = self._loop.dispatcher
        if ("incoming",) in wake:
            self._threads = {t for t in self._threads if t.is_alive()}  # forget finished ones
            while (core := dispatcher.next_connection()) is not None:
                if self._closing:
                    core.close()
                    continue
                thread = threading.Thread(
                    target=self._serve_one, args=(core,), name=f"sansquic-handler-{id(core):x}"
                )
                self._threads.add(thread)
                thread.start()
        for core in [c for c in self._lingering if ("closed", c) in wake]:
            self._lingering.discard(core)
            dispatcher.forget(core)

    def _serve_one(self, core: sansquic.Connection) -> None:
        loop = self._loop
        try:
            self._handler(Connection(loop, core, owns_loop=False))
        except sansquic.ConnectionClosed:
            pass  # the peer went away mid-handler: nothing to report
        except Exception:
            _log.exception("sansquic_threads handler failed")
            with loop.lock, contextlib.suppress(sansquic.SansQuicError):
                core.close(sansquic.CloseCode.INTERNAL_ERROR, "handler failed")
                loop.flush()
        finally:
            with loop.lock:
                # The connection outlives a handler that returned (closing it could cut
                # short a reply still in flight); it is forgotten once it closes.
                if core.state is sansquic.ConnectionState.CLOSED:
                    loop.dispatcher.forget(core)
                else:
                    self._lingering.add(core)

    def stats(self) -> sansquic.EndpointStats:
        """A snapshot of the endpoint's counters."""
        with self._loop.lock:
            return self._loop.endpoint.stats()

    def close(self, timeout: float | None = None) -> None:
        """Close every connection (code 0), stop the I/O thread, close the socket, then
        join the handler threads (raising ``TimeoutError`` if they outlast ``timeout``)."""
        loop = self._loop
        with loop.lock:
            if self._closing:
                return
            self._closing = True
            cores = loop.endpoint.connections
            for core in cores:
                core.close()
            loop.flush()
        end = _deadline(_CLOSE_WAIT)
        for core in cores:
            with contextlib.suppress(TimeoutError, sansquic.SansQuicError):
                loop.until(_closed(core), ("closed", core), end)
        loop.stop()  # wakes any handler still waiting: its connection is closing
        end = _deadline(timeout)
        for thread in self._threads - {threading.current_thread()}:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"handler thread {thread.name} is still running")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve(
    handler: Callable[[Connection], object],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: _Authenticator | None = None,
) -> Server:
    """Listen on ``host:port`` (port 0 picks one) and return the running :class:`Server`.

    Each ready connection (authenticated, with ``authenticator``) gets
    ``handler(conn)`` in its own thread; the connection stays open after the
    handler returns until the peer closes it or :meth:`Server.close`.
    Next: connect to ``server.address``.
    """
    config = config.with_authenticator(authenticator)
    family, bind = _resolve(host, port)
    endpoint = sansquic.Endpoint(config, server=True, now=time.monotonic())
    loop = _Loop(endpoint, bind, family, client=False)
    server = Server(loop, handler)
    loop.start()
    return server

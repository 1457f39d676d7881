"""sansquic with blocking calls and threads: ``connect()``, ``serve()``, Connection, Stream.

One I/O thread per UDP socket; a handler thread per server connection. Only
the threading primitives live here: the behaviour is ``sansquic_runtime``'s
(its blocking twin), the same as on every other runtime. Every blocking call
takes ``timeout=`` (seconds, ``None`` for no limit) and raises ``TimeoutError``.

    with sansquic_threads.connect("127.0.0.1", 4433, config=cfg) as conn:
        stream = conn.open_stream(priority=sansquic.Priority.HIGH)
        stream.send(b"hello")
        stream.finish()
        reply = stream.read_all(timeout=5)   # every byte until the end of the stream
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from sansquic_runtime import Readiness, UdpSocket, first_address
from sansquic_runtime._sync import Connection, Server, Stream, open_connection, open_server
from sansquic_runtime._ws_sync import (
    WebSocketConnection,
    WebSocketServer,
    open_websocket,
    open_websocket_server,
)
from sansquic_runtime._ws_sync import connect_any as _connect_any

import sansquic

__all__ = [
    "Connection",
    "Server",
    "Stream",
    "connect",
    "connect_any",
    "connect_websocket",
    "serve",
    "serve_websocket",
]


class _Threads:
    """Threads started together; leaving the block joins them. Threads cannot be
    cancelled: they end when the connections they wait on close."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        name = f"sansquic-{getattr(fn, '__name__', 'task').strip('_')}"
        thread = threading.Thread(target=fn, args=args, name=name)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def cancel(self) -> None:
        pass

    def join(self) -> None:
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join()

    def __enter__(self) -> _Threads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.join()


class _Ticket:
    """A parked thread's mark: set by the first wake that counts it as woken."""

    __slots__ = ("woken",)

    def __init__(self) -> None:
        self.woken = False


#: Seconds the I/O thread waits at most for the threads it woke to run again, before
#: it sends without their answers.
_WOKEN_WAIT = 0.002


class _Backend:
    """Threading primitives for one socket: a lock, a condition per key, a selector."""

    logger_name = "sansquic_threads"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._conds: dict[Hashable, threading.Condition] = {}
        self._tickets: dict[Hashable, list[_Ticket]] = {}  # one per parked thread
        # Made by the first wait_readable(): a WebSocket's backend never needs them.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._released = False
        self._selector: selectors.BaseSelector | None = None
        self._watched: socket.socket | None = None  # the UDP socket the selector watches
        self.threads = _Threads()
        self._readiness = Readiness()
        self._resumed = threading.Condition(self._lock)  # a woken thread runs again

    def now(self) -> float:
        return time.monotonic()

    def guard(self) -> threading.RLock:
        return self._lock

    def park(self, key: Hashable, deadline: float | None) -> None:
        cond = self._conds.get(key)
        if cond is None:
            cond = self._conds[key] = threading.Condition(self._lock)
        ticket = _Ticket()
        self._tickets.setdefault(key, []).append(ticket)
        try:
            cond.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        finally:
            # Counted once, by the wake that marked it, whatever ended the wait.
            self._readiness.resumed(ticket.woken)
            if ticket.woken:
                self._resumed.notify_all()
            tickets = self._tickets[key]
            tickets.remove(ticket)
            if not tickets:
                del self._tickets[key], self._conds[key]

    def parked(self) -> int:
        return sum(len(tickets) for tickets in self._tickets.values())

    def wake(self, key: Hashable) -> None:
        cond = self._conds.get(key)
        if cond is not None:
            cond.notify_all()
            fresh = [ticket for ticket in self._tickets.get(key, ()) if not ticket.woken]
            for ticket in fresh:
                ticket.woken = True
            self._readiness.woke(len(fresh))

    def wake_all(self) -> None:
        for cond in self._conds.values():
            cond.notify_all()
        self._readiness.forget()

    def wait_readable(self, sock: UdpSocket, deadline: float | None) -> None:
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(sock.sock, selectors.EVENT_READ)
            self._selector.register(self._wake_pair()[0], selectors.EVENT_READ)
            self._watched = sock.sock
        elif self._watched is not sock.sock:  # a migration switched the socket
            if self._watched is not None:
                self._selector.unregister(self._watched)
            self._selector.register(sock.sock, selectors.EVENT_READ)
            self._watched = sock.sock
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._wake_r and self._wake_r is not None:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    while self._wake_r.recv(4096):
                        pass

    def checkpoint(self) -> None:
        # Waits for the threads just woken to run (on a busy machine one may wait
        # for a CPU), else lets go of the GIL: a thread they started takes it now
        # rather than once this one sleeps in select, after a send pass without it.
        with self._lock:
            if self._readiness.owed:
                self._resumed.wait(_WOKEN_WAIT)
                return
        time.sleep(0)

    def _wake_pair(self) -> tuple[socket.socket, socket.socket]:
        with self._lock:
            if self._released:
                raise OSError("released")  # nothing waits any more: no new pair
            if self._wake_r is None or self._wake_w is None:
                self._wake_r, self._wake_w = socket.socketpair()
                for end in (self._wake_r, self._wake_w):
                    end.setblocking(False)
            return self._wake_r, self._wake_w

    def nudge(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_pair()[1].send(b"\0")

    def others_ready(self) -> bool:
        with self._lock:  # the woken threads report in under it
            return self._readiness.others_ready()

    def waiter_sends(self) -> bool:
        # Under the lock (the caller's guard): a woken thread still to run may add its
        # answer to the I/O thread's pass, so the send is left to that pass then.
        return not self._readiness.owed

    def after_yield(self, fn: Callable[[], None]) -> None:
        fn()

    def release(self, sock: UdpSocket) -> None:
        if self._selector is not None:
            self._selector.close()
        with self._lock:
            self._released = True
        for end in (self._wake_r, self._wake_w):
            if end is not None:
                end.close()
        # Called once the I/O loop ended: its thread is on its way out, so wait for it.
        self.threads.join()

    def task_group(self) -> _Threads:
        return _Threads()

    def background(self) -> _Threads:
        return self.threads

    def resolve(self, host: str, port: int) -> tuple[int, sansquic.Address]:
        return first_address(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM))

    def wait_socket(self, sock: socket.socket, writable: bool, deadline: float | None) -> None:
        if sock.fileno() < 0:
            return  # closed: the caller's next call on it says so
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        with contextlib.suppress(OSError, ValueError):
            if writable:
                select.select([], [sock], [], timeout)
            else:
                select.select([sock], [], [], timeout)


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
    :class:`sansquic.ConnectionClosed`. Use the connection with ``with``, or
    :meth:`Connection.close` it. Next: :meth:`Connection.open_stream`.
    """
    backend = _Backend()
    return open_connection(
        backend,
        backend.background(),
        host,
        port,
        config=config,
        server_name=server_name,
        token=token,
        timeout=timeout,
    )


def serve(
    handler: Callable[[Connection], object],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> Server:
    """Listen on ``host:port`` (port 0 picks one) and serve in a background thread.

    Each ready connection (authenticated, with ``authenticator``) gets
    ``handler(conn)`` in a thread of its own; the connection stays open after
    the handler returns until the peer closes it or :meth:`Server.close`.
    Next: connect to ``server.address``; ``server.serve_forever()`` waits.
    """
    backend = _Backend()
    server = open_server(backend, handler, host, port, config=config, authenticator=authenticator)
    # Its own group, not the backend's: closing the socket joins the backend's threads
    # (a client's I/O thread), and must not wait here for handlers beyond close(timeout=).
    server.start_serving(_Threads())
    return server


def connect_websocket(
    host: str,
    port: int,
    *,
    path: str = "/",
    config: sansquic.Config | None = None,
    server_name: str | None = None,
    token: str | bytes | None = None,
    timeout: float | None = 10.0,
) -> WebSocketConnection:
    """Connect over WebSocket (TLS) to a sansquic WebSocket server; the connection has
    :class:`Connection`'s shape. A refusal raises :class:`sansquic.PeerClosedError`."""
    backend = _Backend()
    return open_websocket(
        backend,
        backend.background(),
        host,
        port,
        path=path,
        config=config,
        server_name=server_name,
        token=token,
        timeout=timeout,
    )


def connect_any(
    host: str,
    port: int,
    *,
    websocket_port: int,
    websocket_path: str = "/",
    config: sansquic.Config | None = None,
    server_name: str | None = None,
    token: str | bytes | None = None,
    delay: float = 0.25,
    timeout: float = 10.0,
) -> Connection | WebSocketConnection:
    """QUIC to UDP ``port`` first, WebSocket to TCP ``websocket_port`` after ``delay``
    seconds or once QUIC fails; the first ready wins (``conn.transport`` says which)."""
    backend = _Backend()
    return _connect_any(
        backend,
        backend.background(),
        host,
        port,
        make_backend=_Backend,
        websocket_port=websocket_port,
        websocket_path=websocket_path,
        config=config,
        server_name=server_name,
        token=token,
        delay=delay,
        timeout=timeout,
    )


def serve_websocket(
    handler: Callable[[WebSocketConnection], object],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> WebSocketServer:
    """Listen for WebSocket clients on TCP ``host:port`` and serve in a background
    thread, as :func:`serve` does for QUIC (same certificate, same auth)."""
    server = open_websocket_server(
        _Backend(), handler, host, port, config=config, authenticator=authenticator
    )
    server.start_serving(_Threads())
    return server

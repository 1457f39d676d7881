"""sansquic on asyncio: ``connect()``, ``serve()``, and Connection / Stream objects.

The adapter moves datagrams, sleeps until the endpoint's timer and wakes the
waiters the core's :class:`sansquic.Dispatcher` names; every protocol
decision is the core's.

    async with await sansquic_asyncio.connect("localhost", 4433, config=cfg) as conn:
        stream = await conn.open_stream(priority=sansquic.Priority.HIGH)
        await stream.send(b"hello")
        await stream.finish()
        reply = await stream.receive()       # b"" at end of stream
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

import sansquic

__all__ = ["Connection", "Server", "Stream", "connect", "serve"]

Address = tuple[str, int]
_log = logging.getLogger(__name__)
_CLOSE_WAIT = 2.0  # seconds close() waits for the peer to confirm


class _Driver(asyncio.DatagramProtocol):
    """One UDP socket: feeds its Endpoint, flushes it, keeps its timer, wakes waiters."""

    def __init__(self, endpoint: sansquic.Endpoint) -> None:
        self.endpoint = endpoint
        self.dispatcher = sansquic.Dispatcher(endpoint)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self._waiters: dict[Hashable, list[asyncio.Future[None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._kicked = False
        self.closed = asyncio.Event()

    # -- asyncio callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.endpoint.receive_datagram(data, (addr[0], addr[1]), self.loop.time())
        self.kick()  # flush once for every datagram asyncio delivers in this loop pass

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors on UDP carry nothing QUIC needs; loss recovery handles it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    # -- driving ---------------------------------------------------------------------

    def kick(self) -> None:
        """Flush soon: commands and datagrams of this loop pass go out together."""
        if not self._kicked:
            self._kicked = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._kicked = False
        now = self.loop.time()
        endpoint, transport = self.endpoint, self.transport
        if transport is None or transport.is_closing():
            return
        for data, addr in endpoint.datagrams_to_send(now):
            transport.sendto(data, addr)
        for key in self.dispatcher.process():
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)
        deadline = endpoint.timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.endpoint.handle_timer(self.loop.time())
        self._flush()

    async def wait(self, key: Hashable, timeout: float | None = None) -> None:
        """Sleep until the dispatcher names ``key`` (or ``timeout`` passes)."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            waiters = self._waiters.get(key)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    async def until(self, check: Callable[[], Any], key: Hashable, timeout: float | None) -> Any:
        """Call ``check`` until it returns something other than None/False, waiting on ``key``."""
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if result is not None and result is not False:
                    return result
                await self.wait(key)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


class Stream:
    """One QUIC stream. ``send`` waits while the core says the stream is full."""

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._conn = conn
        self.id = stream_id

    @property
    def priority(self) -> int:
        """Send priority, 0-255 (see :class:`sansquic.Priority`)."""
        return self._conn._core.priority(self.id)

    @priority.setter
    def priority(self, value: int) -> None:
        self._conn._core.set_priority(self.id, value)
        self._conn._driver.kick()

    async def send(self, data: bytes, *, timeout: float | None = None) -> None:
        """Queue ``data``, waiting whenever the stream is above its high watermark."""
        conn, view = self._conn, memoryview(data)
        piece = conn._core.config.send_high_watermark
        driver, core = conn._driver, conn._core
        for start in range(0, max(len(view), 1), piece):
            await driver.until(
                lambda: driver.dispatcher.can_send(core, self.id), ("write", core, self.id), timeout
            )
            core.send(self.id, bytes(view[start : start + piece]))
            driver.kick()

    async def finish(self) -> None:
        """End the sending side (FIN). Next: ``receive()`` the reply, if any."""
        self._conn._core.finish(self.id)
        self._conn._driver.kick()

    async def receive(self, max_bytes: int = -1, *, timeout: float | None = None) -> bytes:
        """The next bytes, ``b""`` at the end of the stream.

        Raises :class:`sansquic.StreamResetError` if the peer reset it.
        """
        conn = self._conn
        dispatcher, core = conn._driver.dispatcher, conn._core
        data: bytes = await conn._driver.until(
            lambda: dispatcher.receive(core, self.id, max_bytes), ("read", core, self.id), timeout
        )
        conn._driver.kick()  # reading returned credit to the peer
        return data

    async def reset(self, code: int = 0) -> None:
        """Abandon the sending side with ``code``."""
        self._conn._core.reset(self.id, code)
        self._conn._driver.kick()

    async def stop(self, code: int = 0) -> None:
        """Ask the peer to stop sending, with ``code``."""
        self._conn._core.stop(self.id, code)
        self._conn._driver.kick()


class Connection:
    """A QUIC connection; iterate it (``async for stream in conn``) to accept streams."""

    def __init__(self, driver: _Driver, core: sansquic.Connection, *, owns_driver: bool) -> None:
        self._driver = driver
        self._core = core
        self._owns_driver = owns_driver

    @property
    def identity(self) -> sansquic.Identity | None:
        """Who the auth handshake accepted, if auth is in use."""
        return self._core.identity

    def stats(self) -> sansquic.ConnectionStats:
        """Counters and path estimates now."""
        return self._core.stats()

    async def open_stream(
        self, *, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> Stream:
        """Open a stream; ``send`` on it next."""
        stream_id = self._core.open_stream(bidirectional, priority)
        return Stream(self, stream_id)

    async def accept_stream(self, *, timeout: float | None = None) -> Stream:
        """The next stream the peer opened; raises ConnectionClosed once closed."""
        dispatcher, core = self._driver.dispatcher, self._core
        stream_id = await self._driver.until(
            lambda: dispatcher.next_stream(core), ("accept", core), timeout
        )
        return Stream(self, stream_id)

    def __aiter__(self) -> AsyncIterator[Stream]:
        return self._streams()

    async def _streams(self) -> AsyncIterator[Stream]:
        while True:
            try:
                yield await self.accept_stream()
            except sansquic.ConnectionClosed:
                return

    async def send_datagram(self, data: bytes) -> None:
        """Send an unreliable datagram (see ``max_datagram_size`` of the core)."""
        self._core.send_datagram(data)
        self._driver.kick()

    async def receive_datagram(self, *, timeout: float | None = None) -> bytes:
        """The next datagram that arrived."""
        dispatcher, core = self._driver.dispatcher, self._core
        data: bytes = await self._driver.until(
            lambda: dispatcher.next_datagram(core), ("datagram", core), timeout
        )
        return data

    def close(self, code: int = 0, reason: str = "") -> None:
        """Start a graceful close; ``await wait_closed()`` to see it finish."""
        self._core.close(code, reason)
        self._driver.kick()

    async def wait_closed(self) -> None:
        """Wait (up to a few seconds) for the close to complete, then release the socket."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_WAIT):
                while self._core.state is not sansquic.ConnectionState.CLOSED:
                    await self._driver.wait(("closed", self._core))
        self._driver.dispatcher.forget(self._core)
        if self._owns_driver:
            self._driver.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def connect(
    host: str,
    port: int,
    *,
    config: sansquic.Config | None = None,
    server_name: str | None = None,
    token: str | bytes | None = None,
    timeout: float | None = 10.0,
) -> Connection:
    """Connect to ``host:port`` and wait until the connection is ready (and authenticated).

    ``token`` is presented as a bearer token. Next: ``open_stream()``.
    """
    config = (config or sansquic.Config()).with_token(token)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=2)  # SOCK_DGRAM
    remote: Address = (str(infos[0][4][0]), int(infos[0][4][1]))
    endpoint = sansquic.Endpoint(config)
    local = ("::" if ":" in remote[0] else "0.0.0.0", 0)
    _, driver = await loop.create_datagram_endpoint(lambda: _Driver(endpoint), local_addr=local)
    core = endpoint.connect(remote, loop.time(), server_name=server_name or host)
    driver.dispatcher.watch(core)
    driver.kick()
    try:
        await driver.until(lambda: driver.dispatcher.ready(core), ("ready", core), timeout)
    except BaseException:
        driver.close()
        raise
    return Connection(driver, core, owns_driver=True)


class Server:
    """A listening endpoint; ``close()`` it, or use ``async with``."""

    def __init__(self, driver: _Driver, tasks: set[asyncio.Task[None]]) -> None:
        self._driver = driver
        self._tasks = tasks
        sock = driver.transport.get_extra_info("sockname") if driver.transport else None
        self.address: Address = (sock[0], sock[1]) if sock else ("", 0)

    def stats(self) -> sansquic.EndpointStats:
        return self._driver.endpoint.stats()

    async def close(self) -> None:
        """Close every connection, cancel the handlers, release the socket."""
        for core in self._driver.endpoint.connections:
            core.close()
        self._driver.kick()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0)
        self._driver.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve(
    handler: Callable[[Connection], Awaitable[None]],
    host: str,
    port: int,
    *,
    config: sansquic.Config,
    authenticator: sansquic.Authenticator | None = None,
) -> Server:
    """Listen on ``host:port``; run ``handler(conn)`` as a task per ready connection.

    With ``authenticator`` only accepted clients reach the handler.
    """
    config = config.with_authenticator(authenticator)
    loop = asyncio.get_running_loop()
    endpoint = sansquic.Endpoint(config, server=True)
    _, driver = await loop.create_datagram_endpoint(
        lambda: _Driver(endpoint), local_addr=(host, port)
    )
    tasks: set[asyncio.Task[None]] = set()

    async def run(core: sansquic.Connection) -> None:
        conn = Connection(driver, core, owns_driver=False)
        try:
            await handler(conn)
        except sansquic.ConnectionClosed:
            pass  # the peer went away mid-handler: nothing to report
        except Exception:
            # Nothing serves the connection any more: say so rather than leave it open.
            _log.exception("sansquic_asyncio handler failed")
            with contextlib.suppress(sansquic.SansQuicError):
                core.close(sansquic.CloseCode.INTERNAL_ERROR, "handler failed")
                driver.kick()
        finally:
            driver.dispatcher.forget(core)

    async def accept_forever() -> None:
        while True:
            core = await driver.until(driver.dispatcher.next_connection, ("incoming",), None)
            task = asyncio.create_task(run(core))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = asyncio.create_task(accept_forever())
    tasks.add(acceptor)
    return Server(driver, tasks)

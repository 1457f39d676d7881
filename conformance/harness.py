"""The harness interface every runtime plugs into, and the asyncio and threads harnesses.

Cases talk to a runtime through blocking objects with the threads runtime's
shape (``open_stream``, ``accept_stream``, ``send``, ``receive(timeout=)``,
...). The threads runtime is already that; the asyncio harness runs its loop
in a thread and forwards each call to it, so the same case code drives both,
on either side of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any, Protocol, TypeVar

import sansquic

__all__ = ["HARNESSES", "Harness", "ServerHandle"]

T = TypeVar("T")
Handler = Callable[[Any], None]  # receives a blocking connection


class ServerHandle(Protocol):
    address: tuple[str, int]

    def stats(self) -> sansquic.EndpointStats: ...

    def tracked(self) -> int:
        """Connections the runtime's Dispatcher keeps state for (a leak check)."""
        ...

    def close(self) -> None: ...


class Harness(Protocol):
    """What a runtime provides to the conformance cases."""

    name: str

    def serve(
        self, handler: Handler, config: sansquic.Config, authenticator: Any = None
    ) -> ServerHandle: ...

    def connect(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> Any: ...


# -- asyncio ------------------------------------------------------------------------------


class _Loop:
    """An asyncio loop in its own thread, and a way to run coroutines on it from others."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asyncio-harness")
        self.thread.start()
        self._pending: set[Future[Any]] = set()
        self._stopped = False

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._stopped:
            coro.close()
            raise sansquic.ConnectionClosed(0, "harness stopped", by_peer=False, application=True)
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._pending.add(future)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise
        except CancelledError:
            if self._stopped:  # the harness went away under this call: the connection is gone
                raise sansquic.ConnectionClosed(
                    0, "harness stopped", by_peer=False, application=True
                ) from None
            raise
        finally:
            self._pending.discard(future)

    def stop(self) -> None:
        """Cancel what other threads still wait on, then stop: nothing blocks forever."""
        if self._stopped:
            return
        self._stopped = True

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _AsyncStream:
    def __init__(self, loop: _Loop, stream: Any) -> None:
        self._loop, self._stream, self.id = loop, stream, stream.id

    def send(self, data: bytes, timeout: float | None = None) -> None:
        self._loop.run(self._stream.send(data, timeout=timeout))

    def receive(self, max_bytes: int = -1, timeout: float | None = None) -> bytes:
        data: bytes = self._loop.run(self._stream.receive(max_bytes, timeout=timeout))
        return data

    def finish(self) -> None:
        self._loop.run(self._stream.finish())

    def reset(self, code: int = 0) -> None:
        self._loop.run(self._stream.reset(code))

    def stop(self, code: int = 0) -> None:
        self._loop.run(self._stream.stop(code))

    @property
    def priority(self) -> int:
        return int(self._loop.run(_get(lambda: self._stream.priority)))

    @priority.setter
    def priority(self, value: int) -> None:
        self._loop.run(_get(lambda: setattr(self._stream, "priority", value)))


async def _get(function: Callable[[], T]) -> T:
    """Run a plain call on the loop thread (the core is not thread-safe)."""
    return function()


class _AsyncConnection:
    def __init__(self, loop: _Loop, conn: Any, owns_loop: bool) -> None:
        self._loop, self._conn, self._owns_loop = loop, conn, owns_loop
        self._closed = False

    @property
    def identity(self) -> sansquic.Identity | None:
        identity: sansquic.Identity | None = self._loop.run(_get(lambda: self._conn.identity))
        return identity

    def stats(self) -> sansquic.ConnectionStats:
        stats: sansquic.ConnectionStats = self._loop.run(_get(self._conn.stats))
        return stats

    def open_stream(
        self, bidirectional: bool = True, priority: int = sansquic.Priority.NORMAL
    ) -> _AsyncStream:
        stream = self._loop.run(
            self._conn.open_stream(bidirectional=bidirectional, priority=priority)
        )
        return _AsyncStream(self._loop, stream)

    def accept_stream(self, timeout: float | None = None) -> _AsyncStream:
        return _AsyncStream(self._loop, self._loop.run(self._conn.accept_stream(timeout=timeout)))

    def __iter__(self) -> Iterator[_AsyncStream]:
        while True:
            try:
                yield self.accept_stream()
            except sansquic.ConnectionClosed:
                return

    def send_datagram(self, data: bytes) -> None:
        self._loop.run(self._conn.send_datagram(data))

    def receive_datagram(self, timeout: float | None = None) -> bytes:
        data: bytes = self._loop.run(self._conn.receive_datagram(timeout=timeout))
        return data

    def close(self, code: int = 0, reason: str = "") -> None:
        async def close() -> None:
            self._conn.close(code, reason)
            await self._conn.wait_closed()

        if self._closed:
            return  # closing is idempotent, as in the runtimes
        self._closed = True
        self._loop.run(close())
        if self._owns_loop:
            self._loop.stop()


class _AsyncServer:
    def __init__(self, loop: _Loop, server: Any) -> None:
        self._loop, self._server = loop, server
        self.address: tuple[str, int] = server.address

    def stats(self) -> sansquic.EndpointStats:
        stats: sansquic.EndpointStats = self._loop.run(_get(self._server.stats))
        return stats

    def tracked(self) -> int:
        return int(self._loop.run(_get(lambda: self._server._driver.dispatcher.tracked)))

    def close(self) -> None:
        self._loop.run(self._server.close())
        self._loop.stop()


class AsyncioHarness:
    """sansquic_asyncio behind the blocking harness interface."""

    name = "asyncio"

    def serve(
        self, handler: Handler, config: sansquic.Config, authenticator: Any = None
    ) -> _AsyncServer:
        import sansquic_asyncio

        loop = _Loop()

        async def run_handler(conn: Any) -> None:
            # Case handlers are blocking: they run in a thread of their own.
            await asyncio.to_thread(handler, _AsyncConnection(loop, conn, owns_loop=False))

        server = loop.run(
            sansquic_asyncio.serve(
                run_handler, "127.0.0.1", 0, config=config, authenticator=authenticator
            )
        )
        return _AsyncServer(loop, server)

    def connect(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> _AsyncConnection:
        import sansquic_asyncio

        loop = _Loop()
        try:
            conn = loop.run(
                sansquic_asyncio.connect(
                    address[0], address[1], config=config, server_name="localhost", token=token
                )
            )
        except BaseException:
            loop.stop()
            raise
        return _AsyncConnection(loop, conn, owns_loop=True)


class _ThreadsServer:
    def __init__(self, server: Any) -> None:
        self._server = server
        self.address: tuple[str, int] = server.address

    def stats(self) -> sansquic.EndpointStats:
        stats: sansquic.EndpointStats = self._server.stats()
        return stats

    def tracked(self) -> int:
        loop = self._server._loop
        with loop.lock:
            return int(loop.dispatcher.tracked)

    def close(self) -> None:
        self._server.close()


class ThreadsHarness:
    """sansquic_threads is already blocking: the harness only fixes the arguments."""

    name = "threads"

    def serve(self, handler: Handler, config: sansquic.Config, authenticator: Any = None) -> Any:
        import sansquic_threads

        return _ThreadsServer(
            sansquic_threads.serve(
                handler, "127.0.0.1", 0, config=config, authenticator=authenticator
            )
        )

    def connect(
        self, address: tuple[str, int], config: sansquic.Config, token: str | None = None
    ) -> Any:
        import sansquic_threads

        return sansquic_threads.connect(
            address[0], address[1], config=config, server_name="localhost", token=token
        )


def _available() -> dict[str, Harness]:
    harnesses: dict[str, Harness] = {"asyncio": AsyncioHarness()}
    try:
        import sansquic_threads  # noqa: F401
    except ImportError:
        pass
    else:
        harnesses["threads"] = ThreadsHarness()
    return harnesses


HARNESSES = _available()

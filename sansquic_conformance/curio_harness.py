"""The curio runtime in the conformance suite: a curio kernel in a thread of its own.

anyio's blocking portal drives asyncio and trio, not curio, so this is a
small portal of its own: a kernel in a thread that runs each ``call()`` as a
task and blocks the caller until it is done. It has ``_Portal``'s shape, so
the blocking wrappers of ``harness.py`` serve curio unchanged.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import threading
from typing import Any, cast

import sansquic

from .harness import Handler, _ByName, _Connection, _Portal, _Server

__all__ = ["CurioHarness"]


def _harness_stopped() -> sansquic.ConnectionClosed:
    return sansquic.ConnectionClosed(0, "harness stopped", application=True)


class _CurioPortal:
    """A curio kernel in its own thread, and calls into it from others (``_Portal``'s shape)."""

    def __init__(self) -> None:
        import curio  # type: ignore[import-untyped]  # here: the harness is made without it

        self._curio = curio
        self._jobs = curio.UniversalQueue()
        self._lock = threading.Lock()  # no job may be queued behind the stop sentinel
        self._stopped = False
        self._thread = threading.Thread(target=curio.run, args=(self._main,), daemon=True)
        self._thread.start()

    async def _main(self) -> None:
        while (job := await self._jobs.get()) is not None:
            await self._curio.spawn(self._run, *job, daemon=True)
        # Returning shuts the kernel down, which cancels every task still running.

    async def _run(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        done: concurrent.futures.Future[Any],
    ) -> None:
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):  # an async function, or connect()'s Connect
                result = await result
        except self._curio.CancelledError:
            done.set_exception(_harness_stopped())  # as calls made after stop() see it
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(result)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._stopped:
                raise _harness_stopped()
            self._jobs.put((fn, args, kwargs, done))
        return done.result()

    def stop(self) -> None:
        """Cancel what is still running in the kernel, then end its thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._jobs.put(None)
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("the curio kernel did not stop within 30 s")


async def _in_thread(handler: Handler, conn: Any) -> None:
    """Run the blocking ``handler`` in a thread of its own: as many may be alive at once
    as there are connections (curio's run_in_thread pool stops at 64)."""
    from curio.traps import _future_wait  # type: ignore[import-untyped]

    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        # Cancelling the task cancels ``done`` too: then nobody wants the outcome.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            try:
                handler(conn)
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

    threading.Thread(target=run, daemon=True).start()
    await _future_wait(done)  # a cancelled handler task leaves the thread to finish alone
    done.result()


class CurioHarness(_ByName):
    """sansquic_curio on a kernel of its own per server and per client connection."""

    name = "curio"
    _module = "sansquic_curio"  # what harness._available() imports to see if curio is there

    def _serve(
        self, name: str, handler: Handler, config: sansquic.Config, authenticator: Any
    ) -> _Server:
        import sansquic_curio

        curio_portal = _CurioPortal()
        portal = cast(_Portal, curio_portal)  # the wrappers use only call() and stop()

        async def run_handler(conn: Any) -> None:
            await _in_thread(handler, _Connection(portal, conn, exit_cm=None))

        try:
            server = curio_portal.call(
                getattr(sansquic_curio, name),
                run_handler,
                "127.0.0.1",
                0,
                config=config,
                authenticator=authenticator,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                curio_portal.stop()
            raise
        return _Server(portal, server)

    def _connect(self, name: str, *args: Any, **options: Any) -> _Connection:
        import sansquic_curio

        curio_portal = _CurioPortal()
        try:
            # Awaited, connect() runs the connection in background tasks: conn.close() ends it.
            conn = curio_portal.call(
                getattr(sansquic_curio, name), *args, server_name="localhost", **options
            )
        except BaseException:
            with contextlib.suppress(Exception):
                curio_portal.stop()
            raise
        # A no-op exit_cm: closing the connection then stops its kernel too.
        return _Connection(cast(_Portal, curio_portal), conn, exit_cm=lambda: None)

"""A loopback UDP relay between a client and a server it can switch to another.

It stands in for a load balancer that sends a client to a server that never
saw its connection (the way a restarted server looks), so cases can watch
what the client does with the stateless reset it gets back.
"""

from __future__ import annotations

import contextlib
import heapq
import select
import socket
import threading
import time

__all__ = ["Relay"]

Address = tuple[str, int]


class Relay:
    """Forward a client's datagrams to ``target`` and the answers back to the
    client heard from last (clients take turns), each
    ``delay`` seconds late, until :meth:`close` (or ``lifetime`` seconds: it always
    stops by itself)."""

    def __init__(self, target: Address, *, delay: float = 0.0, lifetime: float = 60.0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.address: Address = self._sock.getsockname()
        self._target = target
        self._servers = {target}
        self._client: Address | None = None
        self._delay = delay  # each way: a path with a round trip of 2 * delay
        self._due: list[tuple[float, int, bytes, Address]] = []  # a heap
        self._sent = 0
        self._stop_at = time.monotonic() + lifetime
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()

    def retarget(self, target: Address) -> None:
        """Send the client's datagrams to ``target`` from now on; the old server's
        datagrams are dropped."""
        self._servers.add(target)
        self._target = target

    def _forward(self, data: bytes, to: Address) -> None:
        self._sent += 1
        heapq.heappush(self._due, (time.monotonic() + self._delay, self._sent, data, to))

    def _run(self) -> None:
        sock, due = self._sock, self._due
        while not self._stopped.is_set() and time.monotonic() < self._stop_at:
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, _, data, to = heapq.heappop(due)
                with contextlib.suppress(OSError):  # a closed port: dropped, as on a network
                    sock.sendto(data, to)
            wait = min(0.05, max(0.0, due[0][0] - now)) if due else 0.05
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                continue
            try:
                data, source = sock.recvfrom(65536)
            except OSError:  # an ICMP error for a closed port
                continue
            if source == self._target and self._client is not None:
                self._forward(data, self._client)
            elif source not in self._servers:  # a client: answers now go to it
                self._client = source
                self._forward(data, self._target)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""A loopback UDP impairment proxy between one server and its clients.

It forwards datagrams both ways, one upstream socket per client address,
and on the way can drop (loss), flip a byte (corruption), drop everything
for a while (blackhole), hold back (added delay) or drop handshake packets
(long headers). Every decision comes from one seeded ``random.Random``, so a
run is repeatable. It also feeds every datagram, before impairment, to a
:class:`~interop.wire.Observer`.
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

from .wire import Observer

__all__ = ["Impairment", "Proxy"]

_MAX_HELD = 20_000  # datagrams held back for delay at once; more are dropped (counted)
_MAX_CLIENTS = 256
_TICK = 0.005


@dataclass(frozen=True)
class Impairment:
    """What the proxy does to the datagrams it forwards (both directions)."""

    #: Probability of dropping a datagram.
    loss: float = 0.0
    #: Probability of flipping one byte of a datagram.
    corruption: float = 0.0
    #: Drop every datagram for this many seconds ...
    blackhole_seconds: float = 0.0
    #: ... starting once this many 1-RTT datagrams went server to client.
    blackhole_after: int = 50
    #: Seconds added to each datagram's trip, each way.
    delay: float = 0.0
    #: Probability of dropping a datagram that starts with a long header.
    handshake_loss: float = 0.0
    seed: int = 1


class Proxy:
    """Forward ``listen`` <-> ``upstream`` with ``impairment``, in a thread of its own."""

    def __init__(
        self,
        upstream: tuple[str, int],
        impairment: Impairment | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.upstream = upstream
        self.impairment = impairment or Impairment()
        self.observer = Observer()
        #: What was done: forwarded, lost, corrupted, blackholed, delayed, ...
        self.actions: Counter[str] = Counter()
        #: Address families datagrams arrived over, from either side.
        self.families: set[int] = set()
        self._random = random.Random(self.impairment.seed)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listen = socket.socket(family, socket.SOCK_DGRAM)
        self._listen.bind((host, 0))
        self._listen.setblocking(False)
        self.address: tuple[str, int] = self._listen.getsockname()[:2]
        self._clients: dict[tuple[str, int], socket.socket] = {}
        self._by_socket: dict[socket.socket, tuple[str, int]] = {}
        self._held: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._seq = 0
        self._short_to_client = 0
        self._blackhole_until: float | None = None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listen, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="interop-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop forwarding and close every socket."""
        self._stop.set()
        self._thread.join(5)
        for sock in [self._listen, *self._clients.values()]:
            sock.close()
        self._selector.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = _TICK if self._held else 0.05
            for key, _ in self._selector.select(timeout):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                for _ in range(64):  # bounded batch per socket per wakeup
                    try:
                        data, source = sock.recvfrom(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # ICMP errors surface here; UDP goes on
                    # The address family of what actually arrived (IPv6 addresses are 4-tuples).
                    self.families.add(socket.AF_INET6 if len(source) == 4 else socket.AF_INET)
                    if sock is self._listen:
                        self._from_client(data, source[:2])
                    else:
                        self._forward(data, sock, self._by_socket[sock], to_server=False)
            self._release()

    def _from_client(self, data: bytes, source: tuple[str, int]) -> None:
        upstream = self._clients.get(source)
        if upstream is None:
            if len(self._clients) >= _MAX_CLIENTS:
                self.actions["too many clients"] += 1
                return
            upstream = socket.socket(self._listen.family, socket.SOCK_DGRAM)
            upstream.setblocking(False)
            upstream.connect(self.upstream)
            self._clients[source] = upstream
            self._by_socket[upstream] = source
            self._selector.register(upstream, selectors.EVENT_READ)
        self._forward(data, upstream, self.upstream, to_server=True)

    def _forward(
        self, data: bytes, client_side: socket.socket, peer: tuple[str, int], *, to_server: bool
    ) -> None:
        """Impair ``data`` and send it: to the server through ``client_side``'s upstream
        socket, or to the client ``peer`` through the listening socket."""
        self.observer.observe(data, to_server)
        imp, rnd, now = self.impairment, self._random, time.monotonic()
        if not to_server and data and not data[0] & 0x80:
            self._short_to_client += 1
            if imp.blackhole_seconds and self._short_to_client == imp.blackhole_after:
                self._blackhole_until = now + imp.blackhole_seconds
        if self._blackhole_until is not None and now < self._blackhole_until:
            self.actions["blackholed"] += 1
            return
        if imp.handshake_loss and data and data[0] & 0x80 and rnd.random() < imp.handshake_loss:
            self.actions["handshake lost"] += 1
            return
        if imp.loss and rnd.random() < imp.loss:
            self.actions["lost"] += 1
            return
        if imp.corruption and len(data) > 1 and rnd.random() < imp.corruption:
            at = rnd.randrange(1, len(data))  # past the first byte, so it still looks like QUIC
            data = data[:at] + bytes([data[at] ^ (1 + rnd.randrange(255))]) + data[at + 1 :]
            self.actions["corrupted"] += 1
        sock = client_side if to_server else self._listen
        target = peer if not to_server else self.upstream
        if imp.delay:
            if len(self._held) >= _MAX_HELD:
                self.actions["overflow"] += 1
                return
            self._seq += 1
            heapq.heappush(self._held, (now + imp.delay, self._seq, sock, data, target))
            self.actions["delayed"] += 1
            return
        self._send(sock, data, target, to_server)

    def _send(
        self, sock: socket.socket, data: bytes, target: tuple[str, int], to_server: bool
    ) -> None:
        try:
            if to_server:
                sock.send(data)
            else:
                sock.sendto(data, target)
            self.actions["forwarded"] += 1
        except OSError:
            self.actions["send failed"] += 1

    def _release(self) -> None:
        now = time.monotonic()
        while self._held and self._held[0][0] <= now:
            _, _, sock, data, target = heapq.heappop(self._held)
            self._send(sock, data, target, sock is not self._listen)

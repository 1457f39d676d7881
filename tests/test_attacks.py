"""Attacks a hostile peer made on the core, each kept broken here (issue 9).

Each test drives a real engine-level peer on the simulated network against a
server Endpoint as the runtimes use it (with a Dispatcher), so what fails here
failed on both runtimes over loopback.
"""

from __future__ import annotations

import gc
import traceback
import weakref
from collections.abc import Callable

import pytest

from sansquic import (
    AuthPolicy,
    AuthRejection,
    AuthRequest,
    CloseCode,
    Config,
    ConnectionClosed,
    ConnectionState,
    Dispatcher,
    Endpoint,
    Identity,
    RateLimits,
)
from sansquic.testing import LinkConditions, SimNetwork

from .rawpeer import RawClient, auth_request

SERVER = ("10.0.0.2", 4433)


def _decide(request: AuthRequest, address: object, now: float) -> Identity | AuthRejection:
    if request.credentials == b"good":
        return Identity(subject="good")
    return AuthRejection(code=CloseCode.AUTH_REJECTED, reason="bad credentials")


def _server_config(**changes: object) -> Config:
    policy = AuthPolicy(authenticator=_decide, deadline=2.0)
    return Config(
        dev_mode=True, trust_dev_certificate=True, auth=policy, idle_timeout=5.0, **changes
    )  # type: ignore[arg-type]


class World:
    """A server Endpoint with auth and the Dispatcher a runtime would put on it."""

    def __init__(self, config: Config | None = None, *, seed: int = 1) -> None:
        self.net = SimNetwork(seed, conditions=LinkConditions(delay=0.002))
        self.server = Endpoint(config or _server_config(), server=True)
        self.net.add(SERVER, self.server)
        self.dispatcher = Dispatcher(self.server)
        self.ready: list[object] = []  # what the application was handed
        self.net.step_hooks.append(self._application)
        self._next = 1

    def _application(self) -> None:
        self.dispatcher.process()
        while (conn := self.dispatcher.next_connection()) is not None:
            self.ready.append(conn)

    def raw_client(self) -> RawClient:
        address = (f"10.0.1.{self._next}", 5000)
        self._next += 1
        client = RawClient(SERVER, self.net.now)
        self.net.add(address, client)
        return client

    def handshake(self, *clients: RawClient) -> None:
        assert self.net.run_until(lambda: all(c.connected for c in clients), 5)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return self.net.run_until(predicate, timeout)


# -- 1. a peer stopping or resetting the auth stream -------------------------------------


@pytest.mark.parametrize("how", ["stop", "reset", "stop_after_request"])
def test_a_peer_aborting_the_auth_stream_is_closed_with_a_code(how: str) -> None:
    world = World()
    attacker, bystander = world.raw_client(), world.raw_client()
    world.handshake(attacker, bystander)
    quic = attacker.quic
    if how == "stop":
        quic.send_stream_data(0, auth_request()[:3])  # the stream exists, the request is partial
        quic.stop_stream(0, 7)
    elif how == "reset":
        quic.send_stream_data(0, auth_request()[:3])
        quic.reset_stream(0, 7)
    else:  # the answer the server is about to send meets a stopped stream
        quic.send_stream_data(0, auth_request(b"bad"), end_stream=True)
        quic.stop_stream(0, 7)
    # Nothing raises out of the endpoint (the network would propagate it), and
    # the attacker's connection ends with a code that says why.
    assert world.run_until(lambda: attacker.close_code is not None, 5)
    expected = CloseCode.AUTH_REJECTED if how == "stop_after_request" else None
    assert attacker.close_code in {CloseCode.AUTH_STREAM_ABORTED, expected}
    # The server goes on serving others.
    bystander.quic.send_stream_data(0, auth_request(), end_stream=True)
    assert world.run_until(lambda: len(world.ready) == 1, 5)
    assert world.server.stats().internal_errors == 0


def test_stopping_the_auth_stream_while_the_application_decides() -> None:
    world = World(
        Config(dev_mode=True, trust_dev_certificate=True, auth=AuthPolicy(deadline=2.0))
    )  # decided by the app
    attacker = world.raw_client()
    world.handshake(attacker)
    attacker.quic.send_stream_data(0, auth_request(), end_stream=True)
    world.net.run_for(0.05)
    [server_conn] = world.server.connections
    attacker.quic.stop_stream(0, 7)
    assert world.run_until(lambda: attacker.close_code is not None, 5)
    assert attacker.close_code == CloseCode.AUTH_STREAM_ABORTED
    assert server_conn.state in (ConnectionState.CLOSING, ConnectionState.CLOSED)


# -- 2. connections that never reach the handler ------------------------------------------


def test_connections_that_never_reach_the_application_leave_no_state() -> None:
    world = World()
    silent = [world.raw_client() for _ in range(20)]  # finish TLS, then say nothing
    rejected = [world.raw_client() for _ in range(5)]
    world.handshake(*silent, *rejected)
    for client in rejected:
        client.quic.send_stream_data(0, auth_request(b"bad"), end_stream=True)
    assert world.server.stats().active == 25
    assert world.run_until(lambda: not world.server.connections, 30)
    assert world.ready == []
    assert world.dispatcher.tracked == 0
    assert world.server.stats().auth_failures == 25


def test_a_connection_the_application_holds_is_kept_until_forgotten() -> None:
    world = World()
    client = world.raw_client()
    world.handshake(client)
    client.quic.send_stream_data(0, auth_request(), end_stream=True)
    assert world.run_until(lambda: len(world.ready) == 1, 5)
    client.quic.close(error_code=0)
    assert world.run_until(lambda: not world.server.connections, 10)
    assert world.dispatcher.tracked == 1  # the application may still ask about it
    world.dispatcher.forget(world.ready[0])  # type: ignore[arg-type]
    assert world.dispatcher.tracked == 0


def test_forget_all_drops_every_connection_once_the_endpoint_stopped() -> None:
    """What a server calls once its loop stopped: connections still closing, still
    open and accepted but never taken are all dropped, and their waiters named."""
    world = World()
    held, closing, untaken = world.raw_client(), world.raw_client(), world.raw_client()
    world.handshake(held, closing, untaken)
    for client in (held, closing):
        client.quic.send_stream_data(0, auth_request(), end_stream=True)
    assert world.run_until(lambda: len(world.ready) == 2, 5)
    world.net.step_hooks.remove(world._application)  # the application takes no more
    untaken.quic.send_stream_data(0, auth_request(), end_stream=True)
    assert world.run_until(lambda: all(c.identity is not None for c in world.server.connections), 5)
    world.dispatcher.process()
    assert len(world.dispatcher._accepted) == 1
    first, second = world.ready
    second.close()  # type: ignore[attr-defined]  # its closing period outlasts the loop
    world.dispatcher.process()
    assert second.state is ConnectionState.CLOSING  # type: ignore[attr-defined]
    assert world.dispatcher.tracked == 3
    keys = world.dispatcher.forget_all()
    assert {("closed", first), ("closed", second)} <= keys
    assert world.dispatcher.tracked == 0
    assert world.dispatcher._accepted == {}
    assert world.dispatcher.next_connection() is None
    # Were the endpoint fed again, the forgotten connections' events would make no new links.
    world.net.run_for(2.0)
    assert second not in world.server.connections  # its closing period ended
    world.dispatcher.process()
    assert world.dispatcher.tracked == 0


# -- 3. one address spending the stateless-answer budget ----------------------------------


def test_one_address_cannot_starve_other_clients_of_stateless_answers() -> None:
    limits = RateLimits(retry="always")
    world = World(_server_config(rate_limits=limits))
    server = world.server
    attacker = ("10.6.6.6", 666)

    def flood(count: int) -> None:
        now = world.net.now
        for i in range(count):
            # Short-header junk (a stateless reset each) and version-negotiation triggers.
            server.receive_datagram(bytes([0x41]) + i.to_bytes(4, "big") * 15, attacker, now)
            vn = bytes([0xC0, 0x0A, 0x1A, 0x2A, 0x3A, 8]) + i.to_bytes(8, "big") + b"\x00"
            server.receive_datagram(vn + bytes(1200), attacker, now)

    for _ in range(100):  # 5,000 of each per second: the server is under attack already
        flood(50)
        world.net.run_for(0.01)
    legit = world.raw_client()
    for _ in range(300):  # and for up to 3 more seconds
        flood(50)
        world.net.run_for(0.01)
        if legit.connected:
            break
    assert legit.connected, "a client from another address never got its Retry answered"
    stats = server.stats()
    assert stats.retries >= 1
    answered = stats.stateless_resets + stats.version_negotiations
    seconds = world.net.now
    # The attacker's address got no more than its per-address share.
    assert answered <= 100 * (seconds + 1) + 1, (answered, seconds)
    assert stats.dropped["flood (pre-handshake rate)"] > 0


# -- 6. a truncated auth request ----------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 3, 9])
def test_a_truncated_auth_request_with_fin_is_rejected_at_once(cut: int) -> None:
    world = World()
    client = world.raw_client()
    world.handshake(client)
    started = world.net.now
    client.quic.send_stream_data(0, auth_request()[:cut], end_stream=True)
    assert world.run_until(lambda: client.close_code is not None, 5)
    assert client.close_code == CloseCode.AUTH_MALFORMED
    assert world.net.now - started < 0.5  # not the 2 s deadline


def test_a_closed_connection_is_released_while_others_live() -> None:
    """The endpoint's timer heap must not keep a finished connection alive."""
    world = World()
    keep, gone = world.raw_client(), world.raw_client()
    world.handshake(keep, gone)
    for client in (keep, gone):
        client.quic.send_stream_data(0, auth_request(), end_stream=True)
    assert world.run_until(lambda: len(world.ready) == 2, 5)
    target = next(c for c in world.ready if c.remote_address == ("10.0.1.2", 5000))  # type: ignore[attr-defined]
    ref = weakref.ref(target)
    world.dispatcher.forget(target)  # type: ignore[arg-type]
    world.ready.clear()
    del target
    gone.quic.close(error_code=0)
    assert world.run_until(lambda: len(world.server.connections) == 1, 10)
    gc.collect()
    assert ref() is None


def test_raising_a_closed_error_again_and_again_keeps_it_small() -> None:
    world = World()
    client = world.raw_client()
    world.handshake(client)
    [conn] = world.server.connections
    conn.close()
    depths = []
    for _ in range(50):
        try:
            conn.open_stream()
        except ConnectionClosed as exc:
            depths.append(len(traceback.extract_tb(exc.__traceback__)))
    assert len(depths) == 50
    assert len(set(depths)) == 1  # each raise is a fresh exception, not one growing chain


def test_per_stream_state_does_not_outlive_the_streams() -> None:
    """Thousands of streams through one connection leave the Dispatcher's tables as they
    were: what it keeps per stream follows the streams the core still has."""
    world = World(Config(dev_mode=True, trust_dev_certificate=True))
    world.net = SimNetwork(3, conditions=LinkConditions(delay=0.001), keep_trace=False)
    world.net.add(SERVER, world.server)
    world.net.step_hooks.append(world._application)
    client = world.raw_client()
    world.handshake(client)
    assert world.run_until(lambda: len(world.ready) == 1, 5)
    [conn] = world.server.connections
    link = world.dispatcher._links[conn]

    def burst(count: int) -> None:
        # A peer that opens uni streams and resets them at once, and bidi streams it
        # finishes, none of which the application ever accepts or reads.
        for _ in range(count):
            uni = client.quic.get_next_available_stream_id(is_unidirectional=True)
            client.quic.send_stream_data(uni, b"x")
            client.quic.reset_stream(uni, 5)
        world.net.run_for(0.05)

    for _ in range(40):  # 4,000 streams, within the peer's stream credit as it returns
        burst(100)
    assert len(link.incoming) + len(link.resets) <= 2 * len(conn._streams.records) + 64 + 100
    assert world.server.stats().internal_errors == 0

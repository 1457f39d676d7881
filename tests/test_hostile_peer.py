"""A hostile peer against a server Endpoint with auth: stateful, no sockets, a fake clock.

The clients are raw aioquic ``QuicConnection`` objects, so they can do what no
sansquic client would: stop or reset the auth stream, truncate or garble the
request, flood streams and datagrams before being accepted, replay and forge
packets, rebind, abandon handshakes, go silent, close. The server is an
:class:`~sansquic.Endpoint` whose ``AuthPolicy`` accepts the credentials
``b"good"``. Datagrams move between them through ``_pump``, which also fires
every timer that falls due, on a clock only this test moves.

Two machines share the rules. ``DispatcherApp`` drains the endpoint through a
:class:`~sansquic.Dispatcher` as the runtimes do; ``RawEventsApp`` drains
``endpoint.next_event()`` itself and checks the order of the raw events.
Checked after every step and at the end:

1. nothing raises out of the endpoint or the dispatcher (and the endpoint
   counts no internal error), and the server never sends the client anything
   aioquic rejects as a protocol violation;
2. the application sees no stream, byte or datagram of a client before its
   ``Authenticated``, nothing of a client never accepted, nothing of the auth
   stream (id 0), only bytes and datagrams the client really sent, and it is
   woken (and told) about everything it is given;
3. once every client closed or went silent for long enough, the endpoint and
   the dispatcher hold nothing;

and the server answers each hostile move as documented: a request is accepted
or rejected at once, a truncated or malformed one closes with
``AUTH_MALFORMED``, an aborted auth stream with ``AUTH_STREAM_ABORTED``,
silence with ``AUTH_TIMEOUT``, a flood with ``AUTH_BUDGET_EXCEEDED``.
``test_known_hostile_sequences`` replays the sequences that found bugs, so they
run whatever hypothesis draws.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import pytest
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from sansquic import (
    Address,
    Authenticated,
    AuthMethod,
    AuthPolicy,
    AuthRejection,
    AuthRequest,
    CloseCode,
    Config,
    Connection,
    ConnectionClosed,
    ConnectionState,
    ConnectionTerminated,
    DatagramReceived,
    Dispatcher,
    Endpoint,
    Event,
    HandshakeCompleted,
    Identity,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamResetError,
    StreamStopped,
)
from sansquic._auth import encode_request, parse_accepted_or_rejected

SERVER: Address = ("10.0.0.2", 4433)
GOOD = b"good"
SUBJECT = "agent-good"
REJECT_CODE = 403
DEADLINE = 2.0
IDLE_TIMEOUT = 5.0
HELD_STREAMS, HELD_DATAGRAMS = 100, 64  # AuthPolicy's default budgets
AUTH_STREAM = 0
#: Seconds the pump may move the clock to fire timers (pacing, ACK delay) while it settles.
SETTLE = 0.05
MAX_ROUNDS = 20_000
MAX_CLIENTS = 6


def authenticator(request: AuthRequest, address: Address, now: float) -> Identity | AuthRejection:
    if request.credentials == GOOD:
        return Identity(subject=SUBJECT)
    return AuthRejection(code=REJECT_CODE, reason="bad credentials")


SERVER_CONFIG = Config(
    dev_mode=True,
    trust_dev_certificate=True,
    auth=AuthPolicy(authenticator=authenticator, deadline=DEADLINE),
    idle_timeout=IDLE_TIMEOUT,
    datagrams=True,
)
assert SERVER_CONFIG.auth is not None
assert (SERVER_CONFIG.auth.held_streams, SERVER_CONFIG.auth.held_datagrams) == (
    HELD_STREAMS,
    HELD_DATAGRAMS,
)


def request_bytes(good: bool, method: AuthMethod, metadata: dict[str, str]) -> bytes:
    credentials = GOOD if good else b"bad-" + bytes(len(metadata))
    return encode_request(AuthRequest(method=method, credentials=credentials, metadata=metadata))


def accepts(good: bool, method: AuthMethod) -> bool:
    """What the server must decide: mutual TLS is always refused, else the credentials decide."""
    return good and method is not AuthMethod.MUTUAL_TLS


def is_subsequence(items: list[bytes], of: list[bytes]) -> bool:
    it = iter(of)
    return all(any(x == y for y in it) for x in items)


class HostileClient:
    """One raw aioquic client and everything it sent, as the oracle for what may arrive."""

    def __init__(self, address: Address, now: float) -> None:
        self.address = address
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=["sansquic"],
            max_datagram_frame_size=1300,
            idle_timeout=60.0,  # the server's 5 s wins: aioquic takes the smaller
        )
        config.verify_mode = ssl.CERT_NONE
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(SERVER, now=now)
        self.handshake_done = False
        self.handshake_at = 0.0
        self.server_conn: Connection | None = None
        # The auth stream, as this client used it.
        self.auth_sent = bytearray()
        self.auth_fin = False
        self.auth_aborted = False
        self.good_request_sent = False  # a whole request with good credentials went out
        self.answer = bytearray()  # what the server sent back on stream 0
        # Other streams.
        self.next_bidi, self.next_uni = 4, 2
        self.streams: list[int] = []  # every stream this client created
        self.sent: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        self.reset_codes: dict[int, int] = {}
        self.stop_codes: dict[int, int] = {}
        self.pre_auth_streams: set[int] = set()  # streams that reached a server still deciding
        self.datagrams: list[bytes] = []
        self.pre_auth_datagrams = 0  # datagrams sent to a server still deciding
        # How the connection ended, first cause only: (origin, code, reason), where origin
        # is "peer", "violation" (aioquic itself objected to the server), "timer" or "local".
        self.close: tuple[str, int, str] | None = None
        self.history: list[bytes] = []  # the last datagrams it sent, for replays

    @property
    def closed(self) -> bool:
        return self.quic._close_event is not None

    def peer_close_code(self) -> int | None:
        if self.close is None or self.close[0] != "peer":
            return None
        return self.close[1]

    def _note_close(self, origin: str) -> None:
        event = self.quic._close_event
        if self.close is None and event is not None:
            if origin == "receive":
                origin = "peer" if self.quic._state is QuicConnectionState.DRAINING else "violation"
            self.close = (origin, int(event.error_code), str(event.reason_phrase))

    def receive(self, data: bytes, now: float) -> None:
        self.quic.receive_datagram(data, SERVER, now=now)
        self._note_close("receive")
        self._drain()

    def fire(self, now: float) -> None:
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            self.quic.handle_timer(now=now)
            self._note_close("timer")
            self._drain()

    def _drain(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                self.handshake_done = True
            elif isinstance(event, qe.StreamDataReceived) and event.stream_id == AUTH_STREAM:
                self.answer += event.data

    # -- hostile commands: aioquic refusing one (a discarded stream, ...) is the client's
    # own business, so its ValueError / AssertionError / RuntimeError means "nothing was sent".

    def try_send(self, stream_id: int, data: bytes, fin: bool) -> bool:
        try:
            self.quic.send_stream_data(stream_id, data, end_stream=fin)
        except (ValueError, AssertionError, RuntimeError):
            return False
        return True

    def try_reset(self, stream_id: int, code: int) -> bool:
        try:
            self.quic.reset_stream(stream_id, code)
        except (ValueError, AssertionError, RuntimeError):
            return False
        return True

    def try_stop(self, stream_id: int, code: int) -> bool:
        try:
            self.quic.stop_stream(stream_id, code)
        except (ValueError, AssertionError, RuntimeError):
            return False
        return True

    def close_now(self, code: int, reason: str) -> None:
        self.quic.close(error_code=code, reason_phrase=reason)
        self._note_close("local")


class AppView:
    """What the application saw of one server connection, in order."""

    def __init__(self, client: HostileClient) -> None:
        self.client = client
        self.log: list[tuple[Any, ...]] = []
        self.handshake = False
        self.authenticated = False
        self.terminated = False
        self.streams: list[int] = []
        self.received: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.datagrams: list[bytes] = []
        self.forgotten = False

    def check_stream_bytes(self, stream_id: int) -> None:
        got, sent = bytes(self.received.get(stream_id, b"")), bytes(self.client.sent[stream_id])
        assert sent.startswith(got), (
            f"stream {stream_id}: the application read {got!r}, the client sent {sent!r}"
        )

    def check_ended(self, stream_id: int) -> None:
        assert stream_id in self.client.finished, f"stream {stream_id} ended without a FIN"
        got, sent = bytes(self.received.get(stream_id, b"")), bytes(self.client.sent[stream_id])
        assert got == sent, f"stream {stream_id} ended with {got!r}, the client sent {sent!r}"

    def check_datagrams(self) -> None:
        assert is_subsequence(self.datagrams, self.client.datagrams), (
            f"the application got datagrams {self.datagrams!r}; "
            f"the client sent {self.client.datagrams!r}"
        )


Machine = TypeVar("Machine", bound="HostilePeers")
Args = ParamSpec("Args")


def step(
    body: Callable[Concatenate[Machine, Args], None],
) -> Callable[Concatenate[Machine, Args], None]:
    """A rule body; one that raised leaves ``in_step`` set, so teardown adds no failure."""

    @functools.wraps(body)
    def run(self: Machine, /, *args: Args.args, **kwargs: Args.kwargs) -> None:
        self.in_step = True
        body(self, *args, **kwargs)
        self.in_step = False

    return run


class HostilePeers(RuleBasedStateMachine):
    """The rules and the network; subclasses are the application."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.endpoint = Endpoint(SERVER_CONFIG, server=True)
        self.clients: list[HostileClient] = []
        self.by_address: dict[Address, HostileClient] = {}
        self.by_conn: dict[Connection, HostileClient] = {}
        # Server connections no client made (a replayed or forged Initial): what they said.
        self.phantoms: dict[Connection, list[Event]] = {}
        self.views: dict[Connection, AppView] = {}
        self.blackholes: set[Address] = set()  # addresses whose datagrams are lost
        self.in_step = False  # see step()

    # -- the application (subclasses) ------------------------------------------------------

    def drain_app(self) -> None:
        raise NotImplementedError

    def check_app_at_end(self) -> None:
        raise NotImplementedError

    # -- the network ----------------------------------------------------------------------

    def _exchange(self) -> bool:
        moved = False
        for client in self.clients:
            for data, _ in client.quic.datagrams_to_send(now=self.now):
                moved = True
                client.history = [*client.history[-19:], data]
                self.endpoint.receive_datagram(data, client.address, self.now)
        for data, address in self.endpoint.datagrams_to_send(self.now):
            moved = True
            if address in self.blackholes:
                continue
            peer = self.by_address.get(address)
            assert peer is not None, f"the server sent to {address}, which never sent to it"
            peer.receive(data, self.now)
        return moved

    def _next_timer(self) -> float | None:
        timers = [self.endpoint.timer()] + [c.quic.get_timer() for c in self.clients]
        due = [t for t in timers if t is not None]
        return min(due) if due else None

    def _pump(self, seconds: float = SETTLE, *, advance: bool = False) -> None:
        """Move datagrams and fire timers until quiet, moving the clock up to ``seconds``
        (to the timers due by then; with ``advance``, all the way)."""
        limit = self.now + seconds
        for _ in range(MAX_ROUNDS):
            if self._exchange():
                continue
            timer = self._next_timer()
            if timer is None or timer > limit:
                self.now = max(self.now, limit) if advance else self.now
                return
            self.now = max(self.now, timer)
            endpoint_timer = self.endpoint.timer()
            if endpoint_timer is not None and endpoint_timer <= self.now:
                self.endpoint.handle_timer(self.now)
            for client in self.clients:
                client.fire(self.now)
        raise AssertionError(f"the network never settled (timers keep firing at {self.now})")

    def _settle(self, seconds: float = SETTLE, *, advance: bool = False) -> None:
        self._pump(seconds, advance=advance)
        self.drain_app()
        self._check_endpoint()
        for client in self.clients:
            # However hostile the client, the server must never send it anything invalid.
            assert client.close is None or client.close[0] != "violation", client.close

    def check_nothing_unread(self) -> None:
        """The application reads every stream it was told of, so an accepted connection
        holding bytes nobody was told about lost a StreamReadable."""
        for conn, view in self.views.items():
            if view.forgotten or not conn.identity:
                continue
            for stream_id, record in conn._streams.records.items():
                assert not record.buffer.size, (
                    f"{record.buffer.size} bytes wait on stream {stream_id} unannounced"
                )

    def _check_endpoint(self) -> None:
        stats = self.endpoint.stats()
        assert stats.datagrams_received == stats.outcomes(), stats
        assert stats.active == len(self.endpoint.connections)
        # An Endpoint that catches what a connection raised (and closes just that one)
        # still counts it: a peer must not be able to make the core raise at all.
        internal = getattr(stats, "internal_errors", 0)
        if internal:
            error = getattr(self.endpoint, "last_internal_error", None)
            raise AssertionError(f"the core raised {internal} time(s): {error!r}") from error

    def _end(self, seconds: float = SETTLE, *, advance: bool = False) -> None:
        self._settle(seconds, advance=advance)

    # -- model helpers ----------------------------------------------------------------------

    def _client(self, index: int) -> HostileClient:
        return self.clients[index % len(self.clients)]

    def _deciding(self, client: HostileClient) -> bool:
        """The server has neither accepted nor rejected the client, and neither side closed."""
        conn = client.server_conn
        assert conn is not None
        return (
            not client.closed and conn.state is ConnectionState.CONNECTED and conn.identity is None
        )

    def _pristine(self, client: HostileClient) -> bool:
        """Nothing was sent on the auth stream yet, and the server is waiting for it."""
        return (
            self._deciding(client)
            and not client.auth_sent
            and not client.auth_fin
            and not client.auth_aborted
        )

    @staticmethod
    def _close_problem(client: HostileClient, code: CloseCode, why: str) -> str | None:
        """Why the server did not close ``client`` with ``code``, or ``None`` when it did.

        Callers assert on the result themselves, so each expectation fails at a line of
        its own and hypothesis reports (and shrinks) each as a distinct failure.
        """
        conn = client.server_conn
        assert conn is not None
        closing = conn.state in (ConnectionState.CLOSING, ConnectionState.CLOSED)
        if client.peer_close_code() == code and closing:
            return None
        return (
            f"{why}: expected the server to close with {code!r}; the client saw "
            f"{client.close!r}, the server connection is {conn.state.value}"
        )

    def _send_auth(self, client: HostileClient, data: bytes, fin: bool) -> bool:
        if not client.try_send(AUTH_STREAM, data, fin):
            return False
        client.auth_sent += data
        client.auth_fin = client.auth_fin or fin
        return True

    def _touch(self, client: HostileClient, stream_id: int) -> None:
        if self._deciding(client):
            client.pre_auth_streams.add(stream_id)

    def _after_flood_check(self, client: HostileClient, deciding: bool) -> None:
        if deciding and len(client.pre_auth_streams) > HELD_STREAMS:
            problem = self._close_problem(
                client, CloseCode.AUTH_BUDGET_EXCEEDED, "over held_streams before acceptance"
            )
            assert problem is None, problem
        if deciding and client.pre_auth_datagrams > HELD_DATAGRAMS:
            problem = self._close_problem(
                client, CloseCode.AUTH_BUDGET_EXCEEDED, "over held_datagrams before acceptance"
            )
            assert problem is None, problem

    # -- setup ------------------------------------------------------------------------------

    def _add_clients(self, addresses: list[Address]) -> list[HostileClient]:
        """Clients at ``addresses`` that complete TLS (or are refused for a lockout)."""
        new = [HostileClient(address, self.now) for address in addresses]
        refused_before = self.endpoint.stats().refused.get("auth lockout", 0)
        for client in new:
            self.by_address[client.address] = client
            self.clients.append(client)
        self._pump(1.0)
        refused = [c for c in new if not c.handshake_done]
        for client in refused:
            # The only refusal these clients can meet: too many failures from their address.
            assert client.peer_close_code() == 0x02, f"a TLS handshake failed: {client.close}"
            self.clients.remove(client)
        lockouts = self.endpoint.stats().refused.get("auth lockout", 0) - refused_before
        assert lockouts == len(refused), self.endpoint.stats().refused
        new = [c for c in new if c.handshake_done]
        known = set(self.by_conn) | set(self.phantoms)
        for conn in self.endpoint.connections:
            owner = self.by_address.get(self.endpoint._entries[conn].remote)
            if conn in known or owner is None or owner not in new:
                continue
            assert owner.server_conn is None, "two server connections for one client"
            owner.server_conn = conn
            self.by_conn[conn] = owner
        for client in new:
            assert client.server_conn is not None, "a client's server connection is missing"
            # Create stream 0 locally (nothing is sent) so the auth stream stays id 0.
            assert client.try_send(AUTH_STREAM, b"", False)
            client.handshake_at = self.now
        return new

    @initialize(count=st.integers(1, 3), authenticated=st.integers(0, 3))
    @step
    def handshake(self, count: int, authenticated: int = 0) -> None:
        """1-3 clients complete TLS; the first ``authenticated`` of them are accepted at once
        (so the hostile moves that follow also meet accepted connections)."""
        self._add_clients([(f"10.0.0.{10 + i}", 5000) for i in range(count)])
        self._end()
        for index, client in enumerate(self.clients[:authenticated]):
            assert self._send_auth(
                client, request_bytes(True, AuthMethod.BEARER, {}), index % 2 == 1
            )
            client.good_request_sent = True
        self._end()
        for client in self.clients[:authenticated]:
            self._expect_answer(client, True)

    # -- the auth stream --------------------------------------------------------------------

    @rule(
        index=st.integers(0, 5),
        good=st.sampled_from([True, True, False]),
        fin=st.booleans(),
        method=st.sampled_from(AuthMethod),
        metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3),
    )
    @step
    def send_request(
        self, index: int, good: bool, fin: bool, method: AuthMethod, metadata: dict[str, str]
    ) -> None:
        """A whole request on stream 0, with good or bad credentials."""
        client = self._client(index)
        pristine = self._pristine(client)
        sent = self._send_auth(client, request_bytes(good, method, metadata), fin)
        if sent and accepts(good, method):
            client.good_request_sent = True
        self._end()
        if pristine and sent:
            self._expect_answer(client, accepts(good, method))

    @rule(
        index=st.integers(0, 5),
        good=st.sampled_from([True, True, False]),
        split=st.integers(1, 1000),
        fin=st.booleans(),
    )
    @step
    def send_request_in_two_pieces(self, index: int, good: bool, split: int, fin: bool) -> None:
        """A request in two flights: the server must wait for the rest, then decide."""
        client = self._client(index)
        pristine = self._pristine(client)
        data = request_bytes(good, AuthMethod.BEARER, {})
        cut = split % (len(data) - 1) + 1
        sent = self._send_auth(client, data[:cut], False)
        self._settle()
        if pristine and sent:
            assert self._deciding(client), "the server decided on half a request"
        sent = sent and self._send_auth(client, data[cut:], fin)
        if sent and good:
            client.good_request_sent = True
        self._end()
        if pristine and sent:
            self._expect_answer(client, good)

    def _expect_answer(self, client: HostileClient, accepted: bool) -> None:
        conn = client.server_conn
        assert conn is not None
        if accepted:
            assert conn.identity == Identity(subject=SUBJECT), "a good request was not accepted"
            assert not client.closed, f"accepted, yet the connection closed: {client.close!r}"
            assert parse_accepted_or_rejected(bytes(client.answer)) == Identity(subject=SUBJECT)
        else:
            problem = self._close_problem(client, CloseCode.AUTH_REJECTED, "a bad request")
            assert problem is None, problem
            assert conn.identity is None
            if client.answer:
                answer = parse_accepted_or_rejected(bytes(client.answer))
                assert isinstance(answer, AuthRejection), answer

    @rule(index=st.integers(0, 5), good=st.booleans(), cut=st.integers(0, 10_000))
    @step
    def send_truncated_request_with_fin(self, index: int, good: bool, cut: int) -> None:
        """A prefix of a request, then FIN: it can never complete, so it is malformed now."""
        client = self._client(index)
        pristine = self._pristine(client)
        data = request_bytes(good, AuthMethod.BEARER, {})
        sent = self._send_auth(client, data[: cut % len(data)], True)
        self._end()
        if pristine and sent:
            problem = self._close_problem(
                client, CloseCode.AUTH_MALFORMED, "a truncated request ended by FIN"
            )
            assert problem is None, problem

    @rule(index=st.integers(0, 5), data=st.binary(min_size=1, max_size=200), fin=st.booleans())
    @step
    def send_garbage_on_the_auth_stream(self, index: int, data: bytes, fin: bool) -> None:
        """Bytes that are no request (any time, also after the answer)."""
        client = self._client(index)
        pristine = self._pristine(client)
        sent = self._send_auth(client, data, fin)
        self._end()
        if not (pristine and sent):
            return
        # The head says how long the message is; once that much arrived, a wrong version
        # byte makes it malformed. Short of that, only a FIN says it will never complete.
        whole = len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[2:4], "big")
        if whole and data[0] != 1:
            problem = self._close_problem(client, CloseCode.AUTH_MALFORMED, "garbage on stream 0")
            assert problem is None, problem
        elif not whole and fin:
            problem = self._close_problem(
                client, CloseCode.AUTH_MALFORMED, "less than the head's length, then FIN"
            )
            assert problem is None, problem

    @rule(
        index=st.integers(0, 5),
        code=st.integers(0, 2**62 - 1),
        then=st.none() | st.booleans(),
    )
    @step
    def stop_the_auth_stream(self, index: int, code: int, then: bool | None) -> None:
        """STOP_SENDING on stream 0, maybe followed in the same flight by a request."""
        client = self._client(index)
        deciding = self._deciding(client)
        stopped = client.try_stop(AUTH_STREAM, code)
        if stopped:
            client.auth_aborted = True
        # The STOP_SENDING frame goes out ahead of the request's STREAM frame.
        if then is not None and self._send_auth(
            client, request_bytes(then, AuthMethod.BEARER, {}), True
        ):
            client.good_request_sent = client.good_request_sent or then
        self._end()
        if deciding and stopped:
            problem = self._close_problem(
                client, CloseCode.AUTH_STREAM_ABORTED, "STOP_SENDING on the auth stream"
            )
            assert problem is None, problem

    @rule(
        index=st.integers(0, 5),
        code=st.integers(0, 2**62 - 1),
        prefix=st.booleans(),
        then=st.none() | st.booleans(),
    )
    @step
    def reset_the_auth_stream(self, index: int, code: int, prefix: bool, then: bool | None) -> None:
        """RESET_STREAM on stream 0 (after a byte of a request, or none), maybe then a request."""
        client = self._client(index)
        if prefix:
            self._send_auth(client, request_bytes(True, AuthMethod.BEARER, {})[:1], False)
            self._settle()
        deciding = self._deciding(client) and not client.auth_fin
        reset = client.try_reset(AUTH_STREAM, code)
        if reset:
            client.auth_aborted = True
        if then is not None and self._send_auth(
            client, request_bytes(then, AuthMethod.BEARER, {}), True
        ):
            client.good_request_sent = client.good_request_sent or then
        self._end()
        if deciding and reset:
            problem = self._close_problem(
                client, CloseCode.AUTH_STREAM_ABORTED, "RESET_STREAM on the auth stream"
            )
            assert problem is None, problem

    # -- other streams and datagrams --------------------------------------------------------

    def _open(self, client: HostileClient, bidi: bool, data: bytes, fin: bool) -> int | None:
        if bidi:
            stream_id, client.next_bidi = client.next_bidi, client.next_bidi + 4
        else:
            stream_id, client.next_uni = client.next_uni, client.next_uni + 4
        if not client.try_send(stream_id, data, fin):
            return None
        client.streams.append(stream_id)
        client.sent[stream_id] = bytearray(data)
        if fin:
            client.finished.add(stream_id)
        if data or fin:
            self._touch(client, stream_id)
        return stream_id

    @rule(
        index=st.integers(0, 5),
        bidi=st.booleans(),
        data=st.binary(max_size=64) | st.just(b"x" * 5000),
        fin=st.booleans(),
    )
    @step
    def open_stream(self, index: int, bidi: bool, data: bytes, fin: bool) -> None:
        client = self._client(index)
        deciding = self._deciding(client)
        self._open(client, bidi, data, fin)
        self._end()
        self._after_flood_check(client, deciding)

    @rule(
        index=st.integers(0, 5),
        count=st.sampled_from([10, 50, 101]),
        bidi=st.booleans(),
        fin=st.booleans(),
    )
    @step
    def open_many_streams(self, index: int, count: int, bidi: bool, fin: bool) -> None:
        client = self._client(index)
        deciding = self._deciding(client)
        for i in range(count):
            self._open(client, bidi, b"%d" % i, fin)
        self._end()
        self._after_flood_check(client, deciding)

    @rule(index=st.integers(0, 5), pick=st.integers(0, 10**6), data=st.binary(max_size=64))
    @step
    def send_more(self, index: int, pick: int, data: bytes) -> None:
        client = self._client(index)
        live = [s for s in client.streams if s not in client.finished | client.reset_codes.keys()]
        if live:
            stream_id = live[pick % len(live)]
            fin = pick % 2 == 1
            if client.try_send(stream_id, data, fin):
                client.sent[stream_id] += data
                if fin:
                    client.finished.add(stream_id)
                if data or fin:
                    self._touch(client, stream_id)
        self._end()

    @rule(index=st.integers(0, 5), pick=st.integers(0, 10**6), code=st.integers(0, 2**62 - 1))
    @step
    def reset_a_stream(self, index: int, pick: int, code: int) -> None:
        client = self._client(index)
        candidates = [s for s in client.streams if s not in client.reset_codes]
        if candidates:
            stream_id = candidates[pick % len(candidates)]
            if client.try_reset(stream_id, code):
                client.reset_codes[stream_id] = code
                self._touch(client, stream_id)
        self._end()

    @rule(index=st.integers(0, 5), pick=st.integers(0, 10**6), code=st.integers(0, 2**62 - 1))
    @step
    def stop_a_stream(self, index: int, pick: int, code: int) -> None:
        client = self._client(index)
        candidates = [s for s in client.streams if s % 4 == 0 and s not in client.stop_codes]
        if candidates:
            stream_id = candidates[pick % len(candidates)]
            if client.try_stop(stream_id, code):
                client.stop_codes[stream_id] = code
                self._touch(client, stream_id)
        self._end()

    @rule(index=st.integers(0, 5), data=st.binary(max_size=100), count=st.integers(1, 80))
    @step
    def send_datagrams(self, index: int, data: bytes, count: int) -> None:
        client = self._client(index)
        deciding = self._deciding(client)
        for _ in range(count):
            payload = data + b"#%d" % len(client.datagrams)
            client.quic.send_datagram_frame(payload)
            client.datagrams.append(payload)
        if deciding:
            client.pre_auth_datagrams += count
        self._end()
        self._after_flood_check(client, deciding)

    # -- closing and silence ----------------------------------------------------------------

    @rule(
        index=st.integers(0, 5),
        code=st.integers(0, 2**62 - 1),
        everyone=st.sampled_from([False, False, False, True]),
    )
    @step
    def close_connection(self, index: int, code: int, everyone: bool) -> None:
        """One client closes (with any code), or every client at once."""
        for client in self.clients if everyone else [self._client(index)]:
            if not client.closed:
                client.close_now(code, "hostile close")
        self._end()

    @rule(index=st.integers(0, 5), data=st.binary(min_size=1, max_size=1500))
    @step
    def send_junk_datagram(self, index: int, data: bytes) -> None:
        """A UDP payload that is no QUIC packet of this connection, from the client's address."""
        client = self._client(index)
        self.endpoint.receive_datagram(data, client.address, self.now)
        self._end()

    def _new_port(self, client: HostileClient) -> Address:
        """An address no one used yet, on the client's IP; the client answers there."""
        address = (client.address[0], 6000 + len(self.by_address))
        assert address not in self.by_address
        self.by_address[address] = client
        return address

    @rule(index=st.integers(0, 5), pick=st.integers(0, 19), elsewhere=st.booleans())
    @step
    def replay_a_datagram(self, index: int, pick: int, elsewhere: bool) -> None:
        """One of the client's recent datagrams again, from its address or a new one."""
        client = self._client(index)
        if client.history:
            data = client.history[-1 - pick % len(client.history)]
            address = self._new_port(client) if elsewhere else client.address
            self.endpoint.receive_datagram(data, address, self.now)
        self._end()

    @rule(index=st.integers(0, 5))
    @step
    def rebind(self, index: int) -> None:
        """NAT rebinding: the client's datagrams come from a new port from now on."""
        client = self._client(index)
        client.address = self._new_port(client)
        self._end()

    @rule(index=st.integers(0, 5))
    @step
    def change_connection_id(self, index: int) -> None:
        client = self._client(index)
        if not client.closed:
            client.quic.change_connection_id()
        self._end()

    @rule(
        index=st.integers(0, 5),
        same_address=st.booleans(),
        authenticate=st.booleans(),
    )
    @step
    def new_client(self, index: int, same_address: bool, authenticate: bool) -> None:
        """Another connection, maybe from the IP of an existing client (its address key)."""
        if len(self.clients) < MAX_CLIENTS:
            ip = (
                self._client(index).address[0] if same_address else f"10.0.1.{len(self.by_address)}"
            )
            port = 8000 + len(self.by_address)  # by_address only grows: a port no one used
            for client in self._add_clients([(ip, port)]):
                if authenticate:
                    self._send_auth(client, request_bytes(True, AuthMethod.BEARER, {}), False)
                    client.good_request_sent = True
        self._end()

    @rule()
    @step
    def abandon_a_handshake(self) -> None:
        """A client sends its first flight and vanishes: the server must not keep it."""
        address: Address = ("10.0.2.1", 9000 + len(self.blackholes))
        client = HostileClient(address, self.now)
        for data, _ in client.quic.datagrams_to_send(now=self.now):
            self.endpoint.receive_datagram(data, address, self.now)
        self.blackholes.add(address)
        self._end()

    @rule(
        index=st.integers(0, 5),
        dcid=st.binary(min_size=8, max_size=20),
        body=st.binary(max_size=64),
    )
    @step
    def forge_an_initial(self, index: int, dcid: bytes, body: bytes) -> None:
        """A long-header Initial of version 1 with a fresh connection id and junk inside."""
        client = self._client(index)
        payload = (body * (1200 // max(1, len(body)) + 1))[:1200] if body else bytes(1200)
        head = b"\xc0\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + b"\x08" + bytes(8) + b"\x00"
        length = len(payload)
        self.endpoint.receive_datagram(
            head + bytes([0x40 | length >> 8, length & 0xFF]) + payload, client.address, self.now
        )
        self._end()

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.5, 1.0, 2.1, 5.5, 12.0]))
    @step
    def go_silent(self, seconds: float) -> None:
        deciding = [c for c in self.clients if self._deciding(c)]
        self._end(seconds, advance=True)
        for client in deciding:
            if self.now >= client.handshake_at + DEADLINE:
                problem = self._close_problem(client, CloseCode.AUTH_TIMEOUT, "no request in time")
                assert problem is None, problem

    def _end_everything(self) -> None:
        """Go silent well past the idle timeout, then every table must be empty."""
        for _ in range(12):
            self._settle(5.0, advance=True)
        for client in self.clients:
            assert client.quic._state is QuicConnectionState.TERMINATED, client.close
        endpoint = self.endpoint
        assert endpoint.connections == []
        assert endpoint._routes == {}
        assert endpoint._by_remote == {}
        assert dict(endpoint._per_address) == {}
        assert endpoint.stats().active == 0
        assert endpoint.stats().handshakes == 0
        assert endpoint.timer() is None
        self.check_app_at_end()

    def teardown(self) -> None:
        # After a failed step the failure is reported as it is; nothing more is checked.
        if not self.in_step and self.clients:
            self._end_everything()


class DispatcherApp(HostilePeers):
    """The application as the runtimes build it: everything through one Dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.dispatcher = Dispatcher(self.endpoint)
        self.accepting = True  # the application takes new connections as they come
        self.backlog = False  # connections the application left in next_connection()

    @rule(accepting=st.booleans())
    @step
    def application_accepts(self, accepting: bool) -> None:
        """The application stops (or resumes) taking new connections for a while."""
        self.accepting = accepting
        self._end()

    def drain_app(self) -> None:
        dispatcher = self.dispatcher
        wake = dispatcher.process()
        self._check_links()
        self._check_wakes(wake)
        self.backlog = not self.accepting
        while self.accepting and (conn := dispatcher.next_connection()) is not None:
            client = self.by_conn.get(conn)
            assert client is not None, "next_connection() gave a connection no client made"
            assert conn.identity == Identity(subject=SUBJECT), (
                f"next_connection() gave a connection with identity {conn.identity!r}"
            )
            assert client.good_request_sent, "accepted a client that never sent good credentials"
            assert conn not in self.views, "next_connection() gave one connection twice"
            self.views[conn] = AppView(client)
        for conn, view in self.views.items():
            if not view.forgotten:
                self._serve(conn, view)
        self.check_nothing_unread()

    def _check_wakes(self, wake: set[Any]) -> None:
        """Whatever the dispatcher queued since the application last looked, it woke for:
        a missing key is a runtime waiter that sleeps forever."""
        dispatcher = self.dispatcher
        ready = [c for c in dispatcher._accepted if c.state is not ConnectionState.CLOSED]
        if ready and not self.backlog:
            assert ("incoming",) in wake, "a connection is ready, nobody was woken"
        for conn, view in self.views.items():
            link = dispatcher._links.get(conn)
            if view.forgotten or link is None:
                continue
            if link.incoming:
                assert ("accept", conn) in wake, f"streams {list(link.incoming)} woke no one"
            if link.datagrams:
                assert ("datagram", conn) in wake, "a datagram woke no one"
            for stream_id, record in conn._streams.records.items():
                if record.buffer.size:
                    assert ("read", conn, stream_id) in wake, f"data on {stream_id} woke no one"

    def _check_links(self) -> None:
        for conn in self.endpoint.connections:
            try:
                ready = self.dispatcher.ready(conn)
            except ConnectionClosed:
                ready = False
            assert not ready or conn.identity is not None, "ready() before acceptance"
        for conn, link in self.dispatcher._links.items():
            kept = (link.incoming, link.datagrams, link.resets, link.stops)
            if conn.identity is None:
                assert not link.ready, "a link is ready before its client was accepted"
                assert not any(kept), f"the dispatcher keeps {kept!r} of an unaccepted client"
            for keyed in (link.incoming, link.resets, link.stops):
                assert AUTH_STREAM not in keyed, (
                    f"the auth stream surfaced in the dispatcher: {kept}"
                )

    def _serve(self, conn: Connection, view: AppView) -> None:
        dispatcher = self.dispatcher
        try:
            while (stream_id := dispatcher.next_stream(conn)) is not None:
                assert stream_id != AUTH_STREAM, "next_stream() returned the auth stream"
                assert stream_id in view.client.streams, f"stream {stream_id} was never opened"
                assert stream_id not in view.streams, f"stream {stream_id} accepted twice"
                view.streams.append(stream_id)
                view.log.append(("stream", stream_id))
        except ConnectionClosed:
            pass
        try:
            while (datagram := dispatcher.next_datagram(conn)) is not None:
                view.datagrams.append(datagram)
                view.log.append(("datagram", datagram))
        except ConnectionClosed:
            pass
        view.check_datagrams()
        for stream_id in view.streams:
            self._read(conn, view, stream_id)
        if conn.state is ConnectionState.CLOSED:
            dispatcher.forget(conn)  # as the runtimes do once the handler is done
            view.forgotten = True

    def _read(self, conn: Connection, view: AppView, stream_id: int) -> None:
        if stream_id in view.ended or stream_id in view.reset:
            return
        while True:
            try:
                data = self.dispatcher.receive(conn, stream_id)
            except StreamResetError as exc:
                code = exc.error_code
                view.reset.add(stream_id)
                assert view.client.reset_codes.get(stream_id) == code, f"reset code {code}"
                view.log.append(("reset", stream_id))
                return
            except ConnectionClosed:
                return
            if data is None:
                return
            if data == b"":
                view.ended.add(stream_id)
                view.log.append(("end", stream_id))
                view.check_ended(stream_id)
                return
            view.received.setdefault(stream_id, bytearray()).extend(data)
            view.log.append(("data", stream_id, len(data)))
            view.check_stream_bytes(stream_id)

    def check_app_at_end(self) -> None:
        dispatcher = self.dispatcher
        tracked = getattr(dispatcher, "tracked", None)
        if tracked is not None:
            assert not tracked, f"Dispatcher.tracked is {tracked!r} with every connection gone"
        kept = sorted(
            f"{c.state.value}, {'reached' if c in self.views else 'never reached'} the app"
            for c in dispatcher._links
        )
        assert dispatcher._links == {}, f"the dispatcher keeps links of closed connections: {kept}"
        assert all(c.state is ConnectionState.CLOSED for c in dispatcher._accepted)


class RawEventsApp(HostilePeers):
    """The application reading ``endpoint.next_event()`` itself: checks the raw event order."""

    def drain_app(self) -> None:
        while (item := self.endpoint.next_event()) is not None:
            conn, event = item
            client = self.by_conn.get(conn)
            if client is None:
                said = self.phantoms.setdefault(conn, [])
                said.append(event)
                # Nobody can finish its handshake: it can only end.
                assert isinstance(event, ConnectionTerminated), f"a phantom connection: {said}"
                continue
            view = self.views.get(conn)
            if view is None:
                view = self.views[conn] = AppView(client)
            self._apply(conn, view, event)
        self.check_nothing_unread()

    def _apply(self, conn: Connection, view: AppView, event: Event) -> None:
        client = view.client
        view.log.append((type(event).__name__, event))
        assert not view.terminated, f"{event!r} after ConnectionTerminated: {view.log}"
        if isinstance(event, HandshakeCompleted):
            assert not view.handshake and len(view.log) == 1, view.log
            view.handshake = True
            return
        assert view.handshake, f"{event!r} before HandshakeCompleted"
        if isinstance(event, Authenticated):
            assert not view.authenticated, "Authenticated twice"
            assert event.identity == Identity(subject=SUBJECT), event
            assert client.good_request_sent, (
                "Authenticated a client that never sent good credentials"
            )
            view.authenticated = True
        elif isinstance(event, ConnectionTerminated):
            view.terminated = True
        elif isinstance(event, DatagramReceived):
            assert view.authenticated, f"{event!r} before Authenticated: {view.log}"
            view.datagrams.append(event.data)
            view.check_datagrams()
        elif isinstance(
            event, StreamOpened | StreamReadable | StreamEnded | StreamReset | StreamStopped
        ):
            stream_id = event.stream_id
            assert view.authenticated, f"{event!r} before Authenticated: {view.log}"
            assert stream_id != AUTH_STREAM, f"the auth stream surfaced: {event!r}"
            if isinstance(event, StreamOpened):
                assert stream_id in client.streams, f"stream {stream_id} was never opened"
                assert stream_id not in view.streams, f"StreamOpened twice for {stream_id}"
                assert event.bidirectional == (stream_id % 4 == 0), event
                view.streams.append(stream_id)
                return
            assert stream_id in view.streams, f"{event!r} before StreamOpened"
            if isinstance(event, StreamReadable | StreamEnded):
                self._read_all(conn, view, stream_id)
            if isinstance(event, StreamEnded):
                assert stream_id not in view.ended, f"StreamEnded twice for {stream_id}"
                view.ended.add(stream_id)
                view.check_ended(stream_id)
            elif isinstance(event, StreamReset):
                assert stream_id not in view.reset, f"StreamReset twice for {stream_id}"
                assert client.reset_codes.get(stream_id) == event.error_code, event
                view.reset.add(stream_id)
            elif isinstance(event, StreamStopped):
                assert client.stop_codes.get(stream_id) == event.error_code, event

    @staticmethod
    def _read_all(conn: Connection, view: AppView, stream_id: int) -> None:
        while data := conn.read(stream_id):
            view.received.setdefault(stream_id, bytearray()).extend(data)
        view.check_stream_bytes(stream_id)

    def check_app_at_end(self) -> None:
        for view in self.views.values():
            assert view.terminated, f"no ConnectionTerminated for a closed connection: {view.log}"
        assert set(self.views) == set(self.by_conn), "a server connection never said anything"


_SETTINGS = settings(stateful_step_count=30, deadline=None)

TestHostilePeerThroughDispatcher = DispatcherApp.TestCase
TestHostilePeerThroughDispatcher.settings = _SETTINGS
TestHostilePeerRawEvents = RawEventsApp.TestCase
TestHostilePeerRawEvents.settings = _SETTINGS


_REQUEST: dict[str, Any] = {
    "index": 0,
    "good": True,
    "fin": False,
    "method": AuthMethod.BEARER,
    "metadata": {},
}
_STOP: dict[str, Any] = {"index": 0, "code": 7, "then": None}
_RESET: dict[str, Any] = {"index": 0, "code": 7, "prefix": False, "then": None}
#: Hostile sequences that always run, whatever hypothesis happens to draw, each after a
#: one-client handshake and followed by teardown's checks: (name, [(rule, arguments)]).
SEQUENCES: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
    ("silence past the deadline", [("go_silent", {"seconds": 2.1})]),
    ("a good request", [("send_request", _REQUEST)]),
    ("a bad request", [("send_request", {**_REQUEST, "good": False})]),
    (
        "a truncated request, then FIN",
        [("send_truncated_request_with_fin", {"index": 0, "good": True, "cut": 5})],
    ),
    ("STOP_SENDING on the auth stream", [("stop_the_auth_stream", _STOP)]),
    ("STOP_SENDING, then a request", [("stop_the_auth_stream", {**_STOP, "then": True})]),
    ("STOP_SENDING, then a bad request", [("stop_the_auth_stream", {**_STOP, "then": False})]),
    ("RESET_STREAM on the auth stream", [("reset_the_auth_stream", _RESET)]),
    ("a byte, then RESET_STREAM", [("reset_the_auth_stream", {**_RESET, "prefix": True})]),
    (
        "accepted, then STOP_SENDING on 0",
        [("send_request", _REQUEST), ("stop_the_auth_stream", _STOP)],
    ),
    (
        "accepted, then RESET_STREAM on 0",
        [("send_request", _REQUEST), ("reset_the_auth_stream", _RESET)],
    ),
]


@pytest.mark.parametrize("machine", [DispatcherApp, RawEventsApp], ids=["dispatcher", "raw"])
@pytest.mark.parametrize("steps", [s for _, s in SEQUENCES], ids=[n for n, _ in SEQUENCES])
def test_known_hostile_sequences(
    machine: type[HostilePeers], steps: list[tuple[str, dict[str, Any]]]
) -> None:
    state = machine()
    state.handshake(count=1)
    for name, arguments in steps:
        getattr(state, name)(**arguments)
    state.teardown()

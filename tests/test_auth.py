"""The auth handshake: nothing reaches the server application before the peer is accepted."""

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sansquic import (
    Authenticated,
    AuthFormatError,
    AuthMethod,
    AuthPolicy,
    AuthRejected,
    AuthRejection,
    AuthRequest,
    AuthRequested,
    CloseCode,
    ClosedBy,
    Config,
    Connection,
    ConnectionState,
    DatagramReceived,
    Endpoint,
    HandshakeCompleted,
    Identity,
    LocalProtocolError,
    RateLimits,
    StreamOpened,
)
from sansquic._auth import (
    encode_accepted,
    encode_rejected,
    encode_request,
    parse_accepted_or_rejected,
    parse_request,
)
from sansquic.testing import LinkConditions, Pair, SimNetwork, StreamSink, connected_pair
from sansquic.tokens import InvalidToken, TokenSigner, TokenVerifier, token_authenticator

KEYS = {"k1": b"the first key, 32 bytes long....", "k2": b"the second key, 32 bytes long..."}
SIGNER = TokenSigner(KEYS, key_id="k2")
VERIFIER = TokenVerifier(KEYS, clock_skew=5)


def token_pair(
    token: str | bytes | None,
    *,
    policy: AuthPolicy | None = None,
    method: AuthMethod = AuthMethod.BEARER,
    metadata: dict[str, str] | None = None,
) -> tuple[Pair, StreamSink, StreamSink]:
    """A client presenting ``token`` to a server checking tokens (unless ``policy``)."""
    policy = policy or AuthPolicy(authenticator=token_authenticator(VERIFIER))
    request = None
    if token is not None:
        credentials = token.encode() if isinstance(token, str) else token
        request = AuthRequest(method=method, credentials=credentials, metadata=metadata or {})
    pair = connected_pair(
        LinkConditions(delay=0.005),
        client_config=Config(
            dev_mode=True,
            trust_dev_certificate=True,
            auth_request=request,
        ),
        server_config=Config(dev_mode=True, trust_dev_certificate=True, auth=policy),
    )
    client, server = StreamSink(pair.client), StreamSink(pair.server)
    pair.network.step_hooks += [client.pump, server.pump]
    return pair, client, server


def of_type(sink: StreamSink, kind: type) -> list[Any]:
    return [e for e in sink.events if isinstance(e, kind)]


def test_accept_with_a_token() -> None:
    token = SIGNER.sign("agent-7", scopes=("read", "write"), ttl=60, now=0)
    pair, client, server = token_pair(token, metadata={"agent_id": "a7", "version": "1.2"})
    assert pair.network.run_until(lambda: of_type(client, Authenticated), 5)
    identity = of_type(client, Authenticated)[0].identity
    assert (identity.subject, identity.scopes) == ("agent-7", ("read", "write"))
    assert pair.client.identity == identity and pair.server.identity is not None
    assert of_type(server, Authenticated)[0].identity.subject == "agent-7"
    sid = pair.client.open_stream()
    pair.client.send(sid, b"after auth", end=True)
    assert pair.network.run_until(lambda: sid in server.ended, 5)
    assert server.opened == [sid] and 0 not in server.opened  # the auth stream never shows
    assert 0 not in client.received and 0 not in server.received


def test_reject_closes_with_the_documented_code() -> None:
    policy = AuthPolicy(authenticator=lambda req, addr, now: AuthRejection(code=77, reason="nope"))
    pair, client, server = token_pair("whatever", policy=policy)
    sid = pair.client.open_stream()
    pair.client.send(sid, b"pipelined", end=True)
    assert pair.network.run_until(lambda: client.terminated is not None, 5)
    assert [(e.code, e.reason) for e in of_type(client, AuthRejected)] == [(77, "nope")]
    assert client.terminated is not None
    assert (client.terminated.error_code, client.terminated.by_peer) == (
        CloseCode.AUTH_REJECTED,
        True,
    )
    assert pair.network.run_until(lambda: server.terminated is not None, 5)
    # The server application saw the handshake and the close, nothing the client sent.
    assert {type(e) for e in server.events} <= {HandshakeCompleted, type(server.terminated)}
    assert pair.client.identity is None


def test_deferred_accept_after_two_seconds_releases_held_streams_in_order() -> None:
    pair, client, server = token_pair("please", policy=AuthPolicy())
    assert pair.network.run_until(lambda: of_type(server, AuthRequested), 5)
    requested = of_type(server, AuthRequested)[0]
    assert requested.request.credentials == b"please"
    assert requested.address == pair.client_address
    streams = [pair.client.open_stream() for _ in range(5)]  # pipelined before the answer
    for i, sid in enumerate(streams):
        pair.client.send(sid, b"message %d" % i, end=True)
    pair.client.send_datagram(b"early datagram")
    pair.network.run_for(2.0)
    assert server.opened == [] and server.datagrams == []  # held, not surfaced
    pair.server.accept_auth(Identity(subject="late", session={"room": "blue"}))
    assert pair.network.run_until(lambda: len(server.ended) == 5, 5)
    assert server.opened == streams
    assert [bytes(server.received[s]) for s in streams] == [b"message %d" % i for i in range(5)]
    assert server.datagrams == [b"early datagram"]
    kinds = [type(e) for e in server.events]
    assert kinds.index(Authenticated) < kinds.index(StreamOpened)
    assert pair.network.run_until(lambda: of_type(client, Authenticated), 5)
    assert of_type(client, Authenticated)[0].identity.session == {"room": "blue"}


def test_deferred_reject() -> None:
    pair, client, server = token_pair("please", policy=AuthPolicy())
    assert pair.network.run_until(lambda: of_type(server, AuthRequested), 5)
    pair.server.reject_auth(403, "not today")
    assert pair.network.run_until(lambda: of_type(client, AuthRejected), 5)
    assert (of_type(client, AuthRejected)[0].code, pair.server.state.value) == (403, "closing")


def test_deadline_closes_a_silent_client() -> None:
    pair, client, server = token_pair(None, policy=AuthPolicy(deadline=3.0))
    start = pair.network.now
    assert pair.network.run_until(lambda: server.terminated is not None, 10)
    assert 3.0 <= pair.network.now - start < 3.5
    assert server.terminated is not None
    assert server.terminated.error_code == CloseCode.AUTH_TIMEOUT
    assert pair.network.run_until(lambda: client.terminated is not None, 5)


def test_deadline_closes_when_the_application_never_answers() -> None:
    pair, client, server = token_pair("hello", policy=AuthPolicy(deadline=2.0))
    assert pair.network.run_until(lambda: client.terminated is not None, 10)
    assert of_type(server, AuthRequested)
    assert [e.code for e in of_type(client, AuthRejected)] == [CloseCode.AUTH_TIMEOUT]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (
            TokenSigner({"k1": b"some other key material here"}, "k1").sign("x", ttl=60, now=0),
            "bad signature",
        ),
        (SIGNER.sign("x", ttl=60, now=-1000), "token expired"),
        (SIGNER.sign("x", ttl=60, now=0)[:-3] + "AAA", "bad signature"),
        (
            TokenSigner({"k9": b"the ninth key, 32 bytes long...."}, "k9").sign("x", ttl=60, now=0),
            "unknown key id 'k9'",
        ),
        ("not a token at all", "not a sansquic token"),
    ],
    ids=["wrong key", "expired", "forged", "unknown key id", "garbage"],
)
def test_bad_tokens_are_rejected(token: str, reason: str) -> None:
    pair, client, server = token_pair(token)
    assert pair.network.run_until(lambda: of_type(client, AuthRejected), 5)
    assert of_type(client, AuthRejected)[0].reason == reason
    assert not of_type(server, Authenticated)


def test_oversized_credentials_are_refused() -> None:
    policy = AuthPolicy(authenticator=token_authenticator(VERIFIER), max_request_size=1024)
    pair, client, _ = token_pair(b"x" * 5000, policy=policy)
    assert pair.network.run_until(lambda: of_type(client, AuthRejected), 5)
    assert of_type(client, AuthRejected)[0].code == CloseCode.AUTH_MALFORMED


def test_mutual_tls_is_refused_with_a_clear_reason() -> None:
    pair, client, _ = token_pair(b"", method=AuthMethod.MUTUAL_TLS)
    assert pair.network.run_until(lambda: of_type(client, AuthRejected), 5)
    assert "mutual TLS" in of_type(client, AuthRejected)[0].reason


def test_anonymous_peers_only_where_allowed() -> None:
    pair, client, _ = token_pair(
        b"", method=AuthMethod.NONE, policy=AuthPolicy(allow_anonymous=True)
    )
    assert pair.network.run_until(lambda: of_type(client, Authenticated), 5)
    assert pair.client.identity == Identity(subject="anonymous")
    pair, client, server = token_pair(b"", method=AuthMethod.NONE, policy=AuthPolicy())
    assert pair.network.run_until(lambda: of_type(server, AuthRequested), 5)  # the app decides


def test_a_flood_before_auth_is_held_within_budget_then_closed_never_surfaced() -> None:
    policy = AuthPolicy(held_streams=100, held_bytes=64 * 1024, held_datagrams=10, deadline=30)
    pair, client, server = token_pair("waiting", policy=policy)
    for i in range(1000):
        pair.client.send(pair.client.open_stream(), b"%d" % i, end=True)
        if i % 100 == 0:
            pair.client.send_datagram(b"d")
    assert pair.network.run_until(lambda: server.terminated is not None, 10)
    assert server.terminated is not None
    assert server.terminated.error_code == CloseCode.AUTH_BUDGET_EXCEEDED
    assert server.opened == [] and server.datagrams == [] and not server.received
    assert not [e for e in server.events if isinstance(e, StreamOpened | DatagramReceived)]
    assert pair.network.run_until(lambda: client.terminated is not None, 5)


def test_auth_answers_are_for_servers_waiting_on_a_request() -> None:
    silent, _, _ = token_pair(None, policy=AuthPolicy())
    with pytest.raises(LocalProtocolError):
        silent.server.accept_auth(Identity(subject="too early"))  # no request yet
    pair, _, server = token_pair("x", policy=AuthPolicy())
    with pytest.raises(LocalProtocolError):
        pair.client.accept_auth(Identity(subject="client"))
    assert pair.network.run_until(lambda: of_type(server, AuthRequested), 5)
    with pytest.raises(LocalProtocolError):
        pair.server.reject_auth(2**32, "code too large")
    pair.server.accept_auth(Identity(subject="ok"))
    with pytest.raises(LocalProtocolError):
        pair.server.reject_auth(1, "already answered")


def test_repeated_failures_lock_an_address_out() -> None:
    policy = AuthPolicy(
        authenticator=token_authenticator(VERIFIER), max_failures=3, failure_window=60, lockout=300
    )
    server_config = Config(
        dev_mode=True,
        trust_dev_certificate=True,
        auth=policy,
        rate_limits=RateLimits(new_connections_per_second=None),
    )
    net = SimNetwork(1, conditions=LinkConditions(delay=0.002))
    server = Endpoint(server_config, server=True)
    net.add(("10.0.0.2", 4433), server)
    endpoints = {}

    def attempt(address: tuple[str, int], token: str) -> StreamSink:
        if address not in endpoints:
            endpoints[address] = Endpoint(Config(dev_mode=True, trust_dev_certificate=True))
            net.add(address, endpoints[address])
        config = Config(
            dev_mode=True,
            trust_dev_certificate=True,
            auth_request=AuthRequest(credentials=token.encode()),
        )
        endpoint = endpoints[address]
        endpoint._config = config  # this client presents `token`
        conn = endpoint.connect(("10.0.0.2", 4433), net.now, server_name="localhost")
        sink = StreamSink(conn)
        net.step_hooks.append(sink.pump)
        assert net.run_until(
            lambda: conn.state is ConnectionState.CLOSED or of_type(sink, Authenticated), 10
        )
        return sink

    def drain() -> None:
        while server.next_event() is not None:
            pass

    net.step_hooks.append(drain)
    good = SIGNER.sign("ok", ttl=600, now=0)
    for _ in range(4):
        assert of_type(attempt(("10.0.0.1", 5000), "bad token"), AuthRejected)
    refused = attempt(("10.0.0.1", 5000), good)  # the right token, but locked out
    assert refused.terminated is not None and refused.terminated.error_code == 0x02
    assert of_type(attempt(("10.0.0.9", 5000), good), Authenticated)  # others are fine
    stats = server.stats()
    assert stats.auth_failures == 4
    assert stats.refused["auth lockout"] == 1


# -- the wire format and tokens ------------------------------------------------------


def test_wire_format_round_trips() -> None:
    request = AuthRequest(
        method=AuthMethod.BEARER, credentials=b"\x00tok", metadata={"agent_id": "é", "v": "2"}
    )
    assert parse_request(encode_request(request)) == request
    identity = Identity(subject="s", scopes=("a", "b"), session={"k": "v"})
    assert parse_accepted_or_rejected(encode_accepted(identity)) == identity
    rejection = AuthRejection(code=2**32 - 1, reason="why")
    assert parse_accepted_or_rejected(encode_rejected(rejection)) == rejection
    assert encode_request(AuthRequest(credentials=b"t"))[:4] == b"\x01\x01\x00\x05"


@given(st.binary(max_size=300))
def test_parsers_take_any_bytes(data: bytes) -> None:
    for parse in (parse_request, parse_accepted_or_rejected):
        with contextlib.suppress(AuthFormatError):
            parse(data)


def test_tokens_rotate_and_allow_clock_skew() -> None:
    old = TokenSigner(KEYS, key_id="k1").sign("u", ttl=10, now=100)
    new = SIGNER.sign("u", ttl=10, now=100)
    assert VERIFIER.verify(old, now=105).key_id == "k1"
    assert VERIFIER.verify(new, now=105).key_id == "k2"
    assert VERIFIER.verify(new, now=114).subject == "u"  # expired 4 s ago: within the skew
    with pytest.raises(InvalidToken):
        VERIFIER.verify(new, now=116)
    with pytest.raises(InvalidToken):
        VERIFIER.verify(new, now=94)  # issued 6 s in the future
    assert TokenVerifier({"k2": KEYS["k2"]}).verify(new, now=100).subject == "u"
    with pytest.raises(InvalidToken):
        TokenVerifier({"k2": KEYS["k2"]}).verify(old, now=100)  # k1 retired


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_token_verifier_takes_any_input(token: str | bytes) -> None:
    with pytest.raises(InvalidToken):
        VERIFIER.verify(token, now=0)


@example(request_bytes=encode_request(AuthRequest(credentials=b"open sesame")), fin=True)
@example(request_bytes=encode_request(AuthRequest(credentials=b"open sesame")), fin=False)
@example(request_bytes=encode_request(AuthRequest(credentials=b"open sesame!")), fin=True)
@example(request_bytes=encode_request(AuthRequest(credentials=b"open sesame"))[:-1], fin=True)
@given(request_bytes=st.binary(max_size=2000), fin=st.booleans())
def test_arbitrary_auth_requests_never_crash_or_accept_unless_the_authenticator_did(
    request_bytes: bytes, fin: bool
) -> None:
    decisions: list[object] = []

    def authenticator(
        request: AuthRequest, address: object, now: float
    ) -> Identity | AuthRejection:
        outcome: Identity | AuthRejection = (
            Identity(subject="in") if request.credentials == b"open sesame" else AuthRejection()
        )
        decisions.append(outcome)
        return outcome

    pair = connected_pair(
        server_config=Config(
            dev_mode=True,
            trust_dev_certificate=True,
            auth=AuthPolicy(authenticator=authenticator, deadline=2),
        )
    )
    server = StreamSink(pair.server)
    pair.network.step_hooks.append(server.pump)
    sid = pair.client.open_stream()  # the client's first stream: the auth stream
    assert sid == 0
    pair.client.send(sid, request_bytes, end=fin)
    pair.network.run_for(3.0)
    accepted = of_type(server, Authenticated)
    assert len(accepted) <= 1
    said_yes = bool(decisions) and isinstance(decisions[-1], Identity)
    assert bool(accepted) == said_yes  # accepted exactly when the authenticator accepted
    assert (pair.server.identity is not None) == said_yes


def test_bytes_after_acceptance_do_not_count_against_the_held_budget() -> None:
    token = SIGNER.sign("bulk", ttl=60, now=0)
    policy = AuthPolicy(authenticator=token_authenticator(VERIFIER), held_bytes=10_000)
    pair, client, server = token_pair(token, policy=policy)
    assert pair.network.run_until(lambda: of_type(client, Authenticated), 5)
    sid = pair.client.open_stream()
    pair.client.send(sid, b"z" * 200_000, end=True)  # far over the pre-auth budget
    assert pair.network.run_until(lambda: sid in server.ended, 10)
    assert len(server.received[sid]) == 200_000 and server.terminated is None


def test_who_ended_a_failed_auth_is_named() -> None:
    """A rejection is the peer's; a client that waited in vain closed by itself."""
    policy = AuthPolicy(authenticator=lambda req, addr, now: AuthRejection(code=77, reason="no"))
    pair, client, _ = token_pair("whatever", policy=policy)
    assert pair.network.run_until(lambda: of_type(client, AuthRejected), 5)
    assert of_type(client, AuthRejected)[0].closed_by is ClosedBy.PEER
    # A server without an AuthPolicy never answers: the client gives up on its own.
    lonely = connected_pair(
        LinkConditions(delay=0.005),
        client_config=Config(
            dev_mode=True,
            trust_dev_certificate=True,
            auth_request=AuthRequest(credentials=b"t"),
        ),
        server_config=Config(dev_mode=True, trust_dev_certificate=True),
    )
    sink = StreamSink(lonely.client)
    lonely.network.step_hooks.append(sink.pump)
    assert lonely.network.run_until(lambda: of_type(sink, AuthRejected), 60)
    (event,) = of_type(sink, AuthRejected)
    assert (event.code, event.closed_by) == (CloseCode.AUTH_TIMEOUT, ClosedBy.LOCAL)


@pytest.mark.parametrize("request_bytes", [b"GET /index.html\r\n", b"hello" * 2000])
def test_a_client_that_does_not_speak_auth_reads_no_answer_as_data(request_bytes: bytes) -> None:
    # Its first stream is the auth stream to the server: an answer written there
    # would be read as the server's reply. It gets only the close, which says why.
    policy = AuthPolicy(authenticator=token_authenticator(VERIFIER))
    pair = connected_pair(
        server_config=Config(dev_mode=True, auth=policy, rate_limits=RateLimits()),
        handshake=False,
    )
    client = StreamSink(pair.client)
    pair.network.step_hooks.append(client.pump)
    pair.network.run_until(lambda: pair.client.state is ConnectionState.CONNECTED, 5)
    stream = pair.client.open_stream()
    pair.client.send(stream, request_bytes, end=True)
    assert pair.network.run_until(lambda: client.terminated is not None, 5)
    assert client.received.get(stream, b"") == b""
    assert client.terminated is not None
    assert client.terminated.error_code == CloseCode.AUTH_MALFORMED
    assert "requires the auth handshake" in client.terminated.reason


CLIENT_AT, SERVER_AT, FORGED_AT = ("10.0.0.1", 5000), ("10.0.0.2", 4433), ("10.9.9.9", 1)
Batch = list[tuple[bytes, tuple[str, int]]]


def _by_hand(
    policy: AuthPolicy, tamper: Callable[[Connection, Batch], None], steps: int
) -> list[AuthRequested]:
    """A client presenting a 5000-byte token (its last part leaves in 1-RTT packets,
    which a burst routes by id) to a server with ``policy``, driven by hand for
    ``steps`` 10 ms steps; ``tamper`` edits each burst of the client's before the
    server gets it. Only what the server sends to the client's address arrives. The
    server's AuthRequested events."""
    client = Endpoint(Config(trust_dev_certificate=True).with_token("t" * 5000))
    server = Endpoint(Config(dev_mode=True, trust_dev_certificate=True, auth=policy), server=True)
    now = 0.0
    conn = client.connect(SERVER_AT, now, server_name="localhost")
    requested: list[AuthRequested] = []
    for _ in range(steps):
        batch = [(data, CLIENT_AT) for data, _ in client.datagrams_to_send(now)]
        if batch:
            tamper(conn, batch)
        server.receive_datagrams(batch, now)
        for data, address in server.datagrams_to_send(now):
            if address == CLIENT_AT:
                client.receive_datagram(data, SERVER_AT, now)
        while (item := server.next_event()) is not None:
            if isinstance(item[1], AuthRequested):
                requested.append(item[1])
        now += 0.01
    return requested


def test_the_authenticator_hears_the_validated_address_not_the_last_datagrams() -> None:
    """A forged datagram for the connection, from another address, arrives in the same
    burst as the auth request: the engine drops it, and the address the server's
    authenticator and AuthRequested report is still the client's own path."""
    heard: list[object] = []

    def authenticator(request: AuthRequest, address: object, now: float) -> None:
        heard.append(address)
        return None  # the application decides: AuthRequested carries the address too

    def junk_after(conn: Connection, batch: Batch) -> None:
        # For the id the client sends to (the server's, once it answered), which
        # anyone on the path can read.
        engine = conn._engine
        assert engine is not None
        batch.append((bytes([0x40]) + engine._quic._peer_cid.cid + bytes(40), FORGED_AT))  # type: ignore[attr-defined]

    requested = _by_hand(AuthPolicy(authenticator=authenticator), junk_after, 50)
    assert heard == [CLIENT_AT]
    assert [event.address for event in requested] == [CLIENT_AT]


def test_a_copied_packet_from_another_address_does_not_become_the_auth_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An on-path copy of the client's 1-RTT packet, sent ahead of it from another
    address: the engine takes it and moves to that path before validating it, but the
    auth flow is only ever told validated addresses."""
    from sansquic import _authflow

    told: list[object] = []
    paths: list[object] = []
    stream_data = _authflow.AuthFlow.stream_data

    def recording(flow: Any, data: bytes, now: float, address: Any) -> None:
        told.append(address)
        paths.append(flow._conn._engine.peer_address())
        stream_data(flow, data, now, address)

    monkeypatch.setattr(_authflow.AuthFlow, "stream_data", recording)
    raced: list[bool] = []

    def race_once(conn: Connection, batch: Batch) -> None:
        if not raced and not batch[-1][0][0] & 0x80:
            raced.append(True)
            batch.insert(0, (batch[-1][0], FORGED_AT))

    _by_hand(AuthPolicy(), race_once, 20)
    assert raced and FORGED_AT in paths  # the engine did move to the copy's path
    assert told and set(told) == {CLIENT_AT}

"""Session tickets and 0-RTT on the simulated network."""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sansquic
from sansquic import Config, ConfigError, Connection, ConnectionState
from sansquic._aioquic_tickets import decode, encode
from sansquic._tickets import MemoryTicketStore, TicketKeys
from sansquic.testing import Pair, connected_pair

KEY = b"k" * 32


def _served(client: Config, server: Config) -> Connection:
    """One full connection, run until the server's ticket reached the client; the client."""
    pair = connected_pair(client_config=client, server_config=server)
    pair.network.run_for(1.0)
    return pair.client


def _early_request(
    client: Config, server: Config, payload: bytes = b"GET /"
) -> tuple[Pair, int, bool]:
    """A connection that sends ``payload`` + FIN right after connect(), run for a
    second; with the stream id and whether the bytes could leave in 0-RTT."""
    pair = connected_pair(client_config=client, server_config=server, handshake=False)
    early = pair.client.sending_early_data
    stream = pair.client.open_stream()
    pair.client.send(stream, payload, end=True)
    pair.network.run_for(1.0)
    return pair, stream, early


def test_a_second_connection_resumes() -> None:
    client, server = (
        Config(dev_mode=True, trust_dev_certificate=True),
        Config(dev_mode=True, trust_dev_certificate=True),
    )
    first = _served(client, server)
    assert not first.resumed and len(client.ticket_store) == 1  # type: ignore[arg-type]
    second = connected_pair(client_config=client, server_config=server)
    assert second.client.resumed and second.server.resumed
    assert second.client.early_data_accepted is False  # not asked for: none sent
    assert not second.client.sending_early_data


def test_the_handshake_event_reports_resumption() -> None:
    client, server = (
        Config(dev_mode=True, trust_dev_certificate=True),
        Config(dev_mode=True, trust_dev_certificate=True),
    )
    _served(client, server)
    pair = connected_pair(client_config=client, server_config=server)
    events = list(iter(pair.client.next_event, None))
    done = [e for e in events if isinstance(e, sansquic.HandshakeCompleted)]
    assert done == [sansquic.HandshakeCompleted(alpn="sansquic", resumed=True)]


def test_early_data_arrives_before_the_handshake_completes() -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    server = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    _served(client, server)
    pair, stream, early = _early_request(client, server, b"hello in 0-RTT")
    assert early
    assert pair.client.early_data_accepted and pair.server.early_data_accepted
    assert pair.server.early_bytes(stream) == len(b"hello in 0-RTT")
    assert pair.server.read(stream) == b"hello in 0-RTT"


def test_bytes_after_the_handshake_are_not_early() -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    server = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    _served(client, server)
    pair = connected_pair(client_config=client, server_config=server)
    stream = pair.client.open_stream()
    pair.client.send(stream, b"late", end=True)
    pair.network.run_for(1.0)
    assert pair.server.read(stream) == b"late" and pair.server.early_bytes(stream) == 0


def test_without_early_data_the_client_waits_for_the_handshake() -> None:
    client = Config(
        dev_mode=True, trust_dev_certificate=True
    )  # early_data off: the ticket's 0-RTT permission is ignored
    server = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    _served(client, server)
    pair, stream, early = _early_request(client, server)
    assert not early and pair.client.resumed
    assert pair.server.early_bytes(stream) == 0 and pair.server.read(stream) == b"GET /"


def test_a_server_that_refuses_early_data_still_gets_the_bytes() -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    issuer = Config(dev_mode=True, trust_dev_certificate=True, early_data=True, ticket_keys=(KEY,))
    _served(client, issuer)
    refusing = Config(
        dev_mode=True, trust_dev_certificate=True, ticket_keys=(KEY,)
    )  # same keys, 0-RTT now off
    pair, stream, early = _early_request(client, refusing, b"sent twice")
    assert early  # the client tried
    assert pair.client.early_data_accepted is False and pair.server.early_bytes(stream) == 0
    pair.network.run_for(3.0)  # the 0-RTT packets count as lost and go again in 1-RTT
    assert pair.server.read(stream) == b"sent twice"


def test_tickets_resume_on_another_server_with_the_same_keys() -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True)
    _served(client, Config(dev_mode=True, trust_dev_certificate=True, ticket_keys=(KEY,)))
    other_process = Config(dev_mode=True, trust_dev_certificate=True, ticket_keys=(KEY,))
    assert connected_pair(client_config=client, server_config=other_process).client.resumed


def test_rotated_keys_still_open_old_tickets_and_foreign_keys_do_not() -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True)
    _served(client, Config(dev_mode=True, trust_dev_certificate=True, ticket_keys=(KEY,)))
    rotated = Config(
        dev_mode=True, trust_dev_certificate=True, ticket_keys=(b"n" * 32, KEY)
    )  # new first, old kept
    assert _served(client, rotated).resumed
    # The resumed connection's new ticket is sealed with the new key only.
    dropped = Config(dev_mode=True, trust_dev_certificate=True, ticket_keys=(b"n" * 32,))
    assert connected_pair(client_config=client, server_config=dropped).client.resumed
    _served(client, Config(dev_mode=True, trust_dev_certificate=True, ticket_keys=(KEY,)))
    stranger = Config(dev_mode=True, trust_dev_certificate=True, ticket_keys=(b"s" * 32,))
    pair = connected_pair(client_config=client, server_config=stranger)
    assert not pair.client.resumed and pair.client.state is ConnectionState.CONNECTED


def test_session_tickets_off_keeps_and_issues_nothing() -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True, session_tickets=False)
    _served(client, Config(dev_mode=True, trust_dev_certificate=True))
    assert len(client.ticket_store) == 0  # type: ignore[arg-type]
    on = Config(dev_mode=True, trust_dev_certificate=True)
    _served(on, Config(dev_mode=True, trust_dev_certificate=True, session_tickets=False))
    assert len(on.ticket_store) == 0  # type: ignore[arg-type]


def test_each_ticket_is_used_once() -> None:
    client, server = (
        Config(dev_mode=True, trust_dev_certificate=True),
        Config(dev_mode=True, trust_dev_certificate=True),
    )
    _served(client, server)
    store = client.ticket_store
    assert isinstance(store, MemoryTicketStore) and len(store) == 1
    pair = connected_pair(client_config=client, server_config=server, handshake=False)
    assert len(store) == 0  # taken by connect()
    pair.network.run_for(1.0)
    assert len(store) == 1  # the resumed connection's own new ticket


def test_a_damaged_stored_ticket_means_a_full_handshake() -> None:
    store = MemoryTicketStore()
    client = Config(dev_mode=True, trust_dev_certificate=True, ticket_store=store)
    server = Config(dev_mode=True, trust_dev_certificate=True)
    _served(client, server)
    (key,) = store._tickets
    ticket = store.take(key)
    assert ticket is not None
    for damaged in (ticket[: len(ticket) // 2], b"junk", b""):
        store.put(key, damaged)
        pair = connected_pair(client_config=client, server_config=server)
        assert not pair.client.resumed and pair.client.state is ConnectionState.CONNECTED
        store.take(key)  # drop the new ticket that connection got


class _BrokenStore:
    def put(self, key: str, ticket: bytes) -> None:
        raise OSError("disk full")

    def take(self, key: str) -> bytes | None:
        return None


def test_a_failing_store_costs_only_the_ticket(caplog: pytest.LogCaptureFixture) -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True, ticket_store=_BrokenStore())
    with caplog.at_level(logging.ERROR, logger="sansquic"):
        conn = _served(client, Config(dev_mode=True, trust_dev_certificate=True))
    assert conn.state is ConnectionState.CONNECTED
    assert "ticket store failed" in caplog.text


def test_0rtt_offered_on_a_ticket_that_forbade_it_is_refused() -> None:
    """A client may offer 0-RTT on a ticket without the permission (ngtcp2's does);
    the server resumes but refuses the 0-RTT, and the bytes still arrive."""
    store = MemoryTicketStore()
    client = Config(dev_mode=True, trust_dev_certificate=True, early_data=True, ticket_store=store)
    server = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    issuing = server.replace(early_data=False, ticket_keys=(KEY,))
    _served(client, issuing)  # a ticket without 0-RTT permission
    (key,) = store._tickets
    raw = store.take(key)
    assert raw is not None
    forged = decode(raw)
    assert forged is not None and forged.max_early_data_size is None
    forged.max_early_data_size = 0xFFFFFFFF  # what the client pretends
    store.put(key, encode(forged))
    accepting = server.replace(ticket_keys=(KEY,))  # would take 0-RTT on a ticket allowing it
    pair, stream, early = _early_request(client, accepting, b"offered anyway")
    assert early  # the client did send 0-RTT
    assert pair.client.resumed and pair.client.early_data_accepted is False
    assert pair.server.early_bytes(stream) == 0
    pair.network.run_for(3.0)
    assert pair.server.read(stream) == b"offered anyway"
    assert pair.client.state is ConnectionState.CONNECTED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ticket_keys", (b"short",)),
        ("ticket_keys", ()),
        ("ticket_keys", ("not bytes",)),
        ("ticket_store", object()),
        ("reset_key", b"short"),
        ("early_data", 1),
        ("session_tickets", None),
    ],
)
def test_bad_resumption_settings_raise_config_error(field: str, value: object) -> None:
    with pytest.raises(ConfigError):
        Config(**{field: value})  # type: ignore[arg-type]


def test_sealed_tickets_are_authenticated() -> None:
    keys = TicketKeys([KEY])
    sealed = keys.seal(b"state")
    assert keys.open(sealed) == b"state"
    assert keys.open(sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert TicketKeys([b"o" * 32]).open(sealed) is None
    assert keys.open(b"") is None


@given(st.binary(max_size=400))
def test_decode_never_raises(data: bytes) -> None:
    decode(data)  # any stored bytes: a ticket or None, never an exception


@given(st.binary(max_size=300))
def test_opening_junk_never_raises(data: bytes) -> None:
    assert TicketKeys([KEY]).open(data) is None


@given(
    secret=st.binary(min_size=32, max_size=48),
    name=st.text(min_size=1, max_size=40),
    identity=st.binary(max_size=200),
    early=st.sampled_from([None, 0xFFFFFFFF]),
    extensions=st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=50)), max_size=3),
)
def test_encode_decode_round_trip(
    secret: bytes, name: str, identity: bytes, early: int | None, extensions: list
) -> None:
    ticket = _sample_ticket()
    ticket.resumption_secret, ticket.server_name, ticket.ticket = secret, name, identity
    ticket.max_early_data_size, ticket.other_extensions = early, extensions
    assert decode(encode(ticket)) == ticket


_SAMPLE: list = []


def _sample_ticket():  # type: ignore[no-untyped-def]
    """A real ticket, made once by a real handshake."""
    if not _SAMPLE:
        client = Config(dev_mode=True, trust_dev_certificate=True)
        _served(client, Config(dev_mode=True, trust_dev_certificate=True))
        store = client.ticket_store
        assert isinstance(store, MemoryTicketStore)
        (key,) = store._tickets
        raw = store.take(key)
        assert raw is not None
        _SAMPLE.append(raw)
    ticket = decode(_SAMPLE[0])
    assert ticket is not None
    return ticket


def test_memory_store_bounds() -> None:
    store = MemoryTicketStore(per_server=2, max_servers=3)
    for server in range(5):
        for n in range(4):
            store.put(f"s{server}", os.urandom(8) + bytes([n]))
    assert len(store) == 6 and set(store._tickets) == {"s2", "s3", "s4"}
    assert store.take("s4") is not None and store.take("s0") is None
    with pytest.raises(ValueError):
        MemoryTicketStore(per_server=0)


def test_no_0rtt_when_auth_is_configured() -> None:
    """With auth on either side the credentials would travel in replayable 0-RTT."""
    from sansquic import AuthPolicy, AuthRequest

    def allow(request: AuthRequest, address: object, now: float) -> sansquic.Identity:
        return sansquic.Identity(subject="alice")

    policy = AuthPolicy(authenticator=allow)
    client = Config(
        dev_mode=True,
        trust_dev_certificate=True,
        early_data=True,
        auth_request=AuthRequest(credentials=b"token"),
    )
    server = Config(dev_mode=True, trust_dev_certificate=True, early_data=True, auth=policy)
    _served(client, server)
    pair, stream, early = _early_request(client, server)
    assert not early and pair.client.resumed  # resumed, but nothing left in 0-RTT
    plain = Config(
        dev_mode=True, trust_dev_certificate=True, early_data=True
    )  # a client without credentials
    _served(plain, server)
    pair, stream, early = _early_request(plain, server)
    assert pair.client.early_data_accepted is False and pair.server.early_bytes(stream) == 0


def test_a_server_connection_fed_an_unusable_initial_does_not_crash() -> None:
    """aioquic drops an Initial of a version it was not configured for before it makes
    its TLS context: the ticket check must not assume one."""
    server = Connection(
        Config(dev_mode=True, trust_dev_certificate=True), role=sansquic.Role.SERVER
    )  # v1 only
    client = Connection(
        Config(dev_mode=True, trust_dev_certificate=True, versions=("v2",)),
        role=sansquic.Role.CLIENT,
        server_name="x",
    )
    client.connect(("10.0.0.2", 4433), 0.0)
    for data, _ in client.datagrams_to_send(0.0):
        server.receive_datagram(data, ("10.0.0.9", 1), 0.0)
    assert server.state in (ConnectionState.IDLE, ConnectionState.HANDSHAKING)


def test_the_memory_store_survives_threads() -> None:
    import threading

    store = MemoryTicketStore(per_server=2, max_servers=8)
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        try:
            for n in range(3000):
                key = f"s{(seed * 7 + n) % 20}"
                store.put(key, bytes([n % 256]))
                store.take(key)
                len(store)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(store._tickets) <= 8


class _RaisingStore(MemoryTicketStore):
    def take(self, key: str) -> bytes | None:
        raise OSError("store offline")


def test_a_store_that_fails_to_give_a_ticket_costs_only_the_ticket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Config(dev_mode=True, trust_dev_certificate=True, ticket_store=_RaisingStore())
    with caplog.at_level(logging.ERROR, logger="sansquic"):
        pair = connected_pair(
            client_config=client, server_config=Config(dev_mode=True, trust_dev_certificate=True)
        )
    assert pair.client.state is ConnectionState.CONNECTED and not pair.client.resumed
    assert "failed to give" in caplog.text


def test_a_ticket_with_damaged_transport_parameters_is_not_used() -> None:
    store = MemoryTicketStore()
    client = Config(dev_mode=True, trust_dev_certificate=True, early_data=True, ticket_store=store)
    server = Config(dev_mode=True, trust_dev_certificate=True, early_data=True)
    _served(client, server)
    (key,) = store._tickets
    raw = store.take(key)
    assert raw is not None
    ticket = decode(raw)
    assert ticket is not None and ticket.other_extensions
    ticket.other_extensions = [(kind, b"\xff" * 7) for kind, _ in ticket.other_extensions]
    store.put(key, encode(ticket))
    pair = connected_pair(client_config=client, server_config=server)
    assert pair.client.state is ConnectionState.CONNECTED and not pair.client.resumed


@given(st.data())
def test_mutated_real_tickets_never_fail_a_connect(data: st.DataObject) -> None:
    raw = bytearray(encode(_sample_ticket()))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    store = MemoryTicketStore()
    store.put("localhost:4433", bytes(raw))
    conn = Connection(
        Config(dev_mode=True, trust_dev_certificate=True, early_data=True, ticket_store=store),
        role=sansquic.Role.CLIENT,
        server_name="localhost",
    )
    conn.connect(("10.0.0.2", 4433), 0.0)  # a damaged ticket is dropped, never raised
    assert conn.datagrams_to_send(0.0)

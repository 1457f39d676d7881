"""The WebSocket server's admission decisions (sansquic.websocket.Admission), pure."""

from __future__ import annotations

import pytest
import wsproto
import wsproto.events
from hypothesis import given, settings
from hypothesis import strategies as st

import sansquic
from sansquic.websocket import REFUSED_CODE, Admission, Verdict, rejection_from_headers

NONE = dict.fromkeys(
    ("max_connections", "max_connections_per_address", "new_connections_per_second")
)


def admission(**limits: object) -> Admission:
    return Admission(sansquic.RateLimits(**{**NONE, **limits}))  # type: ignore[arg-type]


def test_per_address_limit_refuses_with_429_and_frees_on_release() -> None:
    adm = admission(max_connections_per_address=2)
    a, b = adm.admit(("10.0.0.1", 1), 0.0), adm.admit(("10.0.0.1", 2), 0.0)
    other = adm.admit(("10.0.0.2", 1), 0.0)
    assert [t.verdict for t in (a, b, other)] == [Verdict.ADMIT] * 3
    refused = adm.admit(("10.0.0.1", 3), 0.0)
    assert refused.verdict is Verdict.REFUSE and refused.status == 429
    assert dict(adm.stats().refused) == {"connections per address": 1}
    adm.upgraded(a)
    adm.release(a)
    adm.release(refused)
    assert adm.admit(("10.0.0.1", 4), 0.0).verdict is Verdict.ADMIT


def test_total_limit_counts_handshakes_and_live_connections_alike() -> None:
    adm = admission(max_connections=2)
    first = adm.admit(("a", 1), 0.0)
    adm.upgraded(first)
    adm.admit(("b", 1), 0.0)  # still in its handshake
    third = adm.admit(("c", 1), 0.0)
    assert third.verdict is Verdict.REFUSE and third.status == 503
    assert (adm.stats().active, adm.stats().handshakes) == (1, 2)


def test_new_connection_rate_per_address_refills_with_time() -> None:
    adm = admission(new_connections_per_second=2.0)
    verdicts = [adm.admit(("a", i), 0.0).verdict for i in range(3)]
    assert verdicts == [Verdict.ADMIT, Verdict.ADMIT, Verdict.REFUSE]
    assert adm.admit(("b", 1), 0.0).verdict is Verdict.ADMIT  # another address is its own key
    assert adm.admit(("a", 9), 0.6).verdict is Verdict.ADMIT


def test_prefixes_group_addresses_into_one_key() -> None:
    adm = admission(max_connections_per_address=1, ipv4_prefix=24)
    assert adm.admit(("192.0.2.1", 1), 0.0).verdict is Verdict.ADMIT
    assert adm.admit(("192.0.2.200", 1), 0.0).verdict is Verdict.REFUSE
    assert adm.admit(("192.0.3.1", 1), 0.0).verdict is Verdict.ADMIT


def test_refusals_past_the_handshake_cap_or_response_rate_are_dropped() -> None:
    adm = admission(max_handshakes=2)
    kept = [adm.admit(("a", i), 0.0) for i in range(2)]
    dropped = adm.admit(("a", 3), 0.0)
    assert dropped.verdict is Verdict.DROP and dropped.reason == "handshakes"
    assert adm.stats().handshakes == 2  # a drop holds nothing
    adm.release(dropped)  # and giving it back is harmless
    adm.release(kept[0])
    assert adm.admit(("a", 4), 0.0).verdict is Verdict.ADMIT
    flood = admission(max_connections_per_address=1, responses_per_second=3.0)
    flood.admit(("x", 0), 0.0)
    verdicts = [flood.admit(("x", i), 0.0).verdict for i in range(1, 6)]
    assert verdicts == [Verdict.REFUSE] * 3 + [Verdict.DROP] * 2
    assert dict(flood.stats().dropped) == {"connections per address": 2}


def test_one_address_cannot_park_more_than_a_few_refusals() -> None:
    adm = admission(max_connections_per_address=1, websocket_handshake_timeout=10.0)
    adm.admit(("a", 0), 0.0)
    refusals = [adm.admit(("a", i), 0.0) for i in range(1, 7)]
    assert [t.verdict for t in refusals] == [Verdict.REFUSE] * 4 + [Verdict.DROP] * 2
    assert refusals[0].deadline == 2.0  # a refusal needs no auth: a short deadline
    assert adm.admit(("b", 0), 0.0).verdict is Verdict.ADMIT  # others are not crowded out
    adm.release(refusals[0])
    assert adm.admit(("a", 9), 0.0).verdict is Verdict.REFUSE


def test_the_deadline_is_the_handshake_timeout_or_the_auth_deadline_if_sooner() -> None:
    limits = sansquic.RateLimits(websocket_handshake_timeout=4.0)
    assert Admission(limits).admit(("a", 1), 10.0).deadline == 14.0
    assert Admission(limits, auth_deadline=1.5).admit(("a", 1), 10.0).deadline == 11.5
    config = sansquic.Config(
        rate_limits=limits, auth=sansquic.AuthPolicy(allow_anonymous=True, deadline=2.0)
    )
    assert Admission.for_config(config).admit(("a", 1), 0.0).deadline == 2.0


def test_an_oversized_request_head_turns_into_a_431_refusal() -> None:
    adm = admission(websocket_max_header_bytes=1000)
    ticket = adm.admit(("a", 1), 0.0)
    assert ticket.took(600) and ticket.took(400)
    assert not ticket.took(1)
    assert ticket.verdict is Verdict.REFUSE and ticket.status == 431
    assert not ticket.took(10)  # counted once
    assert dict(adm.stats().refused) == {"request head too large": 1}
    with pytest.raises(sansquic.LocalProtocolError):
        ticket.took(-1)
    with pytest.raises(sansquic.LocalProtocolError):
        adm.upgraded(ticket)  # refused: never upgraded


@pytest.mark.parametrize("status", [429, 503, 431])
def test_the_refusal_is_an_http_answer_a_websocket_client_reads_as_refused(status: int) -> None:
    reason = {429: "connections per address", 503: "connections", 431: "request head too large"}
    adm = admission(max_connections_per_address=1, max_connections=2)
    adm.admit(("a", 0), 0.0)
    if status == 429:
        ticket = adm.admit(("a", 1), 0.0)
    elif status == 503:
        adm.admit(("b", 0), 0.0)
        ticket = adm.admit(("c", 1), 0.0)
    else:
        ticket = adm.admit(("d", 1), 0.0)
        ticket.took(1 << 20)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    client.send(wsproto.events.Request(host="localhost", target="/"))
    client.receive_data(ticket.refusal())
    events = list(client.events())
    answer = events[0]
    assert isinstance(answer, wsproto.events.RejectConnection)
    assert answer.status_code == status
    assert (b"retry-after", b"1") in answer.headers or status == 431
    rejection = rejection_from_headers(answer.status_code, answer.headers)
    assert rejection.code == REFUSED_CODE and reason[status] in rejection.reason
    assert isinstance(events[-1], wsproto.events.RejectData) and events[-1].body_finished


def test_an_admitted_ticket_has_no_refusal_and_upgrades_once() -> None:
    adm = admission()
    ticket = adm.admit(("a", 1), 0.0)
    with pytest.raises(sansquic.LocalProtocolError):
        ticket.refusal()
    adm.upgraded(ticket)
    with pytest.raises(sansquic.LocalProtocolError):
        adm.upgraded(ticket)
    adm.release(ticket)
    adm.release(ticket)
    assert adm.stats().active == 0


def test_limits_are_validated() -> None:
    for bad in ({"websocket_max_header_bytes": 100}, {"websocket_handshake_timeout": 0}):
        with pytest.raises(sansquic.ConfigError):
            sansquic.RateLimits(**bad)  # type: ignore[arg-type]


ops = st.lists(
    st.tuples(
        st.sampled_from(["admit", "upgrade", "release", "head"]),
        st.integers(0, 40),  # which address / which ticket
        st.floats(0, 0.5),  # time step
    ),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_counts_follow_the_tickets_and_memory_stays_bounded(
    steps: list[tuple[str, int, float]],
) -> None:
    limits = sansquic.RateLimits(
        max_connections=12,
        max_connections_per_address=3,
        new_connections_per_second=5.0,
        max_handshakes=8,
        max_tracked_addresses=16,
        websocket_max_header_bytes=300,
    )
    adm, now = Admission(limits), 0.0
    tickets: list[sansquic.websocket.Ticket] = []
    opened: set[int] = set()
    released: set[int] = set()
    for op, n, dt in steps:
        now += dt
        if op == "admit":
            tickets.append(adm.admit((f"10.0.0.{n}", 1), now))
            continue
        if not tickets:
            continue
        i = n % len(tickets)
        ticket = tickets[i]
        if op == "upgrade" and ticket.verdict is Verdict.ADMIT and i not in opened | released:
            adm.upgraded(ticket)
            opened.add(i)
        elif op == "release":
            adm.release(ticket)
            released.add(i)
        elif op == "head" and i not in opened | released:
            ticket.took(n * 10)
        live = [
            t for j, t in enumerate(tickets) if t.verdict is not Verdict.DROP and j not in released
        ]
        stats = adm.stats()
        assert stats.active == len(opened - released)
        assert stats.active + stats.handshakes == len(live)
        assert stats.handshakes <= 8  # a refusal past that is a drop
        admitted = [t for t in live if t.verdict is Verdict.ADMIT]
        assert len(admitted) <= 12
        per: dict[str, int] = {}
        for t in admitted:
            per[t.key] = per.get(t.key, 0) + 1
        assert max(per.values(), default=0) <= 3
        keys = {t.key for t in live}
        assert set(adm._per_address) == keys  # nothing kept for a key with no socket
        assert set(adm._refusing) <= keys and max(adm._refusing.values(), default=0) <= 4
        assert stats.tracked_addresses <= len(keys) + 16

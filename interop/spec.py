"""The interop cases, named as the QUIC interop runner names them, and what each checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .proxy import Impairment
from .wire import V2, Observer

__all__ = ["CASES", "Case", "Observation"]

KB = 1024
MB = 1024 * KB


@dataclass
class Observation:
    """Everything a case's check may look at after the run."""

    observer: Observer
    actions: dict[str, int]
    families: set[int]
    #: What the sansquic side reported per connection (resumed, early_data_accepted).
    sansquic: list[dict[str, Any]] = field(default_factory=list)
    #: The peer's output, all runs joined.
    peer_log: str = ""
    #: Why the peer's log shows no key update both sides went through, or None.
    key_update: str | None = None


Check = Callable[[Observation], str | None]  # a failure reason, or None when it holds


@dataclass(frozen=True)
class Case:
    """One interop case: files to fetch over ``connections`` connections, and a check."""

    name: str
    files: tuple[int, ...]
    check: Check
    connections: int = 1
    impairment: Impairment | None = None
    retry: bool = False
    resume: bool = False
    zero_rtt: bool = False
    key_update: bool = False
    version: str = "v1"
    cipher: str | None = None
    ipv6: bool = False
    timeout: float = 60.0
    #: The sansquic feature this case needs (see sansquic_side.missing_feature).
    feature: str = ""


def _handshakes(n: int) -> Check:
    def check(obs: Observation) -> str | None:
        got = len(obs.observer.hellos)
        return None if got == n else f"{got} handshakes seen on the wire, expected {n}"

    return check


def _all(*checks: Check) -> Check:
    def check(obs: Observation) -> str | None:
        for one in checks:
            if (reason := one(obs)) is not None:
                return reason
        return None

    return check


def _retry(obs: Observation) -> str | None:
    if obs.observer.packets("s2c", "retry") == 0:
        return "no Retry packet seen on the wire"
    return None


def _reported(obs: Observation, fact: str) -> list[object]:
    """What sansquic's side reported as ``fact`` for each connection, in order."""
    return [facts.get(fact) for facts in obs.sansquic]


def _resumed(obs: Observation) -> str | None:
    hellos = obs.observer.hellos
    if len(hellos) < 2:
        return f"{len(hellos)} handshakes seen, need 2"
    if hellos[0].resumed:
        return "the first handshake already used a pre-shared key"
    if not hellos[-1].resumed:
        return "the second ServerHello carries no pre_shared_key: not resumed"
    # The wire says it resumed; sansquic's own report must agree.
    if (reported := _reported(obs, "resumed")) != [False] * (len(reported) - 1) + [True]:
        return f"sansquic's Connection.resumed per connection: {reported}"
    return None


def _zero_rtt(obs: Observation) -> str | None:
    if (reason := _resumed(obs)) is not None:
        return reason
    if obs.observer.packets("c2s", "0rtt") == 0:
        return "no 0-RTT packet seen on the wire"
    # 0-RTT packets prove the client sent early data, not that the server took it.
    if (accepted := _reported(obs, "early_data_accepted"))[-1:] != [True]:
        return f"sansquic's Connection.early_data_accepted per connection: {accepted}"
    return None


def _key_update(obs: Observation) -> str | None:
    return obs.key_update


def _v2(obs: Observation) -> str | None:
    if obs.observer.packets("s2c", "handshake", V2) == 0:
        return "no QUIC v2 Handshake packet from the server on the wire"
    if obs.observer.packets("s2c", "handshake") != obs.observer.packets("s2c", "handshake", V2):
        return "the server sent Handshake packets in another version too"
    return None


def _cipher(name: str) -> Check:
    def check(obs: Observation) -> str | None:
        got = [hello.cipher for hello in obs.observer.hellos]
        return None if got and all(c == name for c in got) else f"ServerHello cipher {got}"

    return check


def _ipv6(obs: Observation) -> str | None:
    import socket

    return None if obs.families == {socket.AF_INET6} else "the datagrams did not go over IPv6"


def _impaired(action: str) -> Check:
    def check(obs: Observation) -> str | None:
        return None if obs.actions.get(action, 0) else f"the proxy never {action} a datagram"

    return check


CASES: dict[str, Case] = {
    case.name: case
    for case in [
        Case("handshake", (10 * KB,), _handshakes(1)),
        Case("transfer", (2 * MB, 1 * MB, 512 * KB), _handshakes(1)),
        Case("multiplexing", (2 * KB,) * 40, _handshakes(1)),
        Case("retry", (10 * KB,), _all(_handshakes(1), _retry), retry=True),
        Case(
            "resumption",
            (5 * KB, 5 * KB),
            _resumed,
            connections=2,
            resume=True,
            feature="resumption",
        ),
        Case(
            "zerortt",
            (1 * KB,) * 6,
            _zero_rtt,
            connections=2,
            resume=True,
            zero_rtt=True,
            feature="zerortt",
        ),
        Case(
            "keyupdate",
            (1 * MB,),
            _all(_handshakes(1), _key_update),
            key_update=True,
            feature="keyupdate",
        ),
        Case("v2", (10 * KB,), _all(_handshakes(1), _v2), version="v2"),
        Case(
            "chacha20",
            (100 * KB,),
            _all(_handshakes(1), _cipher("CHACHA20_POLY1305_SHA256")),
            cipher="CHACHA20_POLY1305_SHA256",
        ),
        Case("ipv6", (100 * KB,), _all(_handshakes(1), _ipv6), ipv6=True),
        Case(
            "loss",
            (300 * KB,),
            _impaired("lost"),
            impairment=Impairment(loss=0.05, seed=7),
        ),
        Case(
            "corruption",
            (300 * KB,),
            _impaired("corrupted"),
            impairment=Impairment(corruption=0.05, seed=11),
        ),
        Case(
            "blackhole",
            (1 * MB,),
            _impaired("blackholed"),
            impairment=Impairment(blackhole_seconds=1.0, blackhole_after=40),
        ),
        Case(
            "longrtt",
            (100 * KB,),
            _all(_handshakes(1), _impaired("delayed")),
            impairment=Impairment(delay=0.25),
        ),
        Case(
            "handshakeloss",
            (1 * KB,) * 5,
            _all(_handshakes(5), _impaired("handshake lost")),
            connections=5,
            impairment=Impairment(handshake_loss=0.3, seed=3),
            timeout=90.0,
        ),
    ]
}

"""The auth-stream attack over real loopback UDP, against every runtime's server (issue 9).

A raw engine-level client stops the auth stream mid-request; the server must
close that connection with a documented code and keep serving everyone else
(before the fix the threads I/O thread died here and asyncio logged a
traceback for every attempt).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import sansquic
from sansquic import tokens
from sansquic_conformance import HARNESSES
from sansquic_conformance.harness import Harness

from .rawpeer import RawClient, auth_request, run_over_udp

KEYS = {"k": b"a signing key of thirty-two bytes"}
CONFIG = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
SERVER_CONFIG = CONFIG.replace(
    auth=sansquic.AuthPolicy(
        authenticator=tokens.token_authenticator(
            tokens.TokenVerifier(KEYS), token_time=lambda now: time.time()
        ),
        deadline=3.0,
    )
)


def _read_all(stream: Any) -> bytes:
    return b"".join(iter(lambda: stream.receive(timeout=10), b""))


def _echo(conn: Any) -> None:
    for stream in conn:
        stream.send(_read_all(stream))
        stream.finish()


@pytest.mark.parametrize("runtime", sorted(HARNESSES))
@pytest.mark.parametrize("how", ["stop", "reset", "stop_after_request"])
def test_aborting_the_auth_stream_closes_only_that_connection(
    runtime: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    harness: Harness = HARNESSES[runtime]
    handle = harness.serve(_echo, SERVER_CONFIG)
    try:
        for _ in range(3):  # again and again: the server must not die or log a traceback
            attacker = RawClient(handle.address, time.monotonic())
            assert run_over_udp(attacker, handle.address, lambda a=attacker: a.connected, 5)
            if how == "stop_after_request":  # the server's answer meets a stopped stream
                attacker.quic.send_stream_data(0, auth_request(b"junk"), end_stream=True)
            else:
                attacker.quic.send_stream_data(0, auth_request()[:5])
            if how == "reset":
                attacker.quic.reset_stream(0, 3)
            else:
                attacker.quic.stop_stream(0, 3)
            assert run_over_udp(
                attacker, handle.address, lambda a=attacker: a.close_code is not None, 5
            )
            allowed = {sansquic.CloseCode.AUTH_STREAM_ABORTED}
            if how == "stop_after_request":  # the rejection may go out before the stop lands
                allowed.add(sansquic.CloseCode.AUTH_REJECTED)
            assert attacker.close_code in allowed
        token = tokens.TokenSigner(KEYS, key_id="k").sign("ok", ttl=60, now=time.time())
        conn = harness.connect(handle.address, CONFIG, token)
        try:
            stream = conn.open_stream()
            stream.send(b"still serving")
            stream.finish()
            assert _read_all(stream) == b"still serving"
        finally:
            conn.close()
        assert handle.stats().internal_errors == 0
    finally:
        handle.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

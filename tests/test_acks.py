"""Acknowledgements ride along with replies instead of following them alone."""

from __future__ import annotations

from sansquic import Connection, StreamReadable
from sansquic.testing import LinkConditions, connected_pair

MESSAGE = b"m" * 1000
EXCHANGES = 50


def _echo(conn: Connection) -> None:
    """Send back whatever arrived, at once."""
    while (event := conn.next_event()) is not None:
        if isinstance(event, StreamReadable):
            while data := conn.read(event.stream_id):
                conn.send(event.stream_id, data)


def test_a_reply_carries_the_ack_so_no_datagram_is_an_ack_alone() -> None:
    """Request/response on a 10 ms path: each side sends one datagram per message.

    aioquic writes an ACK only once its 1 ms ACK delay has passed, so an
    immediate reply went without it and a second, ACK-only datagram followed
    1 ms later: two datagrams, two wake-ups of the peer, per message. (qh3's
    Rust core does the same, and the seam cannot reach it: docs/engines.md.)"""
    pair = connected_pair(LinkConditions(delay=0.005))
    client, server, net = pair.client, pair.server, pair.network
    net.run_for(1.0)  # the handshake's own acknowledgements are done
    stream = client.open_stream()
    echoed = bytearray()

    def client_side() -> None:
        while (event := client.next_event()) is not None:
            if isinstance(event, StreamReadable):
                while data := client.read(stream):
                    echoed.extend(data)
                    if len(echoed) % len(MESSAGE) == 0 and len(echoed) < EXCHANGES * len(MESSAGE):
                        client.send(stream, MESSAGE)  # the next request, at once

    net.step_hooks += [lambda: _echo(server), client_side]
    sent = (client.stats().udp_datagrams_sent, server.stats().udp_datagrams_sent)
    client.send(stream, MESSAGE)
    assert net.run_until(lambda: len(echoed) == EXCHANGES * len(MESSAGE), 10)
    client_sent = client.stats().udp_datagrams_sent - sent[0]
    server_sent = server.stats().udp_datagrams_sent - sent[1]
    # The slack: the last echo's own ACK, and whatever the path still owed.
    assert client_sent <= EXCHANGES + 3, client_sent
    assert server_sent <= EXCHANGES + 3, server_sent

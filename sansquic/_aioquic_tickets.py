"""Session tickets on aioquic: tickets as bytes, and server tickets that carry their state.

aioquic leaves ticket storage to the application, and its server tickets are
random ids the server must remember. Here each ticket a server issues is
instead its own resumption state, sealed with ``Config.ticket_keys``
(``_tickets.TicketKeys``), so servers keep nothing and any process with the
keys resumes it. The private attributes used are in ``PRIVATE_ATTRIBUTES``
(checked by ``tests/test_engine_seam.py``).
"""

from __future__ import annotations

import datetime
import logging
import struct
from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from C
from aioquic.quic.connection import MAX_EARLY_DATA
from aioquic.quic.packet import pull_quic_transport_parameters

from ._tickets import TicketKeys, TicketStore

__all__ = ["PRIVATE_ATTRIBUTES", "ClientTickets", "ServerTickets", "decode", "encode"]

#: (object, attribute) pairs of aioquic internals this module relies on.
PRIVATE_ATTRIBUTES = (
    ("TlsContext", "_server_handle_finished"),  # wrapped: the ticket is rewritten
    ("TlsContext", "_new_session_ticket"),
    ("QuicConnection", "_initialize"),  # overridden: installs the wrapper on the new Context
)

_log = logging.getLogger("sansquic")
_FORMAT = 1
_HEAD = struct.Struct("!BIHqqBI")  # format, age_add, suite, valid from/until (us), early?, size
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _micros(when: datetime.datetime) -> int:
    return (when - _EPOCH) // datetime.timedelta(microseconds=1)


def encode(ticket: tls.SessionTicket, *, identity: bool = True) -> bytes:
    """``ticket`` as bytes; without ``identity``, only what a server needs to resume it."""
    early = ticket.max_early_data_size
    out = [
        _HEAD.pack(
            _FORMAT,
            ticket.age_add,
            int(ticket.cipher_suite),
            _micros(ticket.not_valid_before),
            _micros(ticket.not_valid_after),
            early is not None,
            early or 0,
        )
    ]
    extensions = ticket.other_extensions if identity else []
    for blob, width in (
        (ticket.resumption_secret, 1),
        ((ticket.server_name or "").encode("utf-8"), 2),  # a server may have no SNI
        (ticket.ticket if identity else b"", 2),
    ):
        out.append(len(blob).to_bytes(width, "big") + blob)
    out.append(len(extensions).to_bytes(2, "big"))
    for kind, data in extensions:
        out.append(kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data)
    return b"".join(out)


def decode(data: bytes) -> tls.SessionTicket | None:
    """The ticket ``encode`` made, or ``None`` for anything else (stores are outside
    our control: a damaged or foreign entry must not fail a connection)."""
    try:
        fmt, age_add, suite, since, until, has_early, early = _HEAD.unpack_from(data, 0)
        if fmt != _FORMAT:
            return None
        at = _HEAD.size
        blobs = []
        for width in (1, 2, 2):
            size = int.from_bytes(data[at : at + width], "big")
            at += width
            blobs.append(bytes(data[at : at + size]))
            if len(blobs[-1]) != size:
                return None
            at += size
        count = int.from_bytes(data[at : at + 2], "big")
        at += 2
        extensions = []
        for _ in range(count):
            kind, size = struct.unpack_from("!HH", data, at)
            at += 4
            extensions.append((kind, bytes(data[at : at + size])))
            if len(extensions[-1][1]) != size:
                return None
            at += size
        if at != len(data):
            return None
        return tls.SessionTicket(
            age_add=age_add,
            cipher_suite=tls.CipherSuite(suite),
            not_valid_before=_EPOCH + datetime.timedelta(microseconds=since),
            not_valid_after=_EPOCH + datetime.timedelta(microseconds=until),
            resumption_secret=blobs[0],
            server_name=blobs[1].decode("utf-8") or None,  # type: ignore[arg-type]
            ticket=blobs[2],
            max_early_data_size=early if has_early else None,
            other_extensions=extensions,
        )
    except (struct.error, ValueError, OverflowError):  # short, unknown suite, bad UTF-8
        return None


def _parameters_parse(ticket: tls.SessionTicket) -> bool:
    """Whether the server's transport parameters in ``ticket`` parse: aioquic reads
    them for 0-RTT at connect(), where bad ones would fail the connection."""
    for kind, data in ticket.other_extensions:
        if kind == tls.ExtensionType.QUIC_TRANSPORT_PARAMETERS:
            try:
                pull_quic_transport_parameters(Buffer(data=data))
            except Exception:  # any way a damaged blob fails to parse
                return False
    return True


class ClientTickets:
    """A client connection's use of ``Config.ticket_store``, for the server ``key``."""

    def __init__(self, store: TicketStore, *, early_data: bool) -> None:
        self._store = store
        self._early_data = early_data
        self.key: str | None = None

    def take(self, key: str) -> tls.SessionTicket | None:
        """A stored ticket for ``key`` to resume with; later tickets are kept under it."""
        self.key = key
        try:
            stored = self._store.take(key)
        except Exception:  # the application's store: a failure costs only the ticket
            _log.exception("the ticket store failed to give a session ticket")
            return None
        ticket = decode(stored) if isinstance(stored, bytes) else None
        if ticket is None or not ticket.is_valid or not _parameters_parse(ticket):
            return None
        if not self._early_data or ticket.max_early_data_size != MAX_EARLY_DATA:
            ticket.max_early_data_size = None  # aioquic sends 0-RTT whenever a ticket allows
        return ticket

    def received(self, ticket: tls.SessionTicket) -> None:
        """aioquic's session ticket handler: keep the server's new ticket."""
        if self.key is None:
            return
        try:
            self._store.put(self.key, encode(ticket))
        except Exception:  # the application's store: losing a ticket only costs a handshake
            _log.exception("the ticket store failed to keep a session ticket")


class ServerTickets:
    """A server connection's tickets: sealed on issue, opened on resumption."""

    def __init__(self, keys: TicketKeys, *, early_data: bool) -> None:
        self._keys = keys
        self._early_data = early_data
        self._issued: tls.SessionTicket | None = None
        self._allow_early = False  # the resumed ticket allows 0-RTT, and so do we

    def issued(self, ticket: tls.SessionTicket) -> None:
        """aioquic's session ticket handler: remember the state to seal."""
        self._issued = ticket

    def fetch(self, identity: bytes) -> tls.SessionTicket | None:
        """aioquic's session ticket fetcher: the state sealed in ``identity``, if ours."""
        ticket = decode(self._keys.open(identity) or b"")
        if ticket is None:
            return None
        self._allow_early = self._early_data and ticket.max_early_data_size is not None
        ticket.ticket = identity
        return ticket

    def install(self, context: tls.Context) -> None:
        """Make ``context`` issue sealed tickets instead of aioquic's random ids, and
        refuse 0-RTT it should not take."""
        original: Callable[[Any, Any], None] = context._server_handle_finished
        set_key = context.update_traffic_key_cb

        def update_traffic_key(direction: Any, epoch: Any, suite: Any, secret: bytes) -> None:
            # aioquic takes 0-RTT whenever a resumed ClientHello offers it; refusing means
            # not installing its key, and saying so in the EncryptedExtensions written
            # next. The client then sends those bytes again, after the handshake.
            if epoch == tls.Epoch.ZERO_RTT and not self._allow_early:
                context.early_data_accepted = False
                return
            set_key(direction, epoch, suite, secret)

        def handle_finished(input_buf: Any, output_buf: Any) -> None:
            start = output_buf.tell()
            original(input_buf, output_buf)
            message, state = context._new_session_ticket, self._issued
            if message is None or state is None:
                return
            if not self._early_data:
                message.max_early_data_size = None
            state.max_early_data_size = message.max_early_data_size
            message.ticket = self._keys.seal(encode(state, identity=False))
            # Only the NewSessionTicket was written since ``start``: write it again.
            output_buf.seek(start)
            tls.push_new_session_ticket(output_buf, message)
            self._issued = None

        context.update_traffic_key_cb = update_traffic_key
        context._server_handle_finished = handle_finished  # type: ignore[method-assign]

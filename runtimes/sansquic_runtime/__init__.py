"""The runtime layer, written once, that every sansquic runtime is built on.

A runtime supplies the primitives of :class:`AsyncBackend` (or
:class:`SyncBackend` for blocking threads): a clock, parking and waking tasks
by key, waiting for a socket to be readable, task groups. Everything else --
the I/O loop, Stream, Connection, Server, the rules for send pieces, receive
sizes, handler failure and close waits -- is here, once, so runtimes cannot
disagree. The blocking twin (``_sync.py``) is generated from the async
original (``_async.py``) by ``scripts/unasync.py``.
"""

from ._async import Connection, Server, Stream, open_connection, open_server
from ._backend import AsyncBackend, AsyncTaskGroup, SyncBackend, SyncTaskGroup
from ._connect import Connect, Connector, serve_until_closed
from ._messaging_async import (
    MessageConnection,
    MessageServer,
    MessageStream,
    Messenger,
    Peer,
    Spawner,
)
from ._udp import UdpSocket, client_bind, first_address
from ._wt_async import WebTransportSession, WebTransportStream, open_session, webtransport_handler

__all__ = [
    "AsyncBackend",
    "AsyncTaskGroup",
    "Connect",
    "Connector",
    "Connection",
    "MessageConnection",
    "MessageServer",
    "MessageStream",
    "Messenger",
    "Peer",
    "Server",
    "Spawner",
    "Stream",
    "SyncBackend",
    "SyncTaskGroup",
    "UdpSocket",
    "WebTransportSession",
    "WebTransportStream",
    "client_bind",
    "first_address",
    "open_connection",
    "open_server",
    "open_session",
    "serve_until_closed",
    "webtransport_handler",
]

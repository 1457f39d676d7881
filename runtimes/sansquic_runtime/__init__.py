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
from ._backend import NO_LOCK, AsyncBackend, AsyncTaskGroup, SyncBackend, SyncTaskGroup
from ._connect import (
    AnyConnector,
    Connect,
    Connector,
    WebSocketConnector,
    serve_until_closed,
    serve_websocket_until_closed,
)
from ._messaging_async import (
    MessageConnection,
    MessageServer,
    MessageStream,
    Messenger,
    Peer,
    Spawner,
)
from ._ready import Readiness, asyncio_others_ready, trio_runnable
from ._udp import UdpSocket, client_bind, first_address
from ._ws_async import (
    ConnectionShape,
    StreamShape,
    WebSocketConnection,
    WebSocketServer,
    WebSocketStream,
    connect_any,
    open_websocket,
    open_websocket_server,
)
from ._wt_async import (
    WebTransportHandler,
    WebTransportSession,
    WebTransportStream,
    open_session,
    webtransport_handler,
)

__all__ = [
    "NO_LOCK",
    "AnyConnector",
    "AsyncBackend",
    "AsyncTaskGroup",
    "Connect",
    "Connector",
    "Connection",
    "ConnectionShape",
    "MessageConnection",
    "MessageServer",
    "MessageStream",
    "Messenger",
    "Peer",
    "Readiness",
    "Server",
    "Spawner",
    "Stream",
    "StreamShape",
    "SyncBackend",
    "SyncTaskGroup",
    "UdpSocket",
    "WebSocketConnection",
    "WebSocketConnector",
    "WebSocketServer",
    "WebSocketStream",
    "WebTransportHandler",
    "WebTransportSession",
    "WebTransportStream",
    "asyncio_others_ready",
    "client_bind",
    "connect_any",
    "first_address",
    "open_connection",
    "open_server",
    "open_session",
    "serve_until_closed",
    "trio_runnable",
    "webtransport_handler",
    "open_websocket",
    "open_websocket_server",
    "serve_websocket_until_closed",
]

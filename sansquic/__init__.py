"""sansquic: QUIC multi-stream transport as a pure protocol core.

Everything public is re-exported here; the private modules behind it may
change at any time. Start with :class:`Connection` and :class:`Config`; test
your own code on the simulated network in :mod:`sansquic.testing`.
"""

from . import messaging as messaging
from . import qlog as qlog
from . import ratelimit as ratelimit
from . import tokens as tokens
from ._auth import (
    Authenticator,
    AuthFormatError,
    AuthMethod,
    AuthPolicy,
    AuthRejection,
    AuthRequest,
    Identity,
)
from ._certs import CertificatePair, issue_dev_certificate, make_dev_certificate
from ._codes import CloseCode, ClosedBy
from ._config import Config
from ._connection import Connection, ConnectionState, Role
from ._dispatch import Dispatcher
from ._endpoint import Endpoint, EndpointStats
from ._engine import Address
from ._errors import (
    BusyError,
    ConfigError,
    ConnectionClosed,
    IdleTimeoutError,
    IncompleteRead,
    LocalProtocolError,
    PeerClosedError,
    PeerUnreachableError,
    ReadLimitExceeded,
    RemoteProtocolError,
    SansQuicError,
    SendBufferFull,
    SessionBlocked,
    StatelessResetError,
    StreamResetError,
    StreamStoppedError,
)
from ._events import (
    Authenticated,
    AuthRejected,
    AuthRequested,
    ConnectionTerminated,
    DatagramReceived,
    Event,
    HandshakeCompleted,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamsAvailable,
    StreamStopped,
    StreamWritable,
)
from ._h3 import H3Connection, H3Transport
from ._h3events import (
    H3GoAway,
    H3ProtocolFailed,
    WebTransportDatagram,
    WebTransportSessionClosed,
    WebTransportSessionCredit,
    WebTransportSessionDraining,
    WebTransportSessionReady,
    WebTransportSessionRefused,
    WebTransportStreamData,
    WebTransportStreamOpened,
    WebTransportStreamReset,
    WebTransportStreamStopped,
)
from ._h3wire import H3FormatError
from ._scheduler import Priority
from ._state import RecvState, SendState
from ._stats import ConnectionStats
from ._tickets import MemoryTicketStore, TicketKeys, TicketStore
from ._wtflow import SessionLimits
from .qlog import QlogDirectory
from .ratelimit import RateLimits

__version__ = "0.1.0.dev0"

__all__ = [
    "Address",
    "BusyError",
    "IncompleteRead",
    "ReadLimitExceeded",
    "AuthFormatError",
    "AuthMethod",
    "AuthPolicy",
    "AuthRejected",
    "AuthRejection",
    "AuthRequest",
    "AuthRequested",
    "Authenticated",
    "Authenticator",
    "CertificatePair",
    "CloseCode",
    "ClosedBy",
    "Config",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "ConnectionStats",
    "ConnectionTerminated",
    "DatagramReceived",
    "Dispatcher",
    "Endpoint",
    "EndpointStats",
    "Event",
    "HandshakeCompleted",
    "Identity",
    "IdleTimeoutError",
    "LocalProtocolError",
    "MemoryTicketStore",
    "PeerClosedError",
    "PeerUnreachableError",
    "Priority",
    "QlogDirectory",
    "RateLimits",
    "RecvState",
    "RemoteProtocolError",
    "Role",
    "SansQuicError",
    "SendBufferFull",
    "SessionBlocked",
    "SessionLimits",
    "SendState",
    "StatelessResetError",
    "StreamEnded",
    "StreamOpened",
    "StreamReadable",
    "StreamReset",
    "StreamStopped",
    "StreamResetError",
    "StreamStoppedError",
    "StreamWritable",
    "StreamsAvailable",
    "TicketKeys",
    "TicketStore",
    "H3Connection",
    "H3FormatError",
    "H3GoAway",
    "H3ProtocolFailed",
    "H3Transport",
    "WebTransportDatagram",
    "WebTransportSessionClosed",
    "WebTransportSessionCredit",
    "WebTransportSessionDraining",
    "WebTransportSessionReady",
    "WebTransportSessionRefused",
    "WebTransportStreamData",
    "WebTransportStreamOpened",
    "WebTransportStreamReset",
    "WebTransportStreamStopped",
    "__version__",
    "issue_dev_certificate",
    "make_dev_certificate",
]

# Public names report the public module, so reprs and docs never show private paths.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("sansquic._") and isinstance(_obj, type):
        _obj.__module__ = "sansquic"
del _name, _obj

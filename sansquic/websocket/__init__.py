"""The WebSocket fallback's pure parts: stream framing, the mux, handshake auth, the race.

Everything here is sans-IO, like the rest of the core: the runtimes
(``sansquic_runtime``) drive it over TCP, TLS and wsproto (docs/websocket.md).
"""

from ._admission import REFUSED_CODE, Admission, AdmissionStats, Ticket, Verdict
from ._frames import Frame, FrameError, FrameKind, encode_frame, parse_frame
from ._handshake import (
    SUBPROTOCOL,
    authenticate_handshake,
    handshake_headers,
    rejection_from_headers,
    rejection_headers,
)
from ._mux import INITIAL_WINDOW, MAX_FRAME_DATA, Mux
from ._race import Race, Transport

__all__ = [
    "INITIAL_WINDOW",
    "MAX_FRAME_DATA",
    "REFUSED_CODE",
    "SUBPROTOCOL",
    "Admission",
    "AdmissionStats",
    "Frame",
    "FrameError",
    "FrameKind",
    "Mux",
    "Race",
    "Ticket",
    "Transport",
    "Verdict",
    "authenticate_handshake",
    "encode_frame",
    "handshake_headers",
    "parse_frame",
    "rejection_from_headers",
    "rejection_headers",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("sansquic.websocket._"):
        _obj.__module__ = "sansquic.websocket"  # reprs and docs show the public module

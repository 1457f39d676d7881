"""``H3Connection``: sans-IO HTTP/3 with WebTransport sessions over a QUIC connection.

It speaks the part of HTTP/3 that WebTransport needs (RFC 9114 control
streams and SETTINGS, HEADERS/DATA frames, extended CONNECT from RFC 9220,
HTTP datagrams and capsules from RFC 9297, WebTransport streams from
draft-ietf-webtrans-http3). QPACK is static-table only (pylsqpack with no
dynamic table), so no stream is ever blocked. docs/webtransport.md has the
guide.

Feed it the core connection's events (``handle_event``) or, from a runtime,
raw stream bytes (``receive_stream_data``); it returns events and sends its
own bytes through the transport, which a :class:`~sansquic.Connection` is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import pylsqpack

from . import _h3wire as w
from ._auth import Authenticator, AuthMethod, AuthRejection, AuthRequest, Identity
from ._engine import Address
from ._errors import LocalProtocolError, SansQuicError, SessionBlocked
from ._events import (
    DatagramReceived,
    Event,
    HandshakeCompleted,
    StreamEnded,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
)
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
from ._h3state import (
    H3Transport,
    _check_fields,
    _DoneSet,
    _is_bidi,
    _Kind,
    _Session,
    _Stream,
    _token,
    _TooManyPending,
    _without_token,
    _wt_code,
)
from ._scheduler import Priority
from ._wtflow import FlowViolation, SessionFlow, SessionLimits, flow_offered

__all__ = ["H3Connection", "H3Transport"]

#: Streams (and their bytes) held for a session whose CONNECT has not arrived yet.
HELD_STREAMS = 16
HELD_BYTES = 64 * 1024
#: Concurrent sessions a server accepts on one connection.
MAX_SESSIONS = 16


class H3Connection:
    """HTTP/3 for WebTransport over one QUIC connection (negotiate ALPN ``"h3"``).

    ``client``: which side this is. A server checks each CONNECT request with
    ``authenticator`` (a bearer token from an ``Authorization`` header or the
    ``token_query`` query parameter) before anything of the session reaches the
    application; a refusal is answered 401 (no token) or 403. Without an
    authenticator every session is accepted, as subject ``"anonymous"``.
    Do not set ``Config.auth`` / ``auth_request`` on an HTTP/3 connection: its
    stream 0 is the first request, not the sansquic auth handshake.

    ``session_limits`` is what each session may take from this side; when the
    peer's SETTINGS offer flow control too, both sides' limits are enforced
    (draft-ietf-webtrans-http3 5): a peer over them loses the session with
    WT_FLOW_CONTROL_ERROR, and this side's opens and sends wait for credit.
    """

    def __init__(
        self,
        transport: H3Transport,
        *,
        client: bool,
        authenticator: Authenticator | None = None,
        address: Address = ("", 0),
        token_query: str = "token",
        session_limits: SessionLimits | None = None,
    ) -> None:
        config = getattr(transport, "config", None)
        if config is not None and (config.auth is not None or config.auth_request is not None):
            raise LocalProtocolError(
                "HTTP/3 uses stream 0 for requests: use the H3Connection's authenticator, "
                "not Config.auth / auth_request"
            )
        self._t = transport
        self._client = client
        self._auth = authenticator
        self._address = address
        self._token_query = token_query
        self._streams: dict[int, _Stream] = {}
        self._sessions: dict[int, _Session] = {}
        self._held_bytes = 0
        self._control: int | None = None
        self._peer_control: int | None = None
        #: The peer's SETTINGS, once its control stream delivered them.
        self.peer_settings: dict[int, int] | None = None
        self._encoder = pylsqpack.Encoder()
        self._encoder.apply_settings(max_table_capacity=0, blocked_streams=0)
        self._decoder = pylsqpack.Decoder(0, 0)
        # (Client) CONNECT requests held until the server's SETTINGS arrive.
        self._waiting: list[tuple[int, bytes]] = []
        # Peer streams this layer is done with (late bytes on them are dropped, and a
        # session id among them is refused or over).
        self._done = _DoneSet()
        self._failed = False
        self._out: list[Event] = []
        self._limits = session_limits if session_limits is not None else SessionLimits()
        # GOAWAY (RFC 9114 5.2): the ids sent and received, and the highest request
        # stream id the peer opened (what a server's GOAWAY must let through).
        self._goaway_sent: int | None = None
        self._goaway_received: int | None = None
        self._max_peer_bidi = -4

    # -- commands ------------------------------------------------------------------

    def initiate(self) -> None:
        """Open the control stream and send SETTINGS (done at ``HandshakeCompleted``)."""
        if self._control is not None:
            return
        self._control = self._t.open_stream(bidirectional=False)
        settings = {
            w.SETTINGS_QPACK_MAX_TABLE_CAPACITY: 0,
            w.SETTINGS_QPACK_BLOCKED_STREAMS: 0,
            w.SETTINGS_ENABLE_CONNECT_PROTOCOL: 1,
            w.SETTINGS_H3_DATAGRAM: 1,
            w.SETTINGS_ENABLE_WEBTRANSPORT: 1,
            w.SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT06: MAX_SESSIONS,
            w.SETTINGS_WT_MAX_SESSIONS: MAX_SESSIONS,
            **self._limits.settings(),
        }
        # Never finished: closing a control stream is a connection error (RFC 9114 6.2.1).
        self._t.send(self._control, w.encode_varint(w.CONTROL_STREAM) + w.encode_settings(settings))

    def connect(
        self, authority: str, path: str = "/", *, headers: Sequence[tuple[str, str]] = ()
    ) -> int:
        """(Client) Ask for a WebTransport session at ``path``; returns its session id.

        Next: wait for :class:`WebTransportSessionReady` (or ``...Refused``). Put
        the token in an ``("authorization", "Bearer ...")`` header or the query.
        """
        if not self._client:
            raise LocalProtocolError("only a client opens WebTransport sessions")
        if not path.startswith("/"):
            raise LocalProtocolError(f"a path starts with '/', not {path!r}")
        _check_fields([(":authority", authority), (":path", path), *headers])
        self._check_live()
        if self._goaway_received is not None:
            raise LocalProtocolError("the server sent GOAWAY: open sessions on a new connection")
        self.initiate()
        stream_id = self._t.open_stream(bidirectional=True)
        fields = [
            (":method", "CONNECT"),
            (":protocol", "webtransport"),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
            ("sec-webtransport-http3-draft02", "1"),
            *headers,
        ]
        session = self._sessions[stream_id] = _Session(stream_id, path)
        stream = self._streams[stream_id] = _Stream(stream_id, _Kind.REQUEST)
        stream.session = session.id
        # Extended CONNECT waits for the server's SETTINGS to allow it (RFC 9220 3).
        self._waiting.append((stream_id, self._headers_frame(stream_id, fields)))
        if self.peer_settings is not None:
            self._send_waiting()
        return stream_id

    def _send_waiting(self) -> None:
        settings = self.peer_settings or {}
        offered = settings.get(w.SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1 and (
            settings.get(w.SETTINGS_ENABLE_WEBTRANSPORT) == 1
            or settings.get(w.SETTINGS_WT_MAX_SESSIONS, 0) > 0
            or settings.get(w.SETTINGS_WEBTRANSPORT_MAX_SESSIONS_DRAFT06, 0) > 0
        )
        waiting, self._waiting = self._waiting, []
        for stream_id, request in waiting:
            if offered:
                self._t.send(stream_id, request)
                continue
            # Status 0: no HTTP answer, the server's SETTINGS do not offer WebTransport.
            self._quietly(self._t.reset, stream_id, w.H3_REQUEST_CANCELLED)
            self._sessions.pop(stream_id, None)
            self._drop(stream_id)
            self._out.append(WebTransportSessionRefused(session_id=stream_id, status=0))

    def open_stream(
        self, session_id: int, bidirectional: bool = True, priority: int = Priority.NORMAL
    ) -> int:
        """Open a stream in an open session, sent at ``priority`` (see
        :class:`~sansquic.Priority`); returns its id. Next: :meth:`send`."""
        session = self._open_session(session_id)
        flow = session.flow
        if flow is not None and not flow.can_open(bidirectional):
            self._capsule(session_id, flow.streams_blocked(bidirectional))
            limit = flow.send_max_streams[0 if bidirectional else 1]
            raise SessionBlocked(session_id, limit, bidirectional=bidirectional)
        stream_id = self._t.open_stream(bidirectional, priority)
        if flow is not None:
            flow.open(bidirectional)
        if bidirectional:
            header = w.encode_varint(w.WT_BIDI_SIGNAL) + w.encode_varint(session_id)
        else:
            header = w.encode_varint(w.WT_UNI_STREAM) + w.encode_varint(session_id)
        self._t.send(stream_id, header)
        stream = self._streams[stream_id] = _Stream(stream_id, _Kind.WT)
        stream.session = session_id
        session.streams.add(stream_id)
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> int:
        """Send on a session stream (``end`` finishes it); returns how many bytes of
        ``data`` were taken: all of them, unless session flow control is on and the
        peer's data limit allows less. Then ``end`` waits for the rest too: send it
        after a :class:`WebTransportSessionCredit`.
        """
        stream = self._session_stream(stream_id)
        granted = self.reserve(stream_id, len(data))
        if granted < len(data):
            data, end = data[:granted], False
        try:
            self._t.send(stream_id, data, end=end)
        except BaseException:
            self._refund(stream, granted)
            raise
        if end:
            self._direction_done(stream, send=True)
        return granted

    def reserve(self, stream_id: int, size: int) -> int:
        """Take up to ``size`` bytes of the session's send credit for a stream this
        side sends on itself (a runtime); returns how many it may send now (all of
        them without flow control, or for a stream the layer is done with: the
        transport decides then). Less than asked also tells the peer it is blocked."""
        if size < 0:
            raise LocalProtocolError("a size is not negative")
        self._check_live()
        stream = self._streams.get(stream_id)
        if stream is None or stream.kind is not _Kind.WT:
            return size
        session = self._sessions.get(stream.session)
        if session is None or session.flow is None:
            return size
        granted, capsule = session.flow.spend(size)
        self._capsule(session.id, capsule)
        return granted

    def send_credit(self, session_id: int) -> int | None:
        """Stream bytes the peer lets this side send in the session now (None: no limit)."""
        flow = self._open_session(session_id).flow
        return None if flow is None else flow.credit

    def can_open_stream(self, session_id: int, bidirectional: bool = True) -> bool:
        """Whether :meth:`open_stream` would open a stream now rather than raise
        :class:`~sansquic.SessionBlocked`."""
        flow = self._open_session(session_id).flow
        return flow is None or flow.can_open(bidirectional)

    def stream_data_read(self, stream_id: int, size: int) -> None:
        """(Runtimes) The application read ``size`` bytes of a peer's session stream
        straight from the transport: they count against the session's data limit,
        and its credit returns; then call :meth:`events`."""
        if size < 0:
            raise LocalProtocolError("a size is not negative")
        stream = self._streams.get(stream_id)
        if stream is not None and stream.kind is _Kind.WT and not self._failed:
            self._took(stream.session, size)

    def goaway(self) -> int:
        """Graceful shutdown (RFC 9114 5.2): send GOAWAY, so the peer opens no more
        sessions here. A server's names the first request it will not process:
        later CONNECT requests are rejected (H3_REQUEST_REJECTED); the sessions
        already open go on until they close. Returns the id sent."""
        self._check_live()
        self.initiate()
        assert self._control is not None
        ident = 0 if self._client else self._max_peer_bidi + 4
        if self._goaway_sent is not None:
            ident = min(ident, self._goaway_sent)  # ids never increase
        self._goaway_sent = ident
        self._t.send(self._control, w.encode_goaway(ident))
        return ident

    def reset(self, stream_id: int, error_code: int = 0) -> None:
        """Abandon the sending side of a session stream with a WebTransport error code
        (32 bits; sent mapped into the HTTP/3 range the draft reserves)."""
        stream = self._session_stream(stream_id)
        self._t.reset(stream_id, _wt_code(error_code))
        self._direction_done(stream, send=True)

    def stop(self, stream_id: int, error_code: int = 0) -> None:
        """Ask the peer to stop sending on a session stream (a 32-bit WebTransport code)."""
        stream = self._session_stream(stream_id)
        self._t.stop(stream_id, _wt_code(error_code))
        self._direction_done(stream, send=False)

    def send_datagram(self, session_id: int, data: bytes) -> None:
        """Send an HTTP datagram in an open session."""
        self._open_session(session_id)
        self._t.send_datagram(w.encode_datagram(session_id, bytes(data)))

    def close_session(self, session_id: int, code: int = 0, reason: str = "") -> None:
        """Close a session: CLOSE_WEBTRANSPORT_SESSION, then FIN on its CONNECT stream.

        Its streams are reset; a :class:`WebTransportSessionClosed` follows.
        """
        self._open_session(session_id)
        capsule = w.encode_close_session(code, reason)  # validates before any change
        self._t.send(session_id, w.encode_frame(w.DATA, capsule), end=True)
        self._end_session(session_id, code, reason, stop_connect=True)

    def drain_session(self, session_id: int) -> None:
        """Tell the peer to wind the session down (DRAIN_WEBTRANSPORT_SESSION)."""
        self._open_session(session_id)
        self._capsule(session_id, w.encode_capsule(w.DRAIN_WEBTRANSPORT_SESSION, b""))

    @staticmethod
    def webtransport_code(h3_code: int) -> int:
        """The WebTransport error code a peer's stream reset / stop code carries (0 if none)."""
        return w.h3_error_to_wt(h3_code) or 0

    def session_of(self, stream_id: int) -> int | None:
        """The session a WebTransport stream belongs to, or None."""
        stream = self._streams.get(stream_id)
        return stream.session if stream is not None and stream.kind is _Kind.WT else None

    # -- input ---------------------------------------------------------------------

    def handle_event(self, event: Event, now: float) -> list[Event]:
        """Take one event of the core connection; return what it means here.

        Stream events become WebTransport events (reading the streams dry);
        others (``HandshakeCompleted``, ``ConnectionTerminated``...) pass through.
        """
        if isinstance(event, StreamReadable | StreamEnded):
            sid = event.stream_id
            data = bytearray()
            for _ in range(1 << 16):  # bounded: each read drains what is buffered
                chunk = self._t.read(sid)
                if not chunk:
                    break
                data += chunk
            if data or isinstance(event, StreamEnded):
                self.receive_stream_data(sid, bytes(data), isinstance(event, StreamEnded), now)
        elif isinstance(event, StreamOpened):
            pass  # the stream's id says its kind; its first bytes say the rest
        elif isinstance(event, StreamReset):
            self.stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, StreamStopped):
            stream = self._streams.get(event.stream_id)
            if stream is not None and stream.kind is _Kind.WT and not stream.held:
                self._direction_done(stream, send=True)  # the core reset our side
                code = self.webtransport_code(event.error_code)
                self._out.append(
                    WebTransportStreamStopped(stream_id=event.stream_id, error_code=code)
                )
        elif isinstance(event, DatagramReceived):
            self.receive_datagram(event.data)
        else:
            if isinstance(event, HandshakeCompleted) and not self._failed:
                self.initiate()
            self._out.append(event)
        return self.events()

    def events(self) -> list[Event]:
        """Events produced since the last call (the input methods fill it)."""
        out, self._out = self._out, []
        return out

    def receive_stream_data(self, stream_id: int, data: bytes, end: bool, now: float) -> None:
        """Bytes (and the FIN) the peer sent on ``stream_id``; then call :meth:`events`."""
        if self._failed:
            return
        try:
            self._stream_data(stream_id, data, end, now)
        except w.H3FormatError as exc:
            self._fail(w.H3_FRAME_ERROR, str(exc))
        except (pylsqpack.DecompressionFailed, pylsqpack.StreamBlocked) as exc:
            self._fail(0x200, f"QPACK: {exc}")

    def stream_reset(self, stream_id: int, error_code: int) -> None:
        """The peer reset ``stream_id``."""
        stream = self._streams.get(stream_id)
        if stream is None or self._failed:
            return
        if stream.kind is _Kind.CONTROL:
            self._fail(w.H3_CLOSED_CRITICAL_STREAM, "the peer reset its control stream")
        elif stream.held:
            # No session yet, so nothing to tell the app: drop it and free its hold.
            self._unhold(stream)
            self._drop(stream_id)
        elif stream.kind is _Kind.WT:
            self._direction_done(stream, send=False)
            code = self.webtransport_code(error_code)
            self._out.append(WebTransportStreamReset(stream_id=stream_id, error_code=code))
        elif stream_id in self._sessions:
            self._end_session(stream_id, 0, "", stop_connect=False)
        else:
            self._forget_stream(stream)

    def receive_datagram(self, data: bytes) -> None:
        """An HTTP datagram from the peer: delivered to its open session, else dropped."""
        if self._failed:
            return
        try:
            session_id, payload = w.parse_datagram(data)
        except w.H3FormatError:
            return  # unreliable by nature: a malformed one is dropped, not fatal
        session = self._sessions.get(session_id)
        if session is not None and session.open:
            self._out.append(WebTransportDatagram(session_id=session_id, data=payload))

    # -- internals -----------------------------------------------------------------

    def _stream_data(self, sid: int, data: bytes, end: bool, now: float) -> None:
        stream = self._streams.get(sid) or self._new_peer_stream(sid)
        if stream is None:
            return
        kind = stream.kind
        if kind is _Kind.UNI_TYPE:
            got = stream.varint.feed(data)
            if got is None:
                self._early_end(stream, end)
                return
            stream_type, data = got
            if stream_type == w.CONTROL_STREAM:
                if self._peer_control is not None:
                    self._fail(w.H3_STREAM_CREATION_ERROR, "a second control stream")
                    return
                self._peer_control = sid
                stream.kind = _Kind.CONTROL
            elif stream_type == w.WT_UNI_STREAM:
                stream.kind = _Kind.WT_HEADER
            else:
                stream.kind = _Kind.IGNORED
            self._stream_data(sid, data, end, now)
        elif kind is _Kind.CONTROL:
            for frame_type, payload in stream.frames.feed(data):
                self._control_frame(frame_type, payload)
            if end:
                self._fail(w.H3_CLOSED_CRITICAL_STREAM, "the peer closed its control stream")
        elif kind is _Kind.IGNORED:
            if end:
                self._forget_stream(stream)
        elif kind is _Kind.WT_HEADER:
            got = stream.varint.feed(data)
            if got is None:
                self._early_end(stream, end)
                return
            self._attach(stream, got[0], got[1], end)
        elif kind is _Kind.WT and stream.held:
            self._hold(stream, data, end)
        elif kind is _Kind.WT:
            if data and not self._took(stream.session, len(data)):
                return  # over the session's data limit: the session is gone
            self._out.append(
                WebTransportStreamData(
                    session_id=stream.session, stream_id=sid, data=data, ended=end
                )
            )
            if end:
                self._direction_done(stream, send=False)
        elif kind is _Kind.REQUEST:
            self._request_data(stream, data, end, now)
        elif kind is _Kind.SESSION:
            self._session_data(stream, data, end)

    def _new_peer_stream(self, sid: int) -> _Stream | None:
        """A record for a stream the peer just opened; None for one already done with."""
        if not self._peer_opened(sid) or sid in self._done:
            return None  # late bytes on a stream this layer has finished with
        kind = _Kind.REQUEST if _is_bidi(sid) else _Kind.UNI_TYPE
        if kind is _Kind.REQUEST:
            self._max_peer_bidi = max(self._max_peer_bidi, sid)
        stream = self._streams[sid] = _Stream(sid, kind)
        return stream

    def _peer_opened(self, sid: int) -> bool:
        return bool(sid & 1) == self._client  # bit 0 set: the server opened it

    def _early_end(self, stream: _Stream, end: bool) -> None:
        if end:
            self._forget_stream(stream)

    def _control_frame(self, frame_type: int, payload: bytes) -> None:
        if self.peer_settings is None:
            if frame_type != w.SETTINGS:
                self._fail(w.H3_MISSING_SETTINGS, "the control stream must start with SETTINGS")
                return
            try:
                self.peer_settings = w.parse_settings(payload)
            except w.H3FormatError as exc:
                self._fail(w.H3_SETTINGS_ERROR, str(exc))
                return
            if self._client:
                self._send_waiting()
            for session in self._sessions.values():  # sessions that came before SETTINGS
                if session.open and session.flow is None:
                    session.flow = self._new_flow()
        elif frame_type == w.GOAWAY:
            self._peer_goaway(payload)
        elif frame_type in (w.SETTINGS, w.DATA, w.HEADERS):
            self._fail(w.H3_FRAME_UNEXPECTED, f"frame {frame_type:#x} on the control stream")

    def _peer_goaway(self, payload: bytes) -> None:
        ident = w.parse_goaway(payload)  # a malformed one is a frame error
        if self._client and ident % 4:
            self._fail(w.H3_ID_ERROR, f"GOAWAY names {ident}, not a request stream id")
            return
        if self._goaway_received is not None and ident > self._goaway_received:
            self._fail(w.H3_ID_ERROR, f"GOAWAY went up from {self._goaway_received} to {ident}")
            return
        if ident == self._goaway_received:
            return  # a repeat says nothing new
        self._goaway_received = ident
        self._out.append(H3GoAway(identifier=ident))
        if self._client:
            # Requests at or above the id were not processed: they will get no answer.
            unsent = [sid for sid, _ in self._waiting if sid >= ident]
            self._waiting = [req for req in self._waiting if req[0] < ident]
            for stream_id in unsent:
                self._quietly(self._t.reset, stream_id, w.H3_REQUEST_CANCELLED)
                self._unanswered(stream_id)
            for session in [s for s in self._sessions.values() if not s.open and s.id >= ident]:
                self._quietly(self._t.reset, session.id, w.H3_REQUEST_CANCELLED)
                self._quietly(self._t.stop, session.id, w.H3_REQUEST_CANCELLED)
                self._unanswered(session.id)
        for session in self._sessions.values():
            self._draining(session)

    def _unanswered(self, stream_id: int) -> None:
        self._sessions.pop(stream_id, None)
        self._drop(stream_id)
        self._out.append(WebTransportSessionRefused(session_id=stream_id, status=0))

    def _draining(self, session: _Session) -> None:
        if session.open and not session.draining:
            session.draining = True
            self._out.append(WebTransportSessionDraining(session_id=session.id))

    def _request_data(self, stream: _Stream, data: bytes, end: bool, now: float) -> None:
        frames = stream.frames.feed(data)
        for i, (frame_type, payload) in enumerate(frames):
            if frame_type == w.WT_BIDI_SIGNAL:
                stream.kind = _Kind.WT_HEADER
                self._stream_data(stream.id, stream.frames.rest or b"", end, now)
                return
            if frame_type == w.DATA:
                self._fail(w.H3_FRAME_UNEXPECTED, "DATA before HEADERS")
                return
            if frame_type != w.HEADERS:
                continue  # unknown frame types are ignored (RFC 9114 9)
            if self._client and self._peer_opened(stream.id):
                self._fail(w.H3_STREAM_CREATION_ERROR, "a server may not open a request stream")
                return
            self._headers(stream, payload, now)
            if stream.kind is _Kind.SESSION:
                # The frames after the HEADERS are DATA frames carrying capsules.
                self._session_frames(stream, frames[i + 1 :], end)
                return
            if stream.id not in self._streams or self._failed:
                return  # answered and forgotten (a refused or non-CONNECT request)
        if end and stream.kind is _Kind.REQUEST:
            if self._client and stream.id in self._sessions:
                self._end_session(stream.id, 0, "", stop_connect=False)
            else:
                self._forget_stream(stream)

    def _headers(self, stream: _Stream, block: bytes, now: float) -> None:
        _, raw = self._decoder.feed_header(stream.id, block)
        fields: dict[str, str] = {}
        for name, value in raw:
            fields[name.decode("latin-1").lower()] = value.decode("latin-1")
        if self._client:
            self._response(stream, fields)
        else:
            self._request(stream, fields, now)

    def _response(self, stream: _Stream, fields: dict[str, str]) -> None:
        session = self._sessions.get(stream.id)
        if session is None:
            return
        try:
            status = int(fields.get(":status", ""))
        except ValueError:
            self._fail(w.H3_MESSAGE_ERROR, "a response without a valid :status")
            return
        if 200 <= status < 300:
            session.open = True
            session.flow = self._new_flow()
            stream.kind = _Kind.SESSION
            regular = {k: v for k, v in fields.items() if not k.startswith(":")}
            self._out.append(
                WebTransportSessionReady(
                    session_id=session.id, path=session.path, identity=None, headers=regular
                )
            )
        elif status >= 200:
            del self._sessions[stream.id]
            self._forget_stream(stream)
            self._out.append(WebTransportSessionRefused(session_id=stream.id, status=status))

    def _request(self, stream: _Stream, fields: dict[str, str], now: float) -> None:
        path = fields.get(":path", "")
        is_wt = fields.get(":method") == "CONNECT" and fields.get(":protocol") == "webtransport"
        if not is_wt or not path.startswith("/"):
            self._answer(stream, 404 if fields.get(":method") != "CONNECT" else 400)
            return
        if self._goaway_sent is not None and stream.id >= self._goaway_sent:
            # After GOAWAY: not processed, so the client may retry it elsewhere.
            self._quietly(self._t.reset, stream.id, w.H3_REQUEST_REJECTED)
            self._quietly(self._t.stop, stream.id, w.H3_REQUEST_REJECTED)
            self._forget_stream(stream)
            return
        if sum(s.open for s in self._sessions.values()) >= MAX_SESSIONS:
            self._answer(stream, 429)
            return
        token = _token(fields, path, self._token_query)
        path = _without_token(path, self._token_query)
        identity: Identity | AuthRejection
        if self._auth is None:
            identity = Identity(subject="anonymous")
        else:
            method = AuthMethod.BEARER if token else AuthMethod.NONE
            meta = {"path": path, "origin": fields.get("origin", "")}
            request = AuthRequest(method=method, credentials=token, metadata=meta)
            identity = self._auth(request, self._address, now)
        if isinstance(identity, AuthRejection):
            self._answer(stream, 403 if token else 401)
            return
        session = self._sessions[stream.id] = _Session(stream.id, path)
        session.open = True
        session.flow = self._new_flow()
        stream.kind = _Kind.SESSION
        stream.session = stream.id
        self._t.send(
            stream.id,
            self._headers_frame(
                stream.id, [(":status", "200"), ("sec-webtransport-http3-draft", "draft02")]
            ),
        )
        regular = {k: v for k, v in fields.items() if not k.startswith(":")}
        regular.pop("authorization", None)  # a secret: the identity says who it was
        self._out.append(
            WebTransportSessionReady(
                session_id=session.id, path=path, identity=identity, headers=regular
            )
        )
        for held in [s for s in self._streams.values() if s.session == stream.id and s.held]:
            self._release(held, session)

    def _answer(self, stream: _Stream, status: int) -> None:
        self._t.send(stream.id, self._headers_frame(stream.id, [(":status", str(status))]), True)
        self._forget_stream(stream)

    def _session_data(self, stream: _Stream, data: bytes, end: bool) -> None:
        self._session_frames(stream, stream.frames.feed(data), end)

    def _session_frames(self, stream: _Stream, frames: list[tuple[int, bytes]], end: bool) -> None:
        session = self._sessions.get(stream.id)
        for frame_type, payload in frames:
            if frame_type != w.DATA or session is None:
                continue  # unknown frames are ignored; HEADERS here would be trailers
            for capsule, value in stream.capsules.feed(payload):
                if capsule == w.CLOSE_WEBTRANSPORT_SESSION:
                    code, reason = w.parse_close_session(value)
                    self._end_session(session.id, code, reason, stop_connect=False)
                    session = None
                    break
                if capsule == w.DRAIN_WEBTRANSPORT_SESSION:
                    self._draining(session)
                elif not self._flow_capsule(session, capsule, value):
                    session = None
                    break
        if end and session is not None:
            self._end_session(session.id, 0, "", stop_connect=False)

    def _attach(self, stream: _Stream, session_id: int, rest: bytes, end: bool) -> None:
        stream.session = session_id
        session = self._sessions.get(session_id)
        if session is not None and session.open:
            if not self._count_peer_stream(session, stream):
                return
            stream.kind = _Kind.WT
            session.streams.add(stream.id)
            self._out.append(
                WebTransportStreamOpened(
                    session_id=session_id, stream_id=stream.id, bidirectional=_is_bidi(stream.id)
                )
            )
            if rest or end:
                self._stream_data(stream.id, rest, end, 0.0)
            return
        # A session id the peer's streams already passed is refused or over; on a
        # client every session is known. Otherwise the CONNECT may still be on its
        # way (streams are not ordered): hold the stream, within bounds.
        known = self._client or session_id in self._done
        # Only a client-initiated bidi stream, not this one, can be a session.
        bogus = session_id & 3 != 0 or session_id == stream.id
        held = sum(1 for s in self._streams.values() if s.held)
        if known or bogus or held >= HELD_STREAMS:
            self._refuse(stream)
            return
        stream.kind = _Kind.WT
        self._hold(stream, rest, end)

    def _hold(self, stream: _Stream, data: bytes, end: bool) -> None:
        if self._held_bytes + len(data) > HELD_BYTES:
            self._refuse(stream)
            return
        stream.held.append((data, end))
        self._held_bytes += len(data)

    def _release(self, stream: _Stream, session: _Session) -> None:
        if session.id not in self._sessions:
            self._refuse(stream)  # an earlier held stream broke the session's limits
            return
        if not self._count_peer_stream(session, stream):
            return
        held, stream.held = stream.held, []
        session.streams.add(stream.id)
        self._out.append(
            WebTransportStreamOpened(
                session_id=session.id, stream_id=stream.id, bidirectional=_is_bidi(stream.id)
            )
        )
        for index, (data, end) in enumerate(held):
            self._held_bytes -= len(data)
            if data and not self._took(session.id, len(data)):
                self._held_bytes -= sum(len(d) for d, _ in held[index + 1 :])
                return  # over the data limit: the session (and this stream) are gone
            if data or end:
                self._out.append(
                    WebTransportStreamData(
                        session_id=session.id, stream_id=stream.id, data=data, ended=end
                    )
                )
            if end:
                self._direction_done(stream, send=False)

    def _refuse_held(self, session_id: int) -> None:
        for stream in [s for s in self._streams.values() if s.session == session_id and s.held]:
            self._refuse(stream)

    def _unhold(self, stream: _Stream) -> None:
        """Give back a held stream's share of the hold budget."""
        self._held_bytes -= sum(len(d) for d, _ in stream.held)
        stream.held = []

    def _refuse(self, stream: _Stream) -> None:
        self._unhold(stream)
        self._t.stop(stream.id, w.WT_BUFFERED_STREAM_REJECTED)
        if _is_bidi(stream.id):
            self._t.reset(stream.id, w.WT_BUFFERED_STREAM_REJECTED)
        self._drop(stream.id)

    def _end_session(
        self,
        session_id: int,
        code: int,
        reason: str,
        *,
        stop_connect: bool,
        violation: int | None = None,
    ) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        for sid in sorted(session.streams):
            stream = self._drop(sid)
            if stream is None:
                continue
            if _is_bidi(sid) or not self._peer_opened(sid):
                self._quietly(self._t.reset, sid)
            if _is_bidi(sid) or self._peer_opened(sid):
                self._quietly(self._t.stop, sid)
        connect = self._drop(session_id)
        if connect is not None and not stop_connect:
            # The peer ended its side: end ours too (a FIN, as the draft asks).
            self._quietly(lambda s, c: self._t.send(s, b"", end=True), session_id)
        if not session.open:
            # (Client) Reset or ended before any answer (as after the server's GOAWAY,
            # with H3_REQUEST_REJECTED): never opened, so refused, with no status.
            self._out.append(WebTransportSessionRefused(session_id=session_id, status=0))
            return
        self._out.append(
            WebTransportSessionClosed(
                session_id=session_id, code=code, reason=reason, violation=violation
            )
        )

    def _quietly(
        self, fn: Callable[[int, int], object], stream_id: int, code: int = w.WT_SESSION_GONE
    ) -> None:
        # Ending a session touches streams that may already be closed either way.
        with contextlib.suppress(SansQuicError):
            fn(stream_id, code)

    def _direction_done(self, stream: _Stream, *, send: bool) -> None:
        """One direction of a session stream is over; forget the stream once both are."""
        if send:
            stream.send_done = True
        else:
            stream.recv_done = True
        local = not self._peer_opened(stream.id)
        sends = _is_bidi(stream.id) or local
        receives = _is_bidi(stream.id) or not local
        if (stream.send_done or not sends) and (stream.recv_done or not receives):
            self._forget_stream(stream)

    def _forget_stream(self, stream: _Stream) -> None:
        if stream.kind is _Kind.REQUEST and not self._client:
            # A request that never became a session (answered 4xx, reset, ended):
            # streams held for it would otherwise fill the hold slots forever.
            self._refuse_held(stream.id)
        session = self._sessions.get(stream.session)
        if session is not None:
            counted = stream.id in session.streams
            session.streams.discard(stream.id)
            if counted and session.flow is not None and self._peer_opened(stream.id):
                # The peer's stream is over: its place returns to the peer.
                self._capsule(session.id, session.flow.peer_stream_done(_is_bidi(stream.id)))
        self._drop(stream.id)

    # -- flow control (draft-ietf-webtrans-http3 5) ---------------------------------

    def _new_flow(self) -> SessionFlow | None:
        """A session's flow control when both sides' SETTINGS asked for it."""
        peer = self.peer_settings
        if peer is None or not flow_offered(peer) or not self._limits.settings():
            return None
        return SessionFlow(self._limits, peer)

    def _capsule(self, session_id: int, capsule: bytes) -> None:
        if capsule:  # on the CONNECT stream, which may be closing: best effort
            with contextlib.suppress(SansQuicError):
                self._t.send(session_id, w.encode_frame(w.DATA, capsule))

    def _count_peer_stream(self, session: _Session, stream: _Stream) -> bool:
        """Count a stream the peer opened in ``session``; False if that broke its limit."""
        if session.flow is None:
            return True
        try:
            session.flow.peer_stream(_is_bidi(stream.id))
        except FlowViolation as exc:
            self._refuse(stream)
            self._flow_error(session.id, str(exc))
            return False
        return True

    def _took(self, session_id: int, size: int) -> bool:
        """Count ``size`` bytes the peer sent in a session; False if that broke its limit."""
        session = self._sessions.get(session_id)
        if session is None or session.flow is None:
            return True
        try:
            self._capsule(session_id, session.flow.peer_data(size))
        except FlowViolation as exc:
            self._flow_error(session_id, str(exc))
            return False
        return True

    def _refund(self, stream: _Stream, size: int) -> None:
        session = self._sessions.get(stream.session)
        if session is not None and session.flow is not None:
            session.flow.refund(size)

    def _flow_capsule(self, session: _Session, capsule: int, value: bytes) -> bool:
        """Apply a flow control capsule; False when it ended the session."""
        if capsule in (w.WT_MAX_STREAM_DATA, w.WT_STREAM_DATA_BLOCKED):
            self._flow_error(session.id, f"capsule {capsule:#x} is HTTP/2's, not for HTTP/3")
            return False
        if capsule not in w.FLOW_CAPSULES:
            return True  # unknown capsules are ignored (RFC 9297 3.2)
        if session.flow is None:
            return True  # flow control is off: the draft says to ignore them
        try:
            raised = session.flow.capsule(capsule, w.parse_flow_capsule(capsule, value))
        except (FlowViolation, w.H3FormatError) as exc:
            self._flow_error(session.id, str(exc))
            return False
        if raised:
            self._out.append(WebTransportSessionCredit(session_id=session.id))
        return True

    def _flow_error(self, session_id: int, reason: str) -> None:
        """End a session whose peer broke its flow control (WT_FLOW_CONTROL_ERROR on
        the CONNECT stream, both ways); the rest of the connection goes on."""
        self._quietly(self._t.reset, session_id, w.WT_FLOW_CONTROL_ERROR)
        self._quietly(self._t.stop, session_id, w.WT_FLOW_CONTROL_ERROR)
        self._end_session(
            session_id, 0, reason, stop_connect=True, violation=w.WT_FLOW_CONTROL_ERROR
        )

    def _drop(self, stream_id: int) -> _Stream | None:
        """Forget a stream's record; a peer stream is remembered as done."""
        if self._peer_opened(stream_id):
            try:
                self._done.add(stream_id)
            except _TooManyPending as exc:
                self._fail(w.H3_EXCESSIVE_LOAD, str(exc))
        return self._streams.pop(stream_id, None)

    def _headers_frame(self, stream_id: int, fields: Sequence[tuple[str, str]]) -> bytes:
        _, block = self._encoder.encode(
            stream_id, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields]
        )
        return w.encode_frame(w.HEADERS, block)

    def _fail(self, code: int, reason: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._out.append(H3ProtocolFailed(error_code=code, reason=reason))
        self._t.close(code, reason)

    def _check_live(self) -> None:
        if self._failed:
            raise LocalProtocolError("the HTTP/3 connection failed and is closing")

    def _open_session(self, session_id: int) -> _Session:
        self._check_live()
        session = self._sessions.get(session_id)
        if session is None or not session.open:
            raise LocalProtocolError(f"no open WebTransport session {session_id}")
        return session

    def _session_stream(self, stream_id: int) -> _Stream:
        self._check_live()
        stream = self._streams.get(stream_id)
        if stream is None or stream.kind is not _Kind.WT or stream.held:
            raise LocalProtocolError(f"stream {stream_id} is not an open WebTransport stream")
        return stream

"""What a passive observer learns from QUIC datagrams: packet kinds, versions, TLS hellos.

Long headers carry the version and the packet kind (Initial, 0-RTT,
Handshake, Retry) in the clear. Initial packets are encrypted with keys
anyone can derive from the client's first destination connection id
(RFC 9001 section 5.2, RFC 9369 section 3.3), so the observer decrypts them
too and reads the ServerHello: the cipher suite and whether the server
accepted a pre-shared key (a resumed session).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["V1", "V2", "Hello", "Observer", "parse_datagram", "varint"]

V1 = 0x00000001
V2 = 0x6B3343CF
_SALTS = {
    V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}
_LABEL = {V1: b"quic ", V2: b"quicv2 "}
# The two type bits of a long header mean different kinds in v1 and v2.
_KINDS = {
    V1: {0: "initial", 1: "0rtt", 2: "handshake", 3: "retry"},
    V2: {1: "initial", 2: "0rtt", 3: "handshake", 0: "retry"},
}
CIPHERS = {
    0x1301: "AES_128_GCM_SHA256",
    0x1302: "AES_256_GCM_SHA384",
    0x1303: "CHACHA20_POLY1305_SHA256",
}
_PRE_SHARED_KEY = 41
# The ServerHello random that marks a HelloRetryRequest (RFC 8446 section 4.1.3).
_HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()
_MAX_KEYS = 64  # candidate Initial keys remembered (a few per connection)


@dataclass(frozen=True)
class Packet:
    """One QUIC packet as seen on the wire."""

    kind: str  # initial, 0rtt, handshake, retry, 1rtt, negotiation, unknown
    version: int | None
    dcid: bytes
    scid: bytes
    raw: bytes  # the whole packet, header included


@dataclass(frozen=True)
class Hello:
    """What the ServerHello of one handshake said."""

    version: int
    cipher: str
    resumed: bool


def varint(data: bytes, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer at ``pos``: (value, position after it)."""
    if pos >= len(data):
        raise ValueError("truncated varint")
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        raise ValueError("truncated varint")
    value = first & 0x3F
    for byte in data[pos + 1 : pos + size]:
        value = (value << 8) | byte
    return value, pos + size


def parse_datagram(data: bytes, short_dcid_length: int = 8) -> list[Packet]:
    """Split a datagram into its coalesced packets; stops quietly at anything malformed."""
    packets: list[Packet] = []
    pos = 0
    while pos < len(data):
        start, first = pos, data[pos]
        if not first & 0x80:
            dcid = data[pos + 1 : pos + 1 + short_dcid_length]
            packets.append(Packet("1rtt", None, dcid, b"", data[pos:]))
            break
        try:
            if pos + 6 > len(data):
                break
            version = int.from_bytes(data[pos + 1 : pos + 5], "big")
            pos += 5
            dcid = data[pos + 1 : pos + 1 + data[pos]]
            pos += 1 + data[pos]
            scid = data[pos + 1 : pos + 1 + data[pos]]
            pos += 1 + data[pos]
            if version == 0:
                packets.append(Packet("negotiation", 0, dcid, scid, data[start:]))
                break
            kind = _KINDS.get(version, {}).get((first >> 4) & 3, "unknown")
            if kind in ("retry", "unknown"):
                packets.append(Packet(kind, version, dcid, scid, data[start:]))
                break
            if kind == "initial":
                token_length, pos = varint(data, pos)
                pos += token_length
            length, pos = varint(data, pos)
        except (ValueError, IndexError):
            break
        end = pos + length
        if end > len(data):
            break
        packets.append(Packet(kind, version, dcid, scid, data[start:end]))
        pos = end
    return packets


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    # HKDF-Expand with SHA-256; every output here fits one block.
    return hmac.new(secret, info + b"\x01", hashlib.sha256).digest()[:length]


@dataclass(frozen=True)
class _Keys:
    key: bytes
    iv: bytes
    hp: bytes


def _initial_keys(dcid: bytes, version: int, server: bool) -> _Keys:
    initial = hmac.new(_SALTS[version], dcid, hashlib.sha256).digest()
    secret = _expand_label(initial, b"server in" if server else b"client in", 32)
    prefix = _LABEL[version]
    return _Keys(
        _expand_label(secret, prefix + b"key", 16),
        _expand_label(secret, prefix + b"iv", 12),
        _expand_label(secret, prefix + b"hp", 16),
    )


def _decrypt_initial(packet: Packet, keys: _Keys) -> bytes | None:
    """The plaintext payload of an Initial packet, or None if these keys do not open it."""
    raw = packet.raw
    pos = 7 + len(packet.dcid) + len(packet.scid)
    try:
        token_length, pos = varint(raw, pos)
        _, pn_offset = varint(raw, pos + token_length)
    except ValueError:
        return None
    sample = raw[pn_offset + 4 : pn_offset + 20]
    if len(sample) < 16:
        return None
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    first = raw[0] ^ (mask[0] & 0x0F)
    pn_length = (first & 3) + 1
    pn_bytes = bytes(
        b ^ m
        for b, m in zip(
            raw[pn_offset : pn_offset + pn_length], mask[1 : pn_length + 1], strict=True
        )
    )
    header = bytes([first]) + raw[1:pn_offset] + pn_bytes
    nonce = bytes(
        a ^ b
        for a, b in zip(keys.iv, int.from_bytes(pn_bytes, "big").to_bytes(12, "big"), strict=True)
    )
    try:
        return AESGCM(keys.key).decrypt(nonce, raw[pn_offset + pn_length :], header)
    except Exception:
        return None


def _crypto_frames(payload: bytes) -> list[tuple[int, bytes]]:
    """The (offset, data) of every CRYPTO frame in a decrypted Initial payload."""
    frames: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos < len(payload):
            kind, pos = varint(payload, pos)
            if kind in (0x00, 0x01):  # PADDING, PING
                continue
            if kind in (0x02, 0x03):  # ACK: largest, delay, count, first range, ranges
                _, pos = varint(payload, pos)
                _, pos = varint(payload, pos)
                count, pos = varint(payload, pos)
                for _ in range(1 + 2 * count + (3 if kind == 0x03 else 0)):
                    _, pos = varint(payload, pos)
            elif kind == 0x06:
                offset, pos = varint(payload, pos)
                length, pos = varint(payload, pos)
                frames.append((offset, payload[pos : pos + length]))
                pos += length
            else:  # CONNECTION_CLOSE or anything else: nothing more we need
                break
    except ValueError:
        pass
    return frames


def _server_hello(data: bytes) -> tuple[int, bool] | None:
    """(cipher suite, pre_shared_key accepted) from the start of the server's Initial
    CRYPTO stream, or None if it is not a complete ServerHello yet."""
    if len(data) < 4 or data[0] != 2:
        return None
    body = data[4 : 4 + int.from_bytes(data[1:4], "big")]
    if len(body) < 38 or body[2:34] == _HRR_RANDOM:
        return None
    pos = 35 + body[34]
    cipher = int.from_bytes(body[pos : pos + 2], "big")
    pos += 3 + 2  # cipher suite, compression method, extensions length
    extensions: set[int] = set()
    while pos + 4 <= len(body):
        extensions.add(int.from_bytes(body[pos : pos + 2], "big"))
        pos += 4 + int.from_bytes(body[pos + 2 : pos + 4], "big")
    return cipher, _PRE_SHARED_KEY in extensions


@dataclass
class Observer:
    """Counts what crosses a path, one datagram at a time, in each direction.

    ``counts[(direction, kind, version)]`` counts packets; ``hellos`` lists
    one :class:`Hello` per handshake the server answered.
    """

    counts: Counter[tuple[str, str, int | None]] = field(default_factory=Counter)
    hellos: list[Hello] = field(default_factory=list)
    _candidates: list[bytes] = field(default_factory=list)
    _server_cids: set[bytes] = field(default_factory=set)
    _crypto: dict[bytes, dict[int, bytes]] = field(default_factory=dict)
    _done: set[bytes] = field(default_factory=set)

    def observe(self, data: bytes, to_server: bool) -> None:
        """Account for one datagram going ``to_server`` (else to the client)."""
        direction = "c2s" if to_server else "s2c"
        for packet in parse_datagram(data):
            self.counts[(direction, packet.kind, packet.version)] += 1
            if packet.kind == "retry":
                # The client's next Initial goes to the id the Retry chose, and
                # its Initial keys derive from that id.
                self._candidates = [packet.scid, *self._candidates][:_MAX_KEYS]
            elif packet.kind == "initial" and not to_server:
                self._server_cids.add(packet.scid)
            if packet.kind != "initial" or packet.version not in _SALTS:
                continue
            if to_server:
                # A client Initial whose destination is not a server-chosen id
                # starts a connection (or restarts one after Retry): its
                # destination id is what the Initial keys derive from.
                if packet.dcid not in self._server_cids and packet.dcid not in self._candidates:
                    self._candidates = [packet.dcid, *self._candidates][:_MAX_KEYS]
            else:
                self._server_initial(packet)

    def _server_initial(self, packet: Packet) -> None:
        assert packet.version is not None
        for dcid in self._candidates:
            if dcid in self._done:
                continue
            payload = _decrypt_initial(packet, _initial_keys(dcid, packet.version, server=True))
            if payload is None:
                continue
            stream = self._crypto.setdefault(dcid, {})
            for offset, chunk in _crypto_frames(payload):
                stream.setdefault(offset, chunk)
            joined, offset = b"", 0
            while offset in stream and len(joined) < 4096:
                joined += stream[offset]
                offset += len(stream[offset])
            hello = _server_hello(joined)
            if hello is not None:
                self._done.add(dcid)
                cipher, resumed = hello
                self.hellos.append(Hello(packet.version, CIPHERS.get(cipher, hex(cipher)), resumed))
            return

    def packets(self, direction: str, kind: str, version: int | None = None) -> int:
        """Packets of ``kind`` seen going ``direction`` ("c2s"/"s2c"), of any or one version."""
        return sum(
            n
            for (d, k, v), n in self.counts.items()
            if d == direction and k == kind and (version is None or v == version)
        )

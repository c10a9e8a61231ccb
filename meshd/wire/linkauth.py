"""Pairwise link keys between hubs, and the compact custody notice they authenticate.

A custody notice tells one neighbour "I have stored the frames you sent me; drop your copies". Until now it
was a signed envelope: about 85 bytes, 64 of them the Ed25519 signature, and custody notices were a quarter
of all the relay's airtime (docs/BENCHMARKS.md, "Relay"). Only the one hub it is addressed to needs to
believe it, so a message authentication code under a key the two hubs share does the same job in 8 bytes.

No new key is needed: each hub's Ed25519 key from the HQ-signed registry is also an X25519 key in
Montgomery form (RFC 7748 section 4.1, the map libsodium ships as crypto_sign_ed25519_pk_to_curve25519 and
_sk_to_curve25519), so two hubs agree on a Diffie-Hellman secret from the registry alone. A forger without
one of the two private keys cannot make a hub drop a report, as before; a replayed notice names packet ids
of old frames (the tag covers all 32 bits of each), which the hub no longer waits for.

Frame (on the meshd port, beside envelopes):
    0x00          marker: field number 0 is invalid protobuf, so no envelope starts with this byte
    type          bit 0x01: custody for data frames, named by packet id; bit 0x02: and HQ has every report
                  in those frames; bit 0x04: a report-id section follows (Delivered news for the receiver).
                  0x01 and 0x03 are the original custody notices; 0x04 is a Delivered notice alone; 0x05 and
                  0x07 are custody notices that carry Delivered news too.
    varint        camp id of the hub that sends it
    [1 byte n]    number of packet ids, present when the type has both 0x01 and 0x04
    n x 4 bytes   packet ids (little-endian, all 32 bits) of the data frames it answers, n = 1..MAX_IDS
                  (without a report-id section, n is what the length leaves before the tag)
    [section]     report ids HQ has, as in a signed Delivered body (per origin, seq deltas; bodies.Delivered)
    8 bytes       tag: HMAC-SHA256(link key, context || type || sender || receiver || ids || section), truncated

An uplink hub whose uplink already has the reports when it answers (type 0x03) saves the Delivered notice
that would otherwise follow for them: the sender learns both at once. Delivered news for reports a hub got
from a neighbour goes back to that neighbour under their link key: in the next custody notice to it if one
is due (a few bytes), else in a notice of its own (type 0x04), which the neighbour answers like a data frame.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from meshd.errors import DecodeError, EncodeError, SignatureError, UnknownOriginError
from meshd.wire import bodies
from meshd.wire.envelope import MAX_ENVELOPE_LEN, Envelope, Kind
from meshd.wire.registry import Registry

MARKER = 0x00
TYPE_CUSTODY = 0x01
TYPE_CUSTODY_DELIVERED = 0x03
TYPE_DELIVERED = 0x04
_CUSTODY_BIT, _HQ_BIT, _REPORTS_BIT = 0x01, 0x02, 0x04
_TYPES = frozenset({0x01, 0x03, 0x04, 0x05, 0x07})
TAG_LEN = 8
MAX_IDS = 16
MAX_REPORTS = 48  # report ids in one frame: with the seq deltas of a few origins, well under 100 bytes
MAX_FRAME_LEN = MAX_ENVELOPE_LEN  # one Meshtastic payload (reports from many origins take more room)
UINT32_MAX = 0xFFFFFFFF
_P = 2**255 - 19  # the field of Curve25519 / edwards25519
_CONTEXT = b"meshd custody notice v1"


def is_link_frame(payload: bytes) -> bool:
    """A compact link frame, not an envelope (an envelope never starts with a zero byte)."""
    return payload[:1] == bytes([MARKER])


def x25519_public_from_ed25519(ed_public: bytes) -> bytes:
    """The Montgomery u-coordinate of an Ed25519 public key: u = (1 + y) / (1 - y) mod p."""
    if len(ed_public) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(ed_public)}")
    y = int.from_bytes(ed_public, "little") & ((1 << 255) - 1)  # the top bit is the sign of x
    if y >= _P or y == 1:
        raise ValueError("not a usable Ed25519 public key")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def x25519_private_from_ed25519(ed_private: Ed25519PrivateKey) -> X25519PrivateKey:
    """The X25519 scalar behind an Ed25519 key: the first half of SHA-512 of its seed (X25519 clamps it)."""
    seed = ed_private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])


@dataclass(frozen=True, slots=True)
class CustodyNotice:
    """A compact link frame: custody for data frames (`packet_ids`), Delivered news (`reports`), or both."""

    camp: int  # the hub that sent this notice (that took custody, or that has the news)
    packet_ids: tuple[int, ...]
    tag: bytes
    delivered: bool = False  # HQ has every report in those frames too
    reports: tuple[tuple[int, int], ...] = ()  # report ids HQ has, for the receiver to pass on
    section: bytes = b""  # the encoded report ids, as the tag covers them

    @property
    def frame_type(self) -> int:
        custody = (_CUSTODY_BIT | (_HQ_BIT if self.delivered else 0)) if self.packet_ids else 0
        return custody | (_REPORTS_BIT if self.section else 0)


class LinkKeys:
    """This hub's pairwise keys with the other hubs of the registry (derived on first use, then cached)."""

    def __init__(self, camp_id: int, sign_key: Ed25519PrivateKey, registry: Registry) -> None:
        self.camp_id = camp_id
        self.registry = registry
        self._private = x25519_private_from_ed25519(sign_key)
        self._keys: dict[int, bytes] = {}

    def key_for(self, camp: int) -> bytes:
        """The key shared with `camp`; `UnknownOriginError` if the registry does not have it."""
        key = self._keys.get(camp)
        if key is not None:
            return key
        entry = self.registry.camps.get(camp)
        if entry is None or camp == self.camp_id:
            raise UnknownOriginError(f"camp {camp} is not another hub in the camp registry")
        try:
            peer = X25519PublicKey.from_public_bytes(x25519_public_from_ed25519(entry.sign_key))
            shared = self._private.exchange(peer)
        except ValueError:
            raise SignatureError(f"registry key of camp {camp} cannot make a link key") from None
        low, high = sorted((self.camp_id, camp))
        info = b"meshd link key v1" + struct.pack(">II", low, high)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        self._keys[camp] = key
        return key

    def _tag(self, key: bytes, sender: int, receiver: int, notice: CustodyNotice) -> bytes:
        head = _CONTEXT + bytes([notice.frame_type]) + struct.pack(">II", sender, receiver)
        message = head + b"".join(struct.pack("<I", p) for p in notice.packet_ids) + notice.section
        return hmac.new(key, message, hashlib.sha256).digest()[:TAG_LEN]

    def custody_notice(
        self,
        to_camp: int,
        packet_ids: list[int],
        *,
        delivered: bool = False,
        reports: list[tuple[int, int]] | tuple[tuple[int, int], ...] = (),
    ) -> bytes:
        """A notice to `to_camp` that we hold the frames `packet_ids` durably (with `delivered`: and HQ has
        every report in them), carrying the news that HQ has `reports` (which it got from us) if any."""
        if not 1 <= len(packet_ids) <= MAX_IDS:
            raise EncodeError(f"a custody notice names 1..{MAX_IDS} frames, got {len(packet_ids)}")
        return self._frame(to_camp, tuple(packet_ids), delivered, reports)

    def delivered_notice(self, to_camp: int, reports: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> bytes:
        """A notice to `to_camp` that HQ has `reports` (which it got from us), with no custody in it."""
        if not reports:
            raise EncodeError("a Delivered notice names at least one report")
        return self._frame(to_camp, (), False, reports)

    def _frame(
        self,
        to_camp: int,
        ids: tuple[int, ...],
        delivered: bool,
        reports: list[tuple[int, int]] | tuple[tuple[int, int], ...],
    ) -> bytes:
        for packet_id in ids:
            if not 0 <= packet_id <= UINT32_MAX:
                raise EncodeError(f"packet id {packet_id!r} is not a 32-bit number")
        if len(reports) > MAX_REPORTS:
            raise EncodeError(f"a link frame names up to {MAX_REPORTS} reports, got {len(reports)}")
        section = bodies.encode_delivered_ids(list(reports)) if reports else b""
        decoded = tuple(bodies.decode_delivered_ids(section)) if section else ()
        notice = CustodyNotice(self.camp_id, ids, b"", delivered, decoded, section)
        tag = self._tag(self.key_for(to_camp), self.camp_id, to_camp, notice)
        frame = encode_custody_notice(replace(notice, tag=tag))
        if len(frame) > MAX_FRAME_LEN:
            raise EncodeError(f"link frame of {len(frame)} bytes does not fit one packet ({MAX_FRAME_LEN})")
        return frame

    def verify_custody_notice(self, notice: CustodyNotice) -> None:
        """Raise `SignatureError` (or `UnknownOriginError`) unless `notice.camp` made it for us."""
        expected = self._tag(self.key_for(notice.camp), notice.camp, self.camp_id, notice)
        if not hmac.compare_digest(expected, notice.tag):
            raise SignatureError(f"link frame from camp {notice.camp} does not verify (forged or tampered)")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_custody_notice(notice: CustodyNotice) -> bytes:
    if not 1 <= notice.camp <= UINT32_MAX:
        raise EncodeError(f"camp id must be 1..{UINT32_MAX}, got {notice.camp!r}")
    if len(notice.tag) != TAG_LEN:
        raise EncodeError(f"tag must be {TAG_LEN} bytes")
    if not notice.packet_ids and not notice.section:
        raise EncodeError("a link frame names frames, reports or both")
    frame_type = notice.frame_type
    ids = b"".join(struct.pack("<I", p) for p in notice.packet_ids)
    count = bytes([len(notice.packet_ids)]) if notice.packet_ids and notice.section else b""
    return bytes([MARKER, frame_type]) + _varint(notice.camp) + count + ids + notice.section + notice.tag


def decode_custody_notice(data: bytes) -> CustodyNotice:
    """Parse a compact link frame; `DecodeError` for anything else (never another exception)."""
    if len(data) < 2 or data[0] != MARKER:
        raise DecodeError("not a meshd link frame")
    frame_type = data[1]
    if frame_type not in _TYPES:
        raise DecodeError(f"unknown link frame type {frame_type}")
    camp = 0
    pos = 2
    for shift in range(0, 35, 7):
        if pos >= len(data):
            raise DecodeError("custody notice ends inside its camp id")
        byte = data[pos]
        pos += 1
        camp |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    else:
        raise DecodeError("custody notice camp id is too long")
    if not 1 <= camp <= UINT32_MAX:
        raise DecodeError(f"custody notice camp id {camp} is out of range")
    body, tag = data[pos:-TAG_LEN], data[-TAG_LEN:]
    if len(data) - pos < TAG_LEN:
        raise DecodeError(f"link frame of {len(data)} bytes: the tag is cut short")
    with_reports = bool(frame_type & _REPORTS_BIT)
    if not frame_type & _CUSTODY_BIT:
        count = 0
    elif with_reports:
        if not body:
            raise DecodeError("link frame ends before its frame count")
        count, body = body[0], body[1:]
    else:
        if len(body) % 4:
            raise DecodeError(f"custody notice of {len(data)} bytes: the frame ids or the tag are cut short")
        count = len(body) // 4
    if frame_type & _CUSTODY_BIT and not 1 <= count <= MAX_IDS:
        raise DecodeError(f"custody notice names {count} frames, not 1..{MAX_IDS}")
    if len(body) < 4 * count:
        raise DecodeError(f"link frame of {len(data)} bytes: the frame ids are cut short")
    packet_ids = struct.unpack(f"<{count}I", body[: 4 * count])
    section = bytes(body[4 * count :])
    reports: tuple[tuple[int, int], ...] = ()
    if with_reports:
        reports = tuple(bodies.decode_delivered_ids(section))
        if not 1 <= len(reports) <= MAX_REPORTS:
            raise DecodeError(f"link frame names {len(reports)} reports, not 1..{MAX_REPORTS}")
    return CustodyNotice(camp, tuple(packet_ids), bytes(tag), bool(frame_type & _HQ_BIT), reports, section)


def frame_kind(payload: bytes) -> Kind:
    """What a frame on the meshd port carries (a compact notice is a custody notice, or a Delivered notice when
    it answers no frame); `DecodeError` if none."""
    if is_link_frame(payload):
        notice = decode_custody_notice(payload)
        return Kind.CUSTODY if notice.packet_ids else Kind.DELIVERED
    return Envelope.from_bytes(payload).kind

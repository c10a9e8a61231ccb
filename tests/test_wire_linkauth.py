"""Pairwise link keys from the registry's Ed25519 keys, and the compact custody notice they authenticate."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.errors import DecodeError, EncodeError, SignatureError, UnknownOriginError
from meshd.keys import raw_public
from meshd.wire import linkauth
from meshd.wire.envelope import Envelope, Kind, sign
from meshd.wire.registry import Camp, Registry

P = 2**255 - 19
KEYS = {camp: Ed25519PrivateKey.generate() for camp in (1, 2, 3, 300)}
REGISTRY = Registry(
    bytes(32),
    bytes(32),
    {camp: Camp(camp, f"Camp {camp}", raw_public(key.public_key())) for camp, key in KEYS.items()},
)


def links(camp: int) -> linkauth.LinkKeys:
    return linkauth.LinkKeys(camp, KEYS[camp], REGISTRY)


def test_the_edwards_base_point_maps_to_the_montgomery_base_point():
    # RFC 7748 section 4.1: edwards25519's base point has y = 4/5; curve25519's has u = 9
    y = 4 * pow(5, P - 2, P) % P
    assert linkauth.x25519_public_from_ed25519(y.to_bytes(32, "little")) == (9).to_bytes(32, "little")


@pytest.mark.parametrize("camp", sorted(KEYS))
def test_the_converted_private_key_matches_the_converted_public_key(camp):
    private = linkauth.x25519_private_from_ed25519(KEYS[camp])
    expected = linkauth.x25519_public_from_ed25519(raw_public(KEYS[camp].public_key()))
    assert raw_public(private.public_key()) == expected


def test_the_private_scalar_is_the_first_half_of_sha512_of_the_seed():
    seed = bytes(range(32))
    key = Ed25519PrivateKey.from_private_bytes(seed)
    converted = linkauth.x25519_private_from_ed25519(key)
    scalar = bytearray(hashlib.sha512(seed).digest()[:32])
    scalar[0] &= 248
    scalar[31] = (scalar[31] & 127) | 64
    # the X25519 public key is scalar * base point: the same scalar, clamped, gives the same public key
    assert raw_public(converted.public_key()) == raw_public(
        X25519PrivateKey.from_private_bytes(bytes(scalar)).public_key()
    )


def test_two_hubs_derive_the_same_key_and_a_third_a_different_one():
    assert links(1).key_for(2) == links(2).key_for(1)
    assert links(1).key_for(300) == links(300).key_for(1)
    assert links(1).key_for(2) != links(1).key_for(3)
    assert links(3).key_for(2) != links(1).key_for(2)


def test_a_notice_verifies_only_at_the_hub_it_is_for():
    frame = links(2).custody_notice(1, [0xDEADBEEF, 7])
    notice = linkauth.decode_custody_notice(frame)
    assert notice.camp == 2
    assert notice.packet_ids == (0xDEADBEEF, 7)
    links(1).verify_custody_notice(notice)
    with pytest.raises(SignatureError):
        links(3).verify_custody_notice(notice)
    assert len(frame) == 2 + 1 + 8 + linkauth.TAG_LEN


@pytest.mark.parametrize("position", range(2 + 1 + 4 + linkauth.TAG_LEN))
def test_any_changed_byte_is_refused(position):
    frame = bytearray(links(2).custody_notice(1, [0x01020304]))
    frame[position] ^= 0x40
    with pytest.raises((SignatureError, DecodeError, UnknownOriginError)):
        links(1).verify_custody_notice(linkauth.decode_custody_notice(bytes(frame)))


def test_notices_from_or_to_camps_outside_the_registry_are_refused():
    with pytest.raises(UnknownOriginError):
        links(1).custody_notice(99, [1])
    with pytest.raises(UnknownOriginError):
        links(1).key_for(1)  # not with ourselves either
    forged = linkauth.encode_custody_notice(linkauth.CustodyNotice(99, (1,), bytes(linkauth.TAG_LEN)))
    with pytest.raises(UnknownOriginError):
        links(1).verify_custody_notice(linkauth.decode_custody_notice(forged))


@pytest.mark.parametrize("ids", [[], list(range(linkauth.MAX_IDS + 1)), [-1], [2**32]])
def test_notices_that_cannot_be_encoded_say_why(ids):
    with pytest.raises(EncodeError):
        links(1).custody_notice(2, ids)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "not a meshd link frame"),
        (b"\x00", "not a meshd link frame"),
        (b"\x00\x02\x01" + bytes(12), "unknown link frame type"),
        (b"\x00\x01", "inside its camp id"),
        (b"\x00\x01\x80\x80\x80\x80\x80\x80", "too long"),
        (b"\x00\x01\x00" + bytes(12), "out of range"),
        (b"\x00\x01\x01" + bytes(11), "cut short"),
        (b"\x00\x01\x01" + bytes(13), "cut short"),
        (b"\x00\x01\x01" + bytes(4 * 17 + 8), "17 frames"),
    ],
)
def test_malformed_frames_get_a_clear_error(frame, message):
    with pytest.raises(DecodeError, match=message):
        linkauth.decode_custody_notice(frame)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_any_bytes_parse_or_raise_decode_error(data):
    try:
        notice = linkauth.decode_custody_notice(data)
    except DecodeError:
        return
    assert linkauth.encode_custody_notice(notice) == data or data[2] & 0x80  # only a padded varint re-encodes


@settings(max_examples=200)
@given(
    origin=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**32 - 1),
    kind=st.sampled_from([Kind.NEEDS, Kind.CUSTODY, Kind.STATUS, Kind.DELIVERED, Kind.BATCH]),
    body=st.binary(max_size=60),
    age=st.integers(0, 2**32 - 1),
)
def test_no_envelope_is_taken_for_a_link_frame(origin, seq, kind, body, age):
    raw = sign(Envelope(origin, seq, kind, body, age_s=age), KEYS[1], max_len=10_000).to_bytes()
    assert not linkauth.is_link_frame(raw)
    assert linkauth.frame_kind(raw) is kind


def test_frame_kind_of_a_compact_notice_is_custody():
    assert linkauth.frame_kind(links(2).custody_notice(1, [5])) is Kind.CUSTODY
    with pytest.raises(DecodeError):
        linkauth.frame_kind(b"\x00\x01")


def test_a_plain_notice_cannot_be_turned_into_one_that_says_delivered():
    frame = bytearray(links(2).custody_notice(1, [42]))
    assert not linkauth.decode_custody_notice(bytes(frame)).delivered
    frame[1] = linkauth.TYPE_CUSTODY_DELIVERED
    notice = linkauth.decode_custody_notice(bytes(frame))
    assert notice.delivered
    with pytest.raises(SignatureError):
        links(1).verify_custody_notice(notice)
    genuine = linkauth.decode_custody_notice(links(2).custody_notice(1, [42], delivered=True))
    links(1).verify_custody_notice(genuine)
    assert genuine.delivered


def test_a_registry_key_that_makes_no_link_key_is_a_clear_error():
    # y = 1 is the identity point: no Montgomery form, so the hub signs its notices to that camp instead
    bad = Registry(bytes(32), bytes(32), {**REGISTRY.camps, 9: Camp(9, "bad", (1).to_bytes(32, "little"))})
    with pytest.raises(SignatureError, match="cannot make a link key"):
        linkauth.LinkKeys(1, KEYS[1], bad).key_for(9)


# ---------------------------------------------------------------- Delivered news in link frames

REPORTS = [(7, 100), (7, 101), (7, 105), (12, 3)]


def test_a_delivered_notice_names_reports_and_verifies_only_at_its_hub():
    frame = links(2).delivered_notice(1, REPORTS)
    notice = linkauth.decode_custody_notice(frame)
    assert frame[1] == linkauth.TYPE_DELIVERED
    assert notice.camp == 2
    assert notice.packet_ids == ()
    assert notice.reports == tuple(REPORTS)
    links(1).verify_custody_notice(notice)
    with pytest.raises(SignatureError):
        links(3).verify_custody_notice(notice)
    assert linkauth.frame_kind(frame) is Kind.DELIVERED
    assert len(frame) < 30  # a signed Delivered notice with these ids is about 90 bytes


@pytest.mark.parametrize("delivered", [False, True])
def test_a_custody_notice_can_carry_delivered_news(delivered):
    frame = links(2).custody_notice(1, [0xDEADBEEF, 9], delivered=delivered, reports=REPORTS)
    assert frame[1] == (0x07 if delivered else 0x05)
    notice = linkauth.decode_custody_notice(frame)
    assert notice.packet_ids == (0xDEADBEEF, 9)
    assert notice.delivered is delivered
    assert notice.reports == tuple(REPORTS)
    links(1).verify_custody_notice(notice)
    assert linkauth.frame_kind(frame) is Kind.CUSTODY


@pytest.mark.parametrize("position", range(30))
def test_any_changed_byte_of_a_frame_with_news_is_refused(position):
    frame = bytearray(links(2).custody_notice(1, [0x01020304], reports=REPORTS))
    if position >= len(frame):
        return
    frame[position] ^= 0x40
    with pytest.raises((SignatureError, DecodeError, UnknownOriginError)):
        links(1).verify_custody_notice(linkauth.decode_custody_notice(bytes(frame)))


def test_news_cannot_be_cut_off_a_custody_notice_or_added_to_one():
    with_news = linkauth.decode_custody_notice(links(2).custody_notice(1, [42], reports=REPORTS))
    stripped = linkauth.CustodyNotice(2, (42,), with_news.tag)
    with pytest.raises(SignatureError):
        links(1).verify_custody_notice(stripped)
    plain = linkauth.decode_custody_notice(links(2).custody_notice(1, [42]))
    other = linkauth.decode_custody_notice(links(2).delivered_notice(1, REPORTS))
    grafted = linkauth.CustodyNotice(2, (42,), plain.tag, False, other.reports, other.section)
    with pytest.raises(SignatureError):
        links(1).verify_custody_notice(grafted)


@pytest.mark.parametrize("reports", [[], [(1, n) for n in range(linkauth.MAX_REPORTS + 1)], [(-1, 1)], [(1, 2**32)]])
def test_delivered_notices_that_cannot_be_encoded_say_why(reports):
    with pytest.raises(EncodeError):
        links(1).delivered_notice(2, reports)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x00\x04\x01" + bytes(8), "0 reports"),  # no report section
        (b"\x00\x05\x01", "tag is cut short"),
        (b"\x00\x05\x01" + bytes(8), "frame count"),
        (b"\x00\x05\x01\x02" + bytes(4) + bytes(8), "frame ids are cut short"),
        (b"\x00\x05\x01\x00" + bytes(8), "0 frames"),
        (b"\x00\x04\x01\xff\xff" + bytes(8), "delivered"),  # a section that is not protobuf
    ],
)
def test_malformed_frames_with_news_get_a_clear_error(frame, message):
    with pytest.raises(DecodeError, match=message):
        linkauth.decode_custody_notice(frame)


@settings(max_examples=300)
@given(
    packet_ids=st.lists(st.integers(0, 2**32 - 1), max_size=linkauth.MAX_IDS),
    reports=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=linkauth.MAX_REPORTS, unique=True
    ),
    delivered=st.booleans(),
)
def test_frames_round_trip(packet_ids, reports, delivered):
    try:
        if packet_ids:
            frame = links(2).custody_notice(1, packet_ids, delivered=delivered, reports=reports)
        elif reports:
            frame = links(2).delivered_notice(1, reports)
        else:
            return
    except EncodeError as exc:
        if "does not fit one packet" in str(exc):
            return  # the relay sends fewer reports in such a frame (relay.fit_news)
        raise
    notice = linkauth.decode_custody_notice(frame)
    links(1).verify_custody_notice(notice)
    assert notice.packet_ids == tuple(packet_ids)
    assert notice.delivered is (delivered and bool(packet_ids))
    assert sorted(notice.reports) == sorted(reports)
    assert linkauth.encode_custody_notice(notice) == frame


def test_a_frame_that_does_not_fit_one_packet_is_refused():
    many_origins = [(2**31 + i * 977, 2**31 + i) for i in range(linkauth.MAX_REPORTS)]
    with pytest.raises(EncodeError, match="does not fit one packet"):
        links(2).delivered_notice(1, many_origins)

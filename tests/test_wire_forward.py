"""The forward frame (linkauth type 0x08): a data frame passed on as a broadcast, with a custody notice for
another hub riding in it. Each part keeps its own protection: the envelope its origin's signature, the notice
its link-key tag for the one hub it is for."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.errors import DecodeError, EncodeError, SignatureError
from meshd.wire import linkauth
from meshd.wire.envelope import MAX_ENVELOPE_LEN, Envelope, Kind, sign
from tests.test_wire_linkauth import KEYS, links

NEXT, BEHIND = 0x0A000002, 0x0A000001


def envelope(body: bytes = b"\x08\x02\x12\x02\x08\x04") -> bytes:
    return sign(Envelope(3, 41, Kind.NEEDS, body, age_s=12), KEYS[3]).to_bytes()


def test_a_forward_carries_an_envelope_for_the_next_hop_and_a_notice_for_the_hub_behind() -> None:
    notice = links(2).custody_notice(1, [0xCAFE], reports=[(3, 40)])
    frame = linkauth.encode_forward(linkauth.Forward(NEXT, BEHIND, notice, envelope()))
    assert linkauth.is_link_frame(frame)  # never taken for an envelope by a hub that does not know the type
    assert linkauth.is_forward(frame)
    forward = linkauth.decode_forward(frame)
    assert (forward.next_hop, forward.notice_to) == (NEXT, BEHIND)
    assert Envelope.from_bytes(forward.envelope).id == "3:41"
    riding = linkauth.decode_custody_notice(forward.notice)
    links(1).verify_custody_notice(riding)  # the hub behind believes it ...
    with pytest.raises(SignatureError):
        links(3).verify_custody_notice(riding)  # ... no other hub that hears the broadcast
    assert linkauth.frame_kind(frame) is Kind.NEEDS
    # what riding costs, beside the envelope: the header and the notice, well under a frame of its own
    assert len(frame) - len(forward.envelope) == 11 + len(notice)


def test_a_custody_notice_does_not_parse_as_a_forward_nor_a_forward_as_a_notice() -> None:
    notice = links(2).custody_notice(1, [5])
    with pytest.raises(DecodeError):
        linkauth.decode_forward(notice)
    frame = linkauth.encode_forward(linkauth.Forward(NEXT, BEHIND, notice, envelope()))
    with pytest.raises(DecodeError):
        linkauth.decode_custody_notice(frame)


def test_forwards_that_cannot_be_encoded_say_why() -> None:
    notice = links(2).custody_notice(1, [5])
    with pytest.raises(EncodeError, match="one compact custody notice"):
        linkauth.encode_forward(linkauth.Forward(NEXT, BEHIND, envelope(), envelope()))
    with pytest.raises(EncodeError, match="one envelope"):
        linkauth.encode_forward(linkauth.Forward(NEXT, BEHIND, notice, notice))
    with pytest.raises(EncodeError, match="node number"):
        linkauth.encode_forward(linkauth.Forward(0, BEHIND, notice, envelope()))
    big = envelope(bytes(MAX_ENVELOPE_LEN - len(envelope(b"")) - 2))
    assert len(big) <= MAX_ENVELOPE_LEN
    with pytest.raises(EncodeError, match="does not fit one packet"):
        linkauth.encode_forward(linkauth.Forward(NEXT, BEHIND, notice, big))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x00\x08\x01\x02", "ends inside its header"),
        (b"\x00\x08" + bytes(8) + b"\x10" + b"\x00\x01", "cut short"),
        (b"\x00\x08" + bytes(8) + b"\x02" + b"\x00\x01", "cut short"),  # no envelope after the notice
        (b"\x00\x08" + bytes(8) + b"\x02" + b"\x08\x01" + b"\x08\x01", "does not carry a custody notice"),
        (b"\x00\x08" + bytes(8) + b"\x02" + b"\x00\x01" + b"\x00\x01", "does not carry a custody notice"),
        (b"\x00\x08" + bytes(8) + b"\x02" + b"\x00\x08" + b"\x08\x01", "does not carry a custody notice"),
        (b"\x00\x08" + bytes(8) + b"\x02" + b"\x00\x01" + b"\x08\x01", "node number no hub has"),
        (b"\x00\x08" + b"\x01" * 4 + b"\xff" * 4 + b"\x02" + b"\x00\x01" + b"\x08\x01", "node number"),
    ],
)
def test_malformed_forwards_get_a_clear_error(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        linkauth.decode_forward(frame)


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_any_bytes_after_the_forward_header_parse_or_raise_decode_error(data: bytes) -> None:
    frame = b"\x00\x08" + data
    try:
        forward = linkauth.decode_forward(frame)
    except DecodeError:
        return
    assert linkauth.encode_forward(forward) == frame


@given(
    next_hop=st.integers(1, 2**32 - 2),
    notice_to=st.integers(1, 2**32 - 2),
    ids=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=linkauth.MAX_IDS),
    body=st.binary(min_size=1, max_size=60),
)
def test_forwards_round_trip(next_hop: int, notice_to: int, ids: list[int], body: bytes) -> None:
    forward = linkauth.Forward(next_hop, notice_to, links(2).custody_notice(1, ids), envelope(body))
    assert linkauth.decode_forward(linkauth.encode_forward(forward)) == forward

"""Property tests: arbitrary bytes, in arbitrary chunks, never crash or hang the parser or the session."""

from __future__ import annotations

import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.errors import MeshdError
from meshd.radio.framing import MAX_PAYLOAD, Frame, FrameDecoder, LogLine, encode_frame
from meshd.radio.session import Session
from tests.radio_fake import config_sequence, packet_frame, routing_frame

# Bytes the stream is made of, weighted towards the ones that matter to the parser.
interesting = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"\x94", b"\xc3", b"\x94\xc3", b"\x94\xc3\x02\x00", b"\x94\xc3\xff\xff", b"\n", b"\r\n"]),
    st.binary(max_size=40).map(encode_frame),
)
streams = st.lists(interesting, max_size=60).map(b"".join)
chunkings = st.lists(st.integers(min_value=0, max_value=700), max_size=30)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    out.append(data[pos:])
    return out


@FUZZ
@given(data=streams, sizes=chunkings)
def test_decoder_output_is_independent_of_chunking(data: bytes, sizes: list[int]) -> None:
    whole = FrameDecoder().feed(data)
    decoder = FrameDecoder()
    chunked: list[Frame | LogLine] = []
    for chunk in split(data, sizes):
        chunked += decoder.feed(chunk)
    assert chunked == whole
    assert all(len(f.payload) <= MAX_PAYLOAD for f in whole if isinstance(f, Frame))


@FUZZ
@given(data=st.binary(max_size=4096), sizes=chunkings, unread=st.booleans())
def test_decoder_never_raises_and_always_progresses(data: bytes, sizes: list[int], unread: bool) -> None:
    decoder = FrameDecoder()
    started = time.monotonic()
    for chunk in split(data, sizes):
        decoder.push(chunk)
        while (item := decoder.pop()) is not None:
            if unread and isinstance(item, Frame):
                decoder.unread(item.payload)  # the worst case: every frame is "bad"
        decoder.abandon_partial()
        while decoder.pop() is not None:
            pass
    assert time.monotonic() - started < 2.0
    assert decoder.buffered <= len(data)


def _session_stream(seed: int) -> tuple[Session, bytes]:
    session = Session(rng=random.Random(seed))
    session.start()
    valid = config_sequence(session.nonce) + packet_frame(b"x") + routing_frame(1, "MAX_RETRANSMIT")
    return session, valid


@FUZZ
@given(
    noise=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    sizes=chunkings,
    seed=st.integers(0, 1000),
)
def test_session_survives_random_and_damaged_streams(
    noise: bytes, cuts: list[int], sizes: list[int], seed: int
) -> None:
    session, valid = _session_stream(seed)
    data = bytearray(valid + noise + valid)
    rng = random.Random(seed)
    for cut in cuts:  # drop, flip or duplicate bytes somewhere
        if not data:
            break
        at = cut % len(data)
        action = rng.randrange(3)
        if action == 0:
            del data[at : at + rng.randint(1, 50)]
        elif action == 1:
            data[at] ^= 1 << rng.randrange(8)
        else:
            data[at:at] = data[at : at + rng.randint(1, 50)]
    started = time.monotonic()
    try:
        for chunk in split(bytes(data), sizes):
            session.receive(chunk)
        session.expire_partial()
        session.data_to_send()
    except MeshdError:
        pass  # allowed: meshd's own errors (none are expected today)
    assert time.monotonic() - started < 2.0


@FUZZ
@given(data=st.binary(max_size=2048))
def test_session_on_pure_garbage(data: bytes) -> None:
    session = Session(rng=random.Random(0))
    session.start()
    session.receive(data)
    session.expire_partial()
    assert session.stats.frames_in >= 0

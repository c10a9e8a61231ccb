"""Stream-API framing: fed whole, byte by byte, in random chunks, with log noise and damaged frames."""

from __future__ import annotations

import random

import pytest

from meshd.errors import FrameError, MeshdError
from meshd.radio.framing import (
    MAX_LOG_LINE,
    MAX_PAYLOAD,
    WAKE_BYTES,
    Frame,
    FrameDecoder,
    LogLine,
    encode_frame,
)

PAYLOADS = [b"\x0a\x03abc", b"", bytes(range(256)) * 2, b"\x94\xc3\x00\x01x" * 10, bytes([0x94]) * 7]


def stream() -> bytes:
    return (
        b"INFO | boot ok\r\n"
        + WAKE_BYTES
        + encode_frame(PAYLOADS[0])
        + b"DEBUG | between frames\n"
        + encode_frame(PAYLOADS[1])
        + encode_frame(PAYLOADS[2])
        + b"partial log "
        + encode_frame(PAYLOADS[3])
        + b"tail\n"
        + encode_frame(PAYLOADS[4])
    )


EXPECTED: list[Frame | LogLine] = [
    LogLine("INFO | boot ok"),
    Frame(PAYLOADS[0]),
    LogLine("DEBUG | between frames"),
    Frame(PAYLOADS[1]),
    Frame(PAYLOADS[2]),
    LogLine("partial log "),  # a frame ends a partial log line
    Frame(PAYLOADS[3]),
    LogLine("tail"),
    Frame(PAYLOADS[4]),
]


def feed_chunks(data: bytes, sizes: list[int]) -> list[Frame | LogLine]:
    decoder = FrameDecoder()
    out: list[Frame | LogLine] = []
    pos = 0
    for size in sizes:
        out += decoder.feed(data[pos : pos + size])
        pos += size
    out += decoder.feed(data[pos:])
    return out


def test_whole_stream() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(stream()) == EXPECTED
    assert decoder.stats.frames == 5
    assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    data = stream()
    assert feed_chunks(data, [1] * len(data)) == EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_random_chunking(seed: int) -> None:
    rng = random.Random(seed)
    data = stream()
    sizes = [rng.randint(0, 40) for _ in range(len(data) // 5)]
    assert feed_chunks(data, sizes) == EXPECTED


def test_pull_api_matches_feed() -> None:
    decoder = FrameDecoder()
    decoder.push(stream())
    items = []
    while (item := decoder.pop()) is not None:
        items.append(item)
    assert items == EXPECTED


def test_wake_bytes_are_not_log_text() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(WAKE_BYTES + b"\n" + WAKE_BYTES + encode_frame(b"x")) == [Frame(b"x")]
    assert decoder.stats.dropped_bytes == 64


def test_oversize_length_resyncs_on_next_start() -> None:
    bogus = bytes([0x94, 0xC3, 0x02, 0x01])  # length 513 > 512: not a frame
    decoder = FrameDecoder()
    out = decoder.feed(bogus + b"junk" + encode_frame(b"good") + bytes([0x94, 0xC3, 0xFF, 0xFF]) + encode_frame(b"ok"))
    assert [i for i in out if isinstance(i, Frame)] == [Frame(b"good"), Frame(b"ok")]
    assert decoder.stats.oversize == 2


def test_maximum_payload_is_a_frame() -> None:
    payload = bytes(MAX_PAYLOAD)
    assert FrameDecoder().feed(encode_frame(payload)) == [Frame(payload)]


def test_encode_refuses_oversize_payload() -> None:
    with pytest.raises(FrameError):
        encode_frame(bytes(MAX_PAYLOAD + 1))
    assert issubclass(FrameError, MeshdError)


def test_truncated_frame_at_end_waits_for_more() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(b"0123456789")
    assert decoder.feed(frame[:7]) == []
    assert decoder.buffered == 7
    assert decoder.feed(frame[7:]) == [Frame(b"0123456789")]


def test_unread_recovers_frames_swallowed_by_a_truncated_one() -> None:
    # A frame cut short after 3 bytes of its 40 swallows the next frame; unread() finds it again.
    cut = encode_frame(bytes(range(40)))[: 4 + 3]
    following = encode_frame(b"next-frame") + encode_frame(b"and-another-one-here") + encode_frame(b"last")
    decoder = FrameDecoder()
    decoder.push(cut + following)
    bad = decoder.pop()
    assert isinstance(bad, Frame)
    assert len(bad.payload) == 40  # swallowed bytes of the following frames
    decoder.unread(bad.payload)
    rest = []
    while (item := decoder.pop()) is not None:
        rest.append(item)
    frames = [i for i in rest if isinstance(i, Frame)]
    assert frames[-3:] == [Frame(b"next-frame"), Frame(b"and-another-one-here"), Frame(b"last")]


def test_long_log_line_is_split() -> None:
    decoder = FrameDecoder()
    out = decoder.feed(b"a" * (MAX_LOG_LINE * 2 + 10) + b"\n")
    assert [len(i.text) for i in out if isinstance(i, LogLine)] == [MAX_LOG_LINE, MAX_LOG_LINE, 10]


def test_invalid_utf8_log_is_replaced_not_raised() -> None:
    out = FrameDecoder().feed(b"\xff\xfe bad \x80\n")
    assert out == [LogLine("\ufffd\ufffd bad \ufffd")]


def test_start1_without_start2_is_log_text() -> None:
    out = FrameDecoder().feed(b"x\x94y\n" + encode_frame(b"f"))
    assert out == [LogLine("x\ufffdy"), Frame(b"f")]


def test_large_stream_compacts_buffer() -> None:
    frames = encode_frame(b"p" * 100) * 2000
    decoder = FrameDecoder()
    count = 0
    for i in range(0, len(frames), 1000):
        count += len(decoder.feed(frames[i : i + 1000]))
    assert count == 2000
    assert decoder.buffered == 0


def test_bytes_of_a_damaged_frame_are_not_reported_as_log_text() -> None:
    decoder = FrameDecoder()
    decoder.push(encode_frame(b"\xff garbage \xfe" + encode_frame(b"inner")) + b"real log\n")
    bad = decoder.pop()
    assert isinstance(bad, Frame)
    decoder.unread(bad.payload)
    rest = []
    while (item := decoder.pop()) is not None:
        rest.append(item)
    assert rest == [Frame(b"inner"), LogLine("real log")]


def test_abandon_partial_rescans_a_frame_cut_short() -> None:
    decoder = FrameDecoder()
    cut = encode_frame(bytes(200))[:20]
    assert decoder.feed(cut + encode_frame(b"after")) == []  # waiting for 200 bytes that never come
    assert decoder.abandon_partial()
    items = []
    while (item := decoder.pop()) is not None:
        items.append(item)
    assert items == [Frame(b"after")]
    assert not decoder.abandon_partial()

"""Frames per second through meshd's sans-I/O stream parser vs the meshtastic library's reader, same run.

The stream: realistic FromRadio frames as a hub sees them (received packets on the private port with
rx metadata, text messages, QueueStatus replies) with a device log line every ~25 frames. meshd's
FrameDecoder and Session are fed it in 64-byte chunks (a serial read) and whole (a big TCP read).

The meshtastic library (2.7.x) parses in `StreamInterface.__reader`, a thread that reads one byte at a
time. We run that exact method, unmodified, on the main thread: a subclass's `_readBytes(1)` returns the
next byte of the same stream, `_handleFromRadio` counts frames (or, for the second row, only parses the
FromRadio), `_handleLogLine` counts lines. Its per-byte cost makes 200k frames take minutes, so it gets a
prefix of the stream (`--mt-frames`); rates are per frame either way. Every row is the best of
`--runs` runs.

    .venv/bin/python bench/radio_parser.py [--frames 200000] [--mt-frames 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable

from meshtastic.protobuf import mesh_pb2
from meshtastic.stream_interface import StreamInterface

from meshd.radio.framing import FrameDecoder, encode_frame
from meshd.radio.session import Session


def build_stream(frames: int, seed: int = 1) -> tuple[bytes, int, int]:
    """Returns (stream, frames, log lines)."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    logs = 0
    for i in range(frames):
        kind = rng.random()
        if kind < 0.7:
            pkt = mesh_pb2.MeshPacket(
                to=0xFFFFFFFF,
                id=rng.getrandbits(32),
                rx_time=1_700_000_000 + i,
                rx_snr=rng.uniform(-20, 10),
                rx_rssi=rng.randint(-130, -40),
                hop_limit=rng.randint(0, 3),
                hop_start=3,
            )
            setattr(pkt, "from", rng.getrandbits(32))
            pkt.decoded.portnum = 256
            pkt.decoded.payload = rng.randbytes(rng.randint(60, 200))
            msg = mesh_pb2.FromRadio(id=i, packet=pkt)
        elif kind < 0.85:
            pkt = mesh_pb2.MeshPacket(to=0x1234ABCD, id=rng.getrandbits(32), rx_snr=-3.5, rx_rssi=-97, hop_start=3)
            setattr(pkt, "from", 0x0BADCAFE)
            pkt.decoded.portnum = 1
            pkt.decoded.payload = "필요 물4 식량3 천막2 인원12500".encode()
            msg = mesh_pb2.FromRadio(id=i, packet=pkt)
        else:
            qs = mesh_pb2.QueueStatus(res=0, free=rng.randint(0, 16), maxlen=16, mesh_packet_id=rng.getrandbits(32))
            msg = mesh_pb2.FromRadio(id=i, queueStatus=qs)
        parts.append(encode_frame(msg.SerializeToString()))
        if i % 25 == 0:
            line = f"DEBUG | 12:{i % 60:02d}:07 {i} [Router] Received routing from=0x{i:08x}, id=0x{i:x}\r\n"
            parts.append(line.encode())
            logs += 1
    return b"".join(parts), frames, logs


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - started)
    return best, count


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def meshd_decoder(pieces: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        decoder = FrameDecoder()
        for piece in pieces:
            decoder.feed(piece)
        return decoder.stats.frames

    return run


def meshd_session(pieces: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        session = Session(rng=random.Random(0))
        session.start()
        for piece in pieces:
            session.receive(piece)
        return session.stats.frames_in

    return run


class _BufferReader(StreamInterface):  # type: ignore[misc]
    """The library's StreamInterface with its stream replaced by an in-memory buffer (no device, no thread)."""

    def __init__(self, data: bytes, *, parse: bool) -> None:
        self._data = data
        self._at = 0
        self._parse = parse
        self.frames = 0
        self.lines = 0
        super().__init__(noProto=True, connectNow=False)

    def _readBytes(self, length: int) -> bytes:  # the library's names
        if self._at >= len(self._data):
            self._wantExit = True
            return b""
        chunk = self._data[self._at : self._at + length]
        self._at += length
        return chunk

    def _handleFromRadio(self, fromRadioBytes: bytes) -> None:
        if self._parse:
            mesh_pb2.FromRadio().ParseFromString(fromRadioBytes)
        self.frames += 1

    def _handleLogLine(self, line: str) -> None:
        self.lines += 1

    def _disconnected(self) -> None:
        pass  # no pubsub publishing at the end of the run


def meshtastic_reader(data: bytes, *, parse: bool) -> Callable[[], int]:
    def run() -> int:
        reader = _BufferReader(data, parse=parse)
        reader._StreamInterface__reader()  # the library's reader loop itself
        return reader.frames

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--mt-frames", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    data, frames, logs = build_stream(args.frames)
    mt_data, mt_frames, _ = build_stream(args.mt_frames)
    print(f"stream: {frames} frames, {logs} log lines, {len(data) / 1e6:.1f} MB ({len(data) / frames:.0f} B/frame)")
    rows: list[tuple[str, int, float]] = []

    def measure(name: str, fn: Callable[[], int], expected: int, runs: int) -> float:
        seconds, count = best_of(runs, fn)
        assert count == expected, f"{name}: parsed {count} frames, expected {expected}"
        rows.append((name, count, seconds))
        return count / seconds

    pieces64 = chunks(data, 64)
    parser_rate = measure("meshd FrameDecoder, 64-byte chunks", meshd_decoder(pieces64), frames, args.runs)
    measure("meshd FrameDecoder, whole stream", meshd_decoder([data]), frames, args.runs)
    session_rate = measure("meshd Session (+FromRadio, events), 64 B", meshd_session(pieces64), frames, args.runs)
    measure("meshd Session (+FromRadio, events), whole", meshd_session([data]), frames, args.runs)
    mt_count = meshtastic_reader(mt_data, parse=False)
    mt_rate = measure("meshtastic reader, byte at a time", mt_count, mt_frames, args.runs)
    mt_parse = meshtastic_reader(mt_data, parse=True)
    mt_parse_rate = measure("meshtastic reader + FromRadio parse", mt_parse, mt_frames, args.runs)

    print(f"{'parser':<44} {'frames':>8} {'seconds':>8} {'frames/s':>11}")
    for name, count, seconds in rows:
        print(f"{name:<44} {count:>8} {seconds:>8.3f} {count / seconds:>11,.0f}")
    print(f"framing only: meshd/meshtastic = {parser_rate / mt_rate:.1f}x; "
          f"with FromRadio parsing: {session_rate / mt_parse_rate:.1f}x")  # fmt: skip
    print(
        f"RESULT parser_frames_per_s={parser_rate:.0f} meshtastic_frames_per_s={mt_rate:.0f} "
        f"ratio={parser_rate / mt_rate:.1f} session_frames_per_s={session_rate:.0f} "
        f"meshtastic_parse_frames_per_s={mt_parse_rate:.0f}"
    )


if __name__ == "__main__":
    main()

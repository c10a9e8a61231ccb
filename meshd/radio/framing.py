"""Sans-I/O framing of the Meshtastic stream API (serial and TCP).

A frame is ``0x94 0xC3``, a big-endian u16 length (at most 512) and a protobuf (`ToRadio` from the host,
`FromRadio` from the device). Bytes outside frames are the device's log text. The decoder is fed whatever
bytes arrive, in any chunking, and yields complete payloads and log lines; it never raises on bad input.
A length over the maximum means "this was not a frame start": we drop one byte and hunt for the next
start bytes, as the firmware and the reference client do.

The stream has no checksum, so a frame cut short (device reset mid-frame, bytes lost on a noisy UART)
swallows the bytes that follow it up to its claimed length. The session notices when such a payload
does not parse and calls `unread()` with it, so frames hidden inside the bad one are decoded again
from their own start bytes instead of being lost with it.

Two ways to use it: `feed(data)` returns everything `data` completed, or `push(data)` then `pop()` one
item at a time (what the session does, so it can `unread()` a bad payload before the rest is decoded).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

START1 = 0x94
START2 = 0xC3
HEADER_LEN = 4
MAX_PAYLOAD = 512  # MAX_TO_FROM_RADIO_SIZE in the firmware
# The reference client sends 32 x START2 before its first frame so a device mid-frame resynchronises.
WAKE_BYTES = bytes([START2]) * 32
MAX_LOG_LINE = 1024
_START1_BYTE = bytes([START1])
_START2_BYTE = bytes([START2])
_COMPACT_AT = 64 * 1024  # consumed prefix size at which the buffer is compacted


def encode_frame(payload: bytes) -> bytes:
    """Wrap one serialised protobuf in a stream-API frame header."""
    if len(payload) > MAX_PAYLOAD:
        from meshd.errors import FrameError  # noqa: PLC0415 - keeps this module import-light

        raise FrameError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return bytes((START1, START2, len(payload) >> 8, len(payload) & 0xFF)) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame payload (still serialised protobuf)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class LogLine:
    """A line of device log text found between frames."""

    text: str


@dataclass(slots=True)
class FrameStats:
    frames: int = 0
    log_lines: int = 0
    oversize: int = 0
    dropped_bytes: int = 0
    unread: int = 0  # bad payloads handed back for a second look
    abandoned: int = 0  # incomplete frames given up on after a quiet spell


class FrameDecoder:
    """Incremental decoder: `feed(data)` returns the frames and log lines completed by `data`."""

    def __init__(self) -> None:
        # Unconsumed input is self._buf[self._pos:]; consuming moves _pos instead of copying the buffer.
        self._buf = bytearray()
        self._pos = 0
        self._log = bytearray()
        self._ready: deque[Frame | LogLine] = deque()  # log lines completed while scanning text
        # Bytes of _buf before this index came out of a damaged frame: outside frames they are dropped,
        # not reported as log text.
        self._noise_end = 0
        # len(_buf) needed before pop() can make progress (set while a frame is incomplete): lets a
        # read of a few bytes into a long frame return at once (serial reads are often 1-64 bytes).
        self._need = 0
        self.stats = FrameStats()

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame (or a frame header)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[Frame | LogLine]:
        self._buf += data
        if len(self._buf) < self._need and not self._ready:
            return []
        out: list[Frame | LogLine] = []
        append = out.append
        pop = self.pop
        while (item := pop()) is not None:
            append(item)
        return out

    def push(self, data: bytes) -> None:
        """Append received bytes; decode them with `pop()`."""
        self._buf += data

    def unread(self, payload: bytes) -> None:
        """Put a bad frame's payload back in front of the unconsumed input to be scanned again.

        Only the 4 header bytes stay consumed, so repeated unreads always make progress.
        """
        if not payload:
            return
        self.stats.unread += 1
        self._noise_end = len(payload) + max(self._noise_end - self._pos, 0)
        self._need = 0
        self._buf[: self._pos] = b""
        self._pos = 0
        self._buf[0:0] = payload

    def abandon_partial(self) -> bool:
        """Give up waiting for the rest of a buffered frame (the device went quiet mid-frame).

        The link calls this when no byte arrived for a while although a frame is incomplete: its header
        lied (a cut frame), so the start byte is dropped and what follows is scanned again for frames.
        Returns whether anything was buffered.
        """
        if self._pos >= len(self._buf):
            return False
        if self._buf[self._pos] == START1:
            self._pos += 1
            self.stats.dropped_bytes += 1
        self._noise_end = len(self._buf)
        self._need = 0
        self.stats.abandoned += 1
        return True

    def pop(self) -> Frame | LogLine | None:
        """The next complete frame or log line, or None when more bytes are needed."""
        if self._ready:
            return self._ready.popleft()
        buf = self._buf
        if len(buf) < self._need:
            return None
        self._need = 0
        while True:
            pos = self._pos
            end = len(buf)
            if pos >= end:
                self._compact()
                return None
            if buf[pos] != START1:
                nxt = buf.find(_START1_BYTE, pos)
                stop = end if nxt < 0 else nxt
                self._take_log(pos, stop)
                self._pos = stop
                if self._ready:
                    return self._ready.popleft()
                continue
            # buf[pos] is START1
            if end - pos < 2:
                self._wait_for(pos + 2)
                return None
            if buf[pos + 1] != START2:
                self._take_log(pos, pos + 1)
                self._pos = pos + 1
                if self._ready:
                    return self._ready.popleft()
                continue
            if end - pos < HEADER_LEN:
                self._wait_for(pos + HEADER_LEN)
                return None
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length > MAX_PAYLOAD:
                self.stats.oversize += 1
                self.stats.dropped_bytes += 1
                self._pos = pos + 1
                continue
            stop = pos + HEADER_LEN + length
            if stop > end:
                self._wait_for(stop)
                return None
            payload = bytes(buf[pos + HEADER_LEN : stop])
            self._pos = stop
            self.stats.frames += 1
            if self._log:
                # a frame ends any partial log line; emit the line first to keep stream order
                self._flush_log()
                self._ready.append(Frame(payload))
                return self._ready.popleft()
            return Frame(payload)

    def _wait_for(self, need: int) -> None:
        """Nothing more until len(_buf) reaches `need` (an index before compaction)."""
        ahead = need - self._pos
        self._compact()
        self._need = self._pos + ahead

    def _compact(self) -> None:
        if self._pos:
            if self._pos >= len(self._buf):
                self._buf.clear()
            elif self._pos >= _COMPACT_AT:
                del self._buf[: self._pos]
            else:
                return
            self._noise_end = max(self._noise_end - self._pos, 0)
            self._pos = 0

    def _take_log(self, start: int, stop: int) -> None:
        """Move buf[start:stop] to the log line buffer, queueing complete lines."""
        if start < self._noise_end:
            cut = min(stop, self._noise_end)
            self.stats.dropped_bytes += cut - start
            start = cut
            if start >= stop:
                return
        chunk = bytes(self._buf[start:stop])
        first = True
        for piece in chunk.split(b"\n"):
            if not first:
                self._flush_log()
            first = False
            rest = piece
            while rest:
                if not self._log:
                    # wake/resync bytes echoed or left over at a line start are not log text
                    stripped = rest.lstrip(_START2_BYTE)
                    self.stats.dropped_bytes += len(rest) - len(stripped)
                    rest = stripped
                    if not rest:
                        break
                room = MAX_LOG_LINE - len(self._log)
                self._log += rest[:room]
                rest = rest[room:]
                if len(self._log) >= MAX_LOG_LINE:
                    self._flush_log()

    def _flush_log(self) -> None:
        if not self._log:
            return
        text = self._log.decode("utf-8", errors="replace").rstrip("\r")
        self._log.clear()
        if text.strip():
            self._ready.append(LogLine(text))
            self.stats.log_lines += 1

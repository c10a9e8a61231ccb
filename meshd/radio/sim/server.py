"""The stream-API endpoints of a virtual radio: a pseudo-terminal (like USB serial) and a TCP port.

Pty: the master side is read with `loop.add_reader`; the slave is put in raw mode and kept open by the
simulator too, so a client closing the port does not hang up the master and a later client can open it
again (pyserial flushes stale input on open). pyserial opens a pty fine at any baud rate; the modem-line
ioctls (DTR/RTS) are not supported by Linux ptys: pyserial ignores that during `open()`, but setting
`.dtr`/`.rts` afterwards raises OSError(ENOTTY) — a host talking to the simulator must tolerate it. The
`/dev/pts/N` name changes when a radio is restarted, so each radio also gets a stable symlink
(`pty_path`) that is re-pointed: use that path.

TCP: 127.0.0.1 only, one client at a time; a new connection closes the previous one, as the firmware
does. Restarting a radio re-binds the same port.

Either way, the device drops an API session after `api_timeout_s` (real) seconds without input, like
the firmware's 15-minute timeout; the host's heartbeats keep it alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tty
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError
from meshtastic.protobuf import mesh_pb2

from meshd.errors import FrameError
from meshd.radio.framing import Frame, FrameDecoder, encode_frame
from meshd.radio.sim.node import VirtualRadio

logger = logging.getLogger(__name__)

API_TIMEOUT_S = 15 * 60
WRITE_BUFFER_LIMIT = 256 * 1024  # bytes a slow host may have pending before frames are dropped


class StreamSession:
    """One host connection: frames in, ToRadio to the radio, FromRadio frames out."""

    def __init__(
        self,
        radio: VirtualRadio,
        kind: str,
        write: Callable[[bytes], bool],
        *,
        api_timeout_s: float,
        close_transport: Callable[[], None] | None = None,
    ) -> None:
        self.radio = radio
        self.kind = kind
        self.configured = False
        self.bad_frames = 0
        self.dropped_frames = 0
        self._write = write
        self._close_transport = close_transport
        self._decoder = FrameDecoder()
        self._api_timeout_s = api_timeout_s
        self._idle: asyncio.TimerHandle | None = None

    def feed(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if not isinstance(item, Frame):
                continue  # text between frames (the host's wake bytes are dropped by the decoder)
            try:
                message = mesh_pb2.ToRadio.FromString(item.payload)
            except DecodeError:
                self.bad_frames += 1
                logger.debug("%s: undecodable ToRadio frame of %d bytes", self.radio, len(item.payload))
                continue
            self._touch()
            self.radio.handle_to_radio(self, message)

    def send(self, message: mesh_pb2.FromRadio) -> None:
        try:
            frame = encode_frame(message.SerializeToString())
        except FrameError:
            self.dropped_frames += 1
            return
        if not self._write(frame):
            self.dropped_frames += 1

    def send_text(self, text: str) -> None:
        """Device log text outside frames (boot banner)."""
        self._write((text.rstrip("\n") + "\r\n").encode())

    def end(self) -> None:
        """The host said `disconnect` (or went idle): TCP closes, a pty just forgets the session."""
        self.configured = False
        if self._close_transport is not None:
            self._close_transport()

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._api_timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        self._idle = None
        if self.configured:
            logger.info("%s: %s client silent for %.0f s, dropping the API session", self.radio, self.kind,
                        self._api_timeout_s)  # fmt: skip
            self.end()

    def detach(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.configured = False
        self.radio.detach_session(self)


# ---------------------------------------------------------------- pty


class PtyEndpoint:
    """The radio's 'USB serial port'."""

    def __init__(self, radio: VirtualRadio, link_path: Path | None, *, api_timeout_s: float = API_TIMEOUT_S) -> None:
        self.radio = radio
        self.link_path = link_path
        self.device: str | None = None
        self._api_timeout_s = api_timeout_s
        self._master: int | None = None
        self._slave: int | None = None
        self._pending = bytearray()
        self._session: StreamSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def path(self) -> str | None:
        """The path hosts should open: the stable symlink if there is one, else /dev/pts/N."""
        if self.device is None:
            return None
        return str(self.link_path) if self.link_path is not None else self.device

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.device = os.ttyname(slave)
        if self.link_path is not None:
            tmp = self.link_path.with_name(self.link_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.device)
            tmp.replace(self.link_path)
        self._session = StreamSession(self.radio, "serial", self._write, api_timeout_s=self._api_timeout_s)
        self.radio.attach_session(self._session)
        self._loop.add_reader(master, self._on_readable)

    def close(self) -> None:
        if self._session is not None:
            self._session.detach()
            self._session = None
        if self._master is not None and self._loop is not None:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._pending.clear()
        self.device = None
        self.remove_link()  # the port disappears, as an unplugged USB radio's does

    def send_text(self, text: str) -> None:
        if self._session is not None:
            self._session.send_text(text)

    def remove_link(self) -> None:
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: no slave open (cannot happen while we hold one)
            if exc.errno != errno.EIO:
                logger.warning("%s: pty read failed: %s", self.radio, exc)
            return
        if data and self._session is not None:
            self._session.feed(data)

    def _write(self, data: bytes) -> bool:
        if self._master is None:
            return False
        if len(self._pending) + len(data) > WRITE_BUFFER_LIMIT:
            return False  # nobody is reading: drop, as a device's serial buffer would
        self._pending += data
        self._flush()
        return True

    def _flush(self) -> None:
        if self._master is None or self._loop is None:
            return
        while self._pending:
            try:
                written = os.write(self._master, self._pending)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                logger.debug("%s: pty write failed: %s", self.radio, exc)
                self._pending.clear()
                return
            if written <= 0:
                self._loop.add_writer(self._master, self._on_writable)
                return
            del self._pending[:written]
        self._loop.remove_writer(self._master)

    def _on_writable(self) -> None:
        self._flush()


# ---------------------------------------------------------------- TCP


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, endpoint: TcpEndpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.session: StreamSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - create_server gives Transports
            transport.close()
            return
        self.transport = transport
        session = self.session = StreamSession(
            self.endpoint.radio,
            "tcp",
            self._write,
            api_timeout_s=self.endpoint.api_timeout_s,
            close_transport=transport.close,
        )
        self.endpoint.client_connected(self, session)

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.detach()
            self.session = None
        self.endpoint.client_gone(self)

    def _write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            return False
        transport.write(data)
        return True


class TcpEndpoint:
    """The radio's TCP API port (meshtasticd's 4403), on 127.0.0.1."""

    def __init__(self, radio: VirtualRadio, port: int = 0, *, api_timeout_s: float = API_TIMEOUT_S) -> None:
        self.radio = radio
        self.port = port
        self.api_timeout_s = api_timeout_s
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._client: _TcpProtocol | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _TcpProtocol(self), "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_client()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_client(self) -> None:
        client = self._client
        self._client = None
        if client is not None and client.transport is not None:
            client.transport.abort()

    def client_connected(self, protocol: _TcpProtocol, session: StreamSession) -> None:
        previous = self._client
        self._client = protocol
        self.connections += 1
        if previous is not None and previous.transport is not None:
            previous.transport.close()  # one client at a time: the newcomer wins
        self.radio.attach_session(session)

    def client_gone(self, protocol: _TcpProtocol) -> None:
        if self._client is protocol:
            self._client = None

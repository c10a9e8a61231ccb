"""A small fake Meshtastic device for radio-link tests, built on meshd's own framing.

`FakeDevice` is sans-I/O (bytes from the host in, bytes to the host out) and behaves like the firmware
where the link depends on it: the config sequence, QueueStatus replies (numbered for packets, unnumbered
for heartbeats and when a full queue gets room), a transmit queue of configurable size, `rebooted`.
`FakeTcpDevice` serves it on 127.0.0.1 (one client at a time, stoppable and restartable on the same
port); `FakePtyDevice` serves it on a pty reached through a symlink that can be re-pointed.
"""

from __future__ import annotations

import asyncio
import os
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshtastic.protobuf import channel_pb2, config_pb2, mesh_pb2, module_config_pb2, portnums_pb2

from meshd.radio.framing import Frame, FrameDecoder, encode_frame

MY_NODE = 0x1234ABCD
OTHER_NODE = 0x0BADCAFE
OTHER_KEY = bytes(range(32))


def from_radio(**fields) -> bytes:
    return encode_frame(mesh_pb2.FromRadio(**fields).SerializeToString())


def config_sequence(nonce: int, *, node_num: int = MY_NODE, hop_limit: int = 3, others: int = 2) -> bytes:
    """What firmware 2.7 sends after want_config_id, in its order."""
    out = [
        from_radio(my_info=mesh_pb2.MyNodeInfo(my_node_num=node_num, reboot_count=3)),
        from_radio(
            node_info=mesh_pb2.NodeInfo(
                num=node_num, user=mesh_pb2.User(id=f"!{node_num:08x}", long_name="Hub 412", short_name="H412")
            )
        ),
        from_radio(metadata=mesh_pb2.DeviceMetadata(firmware_version="2.7.15.fake", hasPKC=True)),
    ]
    for index in range(8):
        role = channel_pb2.Channel.Role.PRIMARY if index == 0 else channel_pb2.Channel.Role.DISABLED
        out.append(from_radio(channel=channel_pb2.Channel(index=index, role=role)))
    out.append(from_radio(config=config_pb2.Config(device=config_pb2.Config.DeviceConfig())))
    lora = config_pb2.Config.LoRaConfig(hop_limit=hop_limit, region=config_pb2.Config.LoRaConfig.RegionCode.KR)
    out.append(from_radio(config=config_pb2.Config(lora=lora)))
    out.append(from_radio(config=config_pb2.Config(sessionkey=config_pb2.Config.SessionkeyConfig())))
    out.append(
        from_radio(moduleConfig=module_config_pb2.ModuleConfig(mqtt=module_config_pb2.ModuleConfig.MQTTConfig()))
    )
    for i in range(others):
        num = OTHER_NODE + i
        user = mesh_pb2.User(id=f"!{num:08x}", long_name=f"Field {i}", short_name=f"F{i}", public_key=OTHER_KEY)
        out.append(from_radio(node_info=mesh_pb2.NodeInfo(num=num, user=user, last_heard=1000 + i)))
    out.append(from_radio(config_complete_id=nonce))
    return b"".join(out)


def packet_frame(
    payload: bytes,
    *,
    portnum: int = 256,
    sender: int = OTHER_NODE,
    to: int = MY_NODE,
    packet_id: int = 0x5555,
    request_id: int = 0,
    **extra,
) -> bytes:
    pkt = mesh_pb2.MeshPacket(to=to, id=packet_id, **extra)
    setattr(pkt, "from", sender)
    pkt.decoded.portnum = portnum
    pkt.decoded.payload = payload
    if request_id:
        pkt.decoded.request_id = request_id
    return from_radio(packet=pkt)


def routing_frame(request_id: int, error: str, *, sender: int = OTHER_NODE) -> bytes:
    routing = mesh_pb2.Routing(error_reason=mesh_pb2.Routing.Error.Value(error))
    return packet_frame(
        routing.SerializeToString(),
        portnum=portnums_pb2.PortNum.ROUTING_APP,
        sender=sender,
        request_id=request_id,
        packet_id=request_id ^ 0x1,
    )


@dataclass
class FakeDevice:
    """Firmware behaviour the link depends on, sans-I/O."""

    node_num: int = MY_NODE
    maxlen: int = 16
    capacity: int = 16  # transmit queue slots
    hop_limit: int = 3
    answer_packets: bool = True  # False: swallow packets without a QueueStatus (a dropped reply)
    answer_heartbeats: bool = True
    answer_config: bool = True
    refuse_with: int = 0  # QueueStatus.res for every packet (9 = DUTY_CYCLE_LIMIT)
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    received: list[mesh_pb2.ToRadio] = field(default_factory=list)
    packets: list[mesh_pb2.MeshPacket] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each packet
    tx_queue: list[int] = field(default_factory=list)
    max_queued: int = 0
    heartbeats: int = 0
    handshakes: int = 0

    @property
    def free(self) -> int:
        return self.capacity - len(self.tx_queue)

    def reset_stream(self) -> None:
        self.decoder = FrameDecoder()

    def handle(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if not isinstance(item, Frame):
                continue
            msg = mesh_pb2.ToRadio()
            msg.ParseFromString(item.payload)
            self.received.append(msg)
            which = msg.WhichOneof("payload_variant")
            if which == "want_config_id":
                self.handshakes += 1
                if self.answer_config:
                    out.append(config_sequence(msg.want_config_id, node_num=self.node_num, hop_limit=self.hop_limit))
            elif which == "heartbeat":
                self.heartbeats += 1
                if self.answer_heartbeats:
                    out.append(self.status(0))
            elif which == "packet":
                out.append(self._on_packet(msg.packet))
        return b"".join(out)

    def _on_packet(self, pkt: mesh_pb2.MeshPacket) -> bytes:
        self.packets.append(pkt)
        self.arrivals.append(time.monotonic())
        res = self.refuse_with
        if not res:
            if self.free > 0:
                self.tx_queue.append(pkt.id)
                self.max_queued = max(self.max_queued, len(self.tx_queue))
            else:
                res = 32  # ERRNO_UNKNOWN: what a full queue answers
        if not self.answer_packets:
            return b""
        return self.status(pkt.id, res=res)

    def status(self, packet_id: int, *, res: int = 0) -> bytes:
        qs = mesh_pb2.QueueStatus(res=res, free=self.free, maxlen=self.maxlen, mesh_packet_id=packet_id)
        return from_radio(queueStatus=qs)

    def transmit(self) -> bytes:
        """Put the oldest queued packet on the air; like MeshService::loop, announce room if it was full."""
        was_full = self.free == 0
        if self.tx_queue:
            self.tx_queue.pop(0)
        return self.status(0) if was_full else b""

    def packets_on_port(self, port: int) -> list[mesh_pb2.MeshPacket]:
        return [p for p in self.packets if p.decoded.portnum == port]


class FakeTcpDevice:
    """FakeDevice served over TCP on 127.0.0.1, one client at a time like the firmware."""

    def __init__(self, device: FakeDevice | None = None) -> None:
        self.device = device or FakeDevice()
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """The endpoint goes away: no more connections, the current one is cut."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None
        self._writer = None

    async def push(self, data: bytes) -> None:
        assert self._writer is not None, "no client connected"
        self._writer.write(data)
        await self._writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        if self._writer is not None:  # a new client replaces the old one, as on the firmware
            self._writer.transport.abort()
        self._writer = writer
        self._writers.add(writer)
        self.connections += 1
        self.device.reset_stream()
        try:
            while data := await reader.read(4096):
                reply = self.device.handle(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._handlers.discard(task)
            if self._writer is writer:
                self._writer = None


class FakePtyDevice:
    """FakeDevice behind a pty; the link opens `path`, a symlink we can point at a fresh pty."""

    def __init__(self, path: Path, device: FakeDevice | None = None) -> None:
        self.path = path
        self.device = device or FakeDevice()
        self._master = -1
        self._slave = -1

    @property
    def url(self) -> str:
        return f"serial://{self.path}"

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # the link's pyserial sets raw mode too; no echo before it does
        os.set_blocking(self._master, False)
        loop.add_reader(self._master, self._readable)
        self.device.reset_stream()
        tmp = self.path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self._slave))
        tmp.replace(self.path)

    def close(self) -> None:
        """The device goes away (USB unplugged): its pty and the symlink disappear."""
        if self._master < 0:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        self.path.unlink(missing_ok=True)
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    def push(self, data: bytes) -> None:
        os.write(self._master, data)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        reply = self.device.handle(data)
        if reply:
            os.write(self._master, reply)


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for state owned by another component (the link, the fake) to satisfy `predicate`."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling test state; nothing to await on
            await asyncio.sleep(0.01)


async def assert_no_tasks_left() -> None:
    await asyncio.sleep(0)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert others == [], f"tasks left behind: {others}"

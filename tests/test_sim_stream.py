"""The stream API of a virtual radio at the byte level: framing, handshake variants, queue status,
one TCP client at a time, idle timeout, reboot, and resilience to garbage."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable

from meshtastic.protobuf import admin_pb2, mesh_pb2, portnums_pb2

from meshd.radio.framing import WAKE_BYTES, Frame, FrameDecoder, LogLine, encode_frame
from meshd.radio.sim import SimNetwork, line_topology


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.messages: list[mesh_pb2.FromRadio] = []
        self.logs: list[str] = []

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, message: mesh_pb2.ToRadio) -> None:
        self.writer.write(encode_frame(message.SerializeToString()))

    async def until(self, predicate: Callable[[mesh_pb2.FromRadio], object], within: float = 5.0) -> mesh_pb2.FromRadio:
        async def pump() -> mesh_pb2.FromRadio:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                data = await self.reader.read(4096)
                if not data:
                    raise ConnectionError("closed")
                for item in self.decoder.feed(data):
                    if isinstance(item, Frame):
                        self.messages.append(mesh_pb2.FromRadio.FromString(item.payload))
                    elif isinstance(item, LogLine):
                        self.logs.append(item.text)

        return await asyncio.wait_for(pump(), within)

    async def closed(self, within: float = 5.0) -> bool:
        try:
            while await asyncio.wait_for(self.reader.read(4096), within):
                pass
        except (TimeoutError, ConnectionError):
            return False
        return True

    async def handshake(self, nonce: int = 4242) -> list[mesh_pb2.FromRadio]:
        self.writer.write(WAKE_BYTES)
        self.send(mesh_pb2.ToRadio(want_config_id=nonce))
        await self.until(lambda m: m.config_complete_id == nonce)
        return list(self.messages)

    def close(self) -> None:
        self.writer.close()


def _answers(request_id: int, message: mesh_pb2.FromRadio) -> bool:
    return bool(message.packet.decoded.request_id == request_id)


def kinds(messages: list[mesh_pb2.FromRadio]) -> list[str]:
    return [str(m.WhichOneof("payload_variant")) for m in messages]


async def test_handshake_order_and_nonce_variants() -> None:
    async with SimNetwork(line_topology(3), speedup=50, pty=False) as net:
        radio = net.radios[0]
        client = await RawClient.connect(radio.tcp_port)  # type: ignore[arg-type]
        full = kinds(await client.handshake(1))
        assert full[:4] == ["my_info", "deviceuiConfig", "node_info", "metadata"]
        assert full.count("channel") == 8
        assert full.count("node_info") == 3
        assert full.index("config") > full.index("channel")
        assert full[-1] == "config_complete_id"
        assert full.index("moduleConfig") > full.index("config")
        client.messages.clear()
        config_only = kinds(await client.handshake(69420))
        assert config_only.count("node_info") == 1
        assert "config" in config_only
        client.messages.clear()
        nodes_only = kinds(await client.handshake(69421))
        assert set(nodes_only) == {"node_info", "config_complete_id"}
        assert nodes_only.count("node_info") == 3
        client.close()


async def test_queue_status_for_packets_and_heartbeats() -> None:
    async with SimNetwork(line_topology(2), speedup=50, pty=False) as net:
        client = await RawClient.connect(net.radios[0].tcp_port)  # type: ignore[arg-type]
        await client.handshake()
        packet = mesh_pb2.MeshPacket(to=0xFFFFFFFF, hop_limit=3)
        packet.decoded.portnum = 256
        packet.decoded.payload = b"q"
        client.send(mesh_pb2.ToRadio(packet=packet))  # id 0: the radio assigns one
        status = (await client.until(lambda m: m.HasField("queueStatus"))).queueStatus
        assert status.res == 0
        assert status.maxlen == 16
        assert status.free in (15, 16)
        assert status.mesh_packet_id != 0
        client.messages.clear()
        client.send(mesh_pb2.ToRadio(heartbeat=mesh_pb2.Heartbeat(nonce=1)))
        beat = (await client.until(lambda m: m.HasField("queueStatus"))).queueStatus
        assert beat.maxlen == 16
        assert beat.mesh_packet_id == 0
        client.close()


async def test_admin_requests_to_the_local_node() -> None:
    async with SimNetwork(line_topology(2), speedup=50, pty=False) as net:
        radio = net.radios[0]
        client = await RawClient.connect(radio.tcp_port)  # type: ignore[arg-type]
        await client.handshake()
        answers = {}
        for pid, request in [
            (101, admin_pb2.AdminMessage(get_owner_request=True)),
            (102, admin_pb2.AdminMessage(get_config_request=admin_pb2.AdminMessage.ConfigType.LORA_CONFIG)),
            (103, admin_pb2.AdminMessage(get_channel_request=1)),
        ]:
            packet = mesh_pb2.MeshPacket(to=radio.num, id=pid, want_ack=True)
            packet.decoded.portnum = portnums_pb2.PortNum.ADMIN_APP
            packet.decoded.payload = request.SerializeToString()
            packet.decoded.want_response = True
            client.send(mesh_pb2.ToRadio(packet=packet))
            reply = await client.until(functools.partial(_answers, pid))
            answers[pid] = admin_pb2.AdminMessage.FromString(reply.packet.decoded.payload)
        assert answers[101].get_owner_response.long_name == radio.name
        assert answers[102].get_config_response.lora.hop_limit == 3
        assert answers[103].get_channel_response.settings.name == "meshd"
        client.close()


async def test_one_tcp_client_at_a_time_and_disconnect() -> None:
    async with SimNetwork(line_topology(2), speedup=50, pty=False) as net:
        port = net.radios[0].tcp_port
        first = await RawClient.connect(port)  # type: ignore[arg-type]
        await first.handshake()
        second = await RawClient.connect(port)  # type: ignore[arg-type]
        assert await first.closed()  # the newcomer wins, as on the firmware
        await second.handshake()
        second.send(mesh_pb2.ToRadio(disconnect=True))
        assert await second.closed()


async def test_idle_api_session_is_dropped() -> None:
    async with SimNetwork(line_topology(2), speedup=50, pty=False, api_timeout_s=0.3) as net:
        client = await RawClient.connect(net.radios[0].tcp_port)  # type: ignore[arg-type]
        await client.handshake()
        assert await client.closed(within=3)


async def test_reboot_sends_banner_and_rebooted() -> None:
    async with SimNetwork(line_topology(2), speedup=50, pty=False) as net:
        radio = net.radios[0]
        client = await RawClient.connect(radio.tcp_port)  # type: ignore[arg-type]
        await client.handshake()
        net.reboot(radio.num)
        await client.until(lambda m: m.rebooted)
        assert any("simulated radio" in line for line in client.logs)
        info = await client.handshake(77)
        assert [m.my_info.reboot_count for m in info if m.HasField("my_info")][-1] == 1
        client.close()


async def test_garbage_does_not_break_the_radio() -> None:
    async with SimNetwork(line_topology(2), speedup=50, pty=False) as net:
        radio = net.radios[0]
        client = await RawClient.connect(radio.tcp_port)  # type: ignore[arg-type]
        client.writer.write(os.urandom(3000))
        client.writer.write(b"\x94\xc3\xff\xff")  # oversize length: not a frame
        client.writer.write(encode_frame(b"\xff\xff\xff not a protobuf"))
        await client.handshake(5)
        client.close()


async def test_pty_carries_the_boot_banner_and_frames() -> None:
    async with SimNetwork(line_topology(2), speedup=50, base_port=None) as net:
        radio = net.radios[0]
        assert radio.pty_path is not None
        assert radio.tcp_port is None
        fd = os.open(radio.pty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(fd, lambda: got.put_nowait(os.read(fd, 4096)))
        try:
            os.write(fd, WAKE_BYTES + encode_frame(mesh_pb2.ToRadio(want_config_id=9).SerializeToString()))
            decoder = FrameDecoder()
            messages: list[Frame | LogLine] = []
            while not any(isinstance(m, Frame) and mesh_pb2.FromRadio.FromString(m.payload).config_complete_id == 9
                          for m in messages):  # fmt: skip
                messages.extend(decoder.feed(await asyncio.wait_for(got.get(), 5)))
            assert any(isinstance(m, LogLine) and "simulated radio" in m.text for m in messages)
        finally:
            loop.remove_reader(fd)
            os.close(fd)

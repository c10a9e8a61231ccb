"""The real `meshtastic` library and CLI talk to virtual radios exactly as to hardware."""

from __future__ import annotations

import asyncio
import base64
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from meshd.radio.sim import SimNetwork, line_topology
from tests.simutil import Collector, eventually, is_link, path_exists, serial_interface, tcp_interface

MESHTASTIC_CLI = str(Path(sys.executable).with_name("meshtastic"))


@pytest.fixture
async def net2():
    async with SimNetwork(line_topology(2), speedup=50, seed=7, record_air=True) as net:
        yield net


async def test_tcp_handshake_text_and_private_port(net2: SimNetwork) -> None:
    a_radio, b_radio = net2.radios
    a = await asyncio.to_thread(tcp_interface, a_radio.tcp_port)
    b = await asyncio.to_thread(tcp_interface, b_radio.tcp_port)
    rx_a, rx_b = Collector(a), Collector(b)
    try:
        assert a.myInfo.my_node_num == a_radio.num
        assert a.getLongName() == a_radio.name
        assert a.metadata.firmware_version.startswith("2.7.")
        assert a.metadata.hasPKC
        assert b_radio.node_id in a.nodes  # the node DB lists the other radio
        assert a.localNode.localConfig.lora.region == 7  # KR
        assert a.localNode.localConfig.security.public_key == a_radio.public_key
        primary = a.localNode.channels[0]
        assert primary.role == 1
        assert primary.settings.name == "meshd"
        assert len(a.localNode.channels) == 8

        await asyncio.to_thread(a.sendText, "hello mesh")
        assert await eventually(lambda: rx_b.matching(lambda p: p["decoded"].get("text") == "hello mesh"))
        text = rx_b.matching(lambda p: p["decoded"].get("text") == "hello mesh")[0]
        assert text["fromId"] == a_radio.node_id
        assert text["toId"] == "^all"
        assert text["hopStart"] == 3
        assert text["hopLimit"] == 3
        assert "rxSnr" in text
        assert "rxRssi" in text

        await asyncio.to_thread(b.sendData, b"\x00\x01binary\xff", portNum=256)
        assert await eventually(lambda: rx_a.matching(lambda p: p["decoded"]["portnum"] == "PRIVATE_APP"))
        private = rx_a.matching(lambda p: p["decoded"]["portnum"] == "PRIVATE_APP")[0]
        assert private["decoded"]["payload"] == b"\x00\x01binary\xff"
        assert private["from"] == b_radio.num
    finally:
        rx_a.close()
        rx_b.close()
        await asyncio.gather(asyncio.to_thread(a.close), asyncio.to_thread(b.close))


async def test_serial_over_pty_and_reopen(net2: SimNetwork) -> None:
    a_radio, b_radio = net2.radios
    assert a_radio.pty_path is not None
    assert is_link(a_radio.pty_path)
    a = await asyncio.to_thread(serial_interface, a_radio.pty_path)
    b = await asyncio.to_thread(tcp_interface, b_radio.tcp_port)
    rx_b = Collector(b)
    try:
        assert a.myInfo.my_node_num == a_radio.num
        await asyncio.to_thread(a.sendData, b"over serial", portNum=300)
        assert await eventually(lambda: rx_b.matching(lambda p: p["decoded"]["payload"] == b"over serial"))
    finally:
        rx_b.close()
        await asyncio.gather(asyncio.to_thread(a.close), asyncio.to_thread(b.close))
    # A second client can open the same port after the first closed it.
    again = await asyncio.to_thread(serial_interface, a_radio.pty_path)
    assert again.myInfo.my_node_num == a_radio.num
    await asyncio.to_thread(again.close)


async def test_pki_direct_message_and_ack(net2: SimNetwork) -> None:
    a_radio, b_radio = net2.radios
    a = await asyncio.to_thread(tcp_interface, a_radio.tcp_port)
    b = await asyncio.to_thread(tcp_interface, b_radio.tcp_port)
    rx_b = Collector(b)
    responses: list[dict[str, Any]] = []

    def on_response(packet: dict[str, Any]) -> None:
        responses.append(packet)

    try:
        sent = await asyncio.to_thread(
            a.sendData, b"secret report", destinationId=b_radio.num, portNum=256, wantAck=True,
            pkiEncrypted=True, onResponse=on_response, onResponseAckPermitted=True,
        )  # fmt: skip
        assert await eventually(lambda: rx_b.matching(lambda p: p["decoded"]["portnum"] == "PRIVATE_APP"))
        got = rx_b.matching(lambda p: p["decoded"]["portnum"] == "PRIVATE_APP")[0]
        assert got["decoded"]["payload"] == b"secret report"
        assert got["pkiEncrypted"] is True
        assert base64.b64decode(got["publicKey"]) == a_radio.public_key
        assert await eventually(lambda: bool(responses))
        ack = responses[0]
        assert ack["decoded"]["requestId"] == sent.id
        assert ack["decoded"]["routing"].get("errorReason", "NONE") == "NONE"
        assert ack["from"] == b_radio.num  # a real ACK from the destination
        # On the air the report only ever appears as ciphertext.
        assert all(b"secret report" not in rec.payload for rec in net2.on_air)
        assert any(rec.pki and rec.from_node == a_radio.num for rec in net2.on_air)
    finally:
        rx_b.close()
        await asyncio.gather(asyncio.to_thread(a.close), asyncio.to_thread(b.close))


async def test_too_large_frame_is_naked(net2: SimNetwork) -> None:
    a_radio, b_radio = net2.radios
    a = await asyncio.to_thread(tcp_interface, a_radio.tcp_port)
    responses: dict[int, dict[str, Any]] = {}

    def on_response(packet: dict[str, Any]) -> None:
        responses[packet["decoded"]["requestId"]] = packet

    try:
        # 232 bytes passes the library's 233-byte check but the frame (16 + 240 B) exceeds 255 bytes.
        big = await asyncio.to_thread(
            a.sendData, b"x" * 232, destinationId=b_radio.num, portNum=256, wantAck=True,
            onResponse=on_response, onResponseAckPermitted=True,
        )  # fmt: skip
        fits = await asyncio.to_thread(
            a.sendData, b"y" * 231, destinationId=b_radio.num, portNum=256, wantAck=True,
            onResponse=on_response, onResponseAckPermitted=True,
        )  # fmt: skip
        assert await eventually(lambda: big.id in responses and fits.id in responses)
        assert responses[big.id]["decoded"]["routing"]["errorReason"] == "TOO_LARGE"
        assert responses[big.id]["from"] == a_radio.num
        assert responses[fits.id]["decoded"]["routing"].get("errorReason", "NONE") == "NONE"
        assert responses[fits.id]["from"] == b_radio.num
        assert max(rec.airtime_s for rec in net2.on_air) > 0
    finally:
        await asyncio.to_thread(a.close)


async def test_reboot_makes_the_library_redo_the_handshake(net2: SimNetwork) -> None:
    radio = net2.radios[0]
    a = await asyncio.to_thread(tcp_interface, radio.tcp_port)
    try:
        assert a.myInfo.reboot_count == 0
        net2.reboot(radio.num)
        assert await eventually(lambda: a.myInfo is not None and a.myInfo.reboot_count == 1)
        assert await eventually(a.isConnected.is_set)
    finally:
        await asyncio.to_thread(a.close)


async def test_stop_and_start_keep_port_and_pty_path(net2: SimNetwork) -> None:
    radio = net2.radios[1]
    port, path = radio.tcp_port, radio.pty_path
    assert port is not None
    assert path is not None
    await net2.stop_radio(radio.spec.id)
    assert not path_exists(path)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    await net2.start_radio(radio.spec.id)
    assert (radio.tcp_port, radio.pty_path) == (port, path)
    over_tcp = await asyncio.to_thread(tcp_interface, port)
    await asyncio.to_thread(over_tcp.close)
    over_pty = await asyncio.to_thread(serial_interface, path)
    assert over_pty.myInfo.my_node_num == radio.num
    await asyncio.to_thread(over_pty.close)


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        MESHTASTIC_CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_meshtastic_cli_info_sendtext_metadata(net2: SimNetwork) -> None:
    a_radio, b_radio = net2.radios
    host = f"127.0.0.1:{a_radio.tcp_port}"
    rc, out = await _cli("--host", host, "--info")
    assert rc == 0, out
    assert a_radio.name in out
    assert "Channels:" in out
    assert "PRIMARY" in out
    rc, out = await _cli("--host", host, "--sendtext", "hi")
    assert rc == 0, out
    assert await eventually(lambda: any(d.packet.decoded.payload == b"hi" for d in b_radio.delivered))
    rc, out = await _cli("--host", host, "--device-metadata")
    assert rc == 0, out
    assert "firmware_version: 2.7.11" in out

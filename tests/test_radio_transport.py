"""Device URLs: serial paths and TCP endpoints, and clear errors for everything else."""

from __future__ import annotations

import pytest

from meshd.errors import RadioError
from meshd.radio.transport import DeviceAddress, open_device, parse_device_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/dev/ttyACM0", DeviceAddress("serial", path="/dev/ttyACM0")),
        ("/dev/serial/by-id/usb-RAK_4631-if00", DeviceAddress("serial", path="/dev/serial/by-id/usb-RAK_4631-if00")),
        ("serial:///dev/ttyUSB0", DeviceAddress("serial", path="/dev/ttyUSB0")),
        ("  /dev/meshtastic ", DeviceAddress("serial", path="/dev/meshtastic")),
        ("tcp://192.168.1.20", DeviceAddress("tcp", host="192.168.1.20", port=4403)),
        ("tcp://meshtasticd.local:4403", DeviceAddress("tcp", host="meshtasticd.local", port=4403)),
        ("TCP://127.0.0.1:14403/", DeviceAddress("tcp", host="127.0.0.1", port=14403)),
        ("tcp://[::1]:4404", DeviceAddress("tcp", host="::1", port=4404)),
    ],
)
def test_good_urls(url: str, expected: DeviceAddress) -> None:
    assert parse_device_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ttyACM0",
        "COM3",
        "udp://radio:4403",
        "serial://dev/ttyACM0",
        "serial:ttyACM0",
        "tcp://",
        "tcp://:4403",
        "tcp://host:notaport",
        "tcp://host:70000",
        "tcp://host:0",
        "tcp://host:4403/path",
        "tcp://user:pw@host",
        "tcp://host?x=1",
        "ble://AA:BB",
    ],
)
def test_bad_urls_are_radio_errors(url: str) -> None:
    with pytest.raises(RadioError):
        parse_device_url(url)


def test_addresses_print_back_as_urls() -> None:
    assert str(parse_device_url("tcp://[::1]")) == "tcp://[::1]:4403"
    assert str(parse_device_url("serial:///dev/ttyACM0")) == "/dev/ttyACM0"


async def test_missing_serial_device_is_a_radio_error(tmp_path) -> None:
    with pytest.raises(RadioError, match="cannot open"):
        await open_device(parse_device_url(str(tmp_path / "no-such-tty")))


async def test_refused_tcp_connection_is_a_radio_error() -> None:
    with pytest.raises(RadioError, match="cannot open"):
        await open_device(parse_device_url("tcp://127.0.0.1:1"), timeout_s=2)

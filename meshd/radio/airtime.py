"""LoRa time-on-air for Meshtastic modem presets (Semtech AN1200.13).

Meshtastic uses a 16-symbol preamble, explicit header and CRC, and low-data-rate optimisation when a symbol
lasts 16 ms or more. CR below is the coding-rate *denominator* (5 for 4/5, 8 for 4/8); a widely copied
simulator multiplies by (CR + 4) with CR already the denominator and overstates airtime by 27-74 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meshd.errors import MeshdError

PREAMBLE_SYMBOLS = 16
MESH_HEADER_LEN = 16  # unencrypted Meshtastic packet header on the air
MAX_PHY_PAYLOAD = 255
# Data{portnum, payload, bitfield}: portnum tag+varint, payload tag+length, bitfield tag+value (fw >= 2.5)
BITFIELD_OVERHEAD = 2
PKI_OVERHEAD = 12  # AES-CCM 8-byte tag + 4-byte extra nonce on PKI direct messages
DATA_PAYLOAD_LEN = 233  # meshtastic Constants.DATA_PAYLOAD_LEN: the library's limit


@dataclass(frozen=True, slots=True)
class ModemPreset:
    name: str
    bandwidth_hz: int
    spreading_factor: int
    coding_rate: int  # denominator: 5 means 4/5

    @property
    def symbol_s(self) -> float:
        return float(2**self.spreading_factor) / self.bandwidth_hz

    @property
    def low_data_rate_optimise(self) -> bool:
        return self.symbol_s >= 0.016


PRESETS: dict[str, ModemPreset] = {
    p.name: p
    for p in (
        ModemPreset("SHORT_TURBO", 500_000, 7, 5),
        ModemPreset("SHORT_FAST", 250_000, 7, 5),
        ModemPreset("SHORT_SLOW", 250_000, 8, 5),
        ModemPreset("MEDIUM_FAST", 250_000, 9, 5),
        ModemPreset("MEDIUM_SLOW", 250_000, 10, 5),
        ModemPreset("LONG_TURBO", 500_000, 11, 8),
        ModemPreset("LONG_FAST", 250_000, 11, 5),
        ModemPreset("LONG_MODERATE", 125_000, 11, 8),
        ModemPreset("LONG_SLOW", 125_000, 12, 8),
    )
}


def preset(name: str) -> ModemPreset:
    try:
        return PRESETS[name.upper()]
    except KeyError:
        raise MeshdError(f"unknown modem preset {name!r}; known: {', '.join(PRESETS)}") from None


def time_on_air_s(phy_payload_len: int, modem: ModemPreset) -> float:
    """Seconds on the air for a LoRa frame whose PHY payload is `phy_payload_len` bytes."""
    sf = modem.spreading_factor
    de = 1 if modem.low_data_rate_optimise else 0
    numerator = 8 * phy_payload_len - 4 * sf + 28 + 16  # explicit header, CRC on
    symbols = 8 + max(math.ceil(numerator / (4 * (sf - 2 * de))) * modem.coding_rate, 0)
    t_sym = modem.symbol_s
    return (PREAMBLE_SYMBOLS + 4.25) * t_sym + symbols * t_sym


def _varint_len(value: int) -> int:
    length = 1
    while value >= 0x80:
        value >>= 7
        length += 1
    return length


def encoded_data_len(payload_len: int, portnum: int = 256, *, pki: bool = False) -> int:
    """Size of the encoded Meshtastic `Data` message carrying `payload_len` bytes on `portnum`."""
    size = 1 + _varint_len(portnum) + 1 + _varint_len(payload_len) + payload_len + BITFIELD_OVERHEAD
    return size + (PKI_OVERHEAD if pki else 0)


def frame_len(payload_len: int, portnum: int = 256, *, pki: bool = False) -> int:
    """PHY payload length on the air: Meshtastic header plus encoded Data."""
    return MESH_HEADER_LEN + encoded_data_len(payload_len, portnum, pki=pki)


def max_app_payload(portnum: int = 256, *, pki: bool = False) -> int:
    """Largest application payload that still fits one LoRa frame."""
    best = 0
    for n in range(MAX_PHY_PAYLOAD):
        if frame_len(n, portnum, pki=pki) <= MAX_PHY_PAYLOAD:
            best = n
    return min(best, DATA_PAYLOAD_LEN)


def payload_airtime_s(payload_len: int, modem: ModemPreset, portnum: int = 256, *, pki: bool = False) -> float:
    """Time on air of one frame carrying an application payload of `payload_len` bytes."""
    return time_on_air_s(frame_len(payload_len, portnum, pki=pki), modem)

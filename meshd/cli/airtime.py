"""`meshd airtime`: LoRa time on air of one Meshtastic frame, for every modem preset.

The frame is the 16-byte Meshtastic header plus the encoded `Data` message (port number, payload and the
bitfield the firmware adds); PKI direct messages add 12 bytes. Semtech AN1200.13 with a 16-symbol
preamble, explicit header, CRC, low-data-rate optimisation at symbol times of 16 ms or more.
"""

from __future__ import annotations

import argparse
from typing import Any

from meshd.errors import MeshdError
from meshd.radio.airtime import (
    MAX_PHY_PAYLOAD,
    PKI_OVERHEAD,
    PRESETS,
    encoded_data_len,
    frame_len,
    max_app_payload,
    time_on_air_s,
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "airtime",
        help="time on air of one frame for each modem preset",
        description="Print the LoRa time on air of a Data payload of N bytes for every modem preset.",
    )
    parser.add_argument("--bytes", dest="nbytes", type=int, required=True, metavar="N", help="application payload size")
    parser.add_argument("--preset", type=str.upper, choices=sorted(PRESETS), help="mark this preset in the table")
    parser.add_argument("--port", type=int, default=256, help="Meshtastic port number (default 256, PRIVATE_APP)")
    parser.add_argument("--pki", action="store_true", help="as a PKI direct message (12 more bytes)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    n = args.nbytes
    if n < 0:
        raise MeshdError("--bytes must not be negative")
    if not 0 < args.port < 1024:
        raise MeshdError("--port must be a Meshtastic port number (1-1023)")
    limit = max_app_payload(args.port, pki=args.pki)
    phy = frame_len(n, args.port, pki=args.pki)
    if n > limit:
        raise MeshdError(
            f"a payload of {n} bytes does not fit one frame: the frame would be {phy} bytes "
            f"(max {MAX_PHY_PAYLOAD}); at most {limit} bytes on port {args.port}{' as PKI' if args.pki else ''}"
        )
    data_len = encoded_data_len(n, args.port)
    parts = f"16 B header + {data_len} B encoded Data" + (f" + {PKI_OVERHEAD} B PKI" if args.pki else "")
    print(f"payload {n} B on port {args.port}{' (PKI)' if args.pki else ''}: frame {phy} B ({parts})")
    print(f"  {'preset':<14} {'BW kHz':>6} {'SF':>3} {'CR':>4} {'frame B':>8} {'airtime ms':>11}")
    for name, modem in PRESETS.items():
        mark = "*" if name == args.preset else " "
        airtime_ms = time_on_air_s(phy, modem) * 1000.0
        print(
            f"{mark} {name:<14} {modem.bandwidth_hz / 1000:>6g} {modem.spreading_factor:>3} "
            f"{'4/' + str(modem.coding_rate):>4} {phy:>8} {airtime_ms:>11.1f}"
        )
    return 0

"""`meshd encode` and `meshd decode`: the wire format from the command line."""

from __future__ import annotations

import argparse
import binascii
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from meshd import keys
from meshd.cli.keys import load_registry
from meshd.errors import DecodeError, EncodeError, MeshdError, SignatureError, UnknownOriginError
from meshd.wire import linkauth
from meshd.wire.codec import Provenance, build_envelope, parse_kind, report_json, unbatch
from meshd.wire.envelope import Envelope, Kind
from meshd.wire.registry import Registry


def register(subparsers: Any) -> None:
    enc = subparsers.add_parser("encode", help="sign a report given as JSON and print the envelope")
    enc.add_argument("kind", help="needs, alert, sealed, broadcast, status, delivered")
    enc.add_argument("--json", dest="json_file", required=True, help="JSON body file, or - for stdin")
    enc.add_argument("--key", type=Path, required=True, help="key directory of the origin")
    enc.add_argument("--origin", type=int, help="origin camp id (default: camp.id in the key directory)")
    enc.add_argument("--seq", type=int, default=1, help="sequence number (default 1; hubs use their store)")
    enc.add_argument("--registry", type=Path, help="registry, for the HQ protection key (sealed reports)")
    enc.add_argument("--seal-to", type=Path, help="HQ seal.pub to seal to (instead of --registry)")
    enc.add_argument("--base64", action="store_true", help="print base64 instead of hex")
    enc.set_defaults(func=cmd_encode)

    dec = subparsers.add_parser("decode", help="decode an envelope and check its signature")
    dec.add_argument("data", help="envelope as hex or base64, or - for stdin")
    dec.add_argument("--registry", type=Path, help="camp registry to verify the signature against")
    dec.add_argument("--open-key", type=Path, help="HQ protection key directory, to open sealed reports")
    dec.set_defaults(func=cmd_decode)


def _read_json(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise EncodeError(f"cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EncodeError(f"{source} is not valid JSON: {exc}") from None


def cmd_encode(args: argparse.Namespace) -> int:
    kind = parse_kind(args.kind)
    if kind is Kind.BATCH:
        raise EncodeError("batches are built by the relay from queued reports, not from the command line")
    body = _read_json(args.json_file)
    if not isinstance(body, dict):
        raise EncodeError("the JSON body must be an object")
    pair = keys.load(args.key)
    origin = args.origin if args.origin is not None else pair.camp_id
    if origin is None:
        raise EncodeError("no origin: give --origin or create the keys with --camp")
    seal_to = None
    if kind is Kind.SEALED:
        if args.seal_to is not None:
            seal_to = X25519PublicKey.from_public_bytes(keys.load_seal_public(args.seal_to))
        elif args.registry is not None:
            seal_to = load_registry(args.registry).hq_seal_public()
        else:
            raise EncodeError("a sealed report needs --registry or --seal-to (the HQ protection key)")
    env = build_envelope(kind, body, origin=origin, seq=args.seq, key=pair.sign, seal_to=seal_to)
    raw = env.to_bytes()
    print(binascii.b2a_base64(raw, newline=False).decode() if args.base64 else raw.hex())
    return 0


def parse_frame_text(text: str) -> bytes:
    text = "".join(text.split())
    if not text:
        raise DecodeError("no envelope given")
    try:
        return bytes.fromhex(text)
    except ValueError:
        try:
            return binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            raise DecodeError("input is neither hex nor base64") from None


def parse_envelope_text(text: str) -> Envelope:
    return Envelope.from_bytes(parse_frame_text(text))


def print_link_frame(raw: bytes) -> int:
    """A compact custody notice or Delivered notice (what hubs tell each other): what it says. Its tag is under
    the key of the two hubs it is between, so no one else can check it."""
    notice = linkauth.decode_custody_notice(raw)
    out: dict[str, object] = {
        "frame": "custody notice" if notice.packet_ids else "delivered notice",
        "from_camp": notice.camp,
    }
    if notice.packet_ids:
        out["answers"] = [f"{packet_id:08x}" for packet_id in notice.packet_ids]
        out["delivered"] = notice.delivered
    if notice.reports:
        out["hq_has"] = [f"{origin}:{seq}" for origin, seq in notice.reports]
    print(json.dumps(out))
    print("tag: not checked (only the hub it is for can: a key shared by the two hubs)", file=sys.stderr)
    return 0


def check_provenance(env: Envelope, registry: Registry | None) -> Provenance:
    if registry is None:
        return Provenance.UNCHECKED
    try:
        registry.verify_envelope(env)
    except UnknownOriginError:
        return Provenance.UNKNOWN_ORIGIN
    return Provenance.UNVERIFIED if env.unverified else Provenance.VERIFIED


def cmd_decode(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.data == "-" else args.data
    raw = parse_frame_text(text)
    if linkauth.is_link_frame(raw):
        return print_link_frame(raw)
    env = Envelope.from_bytes(raw)
    registry = load_registry(args.registry) if args.registry else None
    if registry is not None:
        registry.verify()
    open_key: X25519PrivateKey | None = keys.load_seal_private(args.open_key) if args.open_key else None
    try:
        provenance = check_provenance(env, registry)
    except SignatureError as exc:
        print(f"meshd decode: signature: FAILED ({exc})", file=sys.stderr)
        return 1
    for report in unbatch(env):
        try:
            print(json.dumps(report_json(report, provenance=provenance, open_key=open_key), ensure_ascii=False))
        except MeshdError as exc:
            raise DecodeError(f"report {report.id}: {exc}") from None
    verdict = {
        Provenance.UNCHECKED: "not checked (give --registry)",
        Provenance.UNKNOWN_ORIGIN: f"not checked: origin {env.origin} is not in the registry",
        Provenance.VERIFIED: "verified",
        Provenance.UNVERIFIED: "verified (report from a handset not in the hub's roster)",
    }[provenance]
    print(f"signature: {verdict}", file=sys.stderr)
    return 0

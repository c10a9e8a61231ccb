"""`meshd keygen` and `meshd registry add|sign|verify|show`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from meshd import keys
from meshd.errors import RegistryError
from meshd.wire.registry import Camp, Registry, b64


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("keygen", help="create a signing (Ed25519) and sealing (X25519) key pair")
    p.add_argument("--out", type=Path, required=True, help="directory for the key files (created)")
    p.add_argument("--camp", type=int, help="camp id this hub speaks for (written to camp.id)")
    p.set_defaults(func=cmd_keygen)

    reg = subparsers.add_parser("registry", help="manage the HQ-signed camp registry")
    sub = reg.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add or replace a camp (the registry must be signed again)")
    add.add_argument("--file", type=Path, required=True)
    add.add_argument("--camp", type=int, required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--key", type=Path, required=True, help="the camp's key directory or its sign.pub")
    add.add_argument("--lat", type=float)
    add.add_argument("--lon", type=float)
    add.add_argument("--hq", type=Path, help="HQ key directory (needed when creating a new registry)")
    add.set_defaults(func=cmd_registry_add)
    sign = sub.add_parser("sign", help="sign the registry with the HQ key")
    sign.add_argument("--file", type=Path, required=True)
    sign.add_argument("--key", type=Path, required=True, help="HQ key directory")
    sign.set_defaults(func=cmd_registry_sign)
    ver = sub.add_parser("verify", help="check the registry's HQ signature")
    ver.add_argument("--file", type=Path, required=True)
    ver.add_argument("--hq-pub", type=Path, help="pinned HQ sign.pub (or key directory) to check against")
    ver.set_defaults(func=cmd_registry_verify)
    show = sub.add_parser("show", help="list the camps in the registry")
    show.add_argument("--file", type=Path, required=True)
    show.set_defaults(func=cmd_registry_show)


def cmd_keygen(args: argparse.Namespace) -> int:
    pair = keys.generate(args.out, args.camp)
    print(f"keys written to {args.out}")
    if pair.camp_id is not None:
        print(f"camp id:     {pair.camp_id}")
    print(f"sign public: {b64(pair.sign_public)}")
    print(f"seal public: {b64(pair.seal_public)}")
    return 0


def load_registry(path: Path) -> Registry:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read registry {path}: {exc.strerror}") from None
    return Registry.from_json_bytes(data)


def _write_registry(path: Path, registry: Registry) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(registry.to_json_bytes())
    tmp.replace(path)


def cmd_registry_add(args: argparse.Namespace) -> int:
    if args.file.exists():
        registry = load_registry(args.file)
    else:
        if args.hq is None:
            raise RegistryError(f"{args.file} does not exist; give --hq HQ_KEY_DIR to create it")
        seal_pub = keys.load_seal_public(args.hq)
        registry = Registry(keys.load_sign_public(args.hq), seal_pub)
    if (args.lat is None) != (args.lon is None):
        raise RegistryError("give both --lat and --lon, or neither")
    camp = Camp(args.camp, args.name, keys.load_sign_public(args.key), args.lat, args.lon)
    _write_registry(args.file, registry.with_camp(camp))
    print(f"camp {args.camp} ({args.name}) added to {args.file}; sign it: meshd registry sign --file {args.file}")
    return 0


def cmd_registry_sign(args: argparse.Namespace) -> int:
    registry = load_registry(args.file)
    _write_registry(args.file, registry.signed(keys.load(args.key).sign))
    print(f"{args.file} signed ({len(registry.camps)} camps)")
    return 0


def cmd_registry_verify(args: argparse.Namespace) -> int:
    registry = load_registry(args.file)
    pinned = keys.load_sign_public(args.hq_pub) if args.hq_pub else None
    registry.verify(pinned)
    print(f"{args.file}: signature OK ({len(registry.camps)} camps)")
    return 0


def cmd_registry_show(args: argparse.Namespace) -> int:
    registry = load_registry(args.file)
    try:
        registry.verify()
        state = "signed, OK"
    except RegistryError as exc:
        state = f"NOT VALID: {exc}"
    print(f"registry {args.file}: {state}")
    print(f"HQ sign key {b64(registry.hq_sign_key)}")
    print(f"{'camp':>6}  {'name':<24} {'location':<20} sign key")
    for camp in sorted(registry.camps.values(), key=lambda c: c.camp_id):
        loc = f"{camp.lat:.4f},{camp.lon:.4f}" if camp.lat is not None and camp.lon is not None else "-"
        print(f"{camp.camp_id:>6}  {camp.name:<24} {loc:<20} {b64(camp.sign_key)}")
    sys.stdout.flush()
    return 0

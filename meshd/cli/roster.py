"""`meshd roster add|list|remove`: the handsets whose direct messages count as verified."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from meshd.config import HubConfig, load_config
from meshd.errors import ConfigError
from meshd.field.roster import Handset, Roster, RosterError, check_team, format_node, parse_node, parse_public_key

DEFAULT_CONFIG = Path("/etc/meshd/meshd.toml")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("roster", help="manage the roster of known field handsets")
    sub = p.add_subparsers(dest="roster_command", metavar="ACTION", required=True)

    def where(parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--file", type=Path, help="roster file (JSON)")
        group.add_argument(
            "-c", "--config", type=Path, help=f"hub config whose field.roster names the file (default {DEFAULT_CONFIG})"
        )

    add = sub.add_parser("add", help="add a handset, or replace the entry for its node")
    add.add_argument("--node", required=True, help="node id as the app shows it (!a1b2c3d4) or node number")
    add.add_argument("--team", required=True, help="team name, e.g. 'Water team 2'")
    add.add_argument("--key", required=True, help="the handset's public key, base64 (Settings > Security)")
    where(add)
    add.set_defaults(func=cmd_add)

    show = sub.add_parser("list", help="list the handsets in the roster")
    show.add_argument("--json", action="store_true", help="print the entries as JSON")
    where(show)
    show.set_defaults(func=cmd_list)

    rm = sub.add_parser("remove", help="remove a handset (its messages become unverified)")
    rm.add_argument("--node", required=True, help="node id (!a1b2c3d4) or node number")
    where(rm)
    rm.set_defaults(func=cmd_remove)


def roster_path(args: argparse.Namespace) -> Path:
    if args.file is not None:
        path: Path = args.file
        return path
    config_path = args.config or DEFAULT_CONFIG
    try:
        config = load_config(HubConfig, config_path)
    except ConfigError as exc:
        raise RosterError(f"{exc} (give the roster with --file PATH, or the hub config with -c PATH)") from None
    if config.field.roster is None:
        raise RosterError(f"{config_path} sets no field.roster; add it there or give --file")
    return config.field.roster


def cmd_add(args: argparse.Namespace) -> int:
    handset = Handset(parse_node(args.node), check_team(args.team), parse_public_key(args.key))
    path = roster_path(args)
    roster = Roster.load(path)
    previous = roster.add(handset)
    roster.save()
    verb = "replaced" if previous is not None else "added"
    print(f"{verb} {handset.node_id} ({handset.team}) in {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    path = roster_path(args)
    roster = Roster.load(path)
    if args.json:
        print(json.dumps([h.to_json() for h in roster], ensure_ascii=False, indent=2))
        return 0
    if not len(roster):
        print(f"no handsets in {path}")
        return 0
    width = max(len(h.team) for h in roster)
    for h in roster:
        print(f"{h.node_id}  {h.node:>10}  {h.team:<{width}}  {h.public_key_b64}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    node = parse_node(args.node)
    path = roster_path(args)
    roster = Roster.load(path, missing_ok=False)
    removed = roster.remove(node)
    roster.save()
    print(f"removed {format_node(node)} ({removed.team}) from {path}")
    return 0

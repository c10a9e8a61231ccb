"""`meshd parse "TEXT"`: what the hub would make of a field team's text message."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meshd.wire.text import AlertEntry, HelpRequest, NeedsEntry, Parsed, SealedEntry, help_text, parse_shorthand


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "parse",
        help="parse field shorthand (N W4 F3, 필요 물4 ...) and print the report as JSON",
        description="Print the JSON body a field text message becomes, or the reply the sender would get "
        "for a mistake (exit status 1).",
    )
    p.add_argument("text", nargs="+", help='the message, e.g. "N W4 F3" (several words are joined); - reads stdin')
    p.add_argument("--full", action="store_true", help="also print the kind and the reply language")
    p.set_defaults(func=cmd_parse)


def as_json(parsed: Parsed) -> tuple[str, dict[str, object]]:
    """(kind, JSON mapping): report bodies as in the MQTT contract, sealed content as HQ opens it."""
    if isinstance(parsed, NeedsEntry):
        return "needs", parsed.body
    if isinstance(parsed, AlertEntry):
        return "alert", parsed.body
    if isinstance(parsed, SealedEntry):
        return "sealed", {"kind": parsed.kind, "text": parsed.text}
    if isinstance(parsed, HelpRequest):
        return "help", {"request": "help", "reply": help_text(parsed.language)}
    return "status", {"request": "status"}


def cmd_parse(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == ["-"] else " ".join(args.text)
    parsed = parse_shorthand(text)  # a ShorthandError (the sender's reply) exits 1 with `meshd parse: error: ...`
    kind, body = as_json(parsed)
    out: dict[str, object] = {"kind": kind, "language": parsed.language, "body": body} if args.full else body
    print(json.dumps(out, ensure_ascii=False))
    return 0

"""`meshd` command line: argument parsing, exit codes, one-line errors.

Each subcommand lives in its own module with a `register(subparsers)` function that adds its parser and
sets `func` to a callable taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from meshd import __version__
from meshd.errors import MeshdError

# Order is the order of `meshd --help`.
COMMAND_MODULES = (
    "meshd.cli.keys",
    "meshd.cli.wirecmd",
    "meshd.cli.airtime",
    "meshd.cli.sim",
    "meshd.cli.run",
    "meshd.cli.status",
    "meshd.cli.hq",
    "meshd.cli.roster",
    "meshd.cli.parse",
    "meshd.cli.demo",
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshd",
        description="Emergency mesh messaging daemon for Meshtastic LoRa networks.",
    )
    parser.add_argument("--version", action="version", version=f"meshd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except MeshdError as exc:
        print(f"meshd {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

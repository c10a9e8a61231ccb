"""Log lines for journald and terminals: one line per event, a level journald understands, no timestamps twice.

Under systemd (JOURNAL_STREAM or INVOCATION_ID set) each line starts with the sd-daemon(3) priority prefix
(`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), so `journalctl -u meshd -p warning` and the colours
work, and carries no timestamp of its own (the journal adds one). On a terminal it carries a timestamp.
Either way a message never spans lines: text heard on the mesh could otherwise forge log lines, and a
traceback is folded onto its event's line (" | " between lines) instead of becoming a dozen entries.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

# sd-daemon(3) / syslog priorities
SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def under_journald(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


class OneLineFormatter(logging.Formatter):
    """Formats a record (and its exception) as exactly one line; with `journald`, adds the priority prefix."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__(JOURNAL_FORMAT if journald else TERMINAL_FORMAT)
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        text = " | ".join(line for line in lines if line)
        if self.journald:
            level = max((lv for lv in SYSLOG_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
            text = f"<{SYSLOG_PRIORITY[level]}>{text}"
        return text


def configure(verbose: int = 0, *, journald: bool | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one stderr handler using `OneLineFormatter`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter(journald=under_journald() if journald is None else journald))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose == 0 else logging.DEBUG)
    return handler

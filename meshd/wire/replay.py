"""Per-origin replay window (DESIGN.md section 5): rejects a repeated seq or one older than the window.

Like the IPsec anti-replay window: the highest seq seen plus a bitmap of the `size` seqs below it. Store and
forward delivers out of order, so the window is wide (4096 by default): a report may arrive days late, but
not after 4096 newer ones from the same camp. State is plain integers so the store can persist it.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshd.errors import ReplayError

DEFAULT_WINDOW = 4096


@dataclass(slots=True)
class ReplayWindow:
    size: int = DEFAULT_WINDOW
    highest: int = -1
    bitmap: int = 0  # bit i set = seq (highest - i) seen

    def check(self, seq: int) -> None:
        """Raise `ReplayError` if `seq` was seen or is too old; does not record it."""
        if seq > self.highest:
            return
        offset = self.highest - seq
        if offset >= self.size:
            raise ReplayError(f"seq {seq} is older than the replay window (highest {self.highest})")
        if self.bitmap >> offset & 1:
            raise ReplayError(f"seq {seq} was already seen")

    def accept(self, seq: int) -> None:
        """Check and record `seq`."""
        self.check(seq)
        if seq > self.highest:
            shift = seq - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = seq
        else:
            self.bitmap |= 1 << (self.highest - seq)

    def seen(self, seq: int) -> bool:
        try:
            self.check(seq)
        except ReplayError:
            return True
        return False


class ReplayGuard:
    """One window per origin."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        self.size = size
        self.windows: dict[int, ReplayWindow] = {}

    def window(self, origin: int) -> ReplayWindow:
        win = self.windows.get(origin)
        if win is None:
            win = self.windows[origin] = ReplayWindow(self.size)
        return win

    def check(self, origin: int, seq: int) -> None:
        self.window(origin).check(seq)

    def accept(self, origin: int, seq: int) -> None:
        self.window(origin).accept(seq)

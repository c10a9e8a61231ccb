"""Which neighbour to hand reports to: a gradient toward hubs whose satellite uplink is up.

Every hub beacons (to direct neighbours only) how many hops it is from a live uplink: 1 if its own uplink
is up, else 1 + the best neighbour's figure. Reports move hop by hop to the neighbour with the smallest
figure, each hop taking durable custody, so each report crosses each link about once instead of being
flooded to every node. Figures age out, so a hub that goes silent stops attracting traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

UNREACHABLE = 16  # like RIP: a bound that ends count-to-infinity loops
MAX_FAILURES = 6  # unanswered handovers in a row before a neighbour is treated as gone (20 % loss is normal)


@dataclass(slots=True)
class Neighbour:
    node: int
    camp: int
    uplink_hops: int  # 0 = no route
    heard_at: float
    via: int = 0  # camp the neighbour routes through: if that is us, it cannot be our next hop
    radio_hops: int = 0  # relay radios between us (0 = heard directly): the hop limit to reach it
    snr: float = 0.0
    failures: int = 0
    radio_hops_at: float = 0.0  # when it was last heard over `radio_hops` relay radios


class RouteTable:
    def __init__(self, my_camp: int = 0, *, stale_after_s: float = 3 * 3600.0) -> None:
        self.my_camp = my_camp
        self.neighbours: dict[int, Neighbour] = {}
        self.stale_after_s = stale_after_s

    def heard_beacon(
        self, node: int, camp: int, uplink_hops: int, now: float, *, snr: float = 0.0, via: int = 0, radio_hops: int = 0
    ) -> bool:
        """Record a neighbour's beacon; returns True if our own distance may have changed.

        The firmware hands us whichever copy of a beacon arrives first: the direct one, or, when that was lost,
        a hill relay's repeat. A later copy over more relay radios does not make the neighbour farther while
        the shorter path was heard within `stale_after_s`: taking each copy as it came flipped our own
        distance back and forth (3 -> 4 -> 3 within a minute), and every flip sent a beacon wave and restarted
        the beacon timers of the whole valley. A data frame that does not get through the short way takes the
        long way on its retry (`Relay._data_hop_limit`).
        """
        old = self.neighbours.get(node)
        radio_hops_at = now
        if old is not None and old.radio_hops < radio_hops and now - old.radio_hops_at <= self.stale_after_s:
            radio_hops, radio_hops_at = old.radio_hops, old.radio_hops_at
        self.neighbours[node] = Neighbour(
            node, camp, uplink_hops, now, via=via, snr=snr, radio_hops=radio_hops, radio_hops_at=radio_hops_at
        )
        return old is None or old.uplink_hops != uplink_hops or old.via != via

    def heard_from(self, node: int, now: float) -> None:
        neighbour = self.neighbours.get(node)
        if neighbour is not None:
            neighbour.heard_at = now

    def succeeded(self, node: int) -> None:
        """It took custody: hearing a neighbour is not enough (relayed broadcasts reach us over links that
        fail for data), only a completed handover clears its failures."""
        neighbour = self.neighbours.get(node)
        if neighbour is not None:
            neighbour.failures = 0

    def failed(self, node: int) -> None:
        neighbour = self.neighbours.get(node)
        if neighbour is not None:
            neighbour.failures += 1

    def _live(self, now: float) -> list[Neighbour]:
        return [
            n
            for n in self.neighbours.values()
            if n.uplink_hops
            and now - n.heard_at <= self.stale_after_s
            and n.failures < MAX_FAILURES
            and (n.via != self.my_camp or not self.my_camp)
        ]

    def my_hops(self, *, uplink_up: bool, now: float) -> int:
        """Radio links from us to a live uplink (1 = our own): the metric we advertise."""
        if uplink_up:
            return 1
        live = self._live(now)
        if not live:
            return 0
        best = min(self.cost_via(n) for n in live)
        return best if best < UNREACHABLE else 0

    @staticmethod
    def cost_via(neighbour: Neighbour) -> int:
        # a neighbour behind relay radios costs one radio link more per relay radio
        return neighbour.uplink_hops + neighbour.radio_hops + 1

    def next_hop(self, now: float, *, exclude: frozenset[int] = frozenset()) -> Neighbour | None:
        """The neighbour closest to an uplink (fewest hops, then fewest failures, then best SNR)."""
        live = [n for n in self._live(now) if n.node not in exclude]
        if not live:
            return None
        return min(live, key=lambda n: (self.cost_via(n), n.radio_hops, n.failures, -n.snr))

    def radio_hops_to(self, node: int) -> int:
        neighbour = self.neighbours.get(node)
        return neighbour.radio_hops if neighbour is not None else 0

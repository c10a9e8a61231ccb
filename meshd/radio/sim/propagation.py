"""Link quality between simulated radios: log-distance path loss on positions, or an explicit table.

Path-loss model (all in dB):
  PL(d) = 20·log10(4π·f/c) [free-space loss at 1 m] + 10·n·log10(d / 1 m) + X_shadow
  RSSI  = P_tx + G_tx + G_rx − PL(d)
  SNR   = RSSI − (−174 + 10·log10(BW) + NF)          (thermal noise over the LoRa bandwidth, NF 6 dB)
A frame is demodulated with probability 1 / (1 + exp(−(SNR − floor(SF)) / 1 dB)): 50 % at the SX126x
demodulation floor of the spreading factor (−7.5 dB at SF7 … −20 dB at SF12), ≈95 % 3 dB above it,
≈99.99 % 10 dB above it — a smooth edge instead of a cliff. X_shadow is log-normal shadowing drawn once
per node pair from the seed (σ = `shadowing_db`, 0 by default).

An explicit link (topology `[[links]]` or `SimNetwork.set_link`) replaces the model for that pair:
reception probability 1 − loss, the given SNR (default 6 dB) and RSSI (default noise floor + SNR).
With `links_only`, pairs without an explicit link cannot hear (or disturb) each other at all.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from meshd.radio.airtime import ModemPreset
from meshd.radio.sim.topology import NodeSpec, Topology

SPEED_OF_LIGHT = 299_792_458.0
NOISE_FIGURE_DB = 6.0
EDGE_WIDTH_DB = 1.0
# Signals this far below the demodulation floor are ignored entirely (neither heard nor interfering).
IGNORE_BELOW_FLOOR_DB = 10.0
DEFAULT_TABLE_SNR_DB = 6.0

# SX126x demodulation floor (SNR limit) per spreading factor.
DEMOD_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}

# Centre frequency of the default slot per region (MHz); only the path loss depends on it.
REGION_FREQ_MHZ = {
    "US": 906.875, "EU_433": 433.875, "EU_868": 869.525, "CN": 470.0, "JP": 920.875, "ANZ": 919.875,
    "KR": 921.9, "TW": 923.875, "RU": 868.9, "IN": 865.4625, "NZ_865": 864.875, "TH": 920.875,
    "UA_433": 433.875, "UA_868": 868.1, "MY_433": 433.875, "MY_919": 919.875, "SG_923": 917.875,
    "LORA_24": 2403.0,
}  # fmt: skip

# Firmware duty cycle per region in percent (100 = not enforced), from the firmware's region table.
REGION_DUTY_CYCLE = {"EU_433": 10.0, "EU_868": 10.0, "TH": 10.0, "UA_433": 10.0, "UA_868": 1.0}


def region_frequency_mhz(region: str) -> float:
    return REGION_FREQ_MHZ.get(region.upper(), 915.0)


def region_duty_cycle(region: str) -> float:
    return REGION_DUTY_CYCLE.get(region.upper(), 100.0)


def demod_floor_db(modem: ModemPreset) -> float:
    return DEMOD_FLOOR_DB[modem.spreading_factor]


def noise_floor_dbm(modem: ModemPreset) -> float:
    return -174.0 + 10.0 * math.log10(modem.bandwidth_hz) + NOISE_FIGURE_DB


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    radius = 6_371_000.0
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlam = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * radius * math.asin(min(1.0, math.sqrt(a)))


def distance_m(a: NodeSpec, b: NodeSpec) -> float:
    if a.lat is None or a.lon is None or b.lat is None or b.lon is None:
        raise ValueError(f"{a.id} or {b.id} has no position")
    ground = haversine_m(a.lat, a.lon, b.lat, b.lon)
    return max(1.0, math.hypot(ground, a.alt_m - b.alt_m))


def reception_probability(snr_db: float, floor_db: float) -> float:
    x = (snr_db - floor_db) / EDGE_WIDTH_DB
    if x < -50:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """What a receiver sees of a sender: mean signal and the chance one frame is demodulated."""

    rssi_dbm: float
    snr_db: float
    p_receive: float
    explicit: bool = False


class LinkModel:
    """Directed link qualities between every pair of nodes, recomputed when a link is overridden."""

    def __init__(self, topology: Topology, modem: ModemPreset, region: str, seed: int) -> None:
        self.topology = topology
        self.modem = modem
        self.floor_db = demod_floor_db(modem)
        self.noise_dbm = noise_floor_dbm(modem)
        self.freq_mhz = region_frequency_mhz(region)
        self._ref_loss_db = 20.0 * math.log10(4 * math.pi * self.freq_mhz * 1e6 / SPEED_OF_LIGHT)
        self._seed = seed
        self._nodes = {n.num: n for n in topology.nodes}
        self._overrides: dict[tuple[int, int], LinkQuality | None] = {}
        for link in topology.links:
            a, b = topology.node(link.a).num, topology.node(link.b).num
            quality = self._table_quality(link.loss, link.snr_db, link.rssi_dbm)
            self._overrides[(a, b)] = quality
            if not link.directed:
                self._overrides[(b, a)] = quality
        self._links: dict[int, dict[int, LinkQuality]] = {}
        self._shadow: dict[tuple[int, int], float] = {}
        self._rebuild()

    # -------------------------------------------------------------- queries

    def quality(self, sender: int, receiver: int) -> LinkQuality | None:
        """The link sender -> receiver, or None when the receiver cannot hear the sender at all."""
        return self._links.get(sender, {}).get(receiver)

    def audience(self, sender: int) -> dict[int, LinkQuality]:
        """Every node that can hear (or be disturbed by) `sender`, in node-number order."""
        return self._links.get(sender, {})

    def path_loss_db(self, meters: float) -> float:
        return self._ref_loss_db + 10.0 * self.topology.path_loss_exponent * math.log10(max(1.0, meters))

    # -------------------------------------------------------------- changes

    def set_link(
        self,
        a: int,
        b: int,
        loss: float,
        *,
        snr_db: float | None = None,
        rssi_dbm: float | None = None,
        symmetric: bool = True,
    ) -> None:
        """Override the link a -> b (and b -> a when symmetric); loss 1.0 removes it."""
        quality = self._table_quality(loss, snr_db, rssi_dbm)
        self._overrides[(a, b)] = quality
        if symmetric:
            self._overrides[(b, a)] = quality
        self._rebuild()

    def clear_link(self, a: int, b: int, *, symmetric: bool = True) -> None:
        """Drop a runtime override so the pair follows the topology again."""
        self._overrides.pop((a, b), None)
        if symmetric:
            self._overrides.pop((b, a), None)
        for link in self.topology.links:  # re-apply the topology's own table entry, if any
            la, lb = self.topology.node(link.a).num, self.topology.node(link.b).num
            pairs = [(la, lb)] if link.directed else [(la, lb), (lb, la)]
            for pair in pairs:
                if pair in ((a, b), (b, a)) and pair not in self._overrides:
                    self._overrides[pair] = self._table_quality(link.loss, link.snr_db, link.rssi_dbm)
        self._rebuild()

    # -------------------------------------------------------------- internals

    def _table_quality(self, loss: float, snr_db: float | None, rssi_dbm: float | None) -> LinkQuality | None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss {loss} is not a probability")
        if loss >= 1.0:
            return None
        snr = DEFAULT_TABLE_SNR_DB if snr_db is None else snr_db
        rssi = self.noise_dbm + snr if rssi_dbm is None else rssi_dbm
        return LinkQuality(rssi_dbm=rssi, snr_db=snr, p_receive=1.0 - loss, explicit=True)

    def _modelled(self, sender: NodeSpec, receiver: NodeSpec) -> LinkQuality | None:
        if self.topology.links_only or not (sender.has_position and receiver.has_position):
            return None
        loss = self.path_loss_db(distance_m(sender, receiver)) + self._shadowing(sender.num, receiver.num)
        rssi = sender.tx_power_dbm + sender.antenna_gain_db + receiver.antenna_gain_db - loss
        snr = rssi - self.noise_dbm
        if snr < self.floor_db - IGNORE_BELOW_FLOOR_DB:
            return None
        return LinkQuality(rssi_dbm=rssi, snr_db=snr, p_receive=reception_probability(snr, self.floor_db))

    def _shadowing(self, a: int, b: int) -> float:
        sigma = self.topology.shadowing_db
        if sigma <= 0:
            return 0.0
        key = (min(a, b), max(a, b))
        if key not in self._shadow:
            # One draw per pair from a generator seeded by the scenario seed and the pair, so the value
            # does not depend on the order in which links are first computed.
            self._shadow[key] = random.Random(f"shadow:{self._seed}:{key[0]}:{key[1]}").gauss(0.0, sigma)
        return self._shadow[key]

    def _rebuild(self) -> None:
        nodes = sorted(self._nodes.values(), key=lambda n: n.num)
        links: dict[int, dict[int, LinkQuality]] = {}
        for sender in nodes:
            row: dict[int, LinkQuality] = {}
            for receiver in nodes:
                if receiver.num == sender.num:
                    continue
                pair = (sender.num, receiver.num)
                quality = self._overrides[pair] if pair in self._overrides else self._modelled(sender, receiver)
                if quality is not None:
                    row[receiver.num] = quality
            links[sender.num] = row
        self._links = links

"""`SimNetwork`: a whole simulated mesh with its endpoints, as one async context manager."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meshtastic.protobuf import config_pb2, mesh_pb2

from meshd.errors import ConfigError, MeshdError, RadioError
from meshd.radio.airtime import preset as modem_preset
from meshd.radio.sim.channel import AirFrame, AirRecord, LoraChannel, NetworkStats
from meshd.radio.sim.clock import SimClock
from meshd.radio.sim.node import SimContext, VirtualRadio, random_private_key
from meshd.radio.sim.propagation import LinkModel, region_duty_cycle
from meshd.radio.sim.server import API_TIMEOUT_S, PtyEndpoint, TcpEndpoint
from meshd.radio.sim.topology import Topology, load_topology

DEFAULT_REGION = "KR"
DEFAULT_PRESET = "LONG_FAST"
_WIDE_PRESETS = {"SHORT_TURBO", "LONG_TURBO"}  # 500 kHz: not allowed in the narrow EU_868 band


class SimNetwork:
    """A simulated Meshtastic network.

    ``async with SimNetwork(topology, preset="LONG_FAST", seed=1, speedup=50) as net:`` starts every
    radio (pty and/or TCP endpoint, on the air) and stops them on exit.

    - `base_port`: 0 = any free ports, N = ports N, N+1, … in topology order, None = no TCP endpoints.
    - `pty`: serve each radio on a pseudo-terminal too; stable symlinks go in `pty_dir` (a temporary
      directory by default, removed on exit).
    - `speedup`: simulated time runs this much faster than real time (math.inf: as fast as possible).
    - `record_air`: keep `on_air`, one `AirRecord` per transmission (what an eavesdropper with the
      channel key would see).
    """

    def __init__(
        self,
        topology: Topology | str | Path,
        *,
        preset: str | None = None,
        region: str | None = None,
        seed: int = 1,
        speedup: float = 1.0,
        base_port: int | None = 0,
        pty: bool = True,
        pty_dir: str | Path | None = None,
        record_air: bool = False,
        hop_limit: int | None = None,
        api_timeout_s: float = API_TIMEOUT_S,
    ) -> None:
        self.topology = topology if isinstance(topology, Topology) else load_topology(topology)
        self.region = (region or self.topology.region or DEFAULT_REGION).upper()
        self.preset = (preset or self.topology.preset or DEFAULT_PRESET).upper()
        if self.region not in config_pb2.Config.LoRaConfig.RegionCode.keys() or self.region == "UNSET":  # noqa: SIM118
            raise ConfigError(f"unknown region {self.region!r}")
        try:
            modem = modem_preset(self.preset)
        except MeshdError as exc:
            raise ConfigError(str(exc)) from None
        if self.region.startswith("EU_") and self.preset in _WIDE_PRESETS:
            raise ConfigError(f"preset {self.preset} (500 kHz) is not allowed in region {self.region}")
        self.seed = seed
        self.stats = NetworkStats()
        self.clock = SimClock(speedup)
        self.links = LinkModel(self.topology, modem, self.region, seed)
        self.channel = LoraChannel(self.clock, self.links, modem, seed=seed, stats=self.stats, record_air=record_air)
        self.ctx = SimContext(
            clock=self.clock,
            channel=self.channel,
            modem=modem,
            preset_name=self.preset,
            region=self.region,
            duty_cycle_percent=region_duty_cycle(self.region),
            hop_limit=self.topology.hop_limit if hop_limit is None else hop_limit,
            channel_name=self.topology.channel_name,
            stats=self.stats,
            seed=seed,
        )
        self.radios: list[VirtualRadio] = []
        for spec in self.topology.nodes:
            radio = VirtualRadio(self.ctx, spec, random_private_key(seed, spec.num))
            self.radios.append(radio)
            self.ctx.specs[spec.num] = spec
            self.ctx.public_keys[spec.num] = radio.public_key
        self._by_num = {r.num: r for r in self.radios}
        self._base_port = base_port
        self._use_pty = pty
        self._pty_dir_arg = Path(pty_dir) if pty_dir is not None else None
        self._pty_dir: Path | None = None
        self._own_pty_dir = False
        self._api_timeout_s = api_timeout_s
        self._pty: dict[int, PtyEndpoint] = {}
        self._tcp: dict[int, TcpEndpoint] = {}
        self._started = False

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> SimNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        self.clock.start()
        if self._use_pty:
            if self._pty_dir_arg is None:
                self._pty_dir = Path(tempfile.mkdtemp(prefix="meshd-sim-"))
                self._own_pty_dir = True
            else:
                self._pty_dir = self._pty_dir_arg
                self._pty_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index, radio in enumerate(self.radios):
                if self._pty_dir is not None:
                    link = self._pty_dir / _safe_name(radio.spec.id)
                    self._pty[radio.num] = PtyEndpoint(radio, link, api_timeout_s=self._api_timeout_s)
                if self._base_port is not None:
                    port = self._base_port + index if self._base_port else 0
                    self._tcp[radio.num] = TcpEndpoint(radio, port, api_timeout_s=self._api_timeout_s)
                await self._bring_up(radio)
        except BaseException:
            await self.stop()
            raise
        self._started = True

    async def stop(self) -> None:
        for radio in self.radios:
            await self._bring_down(radio)
        if self._own_pty_dir and self._pty_dir is not None:
            shutil.rmtree(self._pty_dir, ignore_errors=True)
        self.clock.close()
        self._started = False

    async def _bring_up(self, radio: VirtualRadio) -> None:
        radio.power_on()
        pty = self._pty.get(radio.num)
        if pty is not None:
            pty.open()
            radio.pty_path, radio.pty_device = pty.path, pty.device
            pty.send_text(radio.boot_banner())
        tcp = self._tcp.get(radio.num)
        if tcp is not None:
            try:
                await tcp.start()
            except OSError as exc:
                raise RadioError(
                    f"{radio.spec.id}: cannot listen on 127.0.0.1:{tcp.port}: {exc.strerror or exc}"
                ) from None
            radio.tcp_port = tcp.port

    async def _bring_down(self, radio: VirtualRadio) -> None:
        tcp = self._tcp.get(radio.num)
        if tcp is not None:
            await tcp.stop()
        pty = self._pty.get(radio.num)
        if pty is not None:
            pty.close()
            radio.pty_device = None
        radio.power_off()

    # -------------------------------------------------------------- access

    def radio(self, key: str | int) -> VirtualRadio:
        """A radio by topology id, `!hex` node id or node number."""
        if isinstance(key, int) and key in self._by_num:
            return self._by_num[key]
        return self._by_num[self.topology.node(key).num]

    @property
    def on_air(self) -> list[AirRecord]:
        if self.channel.air_log is None:
            raise ConfigError("this network was created without record_air=True")
        return self.channel.air_log

    # -------------------------------------------------------------- scenario controls

    def set_link(
        self,
        a: str | int,
        b: str | int,
        loss: float,
        *,
        snr_db: float | None = None,
        rssi_dbm: float | None = None,
        symmetric: bool = True,
    ) -> None:
        """Override the link between two radios (loss 1.0 = dead: nothing heard, no interference)."""
        self.clock.catch_up()
        self.links.set_link(self.radio(a).num, self.radio(b).num, loss, snr_db=snr_db, rssi_dbm=rssi_dbm,
                            symmetric=symmetric)  # fmt: skip

    def clear_link(self, a: str | int, b: str | int) -> None:
        self.links.clear_link(self.radio(a).num, self.radio(b).num)

    def reboot(self, key: str | int) -> None:
        """Reboot a radio's firmware: connected hosts get `FromRadio.rebooted` and must redo the handshake."""
        self.clock.catch_up()
        self.radio(key).reboot()

    def drop_clients(self, key: str | int) -> None:
        """Close the radio's TCP client connection (the radio stays up)."""
        tcp = self._tcp.get(self.radio(key).num)
        if tcp is not None:
            tcp.drop_client()

    async def stop_radio(self, key: str | int) -> None:
        """Power a radio off: it leaves the air, its pty and TCP port disappear."""
        self.clock.catch_up()
        await self._bring_down(self.radio(key))

    async def start_radio(self, key: str | int) -> None:
        """Power a radio back on, on the same TCP port and the same pty path (symlink)."""
        self.clock.catch_up()
        await self._bring_up(self.radio(key))

    def inject(self, transmitter: str | int, packet: mesh_pb2.MeshPacket) -> float:
        """Put `packet` on the air from `transmitter`'s position right now, exactly as given (header
        fields may be forged, e.g. a rogue radio holding the channel key), bypassing that radio's queue,
        contention and duty cycle. Returns the time on air in seconds."""
        self.clock.catch_up()
        radio = self.radio(transmitter)
        frame = mesh_pb2.MeshPacket()
        frame.CopyFrom(packet)
        if frame.id == 0:
            frame.id = radio.new_packet_id()
        radio.router.mark_seen((int(getattr(frame, "from")), int(frame.id)))
        return self.channel.transmit(AirFrame(frame, radio.phy_len(frame), radio.num))

    # -------------------------------------------------------------- time

    async def sleep(self, sim_seconds: float) -> None:
        """Let `sim_seconds` of simulated time pass."""
        await self.clock.sleep(sim_seconds)

    async def wait_for(self, predicate: Callable[[], bool], *, within: float = 10.0, poll: float = 0.01) -> bool:
        """Wait up to `within` real seconds until `predicate()` holds; False if it never did."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    # -------------------------------------------------------------- reporting

    def describe(self) -> list[str]:
        """One line per radio: node id, name, pty path, TCP address."""
        lines = []
        for radio in self.radios:
            pty = radio.pty_path or "-"
            if radio.pty_device and radio.pty_path != radio.pty_device:
                pty = f"{radio.pty_path} ({radio.pty_device})"
            tcp = f"127.0.0.1:{radio.tcp_port}" if radio.tcp_port is not None else "-"
            lines.append(f"{radio.node_id}  {radio.spec.id:<12} {radio.name:<24} {radio.role:<11} {pty}  {tcp}")
        return lines


def _safe_name(node_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", node_id) or "radio"

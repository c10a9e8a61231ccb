"""`meshd run`: wire store, radio link, relay and uplink into one asyncio.TaskGroup.

Each component is an async context manager; leaving the `async with` block drains and closes them in
reverse order (the store last, with a WAL checkpoint), so SIGTERM ends in a consistent store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshd import keys as keyfiles
from meshd.clock import REAL_TIME, Clock
from meshd.config import HubConfig
from meshd.daemon.metrics import MetricsServer
from meshd.daemon.sdnotify import SdNotifier
from meshd.daemon.status import StatusServer
from meshd.errors import ConfigError, KeyFileError, MeshdError, RegistryError
from meshd.field.desk import FieldDesk
from meshd.field.roster import Roster
from meshd.radio import airtime
from meshd.radio.api import BROADCAST, TEXT_PORT, Radio, ReceivedPacket
from meshd.relay.relay import Relay, RelayTiming
from meshd.store.hub import HubStore
from meshd.wire import bodies
from meshd.wire.envelope import Envelope
from meshd.wire.registry import Registry, unb64
from meshd.wire.text import fit_reply

if TYPE_CHECKING:
    from meshd.radio.link import RadioLink

log = logging.getLogger(__name__)


def load_registry_file(config: HubConfig) -> Registry:
    path = config.hub.registry
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read registry {path}: {exc.strerror}") from None
    registry = Registry.from_json_bytes(data)
    pinned = unb64(config.hub.hq_key, "hub.hq_key") if config.hub.hq_key else None
    registry.verify(pinned)
    if config.hub.camp_id not in registry.camps:
        raise RegistryError(f"camp {config.hub.camp_id} (hub.camp_id) is not in the registry {path}")
    return registry


KR_MAX_TRANSMISSION_S = 4.0  # Korean listen-before-talk rules: at most 4 s per transmission


def lbt_warning(config: HubConfig) -> str | None:
    """A warning when the region limits one transmission and the preset's longest frame exceeds it."""
    if config.radio.region.upper() != "KR":
        return None
    longest = airtime.time_on_air_s(airtime.MAX_PHY_PAYLOAD, airtime.preset(config.radio.preset))
    if longest <= KR_MAX_TRANSMISSION_S:
        return None
    return (
        f"radio.preset {config.radio.preset} can keep one frame on the air for {longest:.1f} s, over the "
        f"{KR_MAX_TRANSMISSION_S:.0f} s Korean rules allow per transmission; use LONG_FAST or faster"
    )


def radio_role_warning(role: str) -> str | None:
    """A warning unless the hub radio is CLIENT_MUTE (firmware-config/*/hub.yaml): meshd relays hop by hop
    itself, so a radio that also repeats every meshd frame it overhears only spends airtime."""
    if role == "CLIENT_MUTE":
        return None
    return (
        f"the hub radio's role is {role}: it repeats every meshd frame it overhears (about 40 % more airtime "
        "in the 20-camp simulation); apply firmware-config/<region>/hub.yaml (role CLIENT_MUTE) unless the "
        "camp's handsets need this radio to reach each other"
    )


async def warn_about_radio_role(link: RadioLink) -> None:
    """Once the radio has sent its configuration: log `radio_role_warning` if there is one."""
    await link.wait_ready()
    warning = radio_role_warning(link.device_role)
    if warning is not None:
        log.warning("%s", warning)


def load_hub_keys(config: HubConfig, registry: Registry) -> keyfiles.KeyPairs:
    pair = keyfiles.load(config.hub.keys)
    if pair.sign_public != registry.camps[config.hub.camp_id].sign_key:
        raise KeyFileError(
            f"the signing key in {config.hub.keys} is not the one the registry lists for camp {config.hub.camp_id}"
        )
    return pair


@dataclass
class HubState:
    """What `meshd status` and the systemd STATUS= line show."""

    started_mono: float
    ready: bool = False


class Hub:
    def __init__(
        self,
        config: HubConfig,
        *,
        clock: Clock | None = None,
        radio: Radio | None = None,
        timing: RelayTiming | None = None,
        on_ready: Callable[[Hub], None] | None = None,
        serve_status: bool = True,
    ) -> None:
        if config.hub.camp_id <= 0:
            raise ConfigError("hub.camp_id must be set")
        self.config = config
        self.clock = (
            clock
            if clock is not None
            else (REAL_TIME if config.timing.speedup == 1.0 else Clock(config.timing.speedup))
        )
        self._radio = radio
        self.timing = timing if timing is not None else RelayTiming.from_config(config.timing)
        self.on_ready = on_ready
        self.serve_status = serve_status  # tests that drive StatusServer themselves turn the built-in one off
        self.registry = load_registry_file(config)
        self.keys = load_hub_keys(config, self.registry)
        self.state = HubState(time.monotonic())
        warning = lbt_warning(config)
        if warning is not None:
            log.warning("%s", warning)
        self.relay: Relay | None = None
        self.store: HubStore | None = None
        self.uplink: Any = None
        self.text_handler: Callable[[ReceivedPacket], Awaitable[None]] | None = None
        self.field_desk: FieldDesk | None = None
        self.broadcasts_shown = 0
        # Long-lived extras (status socket, metrics, field desk) started inside the hub's TaskGroup.
        self.extra_tasks: list[Callable[[Hub], Coroutine[Any, Any, None]]] = []

    async def run(self) -> None:
        """Run until cancelled."""
        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(HubStore(self.config.hub.store, clock=self.clock.now))
            self.store = store
            # the status socket next to the store also refuses a second daemon on the same store, before the
            # radio is opened; READY comes after it exists
            if self.serve_status:
                status = await stack.enter_async_context(StatusServer(self))
                await stack.enter_async_context(MetricsServer(self, errors=status.errors))
            radio = self._radio
            role_link: RadioLink | None = None  # our own link (an injected radio is the caller's business)
            if radio is None:
                from meshd.radio.link import RadioLink  # noqa: PLC0415 - not needed with an injected radio

                speedup = self.config.timing.speedup
                heartbeat = self.config.radio.heartbeat_s
                if self.config.radio.device.startswith("tcp://"):
                    heartbeat = min(heartbeat, 60.0)  # a silent TCP peer is only noticed by the heartbeat
                link = RadioLink(
                    self.config.radio.device,
                    portnums=(self.config.radio.portnum,),
                    heartbeat_s=heartbeat,
                    text_interval_s=2.1 / speedup,  # the firmware's text spacing, in scenario time
                )
                radio = await stack.enter_async_context(link)
                role_link = link
            relay = Relay(
                camp_id=self.config.hub.camp_id,
                keys=self.keys,
                registry=self.registry,
                store=store,
                radio=radio,
                relay_config=self.config.relay,
                radio_config=self.config.radio,
                clock=self.clock,
                timing=self.timing,
                uplink_up=self._uplink_up,
                on_text=self._on_text,
            )
            self.relay = relay
            roster = Roster.load(self.config.field.roster) if self.config.field.roster else Roster()
            desk = FieldDesk(
                self.config.hub.camp_id,
                relay,
                store,
                radio,
                roster,
                per_sender_per_hour=self.config.field.per_sender_per_hour,
                count_airtime=relay.count_airtime,
                last_uplink=self._last_uplink_success,
            )
            self.field_desk = desk
            self.text_handler = desk.handle_text
            store.on_delivered = desk.delivered_soon
            relay.on_broadcast = self._announce_broadcast
            if self.config.uplink.url:
                from meshd.uplink.bridge import UplinkBridge  # noqa: PLC0415 - optional component

                self.uplink = await stack.enter_async_context(
                    UplinkBridge(
                        self.config.uplink,
                        camp_id=self.config.hub.camp_id,
                        store=store,
                        registry=self.registry,
                        pinned_hq_key=self.registry.hq_sign_key,
                        on_broadcast=relay.inject_broadcast,
                        status=self.status_summary,
                        on_custody=relay.wake,
                    )
                )
            notifier = SdNotifier.from_env()
            stack.callback(notifier.close)
            stack.callback(notifier.stopping)  # runs first on the way out: systemd shows "deactivating"
            # READY only now: the store is open and the radio session is up or retrying in its own task.
            self.state.ready = True
            notifier.ready()
            if self.on_ready is not None:
                self.on_ready(self)
            log.info("hub %d running", self.config.hub.camp_id)
            async with asyncio.TaskGroup() as group:
                group.create_task(relay.run(), name="relay")
                group.create_task(desk.run(), name="field-desk")
                if role_link is not None:
                    group.create_task(warn_about_radio_role(role_link), name="radio-role-check")
                for extra in self.extra_tasks:
                    group.create_task(extra(self), name=getattr(extra, "__name__", "extra"))
                if notifier.enabled:
                    group.create_task(notifier.run_watchdog(), name="watchdog")
                    group.create_task(self._status_line(notifier), name="status-line")

    async def _status_line(self, notifier: SdNotifier) -> None:
        while True:
            summary = self.status_summary()
            notifier.status(
                f"radio {summary['radio']}, uplink {'up' if summary['uplink_up'] else 'down'}, "
                f"airtime {summary['airtime_used_s']:.0f}/{summary['airtime_budget_s']:.0f} s this hour"
            )
            await asyncio.sleep(30)

    def _last_uplink_success(self) -> float | None:
        getter = getattr(self.uplink, "last_success_monotonic", None)
        value = getter() if callable(getter) else getter
        return float(value) if isinstance(value, int | float) else None

    async def _announce_broadcast(self, env: Envelope) -> None:
        """Show an HQ broadcast to the handsets around this hub (neighbours only: every hub does this)."""
        relay = self.relay
        if relay is None:
            return
        text = bodies.decode_broadcast(env.body).get("text", "")
        message = fit_reply(f"HQ: {text}")
        try:
            await relay.radio.send(message.encode(), to=BROADCAST, portnum=TEXT_PORT, hop_limit=0)
        except MeshdError as exc:
            log.warning("could not show HQ broadcast to handsets: %s", exc)
        else:
            relay.count_airtime(len(message.encode()), TEXT_PORT)
        self.broadcasts_shown += 1

    def _uplink_up(self) -> bool:
        return bool(self.uplink is not None and self.uplink.connected)

    async def _on_text(self, packet: ReceivedPacket) -> None:
        if self.text_handler is not None:
            await self.text_handler(packet)

    def status_summary(self) -> dict[str, Any]:
        relay = self.relay
        return {
            "camp": self.config.hub.camp_id,
            "uptime_s": int(time.monotonic() - self.state.started_mono),
            "radio": relay.radio.state.value if relay else "starting",
            "uplink_up": self._uplink_up(),
            "airtime_used_s": round(relay.budget.used(self.clock.now()), 1) if relay else 0.0,
            "airtime_budget_s": round(relay.budget.budget_s_per_hour, 1) if relay else 0.0,
        }

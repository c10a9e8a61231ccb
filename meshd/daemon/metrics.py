"""Prometheus metrics for a hub: off by default, bound to 127.0.0.1:9464 by default ([metrics] in meshd.toml).

Each scrape builds the status document (`collect_status`, the same source as `meshd status`) and renders
it through a custom collector in a private `CollectorRegistry` (not the library's global one, so several
hubs in one process, as in the tests, never mix). The HTTP side is a minimal asyncio server, no threads:
`GET /metrics` answers the exposition text, anything else 404/405, one request per connection.

Counters reset when the daemon restarts, except those the store keeps (`meshd_reports_*`), which count
since the store was created; Prometheus' rate() handles both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, StateSetMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from meshd.aio import close_server
from meshd.daemon.status import LastErrors, collect_status
from meshd.radio.api import LinkState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from meshd.daemon.hub import Hub

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
MAX_REQUEST_BYTES = 8192
RADIO_STATES = ("starting", *(state.value for state in LinkState))
UPLINK_STATES = ("none", "starting", "up", "down")
# Relay counters named rejected_<reason>; listed so every series exists from the first scrape.
REJECT_REASONS = ("malformed", "bad_signature", "replay", "unknown_kind", "unknown_control", "unknown_rate")


class HubCollector(Collector):
    """Renders one status document; `snapshot` is set right before each `generate_latest`."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] | None = None
        self.log_counts: Mapping[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        doc = self.snapshot
        if doc is None:
            return
        counters = doc["counters"]
        relay: dict[str, int] = counters["relay"]
        radio: dict[str, int] = counters["radio"]
        uplink: dict[str, int] = counters["uplink"]
        store: dict[str, int] = counters["store"]

        info = InfoMetricFamily("meshd_hub", "This hub: version, camp id and radio node id.")
        info.add_metric([], {"version": doc["version"], "camp": str(doc["camp"]), "node": doc["radio"]["node"] or ""})
        yield info
        yield GaugeMetricFamily("meshd_uptime_seconds", "Seconds since the daemon started.", value=doc["uptime_s"])

        yield _state_set("meshd_radio_link_state", "Radio link state.", RADIO_STATES, doc["radio"]["state"])
        yield GaugeMetricFamily(
            "meshd_radio_up", "1 when the radio session is ready.", value=int(doc["radio"]["state"] == "ready")
        )
        yield _state_set("meshd_uplink_state", "Satellite/MQTT uplink state.", UPLINK_STATES, doc["uplink"]["state"])
        yield GaugeMetricFamily(
            "meshd_uplink_up", "1 when the uplink is connected.", value=int(doc["uplink"]["state"] == "up")
        )
        last = doc["uplink"]["last_success_age_s"]
        if last is not None:
            yield GaugeMetricFamily(
                "meshd_uplink_last_success_age_seconds", "Seconds since the broker last took custody.", value=last
            )

        queue = GaugeMetricFamily(
            "meshd_queue_depth", "Reports waiting to be delivered, by priority.", labels=["priority"]
        )
        for name, n_items in doc["queue"].items():
            queue.add_metric([name], n_items)
        yield queue
        if doc["oldest_age_s"] is not None:
            yield GaugeMetricFamily(
                "meshd_queue_oldest_age_seconds", "Age of the oldest undelivered report.", value=doc["oldest_age_s"]
            )
        yield GaugeMetricFamily(
            "meshd_airtime_used_seconds", "Airtime this hub used in the last hour.", value=doc["airtime"]["used_s"]
        )
        yield GaugeMetricFamily(
            "meshd_airtime_budget_seconds", "Airtime budget per hour (duty cycle).", value=doc["airtime"]["budget_s"]
        )
        yield GaugeMetricFamily(
            "meshd_reports_today", "Reports received from field teams today (hub clock).", value=doc["reports_today"]
        )

        frames_in = radio.get("frames_in")
        if frames_in is not None:
            yield _counter("meshd_radio_frames_received", "Frames received from the radio.", frames_in)
        yield _counter(
            "meshd_radio_frames_sent", "Frames sent to the radio.", radio.get("frames_out", relay.get("frames_sent", 0))
        )
        yield _counter(
            "meshd_envelopes_accepted", "Envelopes from other hubs accepted and stored.", relay.get("accepted", 0)
        )
        yield _counter(
            "meshd_envelopes_duplicate", "Envelopes heard again and not stored twice.", relay.get("duplicates", 0)
        )
        rejected = CounterMetricFamily("meshd_envelopes_rejected", "Envelopes dropped, by reason.", labels=["reason"])
        reasons = dict.fromkeys(REJECT_REASONS, 0)
        reasons.update({k.removeprefix("rejected_"): v for k, v in relay.items() if k.startswith("rejected_")})
        for reason, value in sorted(reasons.items()):
            rejected.add_metric([reason], value)
        yield rejected
        broadcasts = CounterMetricFamily(
            "meshd_uplink_broadcasts_rejected",
            "HQ broadcasts refused by the downlink gate, by reason.",
            labels=["reason"],
        )
        for reason, value in sorted(counters.get("uplink_rejected", {}).items()):
            broadcasts.add_metric([reason], value)
        yield broadcasts
        yield _counter(
            "meshd_reports_originated",
            "Reports signed at this hub (since the store was created).",
            store.get("originated", 0),
        )
        yield _counter(
            "meshd_reports_delivered",
            "Reports this hub delivered to HQ (since the store was created).",
            store.get("published", 0),
        )
        yield _counter(
            "meshd_reports_expired",
            "Reports dropped undelivered after expiry (since the store was created).",
            store.get("expired", 0),
        )
        reconnects = CounterMetricFamily("meshd_reconnects", "Links lost and re-established.", labels=["link"])
        reconnects.add_metric(["radio"], radio.get("reconnects", 0))
        reconnects.add_metric(["uplink"], uplink.get("reconnects", 0))
        yield reconnects
        field = CounterMetricFamily("meshd_field_events", "Field desk: messages, reports, replies.", labels=["event"])
        for event, value in sorted(counters.get("field", {}).items()):
            field.add_metric([event], value)
        yield field
        logged = CounterMetricFamily("meshd_log_messages", "Warnings and errors logged.", labels=["level"])
        for level in ("WARNING", "ERROR", "CRITICAL"):
            logged.add_metric([level.lower()], self.log_counts.get(level, 0))
        yield logged


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _state_set(name: str, documentation: str, states: tuple[str, ...], current: str) -> StateSetMetricFamily:
    names = states if current in states else (*states, current)
    return StateSetMetricFamily(name, documentation, value={s: s == current for s in names})


class MetricsServer:
    """The /metrics endpoint; does nothing unless `[metrics] enabled = true`. Use as `async with`."""

    def __init__(self, hub: Hub, *, errors: LastErrors | None = None) -> None:
        self.hub = hub
        self.config = hub.config.metrics
        self.errors = errors
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = HubCollector()
        self.registry.register(self.collector)
        self.port: int | None = None  # the bound port (useful with port = 0)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        if not self.config.enabled:
            return self
        try:
            self._server = await asyncio.start_server(
                self._serve, self.config.host, self.config.port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            # Metrics are a convenience: a port clash must not stop a hub that relays emergency reports.
            log.error("metrics: cannot listen on %s:%d: %s", self.config.host, self.config.port, exc)  # noqa: TRY400
            return self
        self.port = int(self._server.sockets[0].getsockname()[1])
        if not _is_loopback(self.config.host):
            log.warning("metrics: listening on %s:%d, reachable from the network", self.config.host, self.port)
        else:
            log.info("metrics: http://%s:%d/metrics", self.config.host, self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is None:
            return
        await close_server(self._server, self._connections)
        self._server = None

    async def scrape(self) -> bytes:
        self.collector.snapshot = await collect_status(self.hub)
        self.collector.log_counts = dict(self.errors.counts) if self.errors is not None else {}
        return generate_latest(self.registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, content_type, body = await self._respond(reader)
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode("ascii") + body)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("metrics client: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        request = await reader.readuntil(b"\r\n\r\n")  # headers only (GET has no body), at most the limit
        parts = request.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if target != b"/metrics":
            return "404 Not Found", "text/plain", b"meshd metrics are at /metrics\n"
        body = await self.scrape()
        return "200 OK", CONTENT_TYPE_LATEST, body


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Where and how to connect: broker URL, TLS context, credentials, client id, and the topic names.

Everything here is decided once from `UplinkSection` before the first connection attempt, so a typo in
the URL or an unreadable certificate is a clear `ConfigError` at start rather than an endless reconnect
loop that logs the same failure every minute on a satellite link nobody is watching.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from meshd.config import UplinkSection
from meshd.errors import ConfigError
from meshd.wire.envelope import Kind

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# Report kinds that have a topic; anything else in the outbox (broadcasts, notices) stays on the mesh.
REPORT_TOPICS: dict[Kind, str] = {
    Kind.NEEDS: "needs",
    Kind.ALERT: "alert",
    Kind.SEALED: "sealed",
    Kind.STATUS: "status",
}


@dataclass(frozen=True, slots=True)
class Topics:
    """The MQTT contract's topic names (DESIGN.md section 7): `{prefix}/v1/...`."""

    prefix: str
    camp_id: int

    def report(self, origin: int, kind: Kind) -> str | None:
        """Topic for one report, or None for kinds that are never published."""
        leaf = REPORT_TOPICS.get(kind)
        return None if leaf is None else f"{self.prefix}/v1/camp/{origin}/{leaf}"

    @property
    def status(self) -> str:
        """This hub's retained online/offline status (the last will points here)."""
        return f"{self.prefix}/v1/camp/{self.camp_id}/status"

    @property
    def broadcast(self) -> str:
        return f"{self.prefix}/v1/hq/broadcast"


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    host: str
    port: int
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    client_id: str
    topics: Topics

    def describe(self) -> str:
        """For log lines: never includes the password."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port} as {self.client_id}"


def build_tls_context(config: UplinkSection) -> ssl.SSLContext:
    """TLS for `mqtts://`: the system CAs unless `ca_file` is given; a client certificate if configured."""
    if config.key_file is not None and config.cert_file is None:
        raise ConfigError("uplink.key_file is set without uplink.cert_file")
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file) if config.ca_file is not None else None
        )
        if config.cert_file is not None:
            # key_file may be omitted when the certificate file also holds the key (a combined PEM).
            context.load_cert_chain(
                str(config.cert_file), str(config.key_file) if config.key_file is not None else None
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"uplink TLS files cannot be loaded: {exc}") from None
    # Brokers worth trusting speak TLS 1.2+; older versions are off by default but say so explicitly.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def broker_target(config: UplinkSection, camp_id: int) -> BrokerTarget:
    """Parse and check the uplink configuration; raises `ConfigError` naming the key at fault."""
    parts = urlsplit(config.url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ConfigError(f"uplink.url must be mqtt://host[:port] or mqtts://host[:port], got {config.url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError(f"uplink.url has an invalid port: {config.url!r}") from None
    if not parts.hostname:
        raise ConfigError(f"uplink.url has no host: {config.url!r}")
    if parts.username or parts.password:
        # Credentials in a URL end up in logs and `ps`; the config has dedicated keys for them.
        raise ConfigError("put the uplink credentials in uplink.username / uplink.password, not in uplink.url")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"uplink.url must not have a path or query: {config.url!r}")
    tls_files = [f for f in (config.ca_file, config.cert_file, config.key_file) if f is not None]
    if parts.scheme == "mqtt" and tls_files:
        raise ConfigError("uplink.ca_file/cert_file/key_file need an mqtts:// url (the url says plain mqtt://)")
    if config.password and not config.username:
        raise ConfigError("uplink.password is set without uplink.username")
    if not config.prefix or any(c in config.prefix for c in "#+") or config.prefix.endswith("/"):
        raise ConfigError(f"uplink.prefix must be a plain topic prefix like 'meshd', got {config.prefix!r}")
    if config.inflight < 1 or config.inflight > 65535:
        raise ConfigError("uplink.inflight must be 1..65535")
    if config.bytes_per_hour < 0:
        raise ConfigError("uplink.bytes_per_hour must be 0 (unmetered) or positive")
    return BrokerTarget(
        host=parts.hostname,
        port=port,
        tls=build_tls_context(config) if parts.scheme == "mqtts" else None,
        username=config.username or None,
        password=config.password or None,
        client_id=config.client_id or f"meshd-camp-{camp_id}",
        topics=Topics(config.prefix, camp_id),
    )

"""Uplink configuration (URL, TLS, topics), the hourly byte budget and downlink payload parsing: no broker."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

import pytest

from meshd.config import UplinkSection
from meshd.errors import ConfigError
from meshd.uplink.budget import HourlyByteBudget
from meshd.uplink.downlink import BroadcastRejected, Rejected, envelope_bytes
from meshd.uplink.target import REPORT_TOPICS, Topics, broker_target, build_tls_context
from meshd.wire.codec import PUBLISHED_KINDS
from meshd.wire.envelope import Kind
from tests.uplink_support import load_cert, self_signed


def test_plain_url_defaults() -> None:
    target = broker_target(UplinkSection(url="mqtt://broker.example"), camp_id=12)
    assert (target.host, target.port, target.tls) == ("broker.example", 1883, None)
    assert target.client_id == "meshd-camp-12"
    assert target.username is None
    assert target.password is None
    assert target.topics.status == "meshd/v1/camp/12/status"
    assert target.topics.broadcast == "meshd/v1/hq/broadcast"


def test_topics_per_kind() -> None:
    topics = Topics("hq-a", 3)
    assert topics.report(7, Kind.NEEDS) == "hq-a/v1/camp/7/needs"
    assert topics.report(7, Kind.ALERT) == "hq-a/v1/camp/7/alert"
    assert topics.report(7, Kind.SEALED) == "hq-a/v1/camp/7/sealed"
    assert topics.report(7, Kind.STATUS) == "hq-a/v1/camp/7/status"
    for kind in (Kind.BROADCAST, Kind.DELIVERED, Kind.CUSTODY, Kind.BATCH):
        assert topics.report(7, kind) is None


def test_the_kinds_with_a_topic_are_the_kinds_whose_bodies_the_store_renders() -> None:
    # the store renders uplink bodies (codec.uplink_bodies) only for kinds the uplink publishes
    assert set(REPORT_TOPICS) == PUBLISHED_KINDS


def test_credentials_and_client_id_from_config() -> None:
    target = broker_target(
        UplinkSection(url="mqtt://10.0.0.1:1999", client_id="hub-x", username="camp3", password="pw"), camp_id=3
    )
    assert (target.port, target.client_id, target.username, target.password) == (1999, "hub-x", "camp3", "pw")
    assert "pw" not in target.describe()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (UplinkSection(url="http://broker"), "mqtt://"),
        (UplinkSection(url="mqtt://"), "no host"),
        (UplinkSection(url="mqtt://broker:99999"), "invalid port"),
        (UplinkSection(url="mqtt://user:pw@broker"), "username"),
        (UplinkSection(url="mqtt://broker/path"), "path"),
        (UplinkSection(url="mqtt://broker", ca_file=Path("/etc/ca.pem")), "mqtts://"),
        (UplinkSection(url="mqtt://broker", password="x"), "without uplink.username"),
        (UplinkSection(url="mqtt://broker", prefix="meshd/#"), "prefix"),
        (UplinkSection(url="mqtt://broker", inflight=0), "inflight"),
        (UplinkSection(url="mqtt://broker", bytes_per_hour=-1), "bytes_per_hour"),
        (UplinkSection(url="mqtts://broker", key_file=Path("/k.pem")), "key_file"),
        (UplinkSection(url="mqtts://broker", ca_file=Path("/nonexistent/ca.pem")), "cannot be loaded"),
    ],
)
def test_bad_config_is_a_clear_error(section: UplinkSection, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        broker_target(section, camp_id=1)


def test_tls_context_with_ca_and_client_certificate(tmp_path: Path) -> None:
    ca_cert, ca_key = self_signed(tmp_path, "ca")
    issuer = (load_cert(ca_cert), _load_key(ca_key))
    client_cert, client_key = self_signed(tmp_path, "hub", issuer=issuer)
    section = UplinkSection(url="mqtts://127.0.0.1", ca_file=ca_cert, cert_file=client_cert, key_file=client_key)
    target = broker_target(section, camp_id=5)
    assert target.port == 8883
    context = target.tls
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_tls_context_without_ca_uses_system_store() -> None:
    context = build_tls_context(UplinkSection(url="mqtts://broker.example"))
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_tls_rejects_a_key_that_does_not_match(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "one")
    _, other_key = self_signed(tmp_path, "two")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        build_tls_context(UplinkSection(url="mqtts://b", cert_file=cert, key_file=other_key))


def _load_key(path: Path) -> object:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), password=None)


# ---------------------------------------------------------------- byte budget


def test_budget_unmetered_always_allows() -> None:
    budget = HourlyByteBudget(0)
    budget.spend(10**9, 0.0)
    assert budget.allows(1.0)
    assert budget.wait_s(1.0) == 0.0


def test_budget_blocks_until_the_hour_has_passed() -> None:
    budget = HourlyByteBudget(1000)
    budget.spend(600, 10.0)  # minute bin starting at 0
    assert budget.allows(20.0)
    budget.spend(600, 130.0)  # bin starting at 120: over budget now
    assert not budget.allows(140.0)
    # Spent 1200 of 1000: the first bin (600) must leave the window, at 0 + 3600.
    assert budget.wait_s(140.0) == pytest.approx(3600.0 - 140.0)
    assert not budget.allows(3599.0)
    assert budget.allows(3600.0)
    assert budget.spent(3600.0) == 600
    assert budget.spent(3720.0) == 0


# ---------------------------------------------------------------- downlink payload forms


def test_envelope_bytes_accepts_json_and_bare_base64() -> None:
    raw = b"\x08\x01\x10\x02"
    text = base64.b64encode(raw).decode()
    assert envelope_bytes(json.dumps({"envelope": text}).encode()) == raw
    assert envelope_bytes(f"  {text}\n".encode()) == raw


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"{not json", b'{"env": "AAAA"}', b'["AAAA"]', b'{"envelope": 5}', b"not base64 !", b"QUJ"],
)
def test_envelope_bytes_rejects_other_shapes(payload: bytes) -> None:
    with pytest.raises(BroadcastRejected) as info:
        envelope_bytes(payload)
    assert info.value.reason is Rejected.BAD_JSON

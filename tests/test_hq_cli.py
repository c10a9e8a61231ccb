"""`meshd hq` from the command line: latest, export, broadcast (real Mosquitto), run (subprocess, SIGTERM)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from lxml import etree

from meshd.cli.main import main
from meshd.errors import SignatureError
from meshd.hq.broadcast import SEQ_FILE, next_seq
from meshd.hq.db import open_store
from meshd.hq.ingest import Topics
from meshd.wire.envelope import HQ_ORIGIN, Envelope, Kind, verify
from tests.hq_support import (
    BROKER_HOST,
    BROKER_PORT,
    World,
    forget_sessions,
    make_world,
    needs_payload,
    publisher,
    record,
    unique_prefix,
    wait_until,
)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def write_config(world: World, db: str, prefix: str = "meshd", client_id: str = "") -> Path:
    path = world.root / "hq.toml"
    path.write_text(
        f"""
[mqtt]
url = "mqtt://{BROKER_HOST}:{BROKER_PORT}"
prefix = "{prefix}"
client_id = "{client_id}"

[hq]
registry = "{world.registry_path}"
database = "{db}"
hq_keys = "{world.hq_dir}"
cap_sender = "hq@example.org"
"""
    )
    return path


async def _fill(url: str) -> None:
    # "now" when the rows are written, not when the module was imported: a slow suite reaches this test
    # many minutes after collection, and the ages shown are measured from the real clock.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    recs = [
        record("101:1", received=now, age_s=3600, body={"camp": 101, "severity": {"water": 4, "food": 2}}),
        record("102:1", received=now, age_s=600, body={"camp": 102, "severity": {"health": 5}}),
        record("103:1", received=now, age_s=86400, body={"camp": 103, "severity": {"water": 4}}),
        record(
            "104:1", received=now, age_s=60, provenance="unknown_origin", body={"camp": 104, "severity": {"food": 2}}
        ),
        record("101:0", received=now, age_s=7200, body={"camp": 101, "severity": {"water": 5}}),  # older: superseded
        record("102:2", kind="alert", received=now, body={"camp": 102, "type": "disease_outbreak", "count": 3}),
        record("101:2", kind="alert", received=now, body={"camp": 101, "type": "missing_child", "count": 1}),
        record("102:3", kind="sealed", received=now, body={"kind": "protection", "text": "do not export"}),
    ]
    async with open_store(url) as store:
        await store.commit(recs)


def test_latest_is_worst_first(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{world.root / 'hq.db'}"
    asyncio.run(_fill(url))
    assert main(["hq", "latest", "--db", url, "--registry", str(world.registry_path), "--plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["camp", "name", "worst"]
    camps = [line.split()[0] for line in lines[1:]]
    # 102 has a 5; 103 and 101 both 4, the older report first; 104 only 2.
    assert camps == ["102", "103", "101", "104"]
    row_101 = next(line for line in lines if line.startswith("101"))
    assert "Hilltop" in row_101
    assert "W4 F2" in row_101
    assert re.search(r"\b6\dm\b", row_101)  # about an hour old (received an hour ago, moments before)
    assert "verified" in row_101
    assert "unknown_origin" in lines[-1]


def test_export_cli_writes_all_three_formats(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{world.root / 'hq.db'}"
    asyncio.run(_fill(url))
    config = write_config(world, url)
    assert main(["hq", "export", "--format", "hxl-csv", "-c", str(config), "--out", str(tmp_path / "n.csv")]) == 0
    text = (tmp_path / "n.csv").read_text()
    assert text.splitlines()[1].startswith("#loc+code,#loc+name")
    assert "do not export" not in text
    assert main(["hq", "export", "--format", "cap", "-c", str(config), "--out", f"{tmp_path / 'cap'}/"]) == 0
    files = sorted(p.name for p in (tmp_path / "cap").iterdir())
    assert files == ["meshd-101-2.xml", "meshd-102-2.xml"]
    missing = etree.parse(str(tmp_path / "cap" / "meshd-101-2.xml"))
    assert missing.findtext("{urn:oasis:names:tc:emergency:cap:1.2}scope") == "Restricted"
    assert missing.findtext("{urn:oasis:names:tc:emergency:cap:1.2}sender") == "hq@example.org"
    capsys.readouterr()
    assert main(["hq", "export", "--format", "geojson", "--db", url, "--since", "2h"]) == 0
    fc = json.loads(capsys.readouterr().out)
    assert fc["type"] == "FeatureCollection"
    assert sorted(f["properties"]["camp"] for f in fc["features"]) == [101, 102, 104]  # 103's report is a day old
    # Several alerts cannot go into one CAP document: a clear error, not a broken file.
    assert main(["hq", "export", "--format", "cap", "--db", url]) == 1
    assert "give --out DIRECTORY/" in capsys.readouterr().err
    assert main(["hq", "export", "--format", "cap", "--db", url, "--since", "yesterday"]) == 1


def test_bad_config_is_a_one_line_error(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    bad = world.root / "bad.toml"
    bad.write_text('[mqtt]\nurl = "http://x"\nprefx = "a"\n')
    assert main(["hq", "latest", "-c", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "prefx" in err
    assert len(err.splitlines()) == 1


def test_broadcast_seq_counter(tmp_path: Path) -> None:
    assert next_seq(tmp_path, now=1_800_000_000) == 1_800_000_000
    assert next_seq(tmp_path, now=1_900_000_000) == 1_800_000_001  # dense, not the clock
    assert next_seq(tmp_path, explicit=1_800_000_100) == 1_800_000_100
    assert next_seq(tmp_path) == 1_800_000_101
    assert next_seq(tmp_path, explicit=5) == 5  # an explicit lower seq (a resend) does not move the counter back
    assert (tmp_path / SEQ_FILE).read_text().strip() == "1800000101"


async def test_broadcast_cli_publishes_an_hq_signed_envelope(world: World) -> None:
    prefix = unique_prefix()
    topic = Topics(prefix).broadcast
    received: list[bytes] = []
    async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, identifier=f"hub-{uuid.uuid4().hex[:8]}") as hub:
        await hub.subscribe(topic, qos=1)
        argv = [
            "hq",
            "broadcast",
            "--text",
            "Water truck at gate 2, 14:00",
            "--severity",
            "minor",
            "--urgency",
            "expected",
            "--key",
            str(world.hq_dir),
            "--broker",
            f"mqtt://{BROKER_HOST}:{BROKER_PORT}",
            "--prefix",
            prefix,
        ]
        assert await asyncio.to_thread(main, argv) == 0
        assert await asyncio.to_thread(main, argv) == 0

        async def collect() -> None:
            async for message in hub.messages:
                assert isinstance(message.payload, bytes)
                received.append(message.payload)
                if len(received) == 2:
                    return

        await asyncio.wait_for(collect(), 10)
    envelopes = []
    for payload in received:
        obj = json.loads(payload)
        assert obj["kind"] == "broadcast"
        assert obj["body"]["text"] == "Water truck at gate 2, 14:00"
        env = Envelope.from_bytes(base64.b64decode(obj["envelope"]))
        assert (env.origin, env.kind) == (HQ_ORIGIN, Kind.BROADCAST)
        verify(env, Ed25519PublicKey.from_public_bytes(world.hq.sign_public))
        with pytest.raises(SignatureError):
            verify(env, Ed25519PublicKey.from_public_bytes(world.camps[101].sign_public))
        envelopes.append(env)
    assert envelopes[1].seq == envelopes[0].seq + 1


def test_broadcast_cli_refuses_bad_input(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["hq", "broadcast", "--key", str(world.hq_dir), "--broker", "mqtt://127.0.0.1:1"]
    assert main([*argv, "--text", "x" * 200]) == 1  # too long for one frame: refused before any seq is used
    assert not (world.hq_dir / SEQ_FILE).exists()
    assert main([*argv, "--text", "hello"]) == 1  # no broker there
    assert "could not publish" in capsys.readouterr().err


async def test_hq_run_subprocess_stores_and_stops_on_sigterm(world: World) -> None:
    prefix = unique_prefix()
    url = f"sqlite:///{world.root / 'hq.db'}"
    client_id = f"hq-{uuid.uuid4().hex[:8]}"
    config = write_config(world, url, prefix=prefix, client_id=client_id)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshd.cli.main",
        "hq",
        "run",
        "-c",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with publisher() as hub:

            async def stored() -> bool:
                await hub.publish(Topics(prefix).camp(101, "needs"), needs_payload(world, 101, 1), qos=1)
                async with open_store(url) as store:
                    return await store.report_ids() == ["101:1"]

            await wait_until(stored, within=15, interval=0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await forget_sessions(client_id)


def test_example_config_parses() -> None:
    from meshd.hq.config import load_hq_config

    config = load_hq_config(Path(__file__).parent.parent / "docs" / "hq.example.toml")
    assert config.mqtt.prefix == "meshd"
    assert config.hq.database.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[mqtt]\nurl = "http://x"\n', "mqtt.url"),
        ('[mqtt]\nprefix = "a/#"\n', "mqtt.prefix"),
        ('[mqtt]\nshared_group = "a/b"\n', "shared_group"),
        ('[mqtt]\ncert_file = "c.pem"\n', "go together"),
        ('[hq]\ndatabase = "mysql://x"\n', "hq.database"),
        ("[hq]\nregistry = 3\n", "hq.registry"),
    ],
)
def test_config_errors_name_the_key(text: str, message: str) -> None:
    from meshd.errors import ConfigError
    from meshd.hq.config import parse_hq_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_hq_config(text, "hq.toml")

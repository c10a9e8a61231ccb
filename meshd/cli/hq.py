"""`meshd hq run|export|latest|broadcast`: the headquarters side of meshd."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from meshd import keys
from meshd.errors import ConfigError
from meshd.hq.broadcast import broadcast_payload, build_broadcast, next_seq, publish_broadcast
from meshd.hq.config import DEFAULT_PREFIX, HQConfig, check_prefix, load_hq_config, parse_broker_url
from meshd.hq.db import open_store
from meshd.hq.export import ExportError, cap_alerts, geojson, hxl_csv, parse_since
from meshd.hq.ingest import Ingestor, load_registry
from meshd.hq.latest import HEADERS, line_cells, render_plain, worst_first
from meshd.hq.records import ReportRecord
from meshd.hq.worker import HQWorker, tls_parameters
from meshd.wire.bodies import SEVERITIES, URGENCIES
from meshd.wire.registry import Registry


def _add_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("-c", "--config", type=Path, help="hq.toml (database and registry from it)")
    group.add_argument("--db", help="database URL: sqlite:///PATH or postgresql://...")
    parser.add_argument("--registry", type=Path, help="camp registry for names and locations (default: from -c)")


def register(subparsers: Any) -> None:
    hq = subparsers.add_parser("hq", help="headquarters: MQTT ingest, exports, latest needs, broadcasts")
    sub = hq.add_subparsers(dest="hq_command", metavar="ACTION", required=True)

    run = sub.add_parser("run", help="ingest reports from MQTT into the HQ database until stopped")
    run.add_argument("-c", "--config", type=Path, required=True, help="hq.toml")
    run.add_argument("--client-id", help="MQTT client id (default: mqtt.client_id, else meshd-hq-<hostname>)")
    run.add_argument(
        "--retire",
        action="store_true",
        help="scale down: drain this client id's persistent session, store what it held, then delete the session",
    )
    run.set_defaults(func=cmd_run)

    exp = sub.add_parser("export", help="export reports as HXL CSV, GeoJSON or CAP 1.2 XML")
    exp.add_argument("--format", required=True, choices=("hxl-csv", "geojson", "cap"))
    exp.add_argument("--since", help="only reports observed since: a duration (24h, 7d) or an ISO time")
    exp.add_argument("--out", help="output file (default stdout); for cap with several alerts, a directory")
    exp.add_argument("--sender", help="CAP <sender> (default: hq.cap_sender)")
    _add_source(exp)
    exp.set_defaults(func=cmd_export)

    lat = sub.add_parser(
        "latest",
        help="latest needs of every camp, worst first",
        description="Worst first: highest sector severity, then the older report, then provenance.",
    )
    lat.add_argument("--plain", action="store_true", help="plain text table (default when not a terminal)")
    _add_source(lat)
    lat.set_defaults(func=cmd_latest)

    bc = sub.add_parser("broadcast", help="sign a message with the HQ key and publish it to every camp")
    bc.add_argument("--text", required=True, help="message text (at most 140 bytes)")
    bc.add_argument("--severity", choices=tuple(SEVERITIES), default="unknown")
    bc.add_argument("--urgency", choices=tuple(URGENCIES), default="unknown")
    bc.add_argument("--expires-in", type=int, metavar="SECONDS", help="hubs drop it after this long")
    bc.add_argument("--camps", help="comma-separated camp ids (default: every camp)")
    bc.add_argument("--key", type=Path, help="HQ key directory (default: hq.hq_keys from -c)")
    bc.add_argument("--seq", type=int, help="sequence number (default: the counter in the key directory)")
    bc.add_argument("--broker", help="mqtt://host:port (default: mqtt.url from -c, else mqtt://127.0.0.1:1883)")
    bc.add_argument("--prefix", help=f"topic prefix (default: mqtt.prefix from -c, else {DEFAULT_PREFIX})")
    bc.add_argument("-c", "--config", type=Path, help="hq.toml for broker, prefix, TLS and key defaults")
    bc.set_defaults(func=cmd_broadcast)


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    config = load_hq_config(args.config)
    registry = load_registry(config.hq.registry, config.hq.hq_keys)
    open_key = keys.load_seal_private(config.hq.protection_key) if config.hq.protection_key else None
    ingestor = Ingestor(registry, prefix=config.mqtt.prefix, open_key=open_key)
    worker = HQWorker(config, ingestor, client_id=args.client_id)
    if args.retire:
        drained = asyncio.run(worker.retire())
        print(f"meshd hq: worker {worker.client_id} retired; {drained} queued messages drained, session removed")
        return 0
    print(
        f"meshd hq: {len(registry.camps)} camps in the registry; sealed reports "
        f"{'opened' if open_key else 'kept closed'}; worker {worker.client_id} -> {worker.broker.host}:"
        f"{worker.broker.port}",
        file=sys.stderr,
    )
    return asyncio.run(_run_until_signal(worker))


async def _run_until_signal(worker: HQWorker) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


# ---------------------------------------------------------------- sources for export / latest


def _source(args: argparse.Namespace) -> tuple[str, Registry | None, HQConfig | None]:
    config = load_hq_config(args.config) if args.config else None
    url = args.db if args.db else config.hq.database if config else ""
    registry_path = args.registry or (config.hq.registry if config else None)
    registry = None
    if registry_path is not None:
        registry = load_registry(registry_path, config.hq.hq_keys if config else None)
    return url, registry, config


async def _load(url: str, *, since: str | None, latest: bool) -> list[ReportRecord]:
    async with open_store(url) as store:
        if latest:
            return await store.latest_needs()
        return await store.reports(kinds=("needs", "alert"), since=parse_since(since) if since else None)


# ---------------------------------------------------------------- export


def _write(out: Path | None, data: bytes) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror}") from None


def cmd_export(args: argparse.Namespace) -> int:
    url, registry, config = _source(args)
    out = Path(args.out) if args.out else None
    if args.format == "geojson":
        records = asyncio.run(_load(url, since=None, latest=True))
        if args.since:
            since = parse_since(args.since)
            records = [r for r in records if r.observed_est >= since]
        text = json.dumps(geojson(records, registry), ensure_ascii=False, indent=1) + "\n"
        _write(out, text.encode("utf-8"))
        return 0
    records = asyncio.run(_load(url, since=args.since, latest=False))
    if args.format == "hxl-csv":
        _write(out, hxl_csv(records, registry).encode("utf-8"))
        return 0
    sender = args.sender or (config.hq.cap_sender if config else "meshd-hq@meshd.invalid")
    documents = cap_alerts(records, registry, sender=sender)
    return _write_cap(
        documents, out, as_directory=bool(args.out) and (args.out.endswith("/") or Path(args.out).is_dir())
    )


def _write_cap(documents: list[tuple[str, bytes]], out: Path | None, *, as_directory: bool) -> int:
    """One alert: to the file or stdout. Several: one file each into the --out directory."""
    if out is not None and as_directory:
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, data in documents:
                (out / name).write_bytes(data)
        except OSError as exc:
            raise ExportError(f"cannot write CAP files into {out}: {exc.strerror}") from None
        print(f"{len(documents)} CAP alert(s) written to {out}", file=sys.stderr)
        return 0
    if not documents:
        print("no alerts to export", file=sys.stderr)
        return 0
    if len(documents) > 1:
        raise ExportError(
            f"{len(documents)} alerts: CAP has one <alert> per document; give --out DIRECTORY/ for one file each"
        )
    _write(out, documents[0][1])
    return 0


# ---------------------------------------------------------------- latest


def cmd_latest(args: argparse.Namespace) -> int:
    url, registry, _ = _source(args)
    lines = worst_first(asyncio.run(_load(url, since=None, latest=True)), registry)
    if args.plain or not sys.stdout.isatty():
        sys.stdout.write(render_plain(lines))
        return 0
    from rich.console import Console  # noqa: PLC0415 - only for interactive terminals
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"Latest needs, worst first ({len(lines)} camps)")
    for header in HEADERS:
        table.add_column(header, justify="right" if header in ("camp", "worst", "people", "age") else "left")
    for line in lines:
        style = "bold red" if line.worst >= 4 else "yellow" if line.worst == 3 else None
        table.add_row(*line_cells(line), style=style)
    Console().print(table)
    return 0


# ---------------------------------------------------------------- broadcast


def cmd_broadcast(args: argparse.Namespace) -> int:
    config = load_hq_config(args.config) if args.config else None
    key_dir = args.key or (config.hq.hq_keys if config else None)
    if key_dir is None:
        raise ConfigError("give --key HQ_KEY_DIR (or -c hq.toml with hq.hq_keys)")
    url = args.broker or (config.mqtt.url if config else "mqtt://127.0.0.1:1883")
    mqtt = config.mqtt if config else None
    broker = parse_broker_url(url, username=mqtt.username if mqtt else "", password=mqtt.password if mqtt else "")
    prefix = check_prefix(args.prefix or (mqtt.prefix if mqtt else DEFAULT_PREFIX))
    body: dict[str, Any] = {"text": args.text, "severity": args.severity, "urgency": args.urgency}
    if args.expires_in is not None:
        body["expires_in_s"] = args.expires_in
    if args.camps:
        try:
            body["camps"] = [int(c) for c in args.camps.split(",") if c.strip()]
        except ValueError:
            raise ConfigError(f"--camps {args.camps!r}: give comma-separated camp ids") from None
    hq_key = keys.load(key_dir).sign
    build_broadcast(body, key=hq_key, seq=1)  # validate the body before reserving a seq
    seq = next_seq(key_dir, args.seq)
    envelope = build_broadcast(body, key=hq_key, seq=seq)
    tls = tls_parameters(mqtt) if mqtt is not None and broker.tls else None
    topic = asyncio.run(publish_broadcast(broker, prefix, broadcast_payload(envelope), tls_params=tls))
    print(f"broadcast {envelope.id} published to {topic} ({len(envelope.to_bytes())} bytes signed)")
    return 0

"""`meshd run -c meshd.toml` and `meshd send KIND --json FILE|-`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from meshd.config import HubConfig, load_hub_config
from meshd.errors import EncodeError
from meshd.wire.codec import parse_kind

log = logging.getLogger("meshd")
DEFAULT_CONFIG = Path("/etc/meshd/meshd.toml")


def register(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run the hub daemon (radio, relay, uplink)")
    run.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    run.set_defaults(func=cmd_run)

    send = subparsers.add_parser("send", help="queue a report at this hub (running or stopped)")
    send.add_argument("kind", choices=("needs", "alert", "sealed"))
    send.add_argument("--json", dest="json_file", required=True, help="JSON body file, or - for stdin")
    send.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    send.set_defaults(func=cmd_send)


def configure_logging(verbose: int) -> None:
    from meshd.daemon.logs import configure  # noqa: PLC0415

    configure(verbose)


def cmd_run(args: argparse.Namespace) -> int:
    configure_logging(args.verbose)
    config = load_hub_config(args.config)
    return asyncio.run(run_hub(config))


async def run_hub(config: HubConfig) -> int:
    from meshd.daemon.hub import Hub  # noqa: PLC0415 - keeps `meshd --help` fast

    hub = Hub(config)
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    stop_reason: list[str] = []

    def _stop(signame: str) -> None:
        if not stop_reason:
            log.info("%s received: draining and stopping", signame)
            stop_reason.append(signame)
            if main is not None:
                main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, sig.name)
    try:
        await hub.run()
    except asyncio.CancelledError:
        if not stop_reason:
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped cleanly")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    config = load_hub_config(args.config)
    kind = parse_kind(args.kind)
    try:
        text = sys.stdin.read() if args.json_file == "-" else Path(args.json_file).read_text(encoding="utf-8")
        body = json.loads(text)
    except OSError as exc:
        raise EncodeError(f"cannot read {args.json_file}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise EncodeError(f"{args.json_file} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise EncodeError("the JSON body must be an object")
    env = asyncio.run(_send(config, kind.value, body))
    print(f"queued #{env} at camp {config.hub.camp_id}")
    return 0


async def _send(config: HubConfig, kind_name: str, body: dict[str, Any]) -> str:
    from meshd.daemon.hub import load_hub_keys, load_registry_file  # noqa: PLC0415
    from meshd.relay.relay import originate_report  # noqa: PLC0415
    from meshd.store.hub import HubStore  # noqa: PLC0415

    registry = load_registry_file(config)
    pair = load_hub_keys(config, registry)
    from meshd.clock import Clock  # noqa: PLC0415

    async with HubStore(config.hub.store, clock=Clock(config.timing.speedup).now, passive=True) as store:
        env = await originate_report(
            store,
            pair,
            registry=registry,
            camp_id=config.hub.camp_id,
            kind=parse_kind(kind_name),
            body=body,
            expiry_s=int(config.relay.expiry_h * 3600),
        )
    return env.id

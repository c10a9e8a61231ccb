"""`meshd demo`: the whole system on one machine, with a live view and a machine-readable summary."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshd.demo.scenario import DemoResult


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run a live simulated network of six camps, end to end")
    p.add_argument("--minutes", type=float, default=2.0, help="how long the demo runs (default 2)")
    p.add_argument("--speedup", type=float, default=5.0, help="simulated radio time runs this much faster")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for stores, logs and exports")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-live", action="store_true", help="no live view (for logs and CI)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from meshd.demo.scenario import DemoOptions, run_demo  # noqa: PLC0415 - heavy imports only for the demo
    from meshd.demo.view import render, summary_lines  # noqa: PLC0415

    options = DemoOptions(
        minutes=args.minutes, speedup=args.speedup, out=args.out, seed=args.seed, live=not args.no_live
    )
    args.out.mkdir(parents=True, exist_ok=True)
    # hub and HQ logs go to a file: the terminal belongs to the live view
    logging.getLogger().handlers.clear()
    logging.basicConfig(
        level=logging.INFO,
        filename=str(args.out / "demo.log"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if options.live and sys.stdout.isatty():
        from rich.live import Live  # noqa: PLC0415

        with Live(refresh_per_second=2, transient=False) as live:
            result = asyncio.run(run_demo(options, on_tick=lambda scene: live.update(render(scene))))
    else:
        last = [0.0]

        def progress(scene: Any) -> None:
            if scene.elapsed() - last[0] >= 10:
                last[0] = scene.elapsed()
                acknowledged = scene.acknowledged()
                print(
                    f"[{scene.elapsed():4.0f} s] {scene.phase}: {len(acknowledged)} received by hubs, "
                    f"{len(set(acknowledged) & set(scene.hq_first_seen))} at HQ",
                    flush=True,
                )

        result = asyncio.run(run_demo(options, on_tick=progress))
    for line in summary_lines(result):
        print(line)
    status = exit_status(result)
    if status:
        print("demo FAILED: something was lost or duplicated at HQ", file=sys.stderr)
    return status


def exit_status(result: DemoResult) -> int:
    """`make demo` doubles as an end-to-end check: anything lost or duplicated at HQ (or nothing sent) fails."""
    return 1 if result.lost or result.duplicate_rows or not result.sent else 0

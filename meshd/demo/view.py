"""The live terminal view of the demo (rich), and the plain summary."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from meshd.demo.scenario import DemoResult, Scene


def render(scene: Scene) -> Group:
    camps = Table(title="Camp hubs", expand=False)
    for column in ("camp", "radio", "uplink", "queue", "custody", "airtime used / budget (this hour)"):
        camps.add_column(column)
    for camp, hub in sorted(scene.hubs.items()):
        relay = hub.relay
        if relay is None:
            camps.add_row(str(camp), "starting", "", "", "", "")
            continue
        uplink = "—"
        if camp in scene.satlinks:
            up = hub.uplink is not None and bool(getattr(hub.uplink, "connected", False))
            uplink = (
                "[green]up[/]" if up else ("[red]down[/]" if not scene.satlinks[camp].up else "[yellow]connecting[/]")
            )
        queue = scene.queue_depth.get(camp, 0)
        used = relay.budget.used(relay.clock.now())
        camps.add_row(
            str(camp),
            relay.radio.state.value,
            uplink,
            str(queue),
            str(relay.counters.get("custody_handed_over", 0)),
            f"{used:6.1f} s / {relay.budget.budget_s_per_hour:.0f} s",
        )
    hq = Table(title=f"HQ: {scene.hq_count} reports stored", expand=False)
    for column in ("id", "kind", "camp", "age", "provenance"):
        hq.add_column(column)
    for item in reversed(scene.hq_recent):
        hq.add_row(item["id"], item["kind"], str(item["camp"]), f"{item['age_s']} s", item["provenance"])
    acknowledged = scene.acknowledged()
    at_hq = len(set(acknowledged) & set(scene.hq_first_seen))
    total = scene.options.minutes * 60
    progress = Text(
        f"{scene.elapsed():5.0f}/{total:.0f} s  {scene.phase}  |  received by hubs {len(acknowledged)}  "
        f"at HQ {at_hq}  |  satellite links: "
        + ", ".join(f"camp {c} {'up' if link.up else 'DOWN'}" for c, link in sorted(scene.satlinks.items()))
    )
    return Group(camps, hq, progress)


def summary_lines(result: DemoResult) -> list[str]:
    return [
        "",
        "meshd demo summary",
        f"  reports sent by field teams (acknowledged by hubs): {result.sent}",
        f"  delivered to HQ:                                    {result.delivered}",
        f"  redundant copies removed by HQ de-duplication:      {result.deduplicated}",
        f"  duplicate rows at HQ (must be 0):                   {result.duplicate_rows}",
        f"  lost (must be 0):                                   {result.lost}"
        + (f"  {', '.join(_where(result, i) for i in result.lost_ids)}" if result.lost_ids else ""),
        f"  malformed messages answered with an error:          {result.error_replies}",
        f"  airtime per delivered report:                       {result.airtime_per_report_s:.2f} s",
        "  airtime by message kind:                            "
        + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(result.airtime_by_kind.items(), key=lambda kv: -kv[1])),
        f"  delivery latency p50 / p95 (real time):             {result.percentile(0.5):.1f} s / "
        f"{result.percentile(0.95):.1f} s",
        f"  HQ exports (HXL CSV, GeoJSON, CAP 1.2):             {result.exports}",
        result.result_line(),
    ]


def _where(result: DemoResult, report_id: str) -> str:
    camps = result.carried_by.get(report_id)
    if camps is None:
        return report_id
    if not camps:
        return f"{report_id} (carried by no hub: custody lost)"
    return f"{report_id} (late: still carried by camp {', '.join(map(str, camps))})"

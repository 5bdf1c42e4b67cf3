"""The rehearsal report: `report.json` (summary, SLO verdict, timelines), PNG charts, and a
self-contained `report.html` (charts inlined as data: URIs, no external asset) ops can attach to
a ticket or open offline.

Charts need matplotlib, an optional dependency: `chart_support()` says whether it is installed, and
the CLI asks before the run starts. Without it the report is written all the same (report.json and
report.html with every figure), with a line saying how to get the charts: a rehearsal never loses
its results to a missing plotting library. A run that stopped early (`rehearse report` from its
journal) is reported as incomplete.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

INSTALL_CHARTS = "pip install 'launchkit[rehearse]'"


def chart_support() -> str | None:
    """None when charts can be drawn, else why not and how to fix it."""
    try:
        from loadtests.rehearse import charts  # noqa: F401 - the import is the check
    except ImportError as error:
        return f"no charts: {error} (to get them: {INSTALL_CHARTS})"
    return None


def write(directory: Path, raw: dict[str, Any], summary: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Path]:
    """Write report.json, the PNG charts (when matplotlib is installed) and report.html into
    `directory`; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {"verdict": verdict, "summary": summary, "profile": raw["profile"], "target": raw["target"],
                "targets": raw.get("targets") or [raw["target"]], "started_at": raw["started_at"],
                "workers": raw.get("workers", [raw["shard"]]), "complete": summary["complete"],
                "timeline": raw["timeline"], "server": raw["server"]}
    paths = {"json": directory / "report.json", "html": directory / "report.html"}
    missing = chart_support()
    document["charts"] = missing or "included"
    paths["json"].write_text(json.dumps(document, indent=2))
    charts: dict[str, Path] = {}
    if missing is None:
        from loadtests.rehearse.charts import draw

        charts = draw(directory, raw, summary)
        paths.update(charts)
    paths["html"].write_text(_html(document, charts, missing))
    return paths


# ---- HTML ---------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222f3e;padding:0 1rem}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}td,th{border:1px solid #c8d6e5;padding:0.25rem 0.6rem;
text-align:left}th{background:#f1f2f6}.pass{color:#0a7d5a;font-weight:600}.fail{color:#c0392b;font-weight:600}
.verdict{font-size:1.4rem;padding:0.6rem 1rem;border-radius:6px}.verdict.pass{background:#e3f9ef}
.verdict.fail{background:#fdecea}img{max-width:100%}pre{background:#f1f2f6;padding:0.8rem;overflow:auto}
.note{background:#fff6e0;padding:0.5rem 0.8rem;border-radius:6px}
"""


def _html(document: dict[str, Any], charts: dict[str, Path], missing: str | None) -> str:
    verdict, summary, profile = document["verdict"], document["summary"], document["profile"]
    state = "pass" if verdict["pass"] else "fail"
    headline = "SLOs hold" if verdict["pass"] else f"SLOs failed: {', '.join(verdict['failed'])}"
    incomplete = "" if summary["complete"] else (
        f"<p class='verdict fail'>Incomplete: the run stopped after {_e(summary['wall_seconds'])} s (its journal "
        f"has no end); {_e(summary['arrivals'])} arrivals reported, {_e(summary['unfinished'])} were in flight "
        f"and are not counted.</p>")
    checks = "".join(
        f"<tr><td>{_e(c['name'])}</td><td>{_e(c['what'])}</td><td>{_e(c['threshold'])}</td>"
        f"<td>{_e(c['measured'])}</td><td class='{'pass' if c['pass'] else 'fail'}'>"
        f"{'pass' if c['pass'] else 'FAIL'}</td><td>{_e(c['why'])}</td></tr>" for c in verdict["checks"])
    viewers, queue = summary["viewers"], summary["queue"]
    figures = [
        ("arrivals", summary["arrivals"]), ("by kind", summary["by_kind"]),
        ("viewers joined / arrived", f"{viewers['joined']} / {viewers['arrivals']}"),
        ("viewers who waited; wait p95 (s); largest place in line",
         f"{viewers['waited']}; {viewers['wait_seconds']['p95']}; {viewers['max_position']}"),
        ("queue (clients): peak, drained", f"{queue['clients']['peak']}, {queue['clients']['drained']}"),
        ("queue (server): peak, drained", f"{queue['server']['peak']}, {queue['server']['drained']}"
         if queue["server"] else "not scraped"),
        ("startup after admission p50 / p95 (s)",
         f"{summary['startup_after_admission']['p50']} / {summary['startup_after_admission']['p95']}"),
        ("startup with waiting room p50 / p95 (s)",
         f"{summary['startup_with_wait']['p50']} / {summary['startup_with_wait']['p95']}"),
        ("segment TTFB p50 / p95 (s)", f"{summary['ttfb']['segment']['p50']} / {summary['ttfb']['segment']['p95']}"),
        ("part TTFB p50 / p95 (s)", f"{summary['ttfb']['part']['p50']} / {summary['ttfb']['part']['p95']}"),
        ("rebuffer", summary["rebuffer"]), ("WHEP", summary["whep"]), ("visitors", summary["visitors"]),
        ("errors by type", summary["errors"] or "none"), ("5xx seen by clients", summary["http_5xx"]),
        ("server", summary["server"] or "not scraped"), ("load generator tick lag", summary["generator_lag"]),
    ]
    line, fifo = summary["line"], summary["line"]["fifo"]
    line_rows = [
        ("capacity (target's /api/status at the start)", line["capacity"] if line["capacity"] else "not limited"),
        ("seconds with someone waiting", line["queue_seconds"]),
        ("idle place-seconds while anyone waits (share of capacity-seconds then)",
         f"{line['idle_place_seconds_while_waiting']} ({_percent(line['idle_ratio_while_waiting'])})"),
        ("place freed → next viewer admitted p50 / p95 / max (s)", _p(line["freed_to_admitted"])),
        ("place freed → next viewer playing p50 / p95 / max (s)", _p(line["freed_to_playing"])),
        ("viewers admitted from the line", line["admitted_from_queue"]),
        (f"FIFO inversions beyond {fifo['jitter_seconds']} s (allowed jitter) / at any lead",
         f"{fifo['inversions']} / {fifo['inversions_any_lead']} of {fifo['compared']} places "
         f"(worst lead {fifo['worst_lead_seconds']} s)"),
        ("admitted without a place ahead of someone waiting", fifo["jumped"]),
        ("admitted beyond capacity (clients' view)", line["admitted_beyond_capacity"]),
        ("admitted viewers' rebuffer ratio", summary["rebuffer"]["ratio"]),
        ("errors", summary["error_count"]),
    ]
    line_table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_plain(v))}</td></tr>" for k, v in line_rows)
    chart_note = f"<p class='note'>{_e(missing)}</p>" if missing else ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_plain(v))}</td></tr>" for k, v in figures)
    images = "".join(
        f"<h3>{_e(name)}</h3><img alt='{_e(name)} chart' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'>" for name, path in charts.items())
    phases = "".join(f"<tr><td>{_e(p['name'])}</td><td>{_e(p['seconds'])}</td><td>{_e(p['rate'])}</td></tr>"
                     for p in profile["phases"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Launchkit rehearsal: {_e(profile['name'])}</title>
<style>{_STYLE}</style></head><body>
<h1>Flash-crowd rehearsal: {_e(profile['name'])}</h1>
<p>Targets <code>{_e(', '.join(document['targets']))}</code>, workers {_e(document['workers'])},
{_e(summary['wall_seconds'])} s.</p>
{incomplete}<p class="verdict {state}">{_e(headline)}</p>
<h2>SLOs</h2><table><tr><th>SLO</th><th>what</th><th>target</th><th>measured</th><th></th><th>why</th></tr>{checks}</table>
<h2>The waiting room: places and order</h2><table>{line_table}</table>
<h2>What viewers and ops felt</h2><table>{rows}</table>
<h2>Charts</h2>{chart_note}{images}
<h2>Profile</h2><p>{_e(profile['description'])} (arrivals: {_e(profile['arrivals'])}, mix {_e(profile['mix'])},
watch {_e(profile['watch_seconds'])} s, patience {_e(profile['patience_seconds'])} s)</p>
<table><tr><th>phase</th><th>seconds</th><th>arrivals/s</th></tr>{phases}</table>
<details><summary>summary (JSON)</summary><pre>{_e(json.dumps(summary, indent=2))}</pre></details>
</body></html>
"""


def _p(stats: dict[str, Any]) -> str:
    return f"{stats['p50']} / {stats['p95']} / {stats['max']} ({stats['count']} places)"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.2f} %"


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)

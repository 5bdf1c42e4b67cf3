"""The rehearsal report: `report.json` (summary, SLO verdict, timelines), PNG charts, and a
self-contained `report.html` (charts inlined as data: URIs, no external asset) ops can attach to
a ticket or open offline.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display (servers, CI)
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

CHARTS = ("arrivals", "startup", "rebuffer", "egress", "server")
FIGSIZE = (9, 3.6)


def write(directory: Path, raw: dict[str, Any], summary: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Path]:
    """Write report.json, the PNG charts and report.html into `directory`; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {"verdict": verdict, "summary": summary, "profile": raw["profile"], "target": raw["target"],
                "started_at": raw["started_at"], "workers": raw.get("workers", [raw["shard"]]),
                "timeline": raw["timeline"], "server": raw["server"]}
    paths = {"json": directory / "report.json", "html": directory / "report.html"}
    paths["json"].write_text(json.dumps(document, indent=2))
    for name in CHARTS:
        paths[name] = directory / f"{name}.png"
        figure = _DRAW[name](raw, summary)
        figure.savefig(paths[name], dpi=100, bbox_inches="tight")
        plt.close(figure)
    paths["html"].write_text(_html(document, {name: paths[name] for name in CHARTS}))
    return paths


# ---- charts -------------------------------------------------------------------------------------

def _axes(title: str, ylabel: str) -> tuple[plt.Figure, plt.Axes]:
    figure, axes = plt.subplots(figsize=FIGSIZE)
    axes.set_title(title)
    axes.set_xlabel("seconds since the start")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _column(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(row["t"], row[key]) for row in rows if row.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _arrivals(raw: dict[str, Any], _summary: dict[str, Any]) -> plt.Figure:
    figure, axes = _axes("Arrivals vs admitted vs queued", "viewers")
    rows = raw["timeline"]
    t = [row["t"] for row in rows]
    axes.bar(t, [row["arrived"] for row in rows], width=0.9, color="#c8d6e5", label="arrivals per second")
    axes.plot(t, [row["playing"] + row["stalled"] for row in rows], color="#10ac84", label="admitted (clients)")
    axes.plot(t, [row["waiting"] for row in rows], color="#ee5253", label="queued (clients)")
    for key, label, color in (("viewers", "admitted (server)", "#10ac84"), ("queued", "queued (server)", "#ee5253")):
        xs, ys = _column(raw["server"], key)
        if xs:
            axes.plot(xs, ys, linestyle="--", color=color, alpha=0.7, label=label)
    axes.legend(loc="upper right", fontsize="small")
    return figure


def _startup(raw: dict[str, Any], summary: dict[str, Any]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=FIGSIZE)
    arrivals = [a for a in raw["arrivals"] if a["joined"] and a["kind"] != "visitor" and a["startup"] is not None]
    after = [max(0.0, a["startup"] - a["waited"]) for a in arrivals]
    full = [a["startup"] for a in arrivals]
    if arrivals:
        bins = 30
        axes.hist(full, bins=bins, alpha=0.5, color="#ee5253", label="arrival → playing (waiting room included)")
        axes.hist(after, bins=bins, alpha=0.7, color="#10ac84", label="admission → playing")
        p95 = summary["startup_after_admission"]["p95"]
        if p95 is not None:
            axes.axvline(p95, color="#222f3e", linestyle=":", label=f"p95 after admission {p95:.2f} s")
        axes.legend(fontsize="small")
    axes.set_title(f"Startup time of {len(arrivals)} viewers who played")
    axes.set_xlabel("seconds")
    axes.set_ylabel("viewers")
    axes.grid(alpha=0.3)
    return figure


def _rebuffer(raw: dict[str, Any], summary: dict[str, Any]) -> plt.Figure:
    ratio = summary["rebuffer"]["ratio"]
    figure, axes = _axes(f"Rebuffering (ratio {ratio if ratio is not None else '-'}, "
                         f"{summary['rebuffer']['stalls']} stalls)", "viewers")
    xs, stalled = _column(raw["timeline"], "stalled")
    _, playing = _column(raw["timeline"], "playing")
    axes.plot(xs, playing, color="#10ac84", label="playing")
    axes.fill_between(xs, stalled, color="#ee5253", alpha=0.6, label="stalled (rebuffering)")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def _egress(raw: dict[str, Any], _summary: dict[str, Any]) -> plt.Figure:
    figure, axes = _axes("Egress", "Mbit/s")
    xs, ys = _column(raw["server"], "egress_mbps")
    if xs:
        axes.plot(xs, ys, color="#2e86de", label="server egress (HTTP bodies + WebRTC payload)")
    t, received = _column(raw["timeline"], "bytes")
    axes.plot(t, [8 * b / 1e6 for b in received], color="#ff9f43", label="received by the simulated clients")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def _server(raw: dict[str, Any], _summary: dict[str, Any]) -> plt.Figure:
    figure, axes = _axes("Server health (scraped /metrics)", "seconds")
    for key, label, color in (("encoder_lag", "encoder lag (worst rendition)", "#5f27cd"),
                              ("loop_lag", "event-loop lag", "#ff9f43")):
        xs, ys = _column(raw["server"], key)
        if xs:
            axes.plot(xs, ys, color=color, label=label)
    xs, errors = _column(raw["server"], "http_5xx")
    if xs:
        right = axes.twinx()
        right.plot(xs, [e - errors[0] for e in errors], color="#ee5253", linestyle="--", label="5xx answers (total)")
        right.set_ylabel("5xx answers")
        right.set_ylim(0, max(1.0, errors[-1] - errors[0]) * 1.2)
        right.legend(loc="upper left", fontsize="small")
    if not raw["server"]:
        axes.text(0.5, 0.5, "not scraped", ha="center", va="center", transform=axes.transAxes)
    axes.legend(loc="upper right", fontsize="small")
    return figure


_DRAW = {"arrivals": _arrivals, "startup": _startup, "rebuffer": _rebuffer, "egress": _egress, "server": _server}


# ---- HTML ---------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222f3e;padding:0 1rem}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}td,th{border:1px solid #c8d6e5;padding:0.25rem 0.6rem;
text-align:left}th{background:#f1f2f6}.pass{color:#0a7d5a;font-weight:600}.fail{color:#c0392b;font-weight:600}
.verdict{font-size:1.4rem;padding:0.6rem 1rem;border-radius:6px}.verdict.pass{background:#e3f9ef}
.verdict.fail{background:#fdecea}img{max-width:100%}pre{background:#f1f2f6;padding:0.8rem;overflow:auto}
"""


def _html(document: dict[str, Any], charts: dict[str, Path]) -> str:
    verdict, summary, profile = document["verdict"], document["summary"], document["profile"]
    state = "pass" if verdict["pass"] else "fail"
    headline = "SLOs hold" if verdict["pass"] else f"SLOs failed: {', '.join(verdict['failed'])}"
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
<p>Target <code>{_e(document['target'])}</code>, workers {_e(document['workers'])},
{_e(summary['wall_seconds'])} s.</p>
<p class="verdict {state}">{_e(headline)}</p>
<h2>SLOs</h2><table><tr><th>SLO</th><th>what</th><th>target</th><th>measured</th><th></th><th>why</th></tr>{checks}</table>
<h2>What viewers and ops felt</h2><table>{rows}</table>
<h2>Charts</h2>{images}
<h2>Profile</h2><p>{_e(profile['description'])} (arrivals: {_e(profile['arrivals'])}, mix {_e(profile['mix'])},
watch {_e(profile['watch_seconds'])} s, patience {_e(profile['patience_seconds'])} s)</p>
<table><tr><th>phase</th><th>seconds</th><th>arrivals/s</th></tr>{phases}</table>
<details><summary>summary (JSON)</summary><pre>{_e(json.dumps(summary, indent=2))}</pre></details>
</body></html>
"""


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)

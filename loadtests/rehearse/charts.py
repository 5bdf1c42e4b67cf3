"""The rehearsal's PNG charts (matplotlib, an optional dependency: `pip install 'launchkit[rehearse]'`).
Importing this module fails without matplotlib; report.py checks that before the run starts and
writes its report without charts then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display (servers, CI)
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from loadtests.rehearse import places  # noqa: E402

CHARTS = ("arrivals", "line", "startup", "rebuffer", "egress", "server")
FIGSIZE = (9, 3.6)


def draw(directory: Path, raw: dict[str, Any], summary: dict[str, Any]) -> dict[str, Path]:
    """Every chart as DIR/<name>.png; their paths by name."""
    paths = {}
    for name in CHARTS:
        paths[name] = directory / f"{name}.png"
        figure = _DRAW[name](raw, summary)
        figure.savefig(paths[name], dpi=100, bbox_inches="tight")
        plt.close(figure)
    return paths


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


def _line(raw: dict[str, Any], summary: dict[str, Any]) -> plt.Figure:
    """Two panels on one time axis: the line and the places; below, the idle places on their own
    scale (a handful of places would vanish next to a queue of hundreds)."""
    line = summary["line"]
    capacity = line["capacity"]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(FIGSIZE[0], FIGSIZE[1] * 1.5),
                                         gridspec_kw={"height_ratios": [2, 1]})
    points = places.series(raw["arrivals"], capacity, raw["wall_seconds"])
    t = [p[0] for p in points]
    top.set_title("The line (clients' timestamps)")
    top.step(t, [p[1] for p in points], where="post", color="#ee5253", label="waiting in line")
    top.step(t, [p[2] for p in points], where="post", color="#10ac84", label="admitted")
    if capacity:
        top.axhline(capacity, color="#222f3e", linestyle=":", label=f"capacity {capacity}")
    top.set_ylabel("viewers")
    top.legend(loc="upper right", fontsize="small")
    ratio = line["idle_ratio_while_waiting"]
    bottom.fill_between(t, [p[3] for p in points], step="post", color="#ff9f43",
                        label=f"idle places while anyone waits ({'-' if ratio is None else f'{100 * ratio:.2f} %'} "
                              "of capacity-seconds)")
    bottom.set_ylim(0, max(2, max((p[3] for p in points), default=0) + 1))
    bottom.set_ylabel("places")
    bottom.set_xlabel("seconds since the start")
    bottom.legend(loc="upper right", fontsize="small")
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
    return figure


_DRAW = {"arrivals": _arrivals, "line": _line, "startup": _startup, "rebuffer": _rebuffer, "egress": _egress,
         "server": _server}



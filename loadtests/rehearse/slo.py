"""The SLO verdict: thresholds (defaults, or a JSON file overriding some of them) checked against
the summary. Each check says what it measured, against what, and why it failed.

    {"join_success_min": 0.999,          # viewers who eventually played / viewer arrivals
     "startup_p95_max_seconds": 3.0,     # admission → playing (the waiting room is measured apart)
     "rebuffer_ratio_max": 0.005,        # rebuffering / (playing + rebuffering), viewers who played
     "http_5xx_max": 0,                  # 5xx answers any simulated client saw
     "errors_max": 0,                    # errors of any kind (timeouts, resets, 4xx, ...) clients saw
     "whep_frame_delivery_min": null,    # frames received / sent to connected WHEP viewers (null: not checked)
     "freed_to_admitted_p95_max_seconds": 1.0,   # a place freed while people wait → next viewer admitted
     "idle_while_waiting_max_ratio": 0.02,       # idle place-seconds / capacity-seconds while anyone waits
     "fifo_violations_max": 0}                   # places served out of order beyond the allowed jitter

The waiting-room checks (places.py) apply when someone waited. A run that did not finish (reported
from its journal) fails the `complete` check: what it measured is shown, but it cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, float | None] = {
    "join_success_min": 0.999,
    "startup_p95_max_seconds": 3.0,
    "rebuffer_ratio_max": 0.005,
    "http_5xx_max": 0,
    "errors_max": 0,
    "whep_frame_delivery_min": None,
    "freed_to_admitted_p95_max_seconds": 1.0,
    "idle_while_waiting_max_ratio": 0.02,
    "fifo_violations_max": 0,
}


def load(path: str | None) -> dict[str, float | None]:
    thresholds = dict(DEFAULTS)
    if path is None:
        return thresholds
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or set(data) - set(DEFAULTS):
        raise ValueError(f"{path}: an object with some of {', '.join(DEFAULTS)}")
    for key, value in data.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{path}: {key} must be a number >= 0 or null")
    thresholds.update(data)
    return thresholds


def evaluate(summary: dict[str, Any], thresholds: dict[str, float | None]) -> dict[str, Any]:
    viewers = summary["viewers"]["arrivals"] > 0
    checks = [
        _at_least("join_success", "viewers who eventually played", summary["viewers"]["join_success"],
                  thresholds["join_success_min"], applies=viewers),
        _at_most("startup_p95", "startup p95 from admission to playing (s)", summary["startup_after_admission"]["p95"],
                 thresholds["startup_p95_max_seconds"], applies=viewers),
        _at_most("rebuffer_ratio", "rebuffer ratio of viewers who played", summary["rebuffer"]["ratio"],
                 thresholds["rebuffer_ratio_max"], applies=viewers),
        _at_most("http_5xx", "5xx answers seen by clients", summary["http_5xx"], thresholds["http_5xx_max"]),
        _at_most("errors", "errors clients saw", summary["error_count"], thresholds["errors_max"]),
        _at_least("whep_frame_delivery", "WHEP frames received / sent", summary["whep"]["frame_delivery"],
                  thresholds["whep_frame_delivery_min"], applies=summary["whep"]["connected"] > 0),
        *_line_checks(summary["line"], thresholds),
        _complete(summary),
    ]
    checks = [c for c in checks if c is not None]
    failed = [c["name"] for c in checks if not c["pass"]]
    return {"pass": not failed, "failed": failed, "checks": checks}


def _line_checks(line: dict[str, Any], thresholds: dict[str, float | None]) -> list[dict[str, Any] | None]:
    waited = line["queue_seconds"] > 0
    return [
        _at_most("freed_to_admitted_p95", "p95 from a place freeing to the next viewer admitted (s)",
                 line["freed_to_admitted"]["p95"], thresholds["freed_to_admitted_p95_max_seconds"],
                 applies=line["freed_to_admitted"]["count"] > 0),
        _at_most("idle_while_waiting", "idle place-seconds / capacity-seconds while anyone waits",
                 line["idle_ratio_while_waiting"], thresholds["idle_while_waiting_max_ratio"],
                 applies=waited and bool(line["capacity"])),
        _at_most("fifo", f"places admitted out of order beyond {line['fifo']['jitter_seconds']} s",
                 line["fifo"]["violations"], thresholds["fifo_violations_max"], applies=waited),
    ]


def _complete(summary: dict[str, Any]) -> dict[str, Any]:
    done = summary["complete"]
    return {"name": "complete", "what": "the run finished", "threshold": "finished", "measured": done, "pass": done,
            "why": "" if done else f"the run stopped early: {summary['unfinished']} arrivals in flight not counted"}


def _at_least(name: str, what: str, measured: float | None, threshold: float | None, *,
              applies: bool = True) -> dict[str, Any] | None:
    return _check(name, what, measured, threshold, ">=", applies)


def _at_most(name: str, what: str, measured: float | None, threshold: float | None, *,
             applies: bool = True) -> dict[str, Any] | None:
    return _check(name, what, measured, threshold, "<=", applies)


def _check(name: str, what: str, measured: float | None, threshold: float | None, op: str,
           applies: bool) -> dict[str, Any] | None:
    if threshold is None:
        return None
    if not applies:
        return {"name": name, "what": what, "threshold": f"{op} {threshold}", "measured": None, "pass": True,
                "why": "not applicable: nothing of the kind happened"}
    if measured is None:
        return {"name": name, "what": what, "threshold": f"{op} {threshold}", "measured": None, "pass": False,
                "why": "nothing measured (no viewer played)"}
    ok = measured >= threshold if op == ">=" else measured <= threshold
    why = "" if ok else f"{what}: {measured} is not {op} {threshold}"
    return {"name": name, "what": what, "threshold": f"{op} {threshold}", "measured": measured, "pass": ok, "why": why}

"""Glass-to-glass latency of the demo's HLS as a viewer's browser sees it.

Headless Chromium plays the landing page (hls.js, the page's own settings); every half second the
benchmark reads `window.launchkit.latency()`: the wall clock minus the PROGRAM-DATE-TIME of the
frame under the playhead, i.e. the capture time the test card also burns into the picture. The
reference is the segment duration of the same run: the target is ≤ 3 segment durations.

Run from the repository root: `.venv/bin/python -m loadtests.bench.latency [--runs 5] [--seconds 20]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS, PLAYER_STATE
from loadtests.target import start_demo

SEGMENT_DURATION = 2.0
TARGET_SEGMENTS = 3.0
SAMPLE_INTERVAL = 0.5


@dataclass
class Run:
    startup_seconds: float
    median_latency: float
    p95_latency: float
    samples: int


def measure_once(browser: Browser, url: str, seconds: float) -> Run:
    page = browser.new_page()
    try:
        opened = time.monotonic()
        page.goto(url)
        page.wait_for_function("() => window.launchkit && window.launchkit.latency() !== null", timeout=15_000)
        startup = time.monotonic() - opened
        samples = []
        for _ in range(int(seconds / SAMPLE_INTERVAL)):
            time.sleep(SAMPLE_INTERVAL)
            state = page.evaluate(PLAYER_STATE)
            if state["errors"]:
                raise RuntimeError(f"player error: {state['errors']}")
            samples.append(state["latency"])
        samples.sort()
        return Run(startup, statistics.median(samples), samples[int(0.95 * (len(samples) - 1))], len(samples))
    finally:
        page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="page loads to measure (default 5)")
    parser.add_argument("--seconds", type=float, default=20, help="sampling time per run (default 20)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    with start_demo("--segment-duration", str(SEGMENT_DURATION)) as demo, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            # Let the playlist fill its window so every run starts from the same situation.
            time.sleep(4 * SEGMENT_DURATION)
            runs = [measure_once(browser, demo.url + "/", args.seconds) for _ in range(args.runs)]
        finally:
            browser.close()

    median = statistics.median(r.median_latency for r in runs)
    target = TARGET_SEGMENTS * SEGMENT_DURATION
    print("| run | startup (s) | median latency (s) | p95 latency (s) | samples |")
    print("| --- | --- | --- | --- | --- |")
    for index, run in enumerate(runs, 1):
        print(f"| {index} | {run.startup_seconds:.2f} | {run.median_latency:.2f} | {run.p95_latency:.2f} | {run.samples} |")
    print(f"\nmedian glass-to-glass latency {median:.2f} s = {median / SEGMENT_DURATION:.2f} segment durations "
          f"(target ≤ {TARGET_SEGMENTS:g} × {SEGMENT_DURATION:g} s = {target:g} s)")
    if args.json:
        args.json.write_text(json.dumps({"segment_duration": SEGMENT_DURATION, "median_latency": median,
                                         "runs": [asdict(r) for r in runs]}, indent=2))
    return 0 if median <= target else 1


if __name__ == "__main__":
    sys.exit(main())

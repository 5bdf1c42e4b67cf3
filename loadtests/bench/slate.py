"""Ingest-to-slate switch time and slate-to-live recovery time, measured on a real origin.

An ffmpeg CLI publisher pushes RTMP to `launchkit origin`. The benchmark first freezes it
(SIGSTOP: the uplink stalls, the TCP connection stays open, no more media) and thaws it, then
kills it (SIGKILL: the connection drops) and starts a new one, measuring by polling the ops API
every 10 ms:
- **freeze → slate**: the stall detector (`--stall-timeout`, 0.5 s) puts the slate on air;
- **thaw → live**: the frozen publisher's picture is back on air;
- **kill → slate**: the dropped connection releases the slot and the slate is on air;
- **kill → slate in HLS**: the segment containing the slate is in the live playlist (what a viewer
  can fetch);
- **restart → live**: a new publisher's picture is on air (includes ffmpeg's start-up and the RTMP
  handshake).
The target for every switch to the slate is one segment duration, the reference configured for
the same run.

Run from the repository root: `.venv/bin/python -m loadtests.bench.slate [--runs 5]`
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from loadtests.target import LocalDemo, start_launchkit

PUBLISH, OPS = "bench-publish-token-0123", "bench-ops-token-01234567"
SEGMENT_DURATION = 2.0
POLL = 0.01
PUBLISHER = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:v", "libx264", "-preset", "veryfast",
             "-tune", "zerolatency", "-g", "60", "-c:a", "aac", "-t", "120", "-f", "flv"]


def _ops(origin: LocalDemo, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(origin.url + path, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {OPS}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _until(predicate, timeout: float) -> float:
    started = time.monotonic()
    for _ in range(int(timeout / POLL)):
        if predicate():
            return time.monotonic() - started
        time.sleep(POLL)
    raise TimeoutError(f"not within {timeout} s")


def _newest_segment_end(origin: LocalDemo) -> float:
    with urllib.request.urlopen(f"{origin.url}/hls/720p/index.m3u8", timeout=5) as response:
        playlist = response.read().decode()
    stamps = re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)\n(?:#EXT-X-PART:.*\n)*#EXTINF:([\d.]+)", playlist)
    start, duration = stamps[-1]
    return datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp() + float(duration)


def measure_once(origin: LocalDemo, rtmp_port: int) -> dict[str, float]:
    url = f"rtmp://127.0.0.1:{rtmp_port}/live/{PUBLISH}"
    publisher = subprocess.Popen([*PUBLISHER, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: _ops(origin, "/api/ops/status")["on_air"] == "primary", 20)
        time.sleep(3)
        publisher.send_signal(signal.SIGSTOP)
        freeze_to_slate = _until(lambda: _ops(origin, "/api/ops/status")["on_air"] == "slate", 10)
        time.sleep(1)
        publisher.send_signal(signal.SIGCONT)
        thaw_to_live = _until(lambda: _ops(origin, "/api/ops/status")["on_air"] == "primary", 10)
        time.sleep(3)
        killed_at, killed_wall = time.monotonic(), time.time()
        publisher.send_signal(signal.SIGKILL)
        to_slate = _until(lambda: _ops(origin, "/api/ops/status")["on_air"] == "slate", 10)
        slate_at = killed_wall + to_slate
        _until(lambda: _newest_segment_end(origin) > slate_at, 10)
        in_hls = time.monotonic() - killed_at
    finally:
        publisher.kill()
        publisher.wait()
    time.sleep(2)
    restarted = subprocess.Popen([*PUBLISHER, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        recovery = _until(lambda: _ops(origin, "/api/ops/status")["on_air"] == "primary", 20)
    finally:
        restarted.kill()
        restarted.wait()
    _until(lambda: _ops(origin, "/api/ops/status")["on_air"] == "slate", 10)
    return {"freeze_to_slate": freeze_to_slate, "thaw_to_live": thaw_to_live, "to_slate": to_slate,
            "slate_in_hls": in_hls, "recovery": recovery}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="kill/restart cycles (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        rtmp_port = probe.getsockname()[1]
    env = {"LAUNCHKIT_PUBLISH_TOKEN": PUBLISH, "LAUNCHKIT_OPS_TOKEN": OPS}
    with start_launchkit("origin", "--rtmp-port", str(rtmp_port), "--srt-port", "off", "--segment-duration",
                         str(SEGMENT_DURATION), "--data-dir", f"/tmp/launchkit-bench-slate-{rtmp_port}", env=env) as origin:
        _ops(origin, "/api/ops/event", {"action": "live"})
        runs = [measure_once(origin, rtmp_port) for _ in range(args.runs)]
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    columns = {"freeze_to_slate": "freeze → slate (s)", "thaw_to_live": "thaw → live (s)",
               "to_slate": "kill → slate (s)", "slate_in_hls": "kill → slate in a published segment (s)",
               "recovery": "restart → live (s)"}
    print("| run | " + " | ".join(columns.values()) + " |")
    print("| --- |" + " --- |" * len(columns))
    for index, run in enumerate(runs, 1):
        print(f"| {index} | " + " | ".join(f"{run[key]:.3f}" for key in columns) + " |")
    print("| **median** | " + " | ".join(f"**{medians[key]:.3f}**" for key in columns) + " |")
    worst = max(medians["freeze_to_slate"], medians["to_slate"])
    print(f"\nsegment duration (reference): {SEGMENT_DURATION:g} s; slowest switch to the slate = "
          f"{worst / SEGMENT_DURATION:.2f} segment durations (target ≤ 1)")
    if args.json:
        args.json.write_text(json.dumps({"segment_duration": SEGMENT_DURATION, "runs": runs, "medians": medians}, indent=2))
    return 0 if max(medians["freeze_to_slate"], medians["to_slate"]) <= SEGMENT_DURATION else 1


if __name__ == "__main__":
    sys.exit(main())

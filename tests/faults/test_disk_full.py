"""Disk full under the recorder during a live event: the origin keeps streaming, its memory stays
bounded, the recorder says so (metrics, one log line, an alert a real Prometheus fires), recording
resumes when space returns, and the replay marks the hole.

Real processes: a `launchkit origin` whose recording directory is a small tmpfs (filled with a
ballast file, then freed), and Prometheus scraping it with the metrics token and evaluating the
real rules file (k8s/base/monitoring/alerts.yaml, `for` included). The old recorder's thread died
at the first ENOSPC and its queue grew without bound: recording never resumed.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from launchkit import catalogue
from loadtests.target import LocalDemo, free_port
from stream.recorder import BACKLOG_LIMIT_BYTES
from tests.support.client import fetch, fetch_metrics, wait_for
from tests.support.disk import fill, tiny_disk
from tests.support.environment import METRICS_TOKEN
from tests.support.faults import OPS_AUTH, go_live, start_origin
from tests.support.prometheus import start_prometheus

pytestmark = pytest.mark.faults

LABELS = {"namespace": "faults", "event": "disk-full", "component": "origin", "pod": "origin-0"}
ALERT = "LaunchkitRecorderFailing"
FULL_FOR_AT_MOST = 50.0  # seconds: the alert's `for` (30 s) plus scrapes and evaluations, with room
RSS_GROWTH_LIMIT = 48 * 2**20  # well under the backlog bound: failed writes leave nothing queued


def recorder_metrics(url: str) -> dict[str, float]:
    status, _, body = fetch_metrics(url)
    assert status == 200
    found = dict(re.findall(r"^(launchkit_recorder_\w+(?:\{[^}]*\})?) (\S+)$", body.decode(), re.M))
    return {
        "up": float(found["launchkit_recorder_up"]),
        "no_space": float(found['launchkit_recorder_write_errors_total{reason="no_space"}']),
        "io_error": float(found['launchkit_recorder_write_errors_total{reason="io_error"}']),
        "lost": float(found["launchkit_recorder_segments_lost_total"]),
        "backlog": float(found["launchkit_recorder_backlog_bytes"]),
    }


def rss(process: subprocess.Popen) -> int:
    status = Path(f"/proc/{process.pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


def media_sequence(url: str) -> int:
    status, _, body = fetch(url + "/hls/180p/index.m3u8")
    assert status == 200, status
    return int(re.search(rb"#EXT-X-MEDIA-SEQUENCE:(\d+)", body).group(1))


def ops_event(url: str, action: str) -> dict:
    request = urllib.request.Request(url + "/api/ops/event", data=json.dumps({"action": action}).encode(),
                                     method="POST", headers={**OPS_AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def prometheus_config(origin_port: int) -> dict:
    """Prometheus scraping the origin every second (with the metrics token, labelled as the
    ServiceMonitor labels it) and evaluating the real alert rules every second."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(catalogue.ALERTS)],
        "scrape_configs": [{
            "job_name": "launchkit",
            "authorization": {"credentials": METRICS_TOKEN},
            "static_configs": [{"targets": [f"127.0.0.1:{origin_port}"], "labels": LABELS}],
        }],
    }


def prometheus_api(base: str, path: str, **query: str) -> dict:
    url = f"{base}/api/v1/{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def alert_state(base: str) -> str | None:
    alerts = [a for a in prometheus_api(base, "alerts")["alerts"] if a["labels"]["alertname"] == ALERT]
    assert all(a["labels"]["event"] == LABELS["event"] for a in alerts), alerts
    return alerts[0]["state"] if alerts else None




def lost_ranges(log: str) -> dict[str, list[int]]:
    """Sequences the origin's log says were lost, per rendition ("180p 12-15; 360p 12-15")."""
    line = re.search(r"writes succeed again after [0-9.]+ s; segments lost: (.*)", log).group(1)
    lost: dict[str, list[int]] = {}
    for part in line.split("; "):
        rendition, ranges = part.split(" ", 1)
        for run in ranges.split(", "):
            first, _, last = run.partition("-")
            lost.setdefault(rendition, []).extend(range(int(first), int(last or first) + 1))
    return lost


def replay_gaps(url: str, rendition: str) -> list[int]:
    status, _, body = fetch(f"{url}/replay/{rendition}/index.m3u8")
    assert status == 200
    return [int(n) for n in re.findall(rb"#EXT-X-GAP\n#EXTINF:[0-9.]+,\n(\d+)\.m4s", body)]


def ffprobe_replay(url: str) -> tuple[float, int]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
         "format=duration:stream=nb_read_frames", "-of", "json", url + "/replay/180p/index.m3u8"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    answer = json.loads(result.stdout)
    return float(answer["format"]["duration"]), int(answer["streams"][0]["nb_read_frames"])


def test_disk_full_under_the_recorder(tmp_path):
    port = free_port()
    recording = tmp_path / "data" / "recording"
    with tiny_disk(recording, 8 * 1024) as disk:
        prometheus, prometheus_url = start_prometheus(tmp_path, prometheus_config(port))
        origin: LocalDemo | None = None
        try:
            origin = start_origin(tmp_path, port)
            go_live(origin.url)
            wait_for(lambda: len(list((recording / "180p").glob("*.m4s"))) >= 2, 15, "two recorded segments", step=0.2)
            wait_for(lambda: prometheus_api(prometheus_url, "query", query='up{job="launchkit"} == 1')["result"],
                     20, "Prometheus to scrape the origin", step=0.2)
            assert recorder_metrics(origin.url)["up"] == 1 and alert_state(prometheus_url) is None
            rss_before = rss(origin.process)

            recorded_before = len(list((recording / "180p").glob("*.m4s")))
            ballast = fill(disk)
            full_at = time.monotonic()
            went_down = wait_for(lambda: recorder_metrics(origin.url)["up"] == 0, 10, "recorder_up 0", step=0.2)
            first_sequence, peak_rss, peak_backlog = media_sequence(origin.url), rss_before, 0.0
            while alert_state(prometheus_url) != "firing":  # bounded: FULL_FOR_AT_MOST
                assert time.monotonic() - full_at < FULL_FOR_AT_MOST, f"{ALERT} not firing"
                assert origin.process.poll() is None, origin.log()
                media_sequence(origin.url)  # viewers are served all along
                peak_rss = max(peak_rss, rss(origin.process))
                peak_backlog = max(peak_backlog, recorder_metrics(origin.url)["backlog"])
                time.sleep(1.0)
            fired_after = time.monotonic() - full_at
            during = recorder_metrics(origin.url)
            assert during["up"] == 0 and during["no_space"] > 0 and during["lost"] > 0 and during["io_error"] == 0
            assert media_sequence(origin.url) > first_sequence  # the live stream moved on
            assert peak_backlog <= BACKLOG_LIMIT_BYTES and peak_rss - rss_before < RSS_GROWTH_LIMIT

            ballast.unlink()
            resumed_after = wait_for(lambda: recorder_metrics(origin.url)["up"] == 1, 10, "recording to resume", step=0.2)
            after = recorder_metrics(origin.url)
            wait_for(lambda: len(list((recording / "180p").glob("*.m4s"))) >= recorded_before + 3,
                     10, "three segments after the gap", step=0.2)
            assert recorder_metrics(origin.url)["lost"] == after["lost"]  # nothing lost once space is back
            ended = ops_event(origin.url, "end")
            lost = recorder_metrics(origin.url)["lost"]
            print(f"\ndisk full for {fired_after:.1f} s: recorder_up 0 after {went_down:.1f} s, {ALERT} firing "
                  f"after {fired_after:.1f} s; {int(lost)} segments lost ({int(during['no_space'])} no_space "
                  f"errors), backlog peak {peak_backlog / 1024:.0f} KiB; RSS {rss_before / 2**20:.1f} MiB before, "
                  f"peak {peak_rss / 2**20:.1f} MiB during; recording resumed {resumed_after:.2f} s after space "
                  f"returned")

            log = origin.log()
            assert "Traceback" not in log
            assert len(re.findall(r"recording: writing \S+ failed \(no_space", log)) == 1
            assert len(re.findall(r"recording: writes succeed again", log)) == 1
            logged = lost_ranges(log)
            gaps = {rendition: replay_gaps(origin.url, rendition) for rendition in ("360p", "180p")}
            assert gaps == logged and sum(len(g) for g in gaps.values()) == lost
            duration, frames = ffprobe_replay(origin.url)
            live_seconds = ended["ended_at"] - ended["live_at"]
            print(f"replay: {len(gaps['180p'])} gap segments per rendition, {duration:.1f} s on its timeline for "
                  f"{live_seconds:.1f} s live, {frames} frames of 180p decoded")
            assert len(gaps["180p"]) > 20 and duration >= live_seconds - 3  # the hole keeps its place in time
            assert frames >= 15 * (recorded_before + 3)
        finally:
            prometheus.terminate()
            prometheus.wait(10)
            if origin is not None and origin.process.poll() is None:
                origin.stop()

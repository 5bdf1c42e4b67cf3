"""/metrics parses with prometheus-client's own parser, and its numbers move with the stream."""

from __future__ import annotations

import re
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import fetch, fetch_metrics

REQUIRED = {
    "launchkit_encoder_frames": "counter",
    "launchkit_encode_seconds": "histogram",
    "launchkit_encoder_lag_seconds": "gauge",
    "launchkit_hls_segments": "counter",
    "launchkit_http_requests": "counter",
    "launchkit_http_response_bytes": "counter",
    "launchkit_hls_viewers": "gauge",
    "launchkit_stream_live": "gauge",
}


def scrape(demo) -> dict[tuple[str, tuple], float]:
    status, headers, body = fetch_metrics(demo.url)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {}
    families = {}
    for family in text_string_to_metric_families(body.decode()):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    for name, kind in REQUIRED.items():
        assert families.get(name) == kind, name
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_while_the_demo_runs(demo):
    before = scrape(demo)
    deadline = time.monotonic() + 10
    while len(uris := re.findall(r"^\d+\.m4s$", fetch(demo.url + "/hls/720p/index.m3u8")[2].decode(), re.M)) < 2:
        assert time.monotonic() < deadline, "a fresh demo lists two segments within 10 s"
        time.sleep(0.5)
    for uri in uris[-2:]:
        fetch(f"{demo.url}/hls/720p/{uri}")
    time.sleep(2.5)
    after = scrape(demo)

    frames = "launchkit_encoder_frames_total"
    assert value(after, frames, rendition="720p") - value(before, frames, rendition="720p") >= 60
    segments = "launchkit_hls_segments_total"
    assert value(after, segments, rendition="720p") > value(before, segments, rendition="720p")
    assert value(after, "launchkit_encode_seconds_count", rendition="720p") > value(before, "launchkit_encode_seconds_count", rendition="720p")
    assert 0 < value(after, "launchkit_encoder_lag_seconds", rendition="720p") < 1.0
    assert value(after, "launchkit_stream_live") == 1

    route = "/hls/{rendition}/{name}"
    requests = "launchkit_http_requests_total"
    assert value(after, requests, route=route, method="GET", status="200") >= value(before, requests, route=route, method="GET", status="200") + 2
    sent = "launchkit_http_response_bytes_total"
    assert value(after, sent, route=route) - value(before, sent, route=route) > 100_000
    assert value(after, "launchkit_hls_viewers", rendition="720p") > 0


def test_http_labels_stay_bounded_whatever_the_path(demo):
    for path in ("/nope-1", "/nope-2", "/hls/x/y/z"):
        fetch(demo.url + path)
    samples = scrape(demo)
    routes = {dict(labels).get("route") for (name, labels) in samples if name == "launchkit_http_requests_total"}
    assert "unmatched" in routes
    assert not any(route and route.startswith("/nope") for route in routes)

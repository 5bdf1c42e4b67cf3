"""What ops feel during the rehearsal: the target's `/metrics`, scraped once a second.

Each sample keeps the handful of series an operator watches (names from launchkit/metrics.py):
admitted viewers and waiting-room length, WebRTC viewers, egress (HTTP body bytes, the scrape's
own answers excluded, plus WebRTC payload bytes, as Mbit/s over the last interval), the worst
encoder lag, the event-loop lag, and the count of 5xx answers. A failed scrape is recorded as such
(a target that stops answering /metrics is news, not a crash of the rehearsal).

Several targets (edges behind one address, or named one by one) are scraped together every second
and added up: admitted viewers, egress and 5xx answers are summed over the targets, lags are the
worst one, and the queue is the shared one (the same on every edge with Redis) or else the sum of
the local queues. A sample that lacks a target says so (`error`, `answered`), and has no egress rate.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT = 2.0


def parse(text: str) -> dict[str, float | None]:
    """The figures of one exposition (cumulative counters as they are; rates come later)."""
    viewers = queued = queued_shared = webrtc = loop_lag = None
    egress = five_xx = 0.0
    shared_up = False
    encoder_lag: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "launchkit_admission_viewers" and labels.get("scope") == "local":
                viewers = value
            elif name == "launchkit_admission_queued" and labels.get("scope") == "local":
                queued = value
            elif name == "launchkit_admission_queued" and labels.get("scope") == "shared":
                queued_shared = value
            elif name == "launchkit_admission_redis_up":
                shared_up = value == 1
            elif name == "launchkit_webrtc_viewers":
                webrtc = value
            elif name == "launchkit_event_loop_lag_seconds":
                loop_lag = value
            elif name == "launchkit_encoder_lag_seconds":
                encoder_lag = value if encoder_lag is None else max(encoder_lag, value)
            elif name == "launchkit_http_response_bytes_total" and labels.get("route") != "/metrics":
                egress += value
            elif name == "launchkit_webrtc_bytes_sent_total":
                egress += value
            elif name == "launchkit_http_requests_total" and labels.get("status", "").startswith("5"):
                five_xx += value
    # The shared series exists (at 0) on every server: it means something only while Redis is in use.
    return {"viewers": viewers, "queued": queued, "queued_shared": queued_shared if shared_up else None,
            "webrtc_viewers": webrtc,
            "loop_lag": loop_lag, "encoder_lag": encoder_lag, "egress_bytes": egress, "http_5xx": five_xx}


def combine(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One sample of several targets (see the module docstring)."""
    answered = [s for s in samples if "error" not in s]
    combined: dict[str, Any] = {}
    if len(answered) < len(samples):
        combined["error"] = next(s["error"] for s in samples if "error" in s)
        combined["answered"] = len(answered)
    if not answered:
        return combined

    def values(key: str) -> list[float]:
        return [s[key] for s in answered if s.get(key) is not None]

    def total(key: str) -> float | None:
        return sum(values(key)) if values(key) else None

    def worst(key: str) -> float | None:
        return max(values(key)) if values(key) else None

    shared = worst("queued_shared")
    combined.update(viewers=total("viewers"), queued=shared if shared is not None else total("queued"),
                    webrtc_viewers=total("webrtc_viewers"), loop_lag=worst("loop_lag"),
                    encoder_lag=worst("encoder_lag"), egress_bytes=total("egress_bytes"), http_5xx=total("http_5xx"))
    if "error" in combined:
        combined["egress_bytes"] = None  # a rate over some of the targets would be a fall that never happened
    return combined


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """One sample; `/metrics` is read with the target's metrics token (LAUNCHKIT_METRICS_TOKEN)."""
    token = os.environ.get("LAUNCHKIT_METRICS_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)) as response:
            if response.status != 200:
                return {"error": f"http_{response.status}"}
            return parse(await response.text())
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
        return {"error": type(error).__name__}


async def scrape_every_second(session: aiohttp.ClientSession, base_urls: list[str], epoch: float, seconds: float,
                              samples: list[dict[str, Any]],
                              on_sample: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Append one sample of all `base_urls` per second to `samples` (and hand it to `on_sample`)
    for at most `seconds` (cancel to stop sooner)."""
    loop = asyncio.get_running_loop()
    urls = [base_url.rstrip("/") + "/metrics" for base_url in base_urls]
    previous: dict[str, Any] | None = None
    for tick in range(int(seconds) + 1):
        await asyncio.sleep(max(0.0, epoch + tick - loop.time()))
        scraped = await asyncio.gather(*(scrape(session, url) for url in urls))
        sample = {"t": round(loop.time() - epoch, 3), **combine(list(scraped))}
        if previous is not None and sample.get("egress_bytes") is not None:
            interval = max(sample["t"] - previous["t"], 1e-3)
            sample["egress_mbps"] = round(8 * (sample["egress_bytes"] - previous["egress_bytes"]) / interval / 1e6, 3)
        if sample.get("egress_bytes") is not None:
            previous = sample
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)

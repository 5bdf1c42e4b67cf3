"""What ops feel during the rehearsal: the target's `/metrics`, scraped once a second.

Each sample keeps the handful of series an operator watches (names from launchkit/metrics.py):
admitted viewers and waiting-room length, WebRTC viewers, egress (HTTP body bytes, the scrape's
own answers excluded, plus WebRTC payload bytes, as Mbit/s over the last interval), the worst
encoder lag, the event-loop lag, and the count of 5xx answers. A failed scrape is recorded as such
(a target that stops answering /metrics is news, not a crash of the rehearsal).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT = 2.0


def parse(text: str) -> dict[str, float | None]:
    """The figures of one exposition (cumulative counters as they are; rates come later)."""
    viewers = queued = webrtc = loop_lag = None
    egress = five_xx = 0.0
    encoder_lag: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "launchkit_admission_viewers" and labels.get("scope") == "local":
                viewers = value
            elif name == "launchkit_admission_queued" and labels.get("scope") == "local":
                queued = value
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
    return {"viewers": viewers, "queued": queued, "webrtc_viewers": webrtc, "loop_lag": loop_lag,
            "encoder_lag": encoder_lag, "egress_bytes": egress, "http_5xx": five_xx}


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


async def scrape_every_second(session: aiohttp.ClientSession, base_url: str, epoch: float, seconds: float,
                              samples: list[dict[str, Any]]) -> None:
    """Append one sample per second to `samples` for at most `seconds` (cancel to stop sooner)."""
    loop = asyncio.get_running_loop()
    url = base_url.rstrip("/") + "/metrics"
    previous: dict[str, Any] | None = None
    for tick in range(int(seconds) + 1):
        await asyncio.sleep(max(0.0, epoch + tick - loop.time()))
        sample = {"t": round(loop.time() - epoch, 3), **await scrape(session, url)}
        if previous is not None and sample.get("egress_bytes") is not None:
            interval = max(sample["t"] - previous["t"], 1e-3)
            sample["egress_mbps"] = round(8 * (sample["egress_bytes"] - previous["egress_bytes"]) / interval / 1e6, 3)
        if sample.get("egress_bytes") is not None:
            previous = sample
        samples.append(sample)

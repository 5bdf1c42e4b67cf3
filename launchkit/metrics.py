"""Every Prometheus metric Launchkit exports, in one place.

Labels are bounded by configuration (rendition names, route templates, status codes), never
by viewers or addresses. The README's metrics table mirrors this module.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from launchkit import __version__

BUILD = Info("launchkit_build", "Launchkit version")
BUILD.info({"version": __version__})

ENCODER_FRAMES = Counter(
    "launchkit_encoder_frames", "Video frames encoded", ["rendition"]
)
ENCODER_FRAMES_DROPPED = Counter(
    "launchkit_encoder_frames_dropped", "Video frames dropped because the encoder fell behind", ["rendition"]
)
ENCODE_SECONDS = Histogram(
    "launchkit_encode_seconds", "Time to encode one video frame", ["rendition"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25),
)
ENCODER_LAG = Gauge(
    "launchkit_encoder_lag_seconds", "Wall clock minus capture time of the last encoded frame", ["rendition"]
)
HLS_SEGMENTS = Counter(
    "launchkit_hls_segments", "HLS media segments produced", ["rendition"]
)
HLS_VIEWERS = Gauge(
    "launchkit_hls_viewers", "Estimated HLS viewers: segment fetches per segment duration over the last window", ["rendition"]
)
STREAM_LIVE = Gauge(
    "launchkit_stream_live", "1 while the stream publishes fresh segments, else 0"
)
HTTP_REQUESTS = Counter(
    "launchkit_http_requests", "HTTP requests served", ["route", "method", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "launchkit_http_request_duration_seconds", "Time to produce an HTTP response (headers)", ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
HTTP_RESPONSE_BYTES = Counter(
    "launchkit_http_response_bytes", "Response body bytes sent", ["route"]
)

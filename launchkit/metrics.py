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
INGEST_CONNECTIONS = Counter(
    "launchkit_ingest_connections", "Publisher sessions accepted", ["protocol", "role"]
)
INGEST_REJECTED = Counter(
    "launchkit_ingest_rejected", "Publisher attempts refused before any media was accepted",
    ["protocol", "reason"],  # reason: bad_key, busy, bad_request, unsupported
)
INGEST_BYTES = Counter(
    "launchkit_ingest_bytes", "Bytes received from publishers (rate() gives the ingest bitrate)", ["role"]
)
INGEST_FRAMES = Counter(
    "launchkit_ingest_frames", "Video frames decoded from publishers", ["role"]
)
INGEST_FRAMES_DROPPED = Counter(
    "launchkit_ingest_frames_dropped", "Publisher frames skipped to keep up (faster than the program rate, or a backlog)",
    ["role"],
)
INGEST_FPS = Gauge(
    "launchkit_ingest_fps", "Video frames received from the publisher over the last second", ["role"]
)
INGEST_KEYFRAME_INTERVAL = Gauge(
    "launchkit_ingest_keyframe_interval_seconds", "Seconds between the publisher's last two keyframes", ["role"]
)
INGEST_CONNECTED = Gauge(
    "launchkit_ingest_connected", "1 while a publisher holds the role", ["role"]
)
PROGRAM_ON_AIR = Gauge(
    "launchkit_program_on_air", "1 for the source currently on air (primary, backup or slate)", ["source"]
)
SLATE_SWITCHES = Counter(
    "launchkit_slate_switches", "Times the slate took over from a publisher"
)
EVENT_STATE = Gauge(
    "launchkit_event_state", "1 for the event's current state", ["state"]
)

"""M3U8 rendering (RFC 8216 / draft-pantos-hls-rfc8216bis)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from stream.packager.hls import RenditionPackager, Segment

VERSION = 7


def program_date_time(wallclock: float) -> str:
    return datetime.fromtimestamp(wallclock, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def target_duration(segments: Iterable[Segment], configured: float) -> int:
    """EXT-X-TARGETDURATION: each EXTINF rounded to the nearest integer must not exceed it."""
    return max([math.ceil(configured)] + [round(s.duration) for s in segments])


def media_playlist(init_uri: str, segments: list[Segment], configured_duration: float) -> str:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(segments, configured_duration)}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
        f'#EXT-X-MAP:URI="{init_uri}"',
    ]
    for segment in segments:
        lines += [
            f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_time)}",
            f"#EXTINF:{segment.duration:.5f},",
            segment.uri,
        ]
    return "\n".join(lines) + "\n"


def multivariant_playlist(renditions: Iterable[RenditionPackager]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in sorted(renditions, key=lambda r: r.info.bandwidth, reverse=True):
        lines += [
            f"#EXT-X-STREAM-INF:BANDWIDTH={r.info.bandwidth},AVERAGE-BANDWIDTH={r.info.average_bandwidth},"
            f'CODECS="{r.codecs}",'
            f"RESOLUTION={r.info.width}x{r.info.height},FRAME-RATE={r.info.fps:.3f}",
            f"{r.info.name}/index.m3u8",
        ]
    return "\n".join(lines) + "\n"

"""M3U8 rendering (RFC 8216 / draft-pantos-hls-rfc8216bis), live media playlists with the
Low-Latency HLS tags: classic clients read the segments, low-latency clients the parts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from stream.packager.hls import OpenSegment, Part, RenditionPackager, Segment

# EXT-X-MAP without I-frames-only needs 6; none of the low-latency tags raises the floor (only
# EXT-X-SKIP would need 9, and delta updates are not offered), and §6.2.1 says not to declare more.
VERSION = 7
# §4.4.3.8: PART-HOLD-BACK SHOULD be at least three part target durations.
PART_HOLD_BACK_PARTS = 3
# §6.2.2: EXT-X-PART tags SHOULD go once they are more than three target durations from the end.
PART_LISTING_TARGET_DURATIONS = 3


@dataclass(frozen=True, slots=True)
class RenditionReport:
    """EXT-X-RENDITION-REPORT: where another rendition's live edge is, for fast switching."""

    uri: str  # relative to the media playlist carrying the report
    last_msn: int
    last_part: int


def program_date_time(wallclock: float) -> str:
    return datetime.fromtimestamp(wallclock, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def target_duration(segments: Iterable[Segment], configured: float) -> int:
    """EXT-X-TARGETDURATION: each EXTINF rounded to the nearest integer must not exceed it."""
    return max([math.ceil(configured)] + [round(s.duration) for s in segments])


def parted_segments(segments: Sequence[Segment], open_duration: float, horizon: float) -> int:
    """How many of the last complete segments still list their parts: those whose parts all lie
    within `horizon` seconds of the end of the playlist (whole segments, so Part Indexes stay
    countable by clients)."""
    span, count = open_duration, 0
    for segment in reversed(segments):
        span += segment.duration
        if span > horizon + 1e-6:
            break
        count += 1
    return count


def media_playlist(init_uri: str, segments: Sequence[Segment], configured_duration: float, *, part_target: float,
                   open_segment: OpenSegment | None, preload_hint: str, reports: Sequence[RenditionReport]) -> str:
    target = target_duration(segments, configured_duration)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={_seconds(PART_HOLD_BACK_PARTS * part_target)}",
        f"#EXT-X-PART-INF:PART-TARGET={_seconds(part_target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
        f'#EXT-X-MAP:URI="{init_uri}"',
    ]
    open_parts = open_segment.parts if open_segment else []
    parted = parted_segments(segments, sum(p.duration for p in open_parts), PART_LISTING_TARGET_DURATIONS * target)
    for position, segment in enumerate(segments):
        # Tags of a segment apply to its first part too, so they precede its EXT-X-PART tags.
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_time)}")
        if position >= len(segments) - parted:
            lines += map(_part, segment.parts)
        lines += [f"#EXTINF:{segment.duration:.5f},", segment.uri]
    if open_parts:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(open_segment.program_date_time)}")
        lines += map(_part, open_parts)
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{preload_hint}"')
    lines += (f'#EXT-X-RENDITION-REPORT:URI="{r.uri}",LAST-MSN={r.last_msn},LAST-PART={r.last_part}' for r in reports)
    return "\n".join(lines) + "\n"


def _part(part: Part) -> str:
    independent = ",INDEPENDENT=YES" if part.independent else ""
    return f'#EXT-X-PART:DURATION={_seconds(part.duration)},URI="{part.uri}"{independent}'


def _seconds(value: float) -> str:
    return f"{value:.5f}"


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

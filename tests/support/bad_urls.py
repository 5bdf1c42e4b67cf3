"""The bad-URL corpus both server roles are tested with: request targets under /hls/ that name no
object any packager writes (path traversal, plain and percent-encoded; overlong, non-ASCII and NUL
names; dots and depth no name has). Sent byte for byte (tests/support/client.py `raw_get`): an origin
answers 404 without touching a file, an edge answers 4xx without asking its origin."""

from __future__ import annotations


def bad_media_targets(rendition: str) -> list[str]:
    """The corpus, with `rendition` a rendition the server does have (so only the name is wrong)."""
    return [
        "/hls/../../etc/passwd",
        "/hls/%2e%2e/%2e%2e/etc/passwd",
        f"/hls/{rendition}/..%2f..%2fetc%2fpasswd",
        f"/hls/{rendition}/%2e%2e%2finit.mp4",
        "/hls/..%2f/index.m3u8",
        f"/hls/{rendition}/a..b.m4s",
        f"/hls/{rendition}/" + "9" * 300 + ".m4s",
        "/hls/" + "a" * 300 + "/index.m3u8",
        f"/hls/{rendition}/%C3%BC.m4s",
        "/hls/%C3%BC/index.m3u8",
        f"/hls/{rendition}/index.m3u8%00.m4s",
        f"/hls/{rendition}/b/c/d.m4s",
    ]

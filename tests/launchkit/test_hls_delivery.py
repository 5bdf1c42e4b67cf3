"""HLS from a running demo, as players and FFmpeg see it over HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime

from tests.support.client import fetch, wait_for


def _media_playlist(demo) -> tuple[str, str]:
    status, headers, body = fetch(demo.url + "/hls/index.m3u8")
    assert status == 200
    uri = next(line for line in body.decode().splitlines() if line and not line.startswith("#"))
    base = f"{demo.url}/hls/{uri.rsplit('/', 1)[0]}"
    _, _, playlist = fetch(f"{demo.url}/hls/{uri}")
    return base, playlist.decode()


def _sequence(playlist: str) -> int:
    return int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))


def test_ffprobe_decodes_six_seconds_of_h264_and_aac(demo):
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-read_intervals", "%+8", "-show_frames",
         "-show_entries", "frame=media_type,pts_time,key_frame", "-of", "json", demo.url + "/hls/index.m3u8"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    frames = json.loads(result.stdout)["frames"]
    streams = {kind: [float(f["pts_time"]) for f in frames if f["media_type"] == kind] for kind in ("video", "audio")}
    assert max(streams["video"]) - min(streams["video"]) >= 6.0
    assert max(streams["audio"]) - min(streams["audio"]) >= 6.0
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json", demo.url + "/hls/index.m3u8"],
        capture_output=True, text=True, timeout=60,
    )
    assert {s["codec_name"] for s in json.loads(probe.stdout)["streams"]} == {"h264", "aac"}


def _first_video_frame(path) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_frames", "-read_intervals", "%+#1",
         "-show_entries", "frame=key_frame,pict_type,pts", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    return json.loads(result.stdout)["frames"][0]


def test_every_segment_of_every_rendition_starts_with_an_idr_at_the_same_pts(demo, tmp_path):
    _, _, multivariant = fetch(demo.url + "/hls/index.m3u8")
    renditions = [line.split("/")[0] for line in multivariant.decode().splitlines() if line.endswith("index.m3u8")]
    assert renditions == ["720p", "480p", "360p"]
    starts: dict[str, dict[str, int]] = {}
    for rendition in renditions:
        base = f"{demo.url}/hls/{rendition}"
        _, _, playlist = fetch(f"{base}/index.m3u8")
        playlist = playlist.decode()
        init_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist).group(1)
        _, _, init = fetch(f"{base}/{init_uri}")
        starts[rendition] = {}
        for uri in [line for line in playlist.splitlines() if line.endswith(".m4s")][:4]:
            status, _, data = fetch(f"{base}/{uri}")
            assert status == 200
            path = tmp_path / f"{rendition}-{uri}"
            path.write_bytes(init + data)
            first = _first_video_frame(path)
            assert (first["key_frame"], first["pict_type"]) == (1, "I"), (rendition, uri)
            starts[rendition][uri] = first["pts"]
    # The same segment number starts at the same PTS in every rendition: players switch cleanly.
    common = set.intersection(*(set(s) for s in starts.values()))
    assert len(common) >= 3
    for uri in common:
        assert len({starts[r][uri] for r in renditions}) == 1, uri


def test_media_sequence_advances_in_real_time(demo):
    # The window grows from the first segment until it is full, and only then does the media
    # sequence move: measure from the first move, whatever ran before this test.
    first = _sequence(_media_playlist(demo)[1])
    wait_for(lambda: _sequence(_media_playlist(demo)[1]) > first, timeout=60, what="a full playlist window", step=0.1)
    _, before = _media_playlist(demo)
    started = time.monotonic()
    time.sleep(6.5)
    _, after = _media_playlist(demo)
    elapsed = time.monotonic() - started
    advanced = _sequence(after) - _sequence(before)
    assert abs(advanced - elapsed / 2.0) <= 1.01, (advanced, elapsed)
    # The newest complete segment ends close to now: the playlist is live, not replaying.
    stamps = re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)\n(?:#EXT-X-PART:.*\n)*#EXTINF:", after)
    newest_end = datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")).timestamp() + 2.0
    assert abs(time.time() - newest_end) < 2.5


def test_content_types_and_cache_headers_suit_a_cdn(demo):
    base, playlist = _media_playlist(demo)
    status, headers, _ = fetch(demo.url + "/hls/index.m3u8")
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    _, headers, _ = fetch(f"{base}/index.m3u8")
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    # It gains a part every 0.5 s, finer than HTTP's whole-second max-age: caches revalidate.
    assert headers["Cache-Control"] == "public, no-cache"
    assert headers["Access-Control-Allow-Origin"] == "*"
    segment = [line for line in playlist.splitlines() if line.endswith(".m4s")][-1]
    _, headers, _ = fetch(f"{base}/{segment}")
    assert headers["Content-Type"] == "video/mp4"
    assert "immutable" in headers["Cache-Control"] and "max-age=31536000" in headers["Cache-Control"]


def test_playlist_keeps_the_configured_window(demo):
    _, playlist = _media_playlist(demo)
    assert len(re.findall(r"^\d+\.m4s$", playlist, re.M)) == 6
    assert "#EXT-X-TARGETDURATION:2" in playlist
    # Every segment has its PDT (the segment in progress too, once it has parts).
    assert len(re.findall(r"#EXT-X-PROGRAM-DATE-TIME:.*\n(?:#EXT-X-PART:.*\n)*#EXTINF:", playlist)) == 6

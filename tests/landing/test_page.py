"""The landing page as viewers, journalists and news sites get it, from a real `launchkit origin`
(and an edge in front of it) driven through HTTP and Debian's headless Chromium.

The module walks one event through its life, so its tests run in file order: scheduled (countdown,
HTML, caching, wall Q&A), live (player, embed on another origin, QoE beacons), ended (replay).
Screenshots of each state at phone and desktop size are written to tests/artifacts/screenshots/;
`make screenshots` writes them to docs/screenshots/ (shown in the README) instead.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import html5lib
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.target import free_port, start_launchkit
from tests.support.artifacts import screenshots_dir
from tests.support.client import fetch, fetch_metrics

pytestmark = pytest.mark.browser

OPS_TOKEN = "page-test-ops-token-0123456789"
PUBLISH_TOKEN = "page-test-publish-token-0123456789"
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1440, "height": 900}}
AGENDA = {
    "speakers": [{"name": "Ada Lovelace", "role": "CEO, Example Telecom"},
                 {"name": "Grace Hopper", "role": "Head of TV products"}],
    "agenda": [{"time": "14:00", "title": "Welcome", "speaker": "Ada Lovelace"},
               {"time": "14:10", "title": "The new TV box, live demo", "speaker": "Grace Hopper"},
               {"time": "14:40", "title": "Press questions"}],
}
TITLE = "Launch of the new TV box"
DESCRIPTION = "Watch the unveiling live, then ask the team your questions."
EMBEDDERS = "http://localhost:*"


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("page")
    (directory / "agenda.json").write_text(json.dumps(AGENDA))
    start = (datetime.now(timezone.utc) + timedelta(hours=2, minutes=5)).replace(microsecond=0)
    running = start_launchkit(
        "origin", "--rtmp-port", "off", "--srt-port", "off", "--webrtc", "off", "--data-dir", str(directory / "data"),
        "--source", "testcard", "--ladder", "360p:640x360:600", "--fps", "15", "--title", TITLE,
        "--description", DESCRIPTION, "--start-at", start.isoformat(), "--agenda", str(directory / "agenda.json"),
        "--frame-ancestors", EMBEDDERS,
        env={"LAUNCHKIT_OPS_TOKEN": OPS_TOKEN, "LAUNCHKIT_PUBLISH_TOKEN": PUBLISH_TOKEN}, log_dir=directory,
    )
    yield running
    running.stop()


def request(url: str, body: object = None, *, method: str = "GET", headers: dict | None = None,
            data: bytes | None = None) -> tuple[int, dict, bytes]:
    if body is not None:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers or {}),
                                    timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def ops(origin, path: str, body: dict) -> dict:
    status, _, answer = request(origin.url + path, body, method="POST", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    assert status == 200, answer
    return json.loads(answer)


def parse_strict(body: bytes):
    """html5lib's strict mode raises on any parse error: the page is well-formed HTML."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(body)


def meta(tree) -> dict[str, str]:
    return {(m.get("property") or m.get("name")): m.get("content") for m in tree.iter("meta")
            if m.get("property") or m.get("name")}


def shoot(browser, url: str, state: str, ready: str) -> None:
    for size, viewport in SIZES.items():
        page = browser.new_page(viewport=viewport)
        errors: list[str] = []
        page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
        page.on("console", lambda message, errors=errors: message.type == "error" and errors.append(message.text))
        page.goto(url)
        page.wait_for_function(ready, timeout=20_000)
        page.wait_for_function("() => window.launchkitWall && window.launchkitWall.connected", timeout=5_000)
        time.sleep(0.3)  # the wall's first render and the countdown tick
        page.screenshot(path=screenshots_dir() / f"{state}-{size}.png")
        page.close()
        assert errors == [], errors


def metric_value(url: str, name: str, labels: dict[str, str]) -> float:
    _, _, body = fetch_metrics(url)
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# ---- scheduled -----------------------------------------------------------------------------------

def test_pages_are_well_formed_with_share_tags_and_cacheable(origin):
    status, headers, body = fetch(origin.url + "/")
    assert status == 200
    tree = parse_strict(body)
    tags = meta(tree)
    assert tags["og:title"] == tags["twitter:title"] == TITLE
    assert tags["og:description"] == DESCRIPTION and tags["og:url"] == origin.url + "/"
    assert tags["og:image"] == origin.url + "/static/og-image.png" and tags["twitter:card"] == "summary_large_image"
    assert fetch(tags["og:image"])[0] == 200
    text = "".join(tree.itertext())
    for expected in ("Ada Lovelace", "The new TV box, live demo", "Head of TV products", "Starts", "Share"):
        assert expected in text, expected
    assert "/embed" in tree.find(".//textarea[@id='embed-code']").text
    assert tree.find(".//form[@data-wall-form]") is not None  # the question form (shown by wall.js)
    assert "stale-while-revalidate" in headers["Cache-Control"] and "stale-if-error" in headers["Cache-Control"]
    # ETag and revalidation: the same page gives the same tag, and a 304 without a body.
    etag = headers["ETag"]
    assert fetch(origin.url + "/")[1]["ETag"] == etag
    status, revalidated, again = request(origin.url + "/", headers={"If-None-Match": etag})
    assert status == 304 and again == b"" and revalidated["ETag"] == etag
    assert request(origin.url + "/", headers={"If-None-Match": '"other"'})[0] == 200
    # CSP on every page; /embed may be framed by the configured sites only.
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
    for path in ("/embed", "/embed?wall=1", "/wall", "/ops"):
        status, page_headers, page = fetch(origin.url + path)
        assert status == 200, path
        parse_strict(page)
        assert "script-src 'self'" in page_headers["Content-Security-Policy"], path
    assert f"frame-ancestors {EMBEDDERS}" in fetch(origin.url + "/embed")[1]["Content-Security-Policy"]
    assert b"data-wall-events" in fetch(origin.url + "/embed?wall=1")[2]
    assert b"data-wall-events" not in fetch(origin.url + "/embed")[2]
    assert tree.find(".//video[@id='player']/track") is None  # no captions configured


def test_a_captions_track_when_configured_on_the_origin_and_its_edges(tmp_path):
    captions = "https://cdn.example.org/launch/captions.vtt"  # only rendered, never fetched
    with start_launchkit("origin", "--rtmp-port", "off", "--srt-port", "off", "--webrtc", "off",
                         "--data-dir", str(tmp_path / "data"), "--source", "testcard", "--ladder", "180p:320x180:200",
                         "--fps", "15", "--captions", captions, "--captions-lang", "en-GB", log_dir=tmp_path,
                         wait_for_media=False) as origin, \
            start_launchkit("edge", "--origin", origin.url, "--max-webrtc-viewers", "0", "--drain-seconds", "0",
                            log_dir=tmp_path, wait_for_media=False) as edge:
        for url in (origin.url, edge.url):
            track = parse_strict(fetch(url + "/")[2]).find(".//video[@id='player']/track")
            assert (track.get("kind"), track.get("src"), track.get("srclang")) == ("captions", captions, "en-GB"), url


def test_an_edge_renders_the_same_page_and_takes_qoe_beacons(origin, tmp_path):
    with start_launchkit("edge", "--origin", origin.url, "--max-webrtc-viewers", "0", "--drain-seconds", "0",
                         log_dir=tmp_path) as edge:
        tree = parse_strict(fetch(edge.url + "/")[2])
        assert meta(tree)["og:title"] == TITLE and meta(tree)["og:description"] == DESCRIPTION
        assert "Grace Hopper" in "".join(tree.itertext())
        beacon = {"protocol": "llhls", "startup": 0.8, "played": 10, "stalls": 0, "rebuffer": 0, "errors": {}}
        assert request(edge.url + "/api/qoe", beacon, method="POST")[0] == 204
        # Bad input: a clear 4xx, nothing counted.
        assert request(edge.url + "/api/qoe", data=b"{", method="POST", headers={"Content-Type": "text/plain"})[0] == 400
        assert request(edge.url + "/api/qoe", {**beacon, "protocol": "flash"}, method="POST")[0] == 400
        assert request(edge.url + "/api/qoe", {**beacon, "played": -1}, method="POST")[0] == 400
        assert request(edge.url + "/api/qoe", {**beacon, "errors": {"x" * 40: 1}}, method="POST")[0] == 400
        assert request(edge.url + "/api/qoe", data=b" " * 2000, method="POST",
                       headers={"Content-Type": "text/plain"})[0] == 413
        assert request(edge.url + "/api/qoe", data=b"{}", method="POST",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
        statuses = [request(edge.url + "/api/qoe", beacon, method="POST")[0] for _ in range(40)]
        assert statuses.count(429) >= 5 and set(statuses) == {204, 429}
        assert metric_value(edge.url, "launchkit_qoe_startup_seconds_count", {"protocol": "llhls"}) >= 1
        assert metric_value(edge.url, "launchkit_qoe_beacons_total", {"result": "malformed"}) == 4


def test_a_question_from_the_page_reaches_two_pages_once_approved(origin, browser):
    asker, other, moderator = (browser.new_page(viewport=SIZES["desktop"]) for _ in range(3))
    for page in (asker, other):
        page.goto(origin.url + "/")
        page.wait_for_function("() => window.launchkitWall && window.launchkitWall.connected", timeout=5_000)
    question = "Will the box support 4K HDR at launch?"
    asker.fill("#wall-text", question)
    asker.fill("#wall-name", "Lin")
    asker.fill("#wall-outlet", "Daily Tech")
    asker.check("input[name=kind][value=question]")
    asker.click(".wall-form button[type=submit]")
    asker.wait_for_function("() => document.querySelector('[data-wall-form-status]').textContent.includes('Thank')",
                            timeout=5_000)
    # The moderator signs in to the console with the ops token and opens the wall moderation.
    moderator.goto(origin.url + "/ops")
    moderator.fill("#token", OPS_TOKEN)
    moderator.click("button[type=submit]")
    moderator.click("a[href='/ops/wall']")
    pending = moderator.locator("#queue .wall-post", has_text=question)
    pending.wait_for(timeout=5_000)
    assert "Daily Tech" in pending.inner_text()
    post_id = pending.get_attribute("data-post-id")
    approve = pending.locator("button[data-action=approve]")
    approved_at = time.monotonic()
    approve.click()
    for page in (asker, other):
        page.wait_for_selector(f'.wall [data-post-id="{post_id}"]', timeout=1_000)
    assert time.monotonic() - approved_at < 1.0
    assert other.locator(f'[data-post-id="{post_id}"] .wall-kind-label').inner_text() == "Question"
    for page in (asker, other, moderator):
        page.close()


def test_countdown_screenshots(origin, browser):
    for text, name, kind in (("Who are the launch partners?", "Sam", "question"), ("Excited to watch!", "", "comment")):
        status, _, answer = request(origin.url + "/api/wall/posts", {"text": text, "name": name, "kind": kind},
                                    method="POST")
        assert status == 202
        ops(origin, f"/api/ops/wall/{json.loads(answer)['id']}/approve", {})
    shoot(browser, origin.url + "/", "countdown",
          "() => document.getElementById('countdown-value').textContent.startsWith('in 2 h')")


# ---- live ----------------------------------------------------------------------------------------

def test_live_screenshots(origin, browser):
    ops(origin, "/api/ops/event", {"action": "live"})
    shoot(browser, origin.url + "/", "live",
          "() => document.getElementById('player').currentTime > 1 && window.launchkit.engine === 'hls.js'")


class _NewsSite(BaseHTTPRequestHandler):
    """Another origin (http://localhost:PORT, the stream is at http://127.0.0.1:PORT) embedding the player."""

    embed_url = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = (f'<!doctype html><title>News</title><h1>Breaking</h1><iframe src="{self.embed_url}" width="640" '
                'height="360" allow="autoplay"></iframe>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_embed_plays_in_an_iframe_on_another_origin_and_reports_qoe(origin, browser):
    handler = type("NewsSite", (_NewsSite,), {"embed_url": origin.url + "/embed?wall=1"})
    site = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        before = metric_value(origin.url, "launchkit_qoe_playing_seconds_total", {"protocol": "llhls"})
        page = browser.new_page(viewport=SIZES["desktop"])
        page.goto(f"http://localhost:{site.server_address[1]}/")
        frame = page.frame_locator("iframe")
        frame.locator("#player").wait_for(timeout=5_000)
        embedded = next(f for f in page.frames if "/embed" in f.url)
        # Playing for real: the first frame is on screen and time advances (a live player's currentTime
        # jumps to the live edge before the first frame, so it says little on its own).
        embedded.wait_for_function("() => window.launchkitQoe.pending.startup !== null"
                                   " && window.launchkitQoe.pending.played > 0.5", timeout=20_000)
        assert embedded.evaluate("() => window.launchkit.errors") == []
        embedded.wait_for_function("() => window.launchkitWall && window.launchkitWall.connected", timeout=5_000)
        qoe = embedded.evaluate("() => { const q = window.launchkitQoe, before = JSON.stringify(q.pending);"
                                " q.send(); const v = document.getElementById('player');"
                                " return {before, sent: q.sent, paused: v.paused, time: v.currentTime,"
                                " engine: window.launchkit.engine, url: window.launchkit.url,"
                                " warnings: window.launchkit.warnings.length}; }")
        assert qoe["sent"] >= 1, qoe
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and metric_value(
                origin.url, "launchkit_qoe_playing_seconds_total", {"protocol": "llhls"}) <= before:
            time.sleep(0.1)
        assert metric_value(origin.url, "launchkit_qoe_playing_seconds_total", {"protocol": "llhls"}) > before, qoe
        # Every page that played sent its startup time (the screenshot pages on closing, this one now).
        assert metric_value(origin.url, "launchkit_qoe_startup_seconds_count", {"protocol": "llhls"}) >= 2
        page.close()
    finally:
        site.shutdown()
        site.server_close()
        thread.join(5)


# ---- ended ---------------------------------------------------------------------------------------

def test_ended_screenshots(origin, browser):
    time.sleep(2)  # a little more recording for the replay
    ops(origin, "/api/ops/event", {"action": "end"})
    shoot(browser, origin.url + "/", "ended",
          "() => document.getElementById('live-badge').textContent === 'Replay' "
          "&& document.getElementById('player').currentTime > 0.5")

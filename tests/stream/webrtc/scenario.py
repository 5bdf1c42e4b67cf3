"""WebRTC scenarios that must run where 127.0.0.1 is the only address: in a private network
namespace, so neither side can gather, advertise or reach anything else.

Tests call `run_in_private_network(name, *args)`: it re-executes this module under
`unshare --net` with loopback up, and returns the scenario's JSON result (the last stdout line).
A scenario is an async function registered in SCENARIOS; its log goes to stderr, which the runner
shows when the scenario fails. Add WHEP playback scenarios the same way.

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m tests.stream.webrtc.scenario \\
        whip-browser video/H264 video/VP8@cross-origin'   # as root
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import av
import jinja2
import pytest
from aiohttp import web
from playwright.async_api import Page, async_playwright

from landing.app import STATIC_DIR
from launchkit.app import SERVICES, create_app
from launchkit.auth import Tokens
from launchkit.config import Config
from loadtests.browser import CHROMIUM, CHROMIUM_FLAGS
from stream.ladder import Rendition
from stream.program import Program, ProgramInput
from stream.webrtc.ice import IceSettings
from stream.webrtc.whip import WhipEndpoint

log = logging.getLogger("scenario")

ROOT = Path(__file__).parents[3]
TOKEN = "browser-publish-token-0123456789"
LOOPBACK = IceSettings(addresses=("127.0.0.1",), servers=())
# Chromium's fake camera: a moving test pattern at ~20 fps 640x360, plus a beeping microphone.
PUBLISHER_FLAGS = [*CHROMIUM_FLAGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   "--allow-loopback-in-peer-connection"]
WIDTH, HEIGHT, FPS = 320, 180, 15


def run_in_private_network(scenario: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run `scenario` in a fresh network namespace (root, `unshare`, `ip` needed) and return its result."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: WebRTC tests run in a private network namespace "
                    "(Debian packages util-linux and iproute2, run as root)", pytrace=False)
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" -m tests.stream.webrtc.scenario "$@"',
               sys.executable, scenario, *args]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"scenario {scenario} took over {timeout:g} s; its log:\n{_text(expired.stderr)[-4000:]}",
                    pytrace=False)
    if done.returncode != 0 or not done.stdout.strip():
        hint = " (unshare needs root or CAP_SYS_ADMIN)" if "unshare" in done.stderr else ""
        pytest.fail(f"scenario {scenario} failed with exit code {done.returncode}{hint}; its log:\n"
                    f"{done.stderr[-4000:]}", pytrace=False)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


# Scenarios (run inside the namespace) -----------------------------------------------------------

def _blank(_wallclock: float) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame


async def _serve(app: web.Application) -> tuple[web.AppRunner, list[str]]:
    """The app on two ports: two origins, so a page on one can publish cross-origin to the other."""
    runner = web.AppRunner(app)
    await runner.setup()
    for _ in range(2):
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, [f"http://127.0.0.1:{port}" for _, port in runner.addresses]


def _publish_app(endpoint: WhipEndpoint) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("landing", "templates"),
                         autoescape=jinja2.select_autoescape(default=True))

    async def publish_page(request: web.Request) -> web.Response:
        context = {"whip_url": "/whip", "token": TOKEN, "asset": lambda name: f"/static/{name}"}
        return aiohttp_jinja2.render_template("publish.html", request, context)

    app.add_routes([
        web.get("/publish", publish_page),
        web.static("/static", STATIC_DIR),
        web.post("/whip", endpoint.post),
        web.options("/whip", endpoint.options),
        web.delete("/whip/{session}", endpoint.delete),
        web.patch("/whip/{session}", endpoint.patch),
        web.options("/whip/{session}", endpoint.options),
    ])
    return app


async def _until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> float:
    """Seconds it took for `check` to hold; raises with `what` when it never does."""
    started = time.monotonic()
    while True:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.1)


async def _publisher_state(page: Page) -> dict[str, Any]:
    return await page.evaluate("() => { const p = window.launchkitPublisher; return {state: p.state, "
                               "codec: p.codec, framesSent: p.framesSent, errors: p.errors, "
                               "status: document.getElementById('status').textContent}; }")


async def _publish_once(page: Page, program: Program, endpoint: WhipEndpoint, codec: str,
                        whip_url: str) -> dict[str, Any]:
    await page.fill("#whip-url", whip_url)
    await page.check(f"input[name=codec][value='{codec}']")
    await page.click("#start")
    await _until(lambda: len(program.inputs()) == 1, 10, "the WHIP session was not accepted")
    (program_input,) = program.inputs()
    live = await _until(lambda: program_input.stats.frames > 20 and program.on_air == "primary", 15,
                        "frames from the browser did not reach the program")
    await _until(lambda: _browser_codec_known(page), 5, "the page never reported its codec")
    result = {
        "whip_url": whip_url,
        "seconds_to_20_frames": round(live, 2),
        "publisher": await _publisher_state(page),
        "input": _input_summary(program_input),
        "on_air": program.on_air,
        "sessions_while_live": endpoint.sessions(),
    }
    await page.click("#stop")
    await _until(lambda: _page_state_is(page, "stopped"), 5, "the page did not stop")
    await _until(lambda: not program.inputs() and endpoint.sessions() == 0, 5, "the slot was not released")
    result.update(released=True, closed=program_input.closed, after_stop=await _publisher_state(page))
    return result


async def _browser_codec_known(page: Page) -> bool:
    return bool(await page.evaluate("() => window.launchkitPublisher.codec"))


async def _page_state_is(page: Page, name: str) -> bool:
    return await page.evaluate("() => window.launchkitPublisher.state") == name


def _input_summary(program_input: ProgramInput) -> dict[str, Any]:
    stats = program_input.stats
    return {"frames": stats.frames, "keyframes": stats.keyframes, "video_codec": stats.video_codec,
            "audio_codec": stats.audio_codec, "width": stats.width, "height": stats.height,
            "bytes": stats.bytes, "protocol": stats.protocol, "role": stats.role}


async def whip_browser(*runs: str) -> dict[str, Any]:
    """Chromium publishes its fake camera from publish.html, then stops, once per run: `CODEC`
    (e.g. video/VP8) publishes to the page's own origin, `CODEC@cross-origin` to the other one."""
    program = Program(WIDTH, HEIGHT, FPS, lambda _frame: None, _blank)
    program.start()
    endpoint = WhipEndpoint(program, Tokens(TOKEN, "ops-token-0123456789abcdef"), LOOPBACK)
    runner, (url, other_origin) = await _serve(_publish_app(endpoint))
    console: list[str] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=PUBLISHER_FLAGS)
            page = await browser.new_page()
            page.on("console", lambda message: message.type == "error" and console.append(message.text))
            await page.goto(f"{url}/publish")
            results = {}
            for run in runs:
                codec, _, where = run.partition("@")
                whip_url = f"{other_origin}/whip" if where == "cross-origin" else "/whip"
                results[run] = await _publish_once(page, program, endpoint, codec, whip_url)
            await browser.close()
    finally:
        await endpoint.close()
        await runner.cleanup()
        program.stop(1.0)
    return {"interfaces": [name for _, name in socket.if_nameindex()], "runs": results, "console_errors": console}


async def origin_whip(*codecs: str) -> dict[str, Any]:
    """The whole origin: the operator signs in to /ops, publishes from /ops/publish with each codec,
    and a viewer's landing page plays the result (HLS) while ffprobe decodes it."""
    data_dir = Path(tempfile.mkdtemp(prefix="launchkit-origin-"))
    config = Config.for_role("origin", {
        "port": 0, "ladder": (Rendition("180p", 320, 180, 300_000),), "fps": FPS, "segment_duration": 1.0,
        "rtmp_port": None, "srt_port": None, "data_dir": data_dir, "title": "WHIP origin",
    })
    tokens = Tokens(TOKEN, "ops-token-0123456789abcdef")
    app = create_app(config, tokens, LOOPBACK)
    runner, (url, _) = await _serve(app)
    program = app[SERVICES].pipeline.program
    await app[SERVICES].events.apply("live")
    results: dict[str, Any] = {}
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=PUBLISHER_FLAGS)
            operator = await browser.new_page()
            await operator.goto(f"{url}/ops")
            await operator.fill("#token", tokens.ops)
            await operator.click("button[type=submit]")
            await operator.goto(f"{url}/ops/publish")
            viewer = await browser.new_page()
            for codec in codecs:
                await operator.check(f"input[name=codec][value='{codec}']")
                await operator.click("#start")
                await _until(lambda: program.on_air == "primary", 15, f"{codec}: the browser was not on air")
                (program_input,) = program.inputs()
                await viewer.goto(f"{url}/")
                await viewer.wait_for_function("() => document.getElementById('player').currentTime > 2",
                                               timeout=20_000)
                probe = await asyncio.to_thread(
                    subprocess.run, ["ffprobe", "-v", "error", "-read_intervals", "%+2", "-show_entries",
                                     "stream=codec_name", "-of", "json", f"{url}/hls/180p/index.m3u8"],
                    capture_output=True, text=True, timeout=30,
                )
                results[codec] = {
                    "input": _input_summary(program_input),
                    "viewer_errors": await viewer.evaluate("() => window.launchkit.errors"),
                    "viewer_time": await viewer.evaluate("() => document.getElementById('player').currentTime"),
                    "ffprobe": {"returncode": probe.returncode, "stderr": probe.stderr,
                                "codecs": sorted(s["codec_name"] for s in json.loads(probe.stdout or "{}").get("streams", []))},
                }
                await operator.click("#stop")
                await _until(lambda: not program.inputs(), 5, f"{codec}: the slot was not released")
            await browser.close()
    finally:
        await runner.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"runs": results}


SCENARIOS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "whip-browser": whip_browser, "origin-whip": origin_whip,
}


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    name, *args = sys.argv[1:]
    result = asyncio.run(SCENARIOS[name](*args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""WebRTC scenarios, each in a process of its own inside network namespaces the test made.

A scenario is an async function registered in SCENARIOS; it prints its JSON result last and logs to
stderr, which the runner shows when it fails (`main`). Two places to run one:

* The real topology (tests/support/netns.py): `topology.run_scenario(module, name, *args,
  side=...)`. The browser publishers here host the WHIP endpoint (or the whole origin) in the
  scenario's process, so they run in the server's namespace, on the server's address, and drive
  Chromium in the viewer's namespace (`topology.chromium`): a camera page on a laptop publishing to
  a server across a network, with no WebRTC-changing flag (the fake camera only).
* `run_in_private_network(name, *args)`: a fresh namespace with only loopback (`unshare --net`),
  for publishers that are not browsers (FFmpeg's WHIP muxer, aiortc): for them 127.0.0.1 is a
  network like any other, and nothing can gather, advertise or reach anything else.

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m tests.stream.webrtc.scenario \\
        ffmpeg-whip seconds=2'   # as root
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import av
import pytest
from aiohttp import web
from av.video.frame import PictureType
from playwright.async_api import Browser, Page, async_playwright

from landing.app import landing_assets
from launchkit.auth import FailedCredentials, Tokens
from launchkit.config import Config
from launchkit.origin.app import MEDIA, create_app
from launchkit.origin.ops import console_assets
from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.whip import WhipEndpoint
from loadtests.browser import CHROMIUM_FLAGS, FAKE_CAMERA_FLAGS
from stream.ladder import Rendition
from stream.program import Program, ProgramInput
from tests.stream.webrtc.coturn import self_signed_certificate
from tests.support.netns import Topology, run_scenario_command

log = logging.getLogger("scenario")

ROOT = Path(__file__).parents[3]
TOKEN = "browser-publish-token-0123456789"
LOOPBACK = IceSettings(addresses=("127.0.0.1",), servers=())
PUBLISHER_FLAGS = [*CHROMIUM_FLAGS, *FAKE_CAMERA_FLAGS]
WIDTH, HEIGHT, FPS = 320, 180, 15


def run_in_private_network(scenario: str, *args: str, timeout: float = 60.0,
                           module: str = "tests.stream.webrtc.scenario") -> dict[str, Any]:
    """Run `scenario` of `module` (its SCENARIOS) in a fresh network namespace with only loopback
    (root, `unshare`, `ip` needed) and return its result. Not for browsers: see the docstring."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: WebRTC tests run in a private network namespace "
                    "(Debian packages util-linux and iproute2, run as root)", pytrace=False)
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" -m "$@"',
               sys.executable, module, scenario, *args]
    return run_scenario_command(command, scenario, timeout=timeout)


# Scenarios (run inside the namespace) -----------------------------------------------------------

def _blank(_wallclock: float) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame


async def _serve(app: web.Application, host: str, tls: ssl.SSLContext | None = None
                 ) -> tuple[web.AppRunner, list[str]]:
    """The app on two ports of `host` (HTTPS with `tls`): two origins, so a page on one can publish
    cross-origin to the other."""
    runner = web.AppRunner(app)
    await runner.setup()
    for _ in range(2):
        await web.TCPSite(runner, host, 0, ssl_context=tls).start()
    scheme = "https" if tls else "http"
    return runner, [f"{scheme}://{host}:{port}" for _, port in runner.addresses]


def _server_ice(topology: Topology) -> IceSettings:
    """The server side gathers on the server's address only, no STUN server."""
    return IceSettings(addresses=(topology.server_ip,), servers=())


def _console_tls(topology: Topology) -> ssl.SSLContext:
    """HTTPS for the pages that publish, as an operator's console is served: a camera is only
    offered to a secure context, and an address other than localhost over plain HTTP is not one.
    The certificate is self-signed for the server's address; the publisher's browser context
    accepts it (`ignore_https_errors`) as it would a CA-signed one."""
    certificate, key = self_signed_certificate(topology.directory, topology.server_ip)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


def _publish_app(endpoint: WhipEndpoint, publishers: list[str]) -> web.Application:
    """publish.html and the WHIP routes; `publishers` gets the address each offer came from."""

    async def post(request: web.Request) -> web.StreamResponse:
        publishers.append(request.remote or "")
        return await endpoint.post(request)

    app = web.Application(client_max_size=64 * 1024)
    pages = (landing_assets(), console_assets())  # publish.html and its files, as the origin serves them
    for assets in pages:
        assets.setup(app)

    async def publish_page(request: web.Request) -> web.Response:
        return aiohttp_jinja2.render_template("publish.html", request, {"whip_url": "/whip", "token": TOKEN})

    app.add_routes([
        web.get("/publish", publish_page),
        *(assets.route() for assets in pages),
        web.post("/whip", post),
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
    """Chromium (in the viewer's namespace) publishes its fake camera from publish.html served here
    (the server's namespace), then stops, once per run: `CODEC` (e.g. video/VP8) publishes to the
    page's own origin, `CODEC@cross-origin` to the other one."""
    topology = Topology.from_env()
    program = Program(WIDTH, HEIGHT, FPS, lambda _frame: None, _blank)
    program.start()
    endpoint = WhipEndpoint(program, Tokens(TOKEN, "ops-token-0123456789abcdef"), _server_ice(topology),
                            FailedCredentials())
    publishers: list[str] = []
    runner, (url, other_origin) = await _serve(_publish_app(endpoint, publishers), topology.server_ip,
                                               _console_tls(topology))
    plain, (plain_url, _) = await _serve(_publish_app(endpoint, publishers), topology.server_ip)
    console: list[str] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=topology.chromium, args=PUBLISHER_FLAGS)
            insecure = await _publish_over_plain_http(browser, plain_url)
            page = await browser.new_page(ignore_https_errors=True)
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
        await plain.cleanup()
        program.stop(1.0)
    return {"interfaces": [name for _, name in socket.if_nameindex()], "runs": results, "console_errors": console,
            "publishers": sorted(set(publishers)), "insecure": insecure}


async def _publish_over_plain_http(browser: Browser, url: str) -> dict[str, Any]:
    """The publish page over plain HTTP from another machine (no camera for insecure pages): what
    the operator is told when pressing Start."""
    page = await browser.new_page()
    await page.goto(f"{url}/publish")
    await page.click("#start")
    await _until(lambda: _page_state_is(page, "failed"), 5, "the insecure page did not fail")
    state = await _publisher_state(page)
    await page.close()
    return state


async def origin_whip(*codecs: str) -> dict[str, Any]:
    """The whole origin (here, in the server's namespace): the operator signs in to /ops, publishes
    from /ops/publish with each codec, and a viewer's landing page plays the result (LL-HLS) while
    ffprobe decodes it; both pages in Chromium, in the viewer's namespace."""
    topology = Topology.from_env()
    data_dir = Path(tempfile.mkdtemp(prefix="launchkit-origin-"))
    config = Config.for_role("origin", {
        "port": 0, "ladder": (Rendition("180p", 320, 180, 300_000),), "fps": FPS, "segment_duration": 1.0,
        "rtmp_port": None, "srt_port": None, "data_dir": data_dir, "title": "WHIP origin",
    })
    tokens = Tokens(TOKEN, "ops-token-0123456789abcdef")
    app = create_app(config, tokens, _server_ice(topology))
    runner, (url, _) = await _serve(app, topology.server_ip, _console_tls(topology))
    program = app[MEDIA].pipeline.program
    await app[MEDIA].events.apply("live")
    results: dict[str, Any] = {}
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=topology.chromium, args=PUBLISHER_FLAGS)
            operator = await browser.new_page(ignore_https_errors=True)
            await operator.goto(f"{url}/ops")
            await operator.fill("#token", tokens.ops)
            await operator.click("button[type=submit]")
            await operator.goto(f"{url}/ops/publish")
            viewer = await browser.new_page(ignore_https_errors=True)
            for codec in codecs:
                await operator.check(f"input[name=codec][value='{codec}']")
                await operator.click("#start")
                await _until(lambda: program.on_air == "primary", 15, f"{codec}: the browser was not on air")
                (program_input,) = program.inputs()
                # LL-HLS only: across the veth the page would switch to WebRTC (tests/stream/webrtc/test_whep.py).
                await viewer.goto(f"{url}/?protocol=hls")
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
                    "viewer_engine": await viewer.evaluate("() => window.launchkit.engine"),
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


# FFmpeg's WHIP muxer (the FFmpeg bundled with PyAV) as the publisher -----------------------------

FFMPEG_SECONDS = 5.0
# FFmpeg's muxer waits this long for ICE + DTLS after our answer (its default is 5 s).
FFMPEG_HANDSHAKE_MS = 10_000
FFMPEG_PKT_SIZE = 1200
FFMPEG_STDERR_CHARS = 20_000
# Log lines of these FFmpeg contexts are kept in the result: the muxer and its transports.
FFMPEG_LOG_CONTEXTS = ("whip", "dtls", "tls", "udp", "http", "tcp", "srtp")


def _whip_app(endpoint: WhipEndpoint, exchanges: list[dict[str, Any]]) -> web.Application:
    """The WHIP routes alone, recording each request's outcome (POST: the answer and its framing)."""

    @web.middleware
    async def record(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        response = await handler(request)
        exchange: dict[str, Any] = {"method": request.method, "path": request.path, "status": response.status,
                                    "authorization": request.headers.get("Authorization", "")[:7]}
        if isinstance(response, web.Response):
            body = response.body if isinstance(response.body, bytes) else b""
            exchange.update(body=body.decode(errors="replace"), chunked=response.chunked,
                            content_length=response.content_length, location=response.headers.get("Location"))
        exchanges.append(exchange)
        return response

    app = web.Application(client_max_size=64 * 1024, middlewares=[record])
    app.add_routes([
        web.post("/whip", endpoint.post),
        web.delete("/whip/{session}", endpoint.delete),
        web.patch("/whip/{session}", endpoint.patch),
        web.options("/whip/{session}", endpoint.options),
    ])
    return app


class _LibavLog(logging.Handler):
    """Collects FFmpeg's log lines (PyAV forwards them to the `libav.<context>` loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        context = record.name.removeprefix("libav.")
        if any(word in context.lower() for word in FFMPEG_LOG_CONTEXTS) and len(self.lines) < 400:
            self.lines.append(f"[{context}] {record.levelname.lower()}: {record.getMessage().rstrip()}")


def _ffmpeg_settings(settings: tuple[str, ...]) -> tuple[float, str, dict[str, str]]:
    """`seconds=N`, `certificate=ffmpeg|p-256` and any other `name=value` (a whip muxer option)."""
    options = dict(setting.split("=", 1) for setting in settings)
    return float(options.pop("seconds", FFMPEG_SECONDS)), options.pop("certificate", "ffmpeg"), options


def _p256_certificate(directory: Path) -> dict[str, str]:
    """A self-signed P-256 certificate for the muxer's cert_file/key_file options (what browsers
    and aiortc use), instead of the key FFmpeg generates itself."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lavf")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return {"cert_file": str(directory / "cert.pem"), "key_file": str(directory / "key.pem")}


async def ffmpeg_whip_publisher(url: str, *settings: str) -> dict[str, Any]:
    """The publisher side of `ffmpeg-whip`, in a process of its own (see `_ffmpeg_publish`), with
    FFmpeg's log at debug level in the result."""
    seconds, certificate, options = _ffmpeg_settings(settings)
    libav_log = _LibavLog()
    libav = logging.getLogger("libav")
    libav.setLevel(logging.DEBUG)
    libav.propagate = False  # the log is returned, not printed
    libav.addHandler(libav_log)
    av.logging.set_level(av.logging.DEBUG)
    try:
        with tempfile.TemporaryDirectory(prefix="launchkit-whip-") as directory:
            if certificate == "p-256":
                options.update(_p256_certificate(Path(directory)))
            outcome = _ffmpeg_publish(url, TOKEN, seconds, options)
    finally:
        av.logging.set_level(None)
    return {**outcome, "log": libav_log.lines}


def _ffmpeg_publish(url: str, token: str, seconds: float, options: dict[str, str]) -> dict[str, Any]:
    """Publish `seconds` of lavfi testsrc2 (H.264 baseline, no B-frames) and a stereo 48 kHz sine
    (Opus) in real time with FFmpeg's `whip` muxer, then close (the muxer DELETEs its session).

    Not in a thread of the server's process: PyAV holds the GIL in avformat_write_header and
    av_write_trailer, where the muxer POSTs its offer and DELETEs its session, so the server's
    event loop could never answer. Every loop is bounded by the frame count."""
    outcome: dict[str, Any] = {"options": sorted(options), "header_written": False, "video_packets": 0,
                               "audio_packets": 0, "closed": False, "error": None}
    video_in = av.open(f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", format="lavfi")
    audio_in = av.open("sine=frequency=440:sample_rate=48000,aformat=channel_layouts=stereo", format="lavfi")
    output = None
    started = time.monotonic()
    try:
        output = av.open(url, mode="w", format="whip", container_options={
            "authorization": token,
            "handshake_timeout": str(FFMPEG_HANDSHAKE_MS),
            "pkt_size": str(FFMPEG_PKT_SIZE),
            "strict": "experimental",  # FFmpeg flags the whip muxer AVFMT_EXPERIMENTAL
            **options,
        })
        video = output.add_stream("libx264", rate=FPS, options={
            "profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "bf": "0",
            "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:repeat-headers=1:annexb=1",
        })
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = 500_000
        audio = output.add_stream("libopus", rate=48000, layout="stereo")  # the muxer wants stereo 48 kHz
        audio.bit_rate = 64_000
        frames = video_in.decode(video=0)
        sounds = audio_in.decode(audio=0)
        samples = 0
        for index in range(int(seconds * FPS)):
            picture = next(frames).reformat(format="yuv420p")
            picture.pts, picture.time_base = index, Fraction(1, FPS)
            picture.pict_type = PictureType.NONE  # lavfi marks every frame I: libx264 would make each an IDR
            packets = video.encode(picture)
            # Sound up to the end of this picture: the sine's frames are 1024 samples.
            while samples < (index + 1) * 48000 // FPS:
                sound = next(sounds)
                sound.pts, sound.time_base = samples, Fraction(1, 48000)
                samples += sound.samples
                packets += audio.encode(sound)
            for packet in packets:
                output.mux(packet)  # the first call writes the header: offer, answer, ICE, DTLS
                outcome["header_written"] = True
                outcome["video_packets" if packet.stream is video else "audio_packets"] += 1
            lag = started + (index + 1) / FPS - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        for packet in [*video.encode(None), *audio.encode(None)]:
            output.mux(packet)
    except Exception as error:  # the muxer's failure is the result: report it, with the log
        outcome["error"] = f"{type(error).__name__}: {error}"
    finally:
        try:
            if output is not None:
                output.close()  # writes the trailer: the muxer DELETEs its WHIP session
                outcome["closed"] = True
        except Exception as error:
            outcome["close_error"] = f"{type(error).__name__}: {error}"
        video_in.close()
        audio_in.close()
    outcome["seconds"] = round(time.monotonic() - started, 2)
    return outcome


def _count_audio(program_input: ProgramInput) -> list[int]:
    """Count the audio frames the session pushes into `program_input` (in a one-item list)."""
    count = [0]
    push_audio = program_input.push_audio

    def counting_push_audio(frame: av.AudioFrame) -> None:
        count[0] += 1
        push_audio(frame)

    program_input.push_audio = counting_push_audio  # type: ignore[method-assign]
    return count


def _sdp_lines(sdp: str, *prefixes: str) -> list[str]:
    return [line.strip() for line in sdp.splitlines() if line.strip().startswith(prefixes)]


async def ffmpeg_whip(*settings: str) -> dict[str, Any]:
    """FFmpeg's WHIP muxer (the FFmpeg 8 bundled with PyAV) publishes H.264 + Opus in real time
    from a child process, then closes: accepted, decoded into the program, on air, released.
    `settings`: `seconds=N`, `certificate=p-256` (the muxer's cert_file/key_file instead of the
    key it generates) and whip muxer options as `name=value` (e.g. whip_flags=dtls_active)."""
    seconds, _, _ = _ffmpeg_settings(settings)
    program = Program(WIDTH, HEIGHT, FPS, lambda _frame: None, _blank)
    program.start()
    endpoint = WhipEndpoint(program, Tokens(TOKEN, "ops-token-0123456789abcdef"), LOOPBACK, FailedCredentials())
    exchanges: list[dict[str, Any]] = []
    runner, (url, _) = await _serve(_whip_app(endpoint, exchanges), "127.0.0.1")
    result: dict[str, Any] = {"interfaces": [name for _, name in socket.if_nameindex()], "settings": settings,
                              "errors": []}
    # The child inherits this network namespace: 127.0.0.1 is all it can reach too.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.stream.webrtc.scenario", "ffmpeg-whip-publisher", f"{url}/whip", *settings,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    publisher = asyncio.ensure_future(child.communicate())
    try:
        await _until(lambda: bool(program.inputs()) or publisher.done(), 15, "FFmpeg never POSTed an offer")
        if program.inputs():
            (program_input,) = program.inputs()
            audio_frames = _count_audio(program_input)
            live = await _until(lambda: (program_input.stats.frames > 20 and program.on_air == "primary")
                                or publisher.done(), seconds + 10, "frames from FFmpeg did not reach the program")
            result.update(input=_input_summary(program_input), on_air=program.on_air,
                          sessions_while_live=endpoint.sessions())
            if program_input.stats.frames > 20 and program.on_air == "primary":
                result["seconds_to_20_frames"] = round(live, 2)
        try:
            stdout, stderr = await asyncio.wait_for(publisher, seconds + FFMPEG_HANDSHAKE_MS / 1000 + 15)
        except TimeoutError:
            child.kill()
            stdout, stderr = await child.communicate()
            result["errors"].append("the FFmpeg publisher did not finish: killed")
        lines = stdout.decode(errors="replace").strip().splitlines()
        result["publisher"] = json.loads(lines[-1]) if child.returncode == 0 and lines else {
            "returncode": child.returncode}
        result["publisher_stderr"] = stderr.decode(errors="replace")[-FFMPEG_STDERR_CHARS:]
        try:
            await _until(lambda: not program.inputs() and endpoint.sessions() == 0, 5, "the slot was not released")
            result["released"] = True
        except TimeoutError as error:
            result.update(released=False)
            result["errors"].append(str(error))
        if "input" in result:
            # Every frame, after the DELETE (stats has no audio count: the pushes are counted).
            result["input_at_end"] = {**_input_summary(program_input), "audio_frames": audio_frames[0]}
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await endpoint.close()
        await runner.cleanup()
        program.stop(1.0)
    posts = [exchange for exchange in exchanges if exchange["method"] == "POST"]
    answer = posts[0].get("body", "") if posts else ""
    offer = "\n".join(line for line in result.get("publisher", {}).get("log", []) if "offer:" in line)
    result.update(
        exchanges=[{key: value for key, value in exchange.items() if key != "body"} for exchange in exchanges],
        offer_setup=sorted(set(_sdp_lines(offer, "a=setup:"))),
        answer_setup=sorted(set(_sdp_lines(answer, "a=setup:"))),
        answer_candidates=_sdp_lines(answer, "a=candidate:"),
        answer_codecs=_sdp_lines(answer, "a=rtpmap:", "m="),
        answer=answer,
    )
    return result

SCENARIOS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "whip-browser": whip_browser, "origin-whip": origin_whip, "ffmpeg-whip": ffmpeg_whip,
    "ffmpeg-whip-publisher": ffmpeg_whip_publisher,
}


def main(scenarios: dict[str, Callable[..., Awaitable[dict[str, Any]]]]) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    name, *args = sys.argv[1:]
    result = asyncio.run(scenarios[name](*args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(SCENARIOS)

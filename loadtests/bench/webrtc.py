"""WebRTC viewers per core: Launchkit's WHEP fan-out vs stock aiortc encode-once, side by side.

What it measures
    The number of WHEP viewers one server process sustains with ≥ 99.9 % of video frames delivered
    to every viewer, for a 1.5 Mbit/s 30 fps H.264 rendition + Opus, within the same CPU budget,
    scaled to one core; and the time to first frame of a new viewer.

    * One `launchkit demo --webrtc 640x360:1500` encodes the WebRTC rendition once (core 1,
      outside the budget). Both servers under test take its packets from the same feed
      (`/api/webrtc/feed`), so they send identical media:
      - Launchkit: `launchkit edge` (its fan-out: one RTP packetization shared by all viewers,
        keyframes on request, bounded per-viewer queues).
      - Reference: stock aiortc encode-once (`python -m loadtests.bench.webrtc --reference`): each
        viewer's track yields `av.Packet`s and aiortc packetizes them per viewer — what an aiortc
        relay does without Launchkit's changes.
    * Same CPU budget: each server process is put in its own cgroup with a CFS quota of
      `--cpu-budget` cores (default 0.25) on core 1; the viewers (loadtests/whep.py: real aiortc
      sessions that count frames without decoding) run on core 0.
    * Steps: N viewers join within 2 s and watch `--step-seconds` (20); a step passes when every
      viewer got a 201 and ≥ 99.9 % of the frames sent between its first and last frame. Steps
      grow until one fails (repeated once), or the load generator's core is full (then the
      figure is a lower bound). Viewers per core = sustained N / budget.
    * Runs in a private network namespace (re-executes itself under `unshare --net` with only
      loopback up), so ICE can reach nothing but 127.0.0.1.

How to run (root, 2 cores): `.venv/bin/python -m loadtests.bench.webrtc [--cpu-budget 0.25] [--runs 3]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from launchkit.auth import Tokens, generate_token
from launchkit.webrtc.ice import IceSettings, apply_host_addresses
from loadtests.bench.edge import CLIENT_CORE, SERVER_CORE, affinity, cpu_budget_group, join_group, remove_group
from loadtests.bench.edge import cpu_seconds as process_cpu_seconds
from loadtests.target import LocalDemo, free_port, start_demo, start_launchkit
from loadtests.whep import install_counting_decoders, loopback_viewer, watch
from stream.bus import PacketBus
from stream.packet import EncodedPacket
from stream.webrtc.feed import FeedClient

LOOPBACK = IceSettings(addresses=("127.0.0.1",), servers=())
FPS = 30
# 1.5 Mbit/s is what sets the packet rate, hence the sender's cost; a 360p picture keeps the origin's
# encoder (on the servers' core, outside their budget) from dropping frames under the load.
ORIGIN_ARGS = ("--ladder", "360p:640x360:400", "--fps", str(FPS), "--webrtc", "640x360:1500")
STEPS = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
DELIVERY_TARGET = 0.999
IN_NAMESPACE = "LAUNCHKIT_BENCH_NETNS"


# ---- the reference: stock aiortc encode-once -----------------------------------------------------

class PacketTrack(MediaStreamTrack):
    """Yields av.Packets: aiortc's sender packetizes each one itself, per viewer."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[av.Packet] = asyncio.Queue(maxsize=120)
        self.started = kind == "audio"

    def offer(self, packet: EncodedPacket) -> None:
        if not self.started and not packet.keyframe:
            return
        self.started = True
        if self.queue.full():
            self.queue.get_nowait()
        av_packet = av.Packet(packet.data)
        av_packet.pts, av_packet.dts, av_packet.time_base = packet.pts, packet.dts, Fraction(packet.time_base)
        self.queue.put_nowait(av_packet)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        return await self.queue.get()


async def reference_server(origin: str, port: int) -> None:
    apply_host_addresses(LOOPBACK)
    bus = PacketBus()
    feed = FeedClient(origin, bus, Tokens.from_env(os.environ).edge, user_agent="launchkit-edge")
    tracks: set[PacketTrack] = set()
    bus.subscribe(lambda packet: [t.offer(packet) for t in tracks if t.kind == packet.kind])
    peers: set[RTCPeerConnection] = set()

    async def whep(request: web.Request) -> web.Response:
        pc = RTCPeerConnection(LOOPBACK.rtc_configuration())
        peers.add(pc)
        for kind in ("video", "audio"):
            track = PacketTrack(kind)
            tracks.add(track)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs
                      if c.mimeType.lower() in ("video/h264", "audio/opus")
                      and c.parameters.get("packetization-mode", "1") == "1"]
            transceiver.setCodecPreferences(codecs)
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        feed.request_keyframe()
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whep/{id(pc)}"})

    app = web.Application()
    app.add_routes([web.post("/whep", whep), web.delete("/whep/{id}", lambda request: web.Response(text="ok"))])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    feed.start()
    print(f"reference ready on {port}", flush=True)
    await asyncio.Event().wait()


# ---- one step --------------------------------------------------------------------------------------

async def run_step(url: str, pid: int, viewers: int, seconds: float) -> dict[str, Any]:
    cpu_before, started = process_cpu_seconds(pid), time.monotonic()
    generator_before = time.process_time()

    async def one(index: int):
        await asyncio.sleep(index * 2.0 / viewers)  # joins spread over 2 s
        async with loopback_viewer(index) as own:  # each viewer from its own address
            return await watch(own, url, seconds, LOOPBACK)

    results = await asyncio.gather(*(one(i) for i in range(viewers)))
    wall = time.monotonic() - started
    cpu = (process_cpu_seconds(pid) - cpu_before) / wall
    generator = (time.process_time() - generator_before) / wall
    ratios = [r.frames / max(1, r.expected_frames(FPS)) for r in results]
    mbps = [r.bytes * 8 / seconds / 1e6 for r in results if r.frames]
    ok = all(r.status == 201 and r.error is None for r in results) and min(ratios) >= DELIVERY_TARGET
    first_frames = [r.first_frame_after for r in results if r.first_frame_after is not None]
    return {"viewers": viewers, "passed": ok, "worst_delivery": round(min(ratios), 4),
            "statuses": sorted({r.status for r in results}, key=str), "server_cores": round(cpu, 3),
            "generator_cores": round(generator, 3),
            "video_mbps_per_viewer": round(statistics.median(mbps), 2) if mbps else None,
            "first_frame_median": round(statistics.median(first_frames), 3) if first_frames else None}


async def ramp(name: str, url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    steps, sustained = [], 0
    for viewers in STEPS:
        attempts = []
        for _ in range(2):  # a failed step is repeated once: a burst of other work must not decide alone
            attempts.append(await run_step(url, pid, viewers, args.step_seconds))
            print(f"[webrtc bench] {name}: {viewers} viewers → {attempts[-1]}", flush=True)
            if attempts[-1]["passed"]:
                break
            await asyncio.sleep(2)
        steps.extend(attempts)
        if not attempts[-1]["passed"]:
            break
        sustained = viewers
        if attempts[-1]["generator_cores"] > 0.85:
            break  # the load generator's core is full: what follows would measure it, not the server
        await asyncio.sleep(2)
    return {"server": name, "steps": steps, "sustained": sustained,
            "per_core": round(sustained / args.cpu_budget), "generator_bound": steps[-1]["passed"]}


# ---- orchestration ---------------------------------------------------------------------------------

def start_reference(origin: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "loadtests.bench.webrtc", "--reference", origin, str(port)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if "ready" not in process.stdout.readline():
        raise RuntimeError("the reference server did not start")
    return process, f"http://127.0.0.1:{port}"


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: every process this benchmark started ends with it."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["LAUNCHKIT_ICE_ADDRESSES"] = "127.0.0.1"
    os.environ.setdefault("LAUNCHKIT_EDGE_TOKEN", generate_token())  # the origin, edge and reference share it
    install_counting_decoders()
    log_dir = Path(tempfile.mkdtemp(prefix="launchkit-webrtc-bench-"))
    os.sched_setaffinity(0, {CLIENT_CORE})
    origin: LocalDemo | None = None
    servers: list[tuple[str, Any, str, int]] = []
    groups = []
    try:
        with affinity({SERVER_CORE}):
            origin = start_demo(*ORIGIN_ARGS, log_dir=log_dir, ready_timeout=60)
            edge = start_launchkit("edge", "--origin", origin.url, "--max-webrtc-viewers", "10000", "--drain-seconds", "0",
                                   log_dir=log_dir,
                                   wait_for_media=False)
            reference, reference_url = start_reference(origin.url)
        servers = [("Launchkit edge (shared packetization)", edge, edge.url, edge.process.pid),
                   ("stock aiortc encode-once", reference, reference_url, reference.pid)]
        for name, _, _, pid in servers:
            group = cpu_budget_group(name.split()[0].lower(), args.cpu_budget)
            join_group(group, [pid])
            groups.append(group)
        time.sleep(5)  # feeds connected, a keyframe or two through
        ramps = [asyncio.run(ramp(name, url + "/whep", pid, args)) for name, _, url, pid in servers]
    finally:
        for _name, handle, _, _ in servers:
            stop_process(handle.process if isinstance(handle, LocalDemo) else handle)
        if origin is not None:
            stop_process(origin.process)
        for group in groups:
            remove_group(group)
    return {"ramps": ramps}


def markdown(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    names = [r["server"] for r in runs[0]["ramps"]]
    lines = ["| server | viewers per core (median of runs) | runs | time to first frame (median) | limited by |",
             "| --- | ---: | --- | ---: | --- |"]
    for index, name in enumerate(names):
        ramps = [run["ramps"][index] for run in runs]
        per_core = statistics.median(r["per_core"] for r in ramps)
        firsts = [s["first_frame_median"] for r in ramps for s in r["steps"] if s["first_frame_median"] is not None]
        limit = "load generator (lower bound)" if any(r["generator_bound"] for r in ramps) else "server CPU budget"
        lines.append(f"| {name} | {per_core:.0f} | {', '.join(str(r['per_core']) for r in ramps)} | "
                     f"{statistics.median(firsts):.2f} s | {limit} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-budget", type=float, default=0.25, help="cores each server may use (default 0.25)")
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reference", nargs=2, metavar=("ORIGIN", "PORT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reference:
        asyncio.run(reference_server(args.reference[0], int(args.reference[1])))
        return 0
    if os.environ.get(IN_NAMESPACE) != "1":
        command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" -m loadtests.bench.webrtc "$@"',
                   sys.executable, *(argv if argv is not None else sys.argv[1:])]
        return subprocess.run(command, env={**os.environ, IN_NAMESPACE: "1"}).returncode
    started = time.monotonic()
    runs = [one_run(args) for _ in range(args.runs)]
    table = markdown(runs, args)
    command = " ".join([".venv/bin/python -m loadtests.bench.webrtc", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{command} ({time.monotonic() - started:.0f} s)\n\n{table}")
    if args.json:
        args.json.write_text(json.dumps({"command": command, "runs": runs}, indent=2) + "\n")
    ours = statistics.median(run["ramps"][0]["per_core"] for run in runs)
    return 0 if ours >= 300 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Time to first picture on the networks viewers are on: 20 first visits of the landing page per
case, by Debian's Chromium as a viewer runs it (no WebRTC-changing flag), in the real topology (a
server and a viewer network namespace joined by a veth pair, tests/support/netns.py).

Cases, one run: the page forced to LL-HLS (`?protocol=hls`, the reference: what a viewer got
before WebRTC was raced beside it), the page on a demo and on an edge with UDP open, and with every
UDP packet of the viewer's network dropped: with coturn beside the server (TURN over TCP) and
without TURN. Each load is watched for 5 s: time from navigation to the first frame on screen
(p50/p95) and the engine on screen at 1, 3 and 5 s. The machine's idle CPU during each case says
whether the browser (the load generator) and the servers had room.

Targets (#13): first picture p95 ≤ 1.0 s in every case; WebRTC on screen at 3 s in ≥ 95 % of loads
with UDP open, and where TURN is configured.

Run from the repository root, as root: `.venv/bin/python -m loadtests.bench.startup [--loads 20]`
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from launchkit.webrtc.turn import SECRET_ENV
from loadtests.bench.edge import core_times
from tests.stream.webrtc.coturn import start_coturn
from tests.support.netns import Topology, two_namespaces

FIRST_PICTURE_P95 = 1.0
WEBRTC_AT_3S = 0.95
WATCH_SECONDS = 5.0
FPS = 15
# The demo's program and WebRTC rendition as the WebRTC tests run them (tests/stream/webrtc).
SERVER = ("--ladder", "360p:640x360:500", "--fps", str(FPS), "--webrtc", "320x180:300",
          "--max-webrtc-viewers", "100")


@dataclass(frozen=True)
class Case:
    name: str
    udp_dropped: bool
    turn: bool = False
    edge: bool = False
    query: str = ""
    reference: bool = False

    @property
    def expects_webrtc(self) -> bool:
        return not self.reference and (not self.udp_dropped or self.turn)


CASES = (
    Case("LL-HLS only (?protocol=hls), UDP open: reference", udp_dropped=False, query="?protocol=hls", reference=True),
    Case("demo, UDP open", udp_dropped=False),
    Case("edge, UDP open", udp_dropped=False, edge=True),
    Case("demo, UDP dropped, coturn (TURN/TCP)", udp_dropped=True, turn=True),
    Case("demo, UDP dropped, no TURN", udp_dropped=True),
)


@contextmanager
def landing_page(net: Topology, case: Case) -> Iterator[str]:
    """The URL of the case's landing page, served from the server's namespace."""
    coturn = None
    try:
        args, env = list(SERVER), {}
        if case.turn:
            secret = secrets.token_hex(16)
            coturn = start_coturn(net.server_ip, secret, net.directory, namespace=net.server)
            args += ["--turn-urls", coturn.urls()[0]]
            env[SECRET_ENV] = secret
        server = net.start_demo(*args, env=env)
        if case.edge:
            server = net.start_edge(server.url, max_webrtc_viewers=100)
        yield f"{server.url}/{case.query}"
    finally:
        if coturn:
            coturn.stop()


def measure(case: Case, loads: int) -> dict:
    with two_namespaces(udp_dropped=case.udp_dropped) as net, landing_page(net, case) as url:
        before = core_times()
        result = net.run_scenario("loadtests.startup", url, "--loads", str(loads), "--watch", str(WATCH_SECONDS),
                                  timeout=loads * (WATCH_SECONDS + 16) + 60)
        result["idle"] = idle_share_since(before)
    return result


def idle_share_since(before: dict[int, dict[str, int]]) -> float:
    """The share of the machine's CPU time nobody used since `before` (core_times())."""
    after = core_times()
    busy = sum(after[core]["busy"] - before[core]["busy"] for core in after)
    total = sum(after[core]["total"] - before[core]["total"] for core in after)
    return 1 - busy / total if total else 0.0


def meets(case: Case, result: dict) -> bool:
    return (result["pictures"] == result["loads"] and result["errors"] == 0
            and result["first_frame_p95"] <= FIRST_PICTURE_P95
            and (not case.expects_webrtc or result["webrtc_at"]["3s"] >= WEBRTC_AT_3S))


def _share(value: float) -> str:
    return f"{value:.0%}"


def report(results: list[tuple[Case, dict]], loads: int, command: str) -> bool:
    print(f"Command: `{command}` ({loads} first visits per case, each watched {WATCH_SECONDS:g} s).\n")
    print("| case | first picture p50 (s) | p95 (s) | max (s) | WebRTC at 1 s | at 3 s | at 5 s | relayed "
          "| errors | idle CPU | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case, result in results:
        webrtc = result["webrtc_at"]
        relayed = f"{result['relayed']} ({', '.join(result['relay_protocols'])})" if result["relayed"] else "0"
        print(f"| {case.name} | {result['first_frame_p50']} | {result['first_frame_p95']} | {result['first_frame_max']} "
              f"| {_share(webrtc['1s'])} | {_share(webrtc['3s'])} | {_share(webrtc['5s'])} | {relayed} "
              f"| {result['errors']} | {_share(result['idle'])} | {'met' if meets(case, result) else 'missed'} |")
    reference = next(result for case, result in results if case.reference)["first_frame_p95"]
    raced = [(case, result) for case, result in results if not case.reference]
    worst_case, worst = max(raced, key=lambda item: item[1]["first_frame_p95"])
    passed = all(meets(case, result) for case, result in results)
    print(f"\n**Headline:** first picture p95 at most {worst['first_frame_p95']} s in every case "
          f"(worst: {worst_case.name}), {worst['first_frame_p95'] / reference:.2f}× the LL-HLS-only page "
          f"({reference} s); WebRTC on screen 3 s after navigation in "
          + ", ".join(f"{_share(result['webrtc_at']['3s'])} ({case.name})" for case, result in raced
                      if case.expects_webrtc)
          + f". Targets (p95 ≤ {FIRST_PICTURE_P95:g} s; WebRTC at 3 s ≥ {WEBRTC_AT_3S:.0%} where it can connect): "
          + ("met." if passed else "**missed**."))
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=20, help="first visits per case (default 20)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the startup benchmark builds network namespaces: run it as root", file=sys.stderr)
        return 2
    os.environ.setdefault("LAUNCHKIT_EDGE_TOKEN", secrets.token_urlsafe(24))  # the demo and its edge share it
    results = [(case, measure(case, args.loads)) for case in CASES]
    command = ".venv/bin/python -m loadtests.bench.startup" + (f" --loads {args.loads}" if args.loads != 20 else "")
    return 0 if report(results, args.loads, command) else 1


if __name__ == "__main__":
    sys.exit(main())

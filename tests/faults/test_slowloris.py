"""Slowloris: 2,000 idle sockets and 500 that send their request headers one byte a second, never
finishing, on the HTTP port of a demo (origin role's server) and of an edge; viewers are still
served and /healthz still answers fast.

Real processes, started the way a service usually starts: with RLIMIT_NOFILE's soft limit at 1024
(systemd's and containerd 2's default; the hard limit stays this machine's). The attacker is a
separate process holding its sockets with plain blocking connects, paced so that the server's
accept queue never overflows (a connection dropped there would never reach the server and prove
nothing); the test counts the sockets the server really holds in /proc/PID/fd. Meanwhile 20
simulated hls.js viewers play (loadtests/player.py) and a probe asks /healthz ten times a second on
a new connection each time, as a Kubernetes probe does.

Fixed by launchkit/web/limits.py: `raise_open_file_limit()` at startup, `IDLE_TIMEOUT` as the
runner's keep-alive (and header-read) timeout. Its unit tests are at the end.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from launchkit.web import limits
from loadtests.player import PlayerConfig, Swarm, percentiles
from loadtests.target import LocalDemo, start_demo, start_edge, stop_all
from tests.support.faults import LADDER, figures, open_files_soft_limit

pytestmark = pytest.mark.faults

IDLE_SOCKETS = 2000
TRICKLING_SOCKETS = 500
COMMON_SOFT_LIMIT = 1024
PROBE_SECONDS = 12.0
PROBE_INTERVAL = 0.1
PROBE_TIMEOUT = 1.0

# The attacker: connects IDLE + TRICKLE sockets (100 at a time, then a pause the accept loop
# drains the queue in), says `ready <held> <refused>`, then sends one header byte a second on each
# trickling socket until it is stopped (by PID) or its 120 s are up.
ATTACKER = r"""
import resource, socket, sys, time
host, port, idle, trickle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, refused = [], 0
deadline = time.monotonic() + 20
for n in range(idle + trickle):
    if time.monotonic() > deadline:
        refused += idle + trickle - n
        break
    sock = socket.socket()
    sock.settimeout(1.0)
    try:
        sock.connect((host, port))
        held.append(sock)
    except OSError:
        refused += 1
        sock.close()
    if n % 100 == 99:
        time.sleep(0.05)
tricklers = held[idle:]
for sock in tricklers:
    sock.setblocking(False)
    try:
        sock.send(b"GET /hls/index.m3u8 HTTP/1.1\r\nHost: loris\r\nX-Loris: ")
    except OSError:
        pass
print("ready", len(held), refused, flush=True)
stop = time.monotonic() + 120
while time.monotonic() < stop:
    started = time.monotonic()
    for sock in tricklers:
        try:
            sock.send(b"a")
        except OSError:
            pass
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
"""


@pytest.fixture(scope="module")
def low_limit_demo(tmp_path_factory):
    """A demo started as services usually are: soft limit 1024 on open files."""
    with open_files_soft_limit(COMMON_SOFT_LIMIT):
        running = start_demo(*LADDER, log_dir=tmp_path_factory.mktemp("loris-origin"))
    yield running
    stop_all(running)


def _soft_nofile(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    return int(line.split()[3])


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return count


def _rss_kb(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1])


async def _probe_healthz(url: str, seconds: float = PROBE_SECONDS) -> list[float]:
    """/healthz on a new connection each time (as a probe does), ten times a second for `seconds`; a
    failure counts as infinitely slow."""
    took = []
    stop = time.monotonic() + seconds
    while (started := time.monotonic()) < stop:
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as response:
                    await response.read()
                    took.append(time.monotonic() - started if response.status == 200 else float("inf"))
        except (aiohttp.ClientError, asyncio.TimeoutError):
            took.append(float("inf"))
        await asyncio.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - started)))
    return took


async def _under_attack(target: LocalDemo, label: str) -> None:
    host, port = target.url.rsplit("//", 1)[1].rsplit(":", 1)
    pid = target.process.pid
    rss_before = _rss_kb(pid)
    quiet = percentiles(await _probe_healthz(target.url, 2.0))
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ATTACKER, host, port, str(IDLE_SOCKETS), str(TRICKLING_SOCKETS),
        stdout=asyncio.subprocess.PIPE)
    try:
        ready = (await asyncio.wait_for(attacker.stdout.readline(), 40)).split()
        assert ready[:1] == [b"ready"], "the attacker died before holding its sockets"
        held, refused = int(ready[1]), int(ready[2])
        sockets, rss = _sockets(pid), _rss_kb(pid)
        crowd = Swarm(target.url + "/hls/index.m3u8", 20, PlayerConfig(duration=12.0, rendition="bottom",
                                                                       request_timeout=5.0), spread=2.0)
        result, probes = await asyncio.gather(crowd.run(), _probe_healthz(target.url))
        sockets_after = _sockets(pid)
    finally:
        if attacker.returncode is None:
            attacker.kill()
        await attacker.wait()
    latency = percentiles([t for t in probes if t != float("inf")])
    failed_probes = sum(t == float("inf") for t in probes)
    per_socket = (rss - rss_before) / max(1, sockets)
    print(f"\n{label}: soft RLIMIT_NOFILE {_soft_nofile(pid)}; attacker held {held} sockets ({refused} refused); "
          f"server holds {sockets} sockets ({sockets_after} at the end), RSS +{(rss - rss_before) / 1024:.1f} MB "
          f"(~{per_socket:.1f} KB per socket); /healthz p50 {_ms(latency['p50'])} p99 {_ms(latency['p99'])} "
          f"max {_ms(latency['max'])}, {failed_probes} of {len(probes)} failed (before the attack: p50 "
          f"{_ms(quiet['p50'])} p99 {_ms(quiet['p99'])})")
    summary = figures(f"viewers of the {label} under attack", result)
    # The victims: every probe answered, fast; every viewer played without an error or a stall.
    assert failed_probes == 0 and latency["p99"] < 0.050, latency
    assert summary["errors"] == {} and summary["never_started"] == 0, summary["errors"]
    assert summary["stalls"] == 0
    # The attack was real: the server held every socket the whole time.
    assert held == IDLE_SOCKETS + TRICKLING_SOCKETS and sockets_after >= IDLE_SOCKETS + TRICKLING_SOCKETS


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


async def test_slowloris_on_the_origin_port_viewers_and_healthz_are_still_served(low_limit_demo):
    await _under_attack(low_limit_demo, "demo")


async def test_slowloris_on_an_edge_port_viewers_and_healthz_are_still_served(low_limit_demo, tmp_path):
    with open_files_soft_limit(COMMON_SOFT_LIMIT):
        edge = await asyncio.to_thread(start_edge, low_limit_demo.url, tmp_path)
    try:
        await _under_attack(edge, "edge")
    finally:
        stop_all(edge)


# ---- launchkit/web/limits.py ------------------------------------------------------------------

_RAISE = ("import resource, sys; from launchkit.web.limits import raise_open_file_limit; "
          "print(raise_open_file_limit(int(sys.argv[1])), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")


@pytest.mark.parametrize(("hard", "ceiling", "expected"), [
    (None, limits.MAX_OPEN_FILES, None),  # this machine's hard limit: soft goes up to it
    (4096, limits.MAX_OPEN_FILES, 4096),  # a low hard limit: as far as it goes, with a warning
    (None, 2048, 2048),  # the ceiling
])
def test_raise_open_file_limit_lifts_the_soft_limit_to_the_hard_limit(hard, ceiling, expected):
    machine_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = hard or machine_hard
    expected = expected or min(machine_hard, ceiling)

    def start_low() -> None:  # a service's usual start: soft 1024
        resource.setrlimit(resource.RLIMIT_NOFILE, (COMMON_SOFT_LIMIT, hard))

    done = subprocess.run([sys.executable, "-c", _RAISE, str(ceiling)], preexec_fn=start_low, capture_output=True,
                          text=True, timeout=30, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(expected), str(expected)]
    assert ("open files: at most" in done.stderr) == (expected < limits.MIN_OPEN_FILES)


def test_raise_open_file_limit_never_lowers_it():
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert limits.raise_open_file_limit(ceiling=256) == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


async def test_connections_that_never_complete_their_headers_are_closed_after_the_idle_timeout():
    """What IDLE_TIMEOUT relies on: aiohttp closes a connection without a complete request when its
    keep-alive timer expires, however many header bytes trickle in; a complete request is served."""
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    default = web.AppRunner(app)
    await default.setup()
    assert default.server().keepalive_timeout == 3630  # aiohttp's default: an hour per idle socket
    await default.cleanup()
    runner = web.AppRunner(app, keepalive_timeout=1.0)
    await runner.setup()
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    await web.SockSite(runner, listening).start()
    try:
        idle = await asyncio.open_connection("127.0.0.1", port)
        trickling = await asyncio.open_connection("127.0.0.1", port)
        trickling[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        closed_at: dict[str, float] = {}

        async def until_closed(name: str, reader: asyncio.StreamReader) -> None:
            await reader.read()  # b"" once the server closes
            closed_at[name] = time.monotonic() - started

        async def trickle() -> None:
            for _ in range(40):
                await asyncio.sleep(0.1)
                trickling[1].write(b"a")

        trickler = asyncio.create_task(trickle())
        await asyncio.wait_for(asyncio.gather(until_closed("idle", idle[0]), until_closed("trickling", trickling[0])),
                               5)
        trickler.cancel()
        assert all(0.9 <= at <= 3.0 for at in closed_at.values()), closed_at
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        for _, writer in (idle, trickling):
            writer.close()
        assert limits.IDLE_TIMEOUT > 60  # longer than proxies' 60 s upstream keep-alive (see limits.py)
    finally:
        await runner.cleanup()


def test_the_demo_and_the_edge_raise_their_own_open_file_limit(low_limit_demo, tmp_path):
    """Wired at startup (launchkit/serve/lifecycle.py, for both roles): started at 1024, they run with the hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = min(hard, limits.MAX_OPEN_FILES)
    with open_files_soft_limit(COMMON_SOFT_LIMIT):
        edge = start_edge(low_limit_demo.url, tmp_path)
    try:
        assert {"demo": _soft_nofile(low_limit_demo.process.pid), "edge": _soft_nofile(edge.process.pid)} == \
            {"demo": expected, "edge": expected}
    finally:
        stop_all(edge)

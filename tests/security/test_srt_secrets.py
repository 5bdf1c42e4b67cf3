"""The publish token stays out of `ps` (issue #12, item 9, SRT part) against a real `launchkit origin`.

Attack, as any local user would run it: read /proc/PID/cmdline (world-readable: what `ps` shows)
of the origin and every process it started. The old SRT listener was Debian's ffmpeg with
`-passphrase <publish token>` on its command line, and it inherited the origin's environment,
LAUNCHKIT_PUBLISH_TOKEN included. Now the listener child gets the passphrase on a pipe, and an
environment reduced to what Python needs. The origin's own environment is where the operator put
the token (/proc/PID/environ is readable by its owner and root only), so it is not searched.

Then the SRT ingest still does its job, with the Debian ffmpeg CLI as the caller: the right
passphrase goes on air, a wrong one is refused in the handshake and counted, and the log names
each caller by address without ever writing a passphrase, not even one a caller puts into its
stream id (MediaMTX-style `publish:live/<key>` stream ids do).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.target import LocalDemo, free_port, start_launchkit
from tests.support.client import fetch_metrics, wait_for
from tests.support.logs import assert_no_traceback

pytestmark = pytest.mark.security

PUBLISH, OPS = "srtK3yN0tInPs-7fQ2xW9mB4vR8tZ1c", "opsT0k3n-5gH8jL2nP6qS9uX3yA7cE1"
WRONG = "wrong-passphrase-4kT8pZ2mQ6vB1xN"
ENV = {"LAUNCHKIT_PUBLISH_TOKEN": PUBLISH, "LAUNCHKIT_OPS_TOKEN": OPS}
LADDER = ("--ladder", "180p:320x180:200", "--fps", "15", "--segment-duration", "1")
PUBLISHER = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:v", "libx264", "-preset", "veryfast",
             "-tune", "zerolatency", "-g", "15", "-c:a", "aac"]


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[LocalDemo]:
    srt_port = free_port(socket.SOCK_DGRAM)
    with start_launchkit("origin", *LADDER, "--srt-port", str(srt_port), "--rtmp-port", "off",
                         "--data-dir", str(tmp_path / "data"), env=ENV, log_dir=tmp_path) as running:
        running.srt_port = srt_port
        yield running
    assert_no_traceback(running.log())


def caller(port: int, passphrase: str, seconds: float, stream_id: str) -> list[str]:
    # ffmpeg 5.1 does not URL-decode the stream id: keep its ":" and "/" as they are.
    query = urllib.parse.urlencode({"mode": "caller", "pbkeylen": 16, "passphrase": passphrase, "streamid": stream_id},
                                   safe=":/")
    return [*PUBLISHER, "-t", str(seconds), "-f", "mpegts", f"srt://127.0.0.1:{port}?{query}"]


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from each process's parent in /proc/PID/stat."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def udp_listening(port: int) -> bool:
    with open("/proc/net/udp") as table:
        return any(int(line.split()[1].split(":")[1], 16) == port for line in list(table)[1:])




def ops_status(origin: LocalDemo) -> dict:
    request = urllib.request.Request(origin.url + "/api/ops/status", headers={"Authorization": f"Bearer {OPS}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def leaks(pid: int, names: tuple[str, ...]) -> list[str]:
    """Where the /proc/PID files among `names` hold the publish token: the argument or variable
    names only (a failure message must not print the machine's environment)."""
    found = []
    for name in names:
        try:
            entries = Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while we looked
        found += [f"/proc/{pid}/{name}: {entry.split('=')[0] if name == 'environ' else entries[:index + 1]}"
                  for index, entry in enumerate(entries) if PUBLISH in entry]
    return found


def test_the_publish_token_is_on_no_command_line_and_in_no_child_environment(origin):
    wait_for(lambda: udp_listening(origin.srt_port) and descendants(origin.process.pid), 10, "the SRT listener")
    children = descendants(origin.process.pid)
    found = leaks(origin.process.pid, ("cmdline",))
    for child in children:
        found += leaks(child, ("cmdline", "environ"))
    assert found == [], "\n".join(found)
    # The listener is among the processes searched, and it really is the SRT listener.
    commands = [Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0") for child in children]
    assert any(b"--port" in command and str(origin.srt_port).encode() in command for command in commands), commands
    print(f"\nsearched the origin (pid {origin.process.pid}) and {len(children)} descendant(s): {commands}")


def test_the_right_caller_goes_on_air_a_wrong_one_is_refused_and_no_passphrase_is_logged(origin):
    wait_for(lambda: udp_listening(origin.srt_port), 10, "the SRT listener")
    refused = subprocess.run(caller(origin.srt_port, WRONG, 3, "guess"), capture_output=True, timeout=30)
    assert refused.returncode != 0
    status = ops_status(origin)
    assert status["on_air"] == "slate" and status["inputs"] == []
    counted = 'launchkit_ingest_rejected_total{protocol="srt",reason="bad_key"} 1.0'
    wait_for(lambda: counted in fetch_metrics(origin.url)[2].decode(), 2, "the refusal in /metrics")

    # A publisher that copied a MediaMTX-style URL puts the key into its stream id as well.
    publisher = subprocess.Popen(caller(origin.srt_port, PUBLISH, 20, f"publish:live/{PUBLISH}"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        on_air = wait_for(lambda: ops_status(origin)["on_air"] == "primary", 15, "the SRT publisher on air")
        (live,) = ops_status(origin)["inputs"]
        assert live["protocol"] == "srt"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", live["remote"]), live  # the caller, not the listener's port
    finally:
        publisher.kill()
        publisher.wait()
    log = origin.log()
    refusal = re.search(r"refused SRT publisher from 127\.0\.0\.1:\d+, stream id 'guess' \(bad_key\): "
                        r"Incorrect passphrase", log)
    connected = re.search(r"SRT caller (127\.0\.0\.1:\d+) connected \(stream id 'publish:live/\*\*\*'\)", log)
    assert refusal and connected, log
    assert f"primary publisher connected over srt from {connected[1]}" in log
    assert PUBLISH not in log and WRONG not in log
    print(f"\non air {on_air:.2f} s after the caller started; log lines:\n  {refusal[0]}\n  {connected[0]}")

"""TURN scenarios, run in a private network namespace by `run_in_private_network(..., module=MODULE)`
(see scenario.py): a real coturn (tests/stream/webrtc/coturn.py), a real `launchkit demo` and
`launchkit edge` with `--turn-urls` and LAUNCHKIT_TURN_SECRET, and aiortc viewers that take their ICE
servers from the `Link` headers of OPTIONS /whep and may only relay: with the relay transport policy
(RFC 9429 §3.5.3, aioice's TransportPolicy.RELAY) a viewer binds no UDP socket of its own and its offer
carries relay candidates only, so every packet goes through coturn over TCP (or TLS): what a
viewer gets behind a firewall that drops UDP. Frames are counted, not decoded (loadtests/whep.py).
`rendered-coturn` runs the coturn pod of the rendered manifests (k8s/base/coturn.yaml) the same way.

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m tests.stream.webrtc.turn_scenario \\
        turn-relay 6'   # as root
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aioice import turn as aioice_turn
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection, RTCSessionDescription

from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.turn import SECRET_ENV, TurnCredentials, ice_servers
from loadtests.target import LocalDemo, start_demo, start_edge, stop_all
from loadtests.whep import WhepResult, _count, install_counting_decoders, watch
from tests.stream.webrtc.coturn import Coturn, self_signed_certificate, start_coturn, wait_listening
from tests.stream.webrtc.scenario import main
from tests.support.client import until_webrtc_available

MODULE = "tests.stream.webrtc.turn_scenario"
ADDRESS = "127.0.0.1"
FPS = 15
ORIGIN = ("--ladder", "360p:640x360:500", "--fps", str(FPS), "--webrtc", "320x180:300", "--max-webrtc-viewers", "10")
CONNECT_TIMEOUT = 10.0
LOG_TIMEOUT = 5.0


def _relay_only(server: RTCIceServer) -> RTCConfiguration:
    return RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def _candidate_types(sdp: str) -> list[str]:
    return re.findall(r"^a=candidate:.* typ (\w+)", sdp, re.M)


async def _ice_options(session: aiohttp.ClientSession, url: str, **headers: str) -> dict[str, Any]:
    async with session.options(url + "/whep", headers=headers) as response:
        return {"status": response.status, "links": response.headers.getall("Link", []),
                "expose": response.headers.get("Access-Control-Expose-Headers", ""),
                "allow_origin": response.headers.get("Access-Control-Allow-Origin"),
                "cache": response.headers.get("Cache-Control")}


async def _watch_relayed(session: aiohttp.ClientSession, url: str, transport: str, seconds: float) -> dict[str, Any]:
    """One viewer of `url`: ICE servers from OPTIONS /whep, the one whose URL starts with
    `transport` (`turn:` or `turns:`), relay only; frames counted for `seconds`."""
    started = time.monotonic()
    options = await _ice_options(session, url, Origin="https://another-edge.example")
    offered = [s for s in ice_servers(options["links"]) if str(s.urls).startswith(transport)]
    assert offered, f"OPTIONS /whep offered no {transport} ICE server: {options}"
    server = offered[0]
    pc = RTCPeerConnection(_relay_only(server))
    result = WhepResult()
    location, offer, post_links = None, "", []
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        tracks = []
        pc.on("track", tracks.append)
        connected = asyncio.Event()
        pc.on("connectionstatechange", lambda: pc.connectionState == "connected" and connected.set())
        await pc.setLocalDescription(await pc.createOffer())  # gathers: the TURN allocation
        gathered = time.monotonic() - started
        offer = pc.localDescription.sdp
        async with session.post(url + "/whep", data=offer, headers={"Content-Type": "application/sdp"}) as response:
            result.status, answer = response.status, await response.text()
            location, post_links = response.headers.get("Location"), response.headers.getall("Link", [])
        assert result.status == 201, (result.status, answer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(connected.wait(), CONNECT_TIMEOUT)
        result.connected_after = time.monotonic() - started
        readers = [asyncio.create_task(_count(track, result, started)) for track in tracks]
        await asyncio.sleep(seconds)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    finally:
        if location:
            async with session.delete(url + location) as response:
                await response.read()
        await pc.close()
    return {"options": options, "server": str(server.urls), "username": server.username,
            "offer_candidates": _candidate_types(offer), "gathered_after": gathered,
            "post_usernames": [s.username for s in ice_servers(post_links)],
            **result.as_dict(), "expected": result.expected_frames(FPS)}


async def _gather_with(server: RTCIceServer) -> list[str]:
    """The candidate types a relay-only viewer with `server` can offer (none when coturn refuses it)."""
    pc = RTCPeerConnection(_relay_only(server))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return _candidate_types(pc.localDescription.sdp)
    finally:
        await pc.close()


async def _refused_credentials(urls: tuple[str, ...], secret: str, good: TurnCredentials) -> dict[str, Any]:
    """A tampered password, an expired credential and one signed with another secret."""
    url = urls[0]
    fresh = good.issue()
    expired = TurnCredentials(urls, secret, 60, clock=lambda: time.time() - 3600).issue()
    foreign = TurnCredentials(urls, secrets.token_hex(24), 3600).issue()
    cases = {"tampered": (fresh.username, fresh.password[::-1]), "expired": (expired.username, expired.password),
             "other secret": (foreign.username, foreign.password)}
    found = {}
    for name, (username, password) in cases.items():
        candidates = await _gather_with(RTCIceServer(url, username, password))
        found[name] = {"username": username, "candidates": candidates}
    control = good.issue()  # the same server and policy, a good credential: the checks above can fail
    found["control"] = {"username": control.username,
                        "candidates": await _gather_with(RTCIceServer(url, control.username, control.password))}
    return found


class _Discard(asyncio.DatagramProtocol):
    """What arrives on a test relay: nothing is expected."""


async def _expiry(coturn: Coturn, secret: str) -> dict[str, Any]:
    """What an expiry bounds: a relay allocated before it goes on working after it (a channel bound
    to a new peer, a refresh), while the same credential can no longer allocate a new relay."""
    credential = TurnCredentials(coturn.urls()[:1], secret, 2).issue()
    server = (coturn.address, coturn.port)
    relay, _ = await aioice_turn.create_turn_endpoint(_Discard, server, credential.username, credential.password,
                                                      transport="tcp")
    await asyncio.sleep(max(0.0, credential.expires + 1.5 - time.time()))
    relay.sendto(b"after expiry", (coturn.address, 9))  # binds a channel: an authenticated request
    await asyncio.sleep(0.5)
    try:
        again, _ = await aioice_turn.create_turn_endpoint(_Discard, server, credential.username, credential.password,
                                                          transport="tcp")
        again.close()
        new_allocation = "allocated"
    except Exception as error:  # aioice raises TransactionFailed (401) here
        new_allocation = f"{type(error).__name__}: {error}"
    relay.close()  # a refresh with lifetime 0: authenticated too
    lines = await _coturn_lines(coturn, credential.username, "REFRESH processed, success")
    return {"username": credential.username, "new_allocation": new_allocation, "coturn": lines}


async def _coturn_lines(coturn: Coturn, username: str, needle: str) -> list[str]:
    """coturn's log lines about `username` once `needle` shows up and each of its sessions (one
    allocation per media section a viewer gathers for) has ended: coturn logs usage at the end."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        lines = [line for line in coturn.log().splitlines() if f"<{username}>" in line]
        started, ended = (sum(marker in line for line in lines) for marker in (": new,", "peer usage:"))
        if (any(needle in line for line in lines) and ended >= started) or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.1)


async def turn_relay(seconds: str = "6") -> dict[str, Any]:
    """A viewer of the demo over TURN/TCP and one of an edge over TURN/TLS, relay only; then wrong,
    expired and foreign credentials, refused by coturn."""
    install_counting_decoders()
    duration = float(seconds)
    directory = Path(tempfile.mkdtemp(prefix="launchkit-turn-"))
    secret = secrets.token_hex(24)
    certificate = self_signed_certificate(directory, ADDRESS)
    os.environ["SSL_CERT_FILE"] = str(certificate[0])  # this viewer trusts coturn's certificate, nothing else
    coturn = start_coturn(ADDRESS, secret, directory, tls=certificate)
    urls = coturn.urls()
    env = {"LAUNCHKIT_ICE_ADDRESSES": ADDRESS, "LAUNCHKIT_TURN_SECRET": secret}
    os.environ.update(env)  # the edge inherits it
    origin: LocalDemo | None = None
    edge: LocalDemo | None = None
    try:
        origin = start_demo(*ORIGIN, "--turn-urls", ",".join(urls), env=env, log_dir=directory, ready_timeout=40)
        edge = await asyncio.to_thread(start_edge, origin.url, directory, max_webrtc_viewers=5, turn_urls=urls)
        async with aiohttp.ClientSession() as session:
            await until_webrtc_available(session, origin.url, 20.0)
            await until_webrtc_available(session, edge.url, 20.0)
            preflight = await _ice_options(session, origin.url, Origin="https://another-edge.example",
                                           **{"Access-Control-Request-Method": "POST"})
            # For comparison: a viewer with a host candidate of its own, no TURN.
            direct = await watch(session, origin.url + "/whep", 2, IceSettings(addresses=(ADDRESS,)))
            tcp = await _watch_relayed(session, origin.url, "turn:", duration)
            tls = await _watch_relayed(session, edge.url, "turns:", duration)
        refused = await _refused_credentials(urls, secret, TurnCredentials(urls, secret, 600))
        expiry = await _expiry(coturn, secret)
        for viewer in (tcp, tls):
            viewer["coturn"] = await _coturn_lines(coturn, viewer["username"], "ALLOCATE processed, success")
        for case in refused.values():
            case["coturn"] = await _coturn_lines(coturn, case["username"], "processed")
    finally:
        stop_all(edge, origin)
        coturn.stop()
    return {"urls": urls, "preflight": preflight, "direct": direct.as_dict(), "tcp": tcp, "tls": tls,
            "refused": refused, "expiry": expiry, "fps": FPS}


async def rendered_coturn(spec_path: str) -> dict[str, Any]:
    """The coturn pod of the rendered manifests, run as its container would run it: its command, its
    turnserver.conf, the Secret's key in its environment and the pod address (127.0.0.1 here), its
    mounts under a temporary directory. Credentials the rendered edge would sign (its turn-urls,
    pointed here as the Service maps them) must allocate over every URL; a foreign one must not."""
    spec = json.loads(Path(spec_path).read_text())
    directory = Path(tempfile.mkdtemp(prefix="launchkit-coturn-pod-"))
    mounts = {path: directory / f"mount{index}" for index, path in enumerate(sorted(spec["mounts"], key=len,
                                                                                       reverse=True))}

    def local(text: str) -> str:
        for path, where in mounts.items():  # longest first: /etc/coturn/tls before /etc/coturn
            text = text.replace(path, str(where))
        return text

    for path, kind in spec["mounts"].items():
        if kind == "config":
            mounts[path].write_text(local(spec["config"]))
        else:
            mounts[path].mkdir()
    certificate, key = self_signed_certificate(directory, ADDRESS)
    tls = mounts[spec["tls_mount"]]
    certificate.rename(tls / "tls.crt")
    key.rename(tls / "tls.key")
    os.environ["SSL_CERT_FILE"] = str(tls / "tls.crt")
    secret = secrets.token_hex(24)
    log_path = directory / "coturn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(["sh", "-c", local(spec["script"])], stdout=log, stderr=subprocess.STDOUT,
                                   env={"PATH": os.environ["PATH"], "POD_IP": ADDRESS, SECRET_ENV: secret})
    try:
        problem = await asyncio.to_thread(wait_listening, process, log_path, ADDRESS, spec["listening"])
        if problem is not None:
            raise AssertionError(problem)
        turn = TurnCredentials.from_env(spec["turn_urls"], spec["ttl"], {SECRET_ENV: secret})
        assert turn is not None
        allocated = {str(server.urls): await _gather_with(server) for server in ice_servers([turn.link_header()])}
        foreign = TurnCredentials(spec["turn_urls"], secrets.token_hex(24), spec["ttl"]).issue()
        refused = await _gather_with(RTCIceServer(spec["turn_urls"][0], foreign.username, foreign.password))
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        written = next(where for path, where in mounts.items() if spec["mounts"][path] == "run") / "turnserver.conf"
        mode = written.stat().st_mode & 0o777
    finally:
        process.terminate()
        process.wait(5)
    log_text = log_path.read_text(errors="replace")
    return {"allocated": allocated, "refused": refused, "command_line": command_line,
            "secret_in_command_line": secret in command_line, "config_mode": oct(mode),
            "foreign_refused_by_coturn": f"Cannot find credentials of user <{foreign.username}>" in log_text,
            "errors": [line for line in log_text.splitlines()  # the foreign credential's refusal aside
                       if re.search(r"ERROR|Bad configuration|Unknown", line) and foreign.username not in line]}


SCENARIOS = {"turn-relay": turn_relay, "rendered-coturn": rendered_coturn}

if __name__ == "__main__":
    main(SCENARIOS)

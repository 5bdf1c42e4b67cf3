"""Attacks and faults on QoE beacons (`POST /api/qoe`, issue #12 items 4, 6 and 10).

The beacons are served the way launchkit/origin/app.py and launchkit/edge/app.py serve them: a real aiohttp
server on 127.0.0.1 with the TrustedProxies middleware (here trusting 127.0.0.2, the "ingress")
and the kit's `observe` middleware. Requests are sent byte for byte where the bytes matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from launchkit.qoe import QoeBeacons
from launchkit.web import middleware
from launchkit.web.clients import TrustedProxies, parse_networks
from launchkit.web.ratelimit import Limit
from tests.support.logs import assert_no_traceback

pytestmark = pytest.mark.security


BEACON = {"protocol": "llhls", "startup": 0.9, "played": 12.5, "stalls": 1, "rebuffer": 0.4,
          "errors": {"network": 0, "media": 0}}
LIMIT = Limit(per_minute=6, burst=3)  # small, so that a handful of beacons shows who shares a bucket


@contextlib.asynccontextmanager
async def beacons(trusted: str = "127.0.0.2"):
    app = web.Application(middlewares=[TrustedProxies(parse_networks(trusted)).middleware, middleware.observe])
    app.add_routes(QoeBeacons(LIMIT).routes())
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server.port
    finally:
        await server.close()


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("launchkit_qoe_beacons_total", {"result": result}) or 0.0


def played() -> float:
    return REGISTRY.get_sample_value("launchkit_qoe_playing_seconds_total", {"protocol": "llhls"}) or 0.0


async def send_in_pieces(port: int, pieces: list[bytes], pause: float = 0.1) -> tuple[int, bytes]:
    """Each piece is its own TCP write, `pause` s after the previous one (TCP_NODELAY: own segments)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_a_beacon_split_across_tcp_writes_is_read_whole(caplog):
    """A single read() returned the first piece: the beacon was refused as malformed (400)."""
    body = json.dumps(BEACON).encode()
    half = len(body) // 2
    head = "POST /api/qoe HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\nConnection: close\r\n"
    async with beacons() as port:
        before, accepted = played(), counted("accepted")
        chunked = await send_in_pieces(port, [
            (head + "Transfer-Encoding: chunked\r\n\r\n").encode(), chunk(body[:half]), chunk(body[half:]),
            b"0\r\n\r\n"])
        sized = await send_in_pieces(port, [
            (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:half], body[half:]])
    print(f"\nbeacon of {len(body)} bytes in pieces: chunked → {chunked[0]}, with Content-Length → {sized[0]}")
    assert chunked[0] == 204 and sized[0] == 204, (chunked, sized)
    assert counted("accepted") - accepted == 2
    assert played() - before == 2 * BEACON["played"]
    assert_no_traceback(caplog.text)


@contextlib.asynccontextmanager
async def client_from(address: str):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def send(session: aiohttp.ClientSession, port: int, count: int, forwarded_for: str | None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    statuses = []
    for _ in range(count):
        async with session.post(f"http://127.0.0.1:{port}/api/qoe", json=BEACON, headers=headers) as response:
            statuses.append(response.status)
    return statuses


async def test_qoe_limits_are_per_viewer_behind_a_trusted_proxy_and_per_peer_otherwise():
    async with beacons("127.0.0.2") as port, client_from("127.0.0.2") as proxy, \
            client_from("127.0.0.3") as attacker, client_from("127.0.0.4") as untrusted_proxy:
        # As it was behind the ingress: viewers behind an untrusted proxy share one limit.
        shared = await send(untrusted_proxy, port, 3, "203.0.113.1") + await send(untrusted_proxy, port, 1, "203.0.113.2")
        first = await send(proxy, port, 4, "203.0.113.10")
        second = await send(proxy, port, 3, "203.0.113.11")
        forging = [(await send(attacker, port, 1, f"192.0.2.{n}"))[0] for n in range(5)]
        print(f"\nuntrusted proxy, two viewers: {shared}; trusted proxy: A {first}, B {second}; "
              f"forged X-Forwarded-For from an untrusted peer: {forging}")
        assert shared == [204, 204, 204, 429]
        assert first == [204, 204, 204, 429] and second == [204, 204, 204]
        assert forging == [204, 204, 204, 429, 429]
    async with beacons("") as port, client_from("127.0.0.1") as attacker:  # no --trusted-proxies at all
        assert [(await send(attacker, port, 1, f"192.0.2.{n}"))[0] for n in range(4)] == [204, 204, 204, 429]


async def test_hostile_beacons_get_a_clear_4xx_counted_and_no_traceback(caplog):
    caplog.set_level(logging.WARNING)
    cases = {
        "nested": (b"[" * 1000, "text/plain", 400, "malformed"),
        "not UTF-8": (b'{"protocol": "llhls", "played": 1, "x": "\xff"}', "text/plain", 400, "malformed"),
        "UTF-16": (json.dumps(BEACON).encode("utf-16"), "text/plain", 400, "malformed"),
        "NaN": (b'{"protocol": "llhls", "played": NaN}', "text/plain", 400, "malformed"),
        "huge": (b'{"protocol": "llhls", "played": 1e999}', "text/plain", 400, "malformed"),
        "form": (json.dumps(BEACON).encode(), "application/x-www-form-urlencoded", 415, "unsupported"),
    }
    answers = {}
    async with beacons("127.0.0.0/8") as port, aiohttp.ClientSession() as session:
        for n, (name, (body, content_type, _, _)) in enumerate(cases.items()):
            before = {reason: counted(reason) for reason in ("malformed", "unsupported")}
            async with session.post(f"http://127.0.0.1:{port}/api/qoe", data=body, headers={
                    "Content-Type": content_type, "X-Forwarded-For": f"198.51.100.{n}"}) as response:
                answers[name] = (response.status, (await response.json())["error"],
                                 {r: counted(r) - before[r] for r in before})

        async def oversized():  # no Content-Length: refused once past the limit, not read whole
            for _ in range(64):
                yield b" " * 1024

        async with session.post(f"http://127.0.0.1:{port}/api/qoe", data=oversized(), headers={
                "Content-Type": "text/plain", "X-Forwarded-For": "198.51.100.200"}) as response:
            answers["2 KB+ chunked"] = (response.status, (await response.json())["error"], {})
        assert (await send(session, port, 1, "198.51.100.201")) == [204]  # and others are served
    print("\n" + "\n".join(f"{name}: {status} {message}" for name, (status, message, _) in answers.items()))
    for name, (_, _, status, reason) in cases.items():
        assert answers[name][0] == status and answers[name][2][reason] == 1, (name, answers[name])
    assert answers["2 KB+ chunked"][0] == 413
    assert_no_traceback(caplog.text)

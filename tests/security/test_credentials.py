"""Items 8-11 of the hardening issue that concern credentials, against real processes:
- the ops session expires, is revoked by signing out (and stays revoked across a restart), is
  Secure behind a trusted TLS-terminating proxy and only then;
- secrets stay off command lines and out of logs (edge workers, tokens printed back);
- unauthenticated garbage (`Bearer \\xff`, a `\\xff` cookie) gets a 4xx, never a 500 or a traceback;
- failed credentials are answered late and repeated ones locked out, for that client only;
- weak tokens are refused at startup; `/metrics` needs the metrics token.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from loadtests.target import launchkit_command, start_launchkit, stop_all
from tests.support.client import fetch, fetch_metrics
from tests.support.environment import METRICS_AUTH, METRICS_TOKEN
from tests.support.logs import assert_no_traceback

pytestmark = pytest.mark.security

OPS_TOKEN = "credentials-test-ops-token-8e2d4c"
PUBLISH_TOKEN = "credentials-test-publish-token-3b7f1a"
ORIGIN = ("--source", "testcard", "--rtmp-port", "off", "--srt-port", "off", "--ladder", "180p:320x180:300",
          "--fps", "15", "--segment-duration", "1")


def _origin(tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    return start_launchkit("origin", *ORIGIN, "--data-dir", str(tmp_path / "data"), *extra, log_dir=tmp_path,
                           env={"LAUNCHKIT_OPS_TOKEN": OPS_TOKEN, "LAUNCHKIT_PUBLISH_TOKEN": PUBLISH_TOKEN,
                                **(env or {})})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _request(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
             source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request (no redirects followed), optionally from another loopback address."""
    if source is not None:
        return asyncio.run(_raw(url, data, headers or {}, source))
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def _raw(url: str, data: bytes | None, headers: dict[str, str], source: str) -> tuple[int, dict, bytes]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as session:
        method = "POST" if data is not None else "GET"
        async with session.request(method, url, data=data, headers=headers, allow_redirects=False) as response:
            return response.status, dict(response.headers), await response.read()


async def _at_once(requests: list[tuple[str, bytes | None, dict[str, str]]], source: str) -> list[int]:
    answers = await asyncio.gather(*(_raw(url, data, headers, source) for url, data, headers in requests))
    return [status for status, _, _ in answers]


async def _raw_bytes(port: int, request: bytes) -> tuple[int, bytes]:
    """Exactly these bytes on the wire (clients refuse to send non-ASCII headers; attackers do not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(response.split(b" ", 2)[1]), response


def _login(url: str, token: str = OPS_TOKEN, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    form = urllib.parse.urlencode({"token": token}).encode()
    return _request(url + "/ops/login", data=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})


def _session_cookie(headers: dict[str, str]) -> str:
    return re.search(r"launchkit_ops=([^;]+)", headers["Set-Cookie"]).group(1)


def _ops_status(url: str, cookie: str) -> int:
    return _request(url + "/api/ops/status", headers={"Cookie": f"launchkit_ops={cookie}"})[0]


def test_ops_sessions_expire_are_revoked_by_signing_out_and_stay_revoked_across_a_restart(tmp_path):
    origin = _origin(tmp_path)
    try:
        status, headers, _ = _login(origin.url)
        assert status == 303
        cookie_line = headers["Set-Cookie"]
        assert "HttpOnly" in cookie_line and "SameSite=Strict" in cookie_line and "Secure" not in cookie_line
        max_age = int(re.search(r"Max-Age=(\d+)", cookie_line).group(1))
        assert 0 < max_age <= 12 * 3600, cookie_line  # the old cookie never expired
        kept, dropped = _session_cookie(headers), _session_cookie(_login(origin.url)[1])
        assert kept != dropped and OPS_TOKEN not in cookie_line
        assert _ops_status(origin.url, kept) == _ops_status(origin.url, dropped) == 200

        signed_out = _request(origin.url + "/ops/logout", data=b"",
                              headers={"Cookie": f"launchkit_ops={dropped}"})
        assert signed_out[0] == 303
        assert _ops_status(origin.url, dropped) == 401  # the old cookie stayed valid after logout
        assert _ops_status(origin.url, kept) == 200
    finally:
        stop_all(origin)
    restarted = _origin(tmp_path)  # same data dir
    try:
        assert _ops_status(restarted.url, kept) == 200  # a restart signs nobody out...
        assert _ops_status(restarted.url, dropped) == 401  # ...and brings no signed-out cookie back
        assert_no_traceback(restarted.log())
    finally:
        stop_all(restarted)
    rotated = _origin(tmp_path, env={"LAUNCHKIT_OPS_TOKEN": "a-rotated-ops-token-7c9e1f2a"})
    try:
        assert _ops_status(rotated.url, kept) == 401  # a new ops token signs everyone out
    finally:
        stop_all(rotated)


def test_the_session_cookie_is_secure_behind_a_trusted_tls_proxy_only(tmp_path):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    untrusting = _origin(tmp_path)
    try:  # anyone can send X-Forwarded-Proto: it is not believed from an untrusted peer
        assert "Secure" not in _login(untrusting.url, headers=forwarded)[1]["Set-Cookie"]
    finally:
        stop_all(untrusting)
    trusting = _origin(tmp_path, "--trusted-proxies", "127.0.0.1/32")
    try:
        assert "Secure" in _login(trusting.url, headers=forwarded)[1]["Set-Cookie"]
        assert "Secure" not in _login(trusting.url, headers={"X-Forwarded-Proto": "http"})[1]["Set-Cookie"]
    finally:
        stop_all(trusting)


def test_failed_credentials_are_slowed_then_locked_out_for_that_client_only(tmp_path):
    origin = _origin(tmp_path)
    try:
        wrong = {"Authorization": "Bearer not-the-ops-token-0123456789"}
        started = time.monotonic()
        assert _request(origin.url + "/api/ops/status", headers=wrong, source="127.0.0.9")[0] == 401
        assert time.monotonic() - started >= 0.9  # answered after the failure delay
        # Failures add up across credentials (ops API and page, metrics, WHIP) for one client; a guesser
        # sends them at once, so the delay alone does not slow it down: the lockout does.
        statuses = asyncio.run(_at_once(
            [(origin.url + path, None, wrong) for path in ("/metrics", "/api/ops/status", "/ops/publish", "/metrics")]
            + [(origin.url + "/whip", b"v=0", {**wrong, "Content-Type": "application/sdp"})] * 5, "127.0.0.9"))
        assert statuses == [401] * 9
        started = time.monotonic()
        status, headers, body = _request(origin.url + "/api/ops/status", source="127.0.0.9",
                                         headers={"Authorization": f"Bearer {OPS_TOKEN}"})
        assert status == 429 and int(headers["Retry-After"]) > 0 and b"retry in" in body
        assert time.monotonic() - started < 0.5  # a locked-out client is not even held
        # Another client (an operator elsewhere) is not affected.
        assert _request(origin.url + "/api/ops/status", headers={"Authorization": f"Bearer {OPS_TOKEN}"},
                        source="127.0.0.10")[0] == 200
        metrics = fetch_metrics(origin.url)[2].decode()
        assert 'launchkit_auth_failures_total{credential="ops"} 3.0' in metrics
        assert 'launchkit_auth_failures_total{credential="publish"} 5.0' in metrics
        assert 'launchkit_auth_locked_out_total{credential="ops"} 1.0' in metrics
        assert_no_traceback(origin.log())
    finally:
        stop_all(origin)


def test_non_ascii_credentials_get_a_4xx_never_a_traceback(tmp_path):
    origin = _origin(tmp_path)
    try:
        port = int(origin.url.rsplit(":", 1)[1])
        requests = [
            b"GET /api/ops/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\xa9t\xc3\xa9\r\nConnection: close\r\n\r\n",
            b"GET /ops HTTP/1.1\r\nHost: x\r\nCookie: launchkit_ops=\xff\r\nConnection: close\r\n\r\n",
            b"GET /api/ops/status HTTP/1.1\r\nHost: x\r\nCookie: launchkit_ops=\xff\xff\r\nConnection: close\r\n\r\n",
            b"POST /whip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: 3\r\nConnection: close\r\n\r\nv=0",
            b"POST /ops/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 9\r\nConnection: close\r\n\r\ntoken=%FF",
        ]
        statuses = asyncio.run(_all(port, requests))
        print(f"\nnon-ASCII credentials answered {statuses}")
        assert statuses == [401, 401, 200, 401, 401, 401]  # /ops shows the login page
        assert_no_traceback(origin.log())
    finally:
        stop_all(origin)


async def _all(port: int, requests: list[bytes]) -> list[int]:
    return [(await _raw_bytes(port, request))[0] for request in requests]


def test_metrics_need_the_metrics_token(tmp_path):
    origin = _origin(tmp_path)
    try:
        status, headers, body = fetch(origin.url + "/metrics")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and b"metrics token" in body
        assert fetch(origin.url + "/metrics", headers=METRICS_AUTH)[0] == 200
        assert fetch(origin.url + "/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})[0] == 200
    finally:
        stop_all(origin)


@pytest.mark.parametrize("variable, value", [
    ("LAUNCHKIT_OPS_TOKEN", "aaaaaaaaaaaaaaaa"),
    ("LAUNCHKIT_PUBLISH_TOKEN", "abababababababababab"),
    ("LAUNCHKIT_METRICS_TOKEN", "password12345678"),
    ("LAUNCHKIT_EDGE_TOKEN", "short"),
])
def test_weak_tokens_are_refused_at_startup(variable, value):
    env = {**os.environ, "LAUNCHKIT_OPS_TOKEN": OPS_TOKEN, variable: value}
    done = subprocess.run(launchkit_command("origin", "--port", "0"), env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and variable in done.stderr, done.stderr
    assert value not in done.stderr  # the refused value is not echoed either


def test_only_generated_tokens_are_printed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LAUNCHKIT_PUBLISH_TOKEN", "LAUNCHKIT_METRICS_TOKEN")}
    env["LAUNCHKIT_OPS_TOKEN"] = OPS_TOKEN
    with open(tmp_path / "origin.log", "wb") as log:
        process = subprocess.Popen(launchkit_command("origin", *ORIGIN, "--port", "0", "--data-dir",
                                                     str(tmp_path / "data")), stdout=log, stderr=subprocess.STDOUT,
                                   env=env)
    try:
        deadline = time.monotonic() + 20
        while "publish token" not in (text := (tmp_path / "origin.log").read_text()):
            assert time.monotonic() < deadline and process.poll() is None, text
            time.sleep(0.2)
        assert OPS_TOKEN not in text  # set in the environment: never written to a log
        assert re.search(r"publish token\s+\S{32}", text)  # generated: printed once
        assert "metrics token" not in text  # derived from the ops token set in the environment
    finally:
        process.terminate()
        process.wait(10)


def test_edge_workers_get_their_settings_off_the_command_line(tmp_path, redis_server):
    """Secrets are given in the environment (LAUNCHKIT_REDIS with a password); the supervisor hands
    them to its workers on a pipe, never on their command lines (which every user can read)."""
    secret_url = f"redis://:a-redis-password-5d2a@127.0.0.1:{redis_server.port}/0"
    edge = start_launchkit("edge", "--origin", "http://127.0.0.1:9", "--workers", "2", log_dir=tmp_path,
                           env={"LAUNCHKIT_REDIS": secret_url}, wait_for_media=False)
    try:
        children = subprocess.run(["pgrep", "-P", str(edge.process.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2
        for pid in [edge.process.pid, *map(int, children)]:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert b"a-redis-password" not in command_line and METRICS_TOKEN.encode() not in command_line
    finally:
        stop_all(edge)

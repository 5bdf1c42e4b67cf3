"""Item 7 of the hardening issue (first half): one ticket, one viewer. A viewer's admitted ticket,
copied into another client's `?t=` (or JSON body), admits nobody else at capacity: that client is
a new arrival and waits in line (429 with a place). A real `launchkit demo` with one place."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from launchkit.admission.tickets import new_client_key
from loadtests.target import start_demo, stop_all
from tests.support.client import fetch, fetch_metrics
from tests.support.logs import assert_no_traceback

pytestmark = pytest.mark.security


def _call(url: str, *, key: str | None = None, body: dict | None = None) -> tuple[int, dict, bytes]:
    headers = {"Launchkit-Key": key} if key else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_copied_ticket_admits_nobody_else_at_capacity(tmp_path):
    demo = start_demo("--max-viewers", "1", "--ladder", "180p:320x180:300", "--fps", "15", "--segment-duration", "1",
                      log_dir=tmp_path)
    try:
        viewer = new_client_key()
        status, _, body = _call(demo.url + "/api/admission", key=viewer, body={})
        ticket = json.loads(body)["ticket"]
        assert status == 200 and ticket.startswith("a.")
        media = f"{demo.url}/hls/180p/index.m3u8?t={ticket}"
        assert _call(media, key=viewer)[0] == 200

        # Three others use the same ticket: no key, another key, and the ticket in the API's body.
        for attempt in (lambda: _call(media), lambda: _call(media, key=new_client_key()),
                        lambda: _call(demo.url + "/api/admission", key=new_client_key(), body={"ticket": ticket})):
            status, headers, body = attempt()
            answer = json.loads(body)
            assert status == 429 and answer["admitted"] is False and answer["position"] >= 1, answer
            assert int(headers["Retry-After"]) > 0
        assert _call(media, key=viewer)[0] == 200  # the viewer who owns it plays on

        status_json = json.loads(fetch(demo.url + "/api/status")[2])
        assert status_json["capacity"]["viewers"] == 1
        metrics = fetch_metrics(demo.url)[2].decode()
        copied = re.search(r'launchkit_admission_invalid_tickets_total\{reason="copied"\} (\S+)', metrics)
        assert copied and float(copied.group(1)) >= 3
        assert_no_traceback(demo.log())
    finally:
        stop_all(demo)


def test_a_client_without_script_is_bound_by_cookie(tmp_path):
    """Native HLS players send no header: the key comes as an HttpOnly cookie with the ticket."""
    demo = start_demo("--max-viewers", "2", "--ladder", "180p:320x180:300", "--fps", "15", "--segment-duration", "1",
                      log_dir=tmp_path)
    try:
        status, headers, _ = _call(demo.url + "/hls/180p/index.m3u8")
        cookies = headers.get("Set-Cookie", "")
        assert status == 200 and "lk_key=" in cookies and "HttpOnly" in cookies, headers
        key = re.search(r"lk_key=([A-Za-z0-9_-]+)", cookies).group(1)
        ticket = headers["Launchkit-Ticket"]
        request = urllib.request.Request(f"{demo.url}/hls/180p/index.m3u8", headers={
            "Cookie": f"lk_key={key}; lk_ticket={ticket}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200 and "Launchkit-Ticket" not in response.headers  # the same viewer
        assert json.loads(fetch(demo.url + "/api/status")[2])["capacity"]["viewers"] == 1
    finally:
        stop_all(demo)

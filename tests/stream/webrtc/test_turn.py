"""TURN for UDP-blocked viewers (issue #13, item 2): the credentials Launchkit signs, the Link headers
WHEP hands them out with, and a real coturn relaying real WebRTC to viewers that may only relay
(turn_scenario.py, in a private network namespace)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from launchkit.option_parsers import ConfigError
from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.turn import SECRET_ENV, TurnCredentials, ice_servers, turn_password
from launchkit.webrtc.viewing import WebRtcViewing
from stream.bus import PacketBus
from tests.stream.webrtc.scenario import run_in_private_network
from tests.stream.webrtc.turn_scenario import MODULE
from tests.support.k8s import by_kind_and_name, render

SECRET = "b7f3c1e9a2d84f6a9c0e5b1d7a3f8e2c4b6d9a1f"
URLS = ("turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:5349?transport=tcp")


# ---- credentials ------------------------------------------------------------------------------

def test_the_password_is_base64_hmac_sha1_of_the_username():
    # RFC 2202 test case 2 (HMAC-SHA1): effcdf6ae5eb2fa2d27416d5f184df9c259a7c79, in base64.
    assert turn_password("Jefe", "what do ya want for nothing?") == "7/zfauXrL6LSdBbV8YTfnCWafHk="


def test_a_credential_is_an_expiry_and_a_random_id_signed_with_the_secret():
    now = 1_790_000_000.4
    turn = TurnCredentials(URLS, SECRET, 43200, clock=lambda: now)
    first, second = turn.issue(), turn.issue()
    assert re.fullmatch(r"1790043200:[0-9a-f]{16}", first.username), first.username
    assert first.expires == 1_790_043_200 and first.urls == URLS
    assert first.password == turn_password(SECRET, first.username)
    assert first.username != second.username and first.password != second.password  # nothing shared between viewers


def test_turn_needs_a_strong_secret_only_when_urls_are_set():
    assert TurnCredentials.from_env((), 600, {}) is None
    with pytest.raises(ConfigError, match=f"--turn-urls is set but {SECRET_ENV} is not"):
        TurnCredentials.from_env(URLS, 600, {})
    for weak, why in (("short", "characters"), ("a" * 40, "too weak"),
                      ("has spaces in it, so coturn's file would differ", "characters")):
        with pytest.raises(ConfigError, match=f"{SECRET_ENV}.*{why}"):
            TurnCredentials.from_env(URLS, 600, {SECRET_ENV: weak})
    turn = TurnCredentials.from_env(URLS, 600, {SECRET_ENV: SECRET})
    assert turn is not None and turn.urls == URLS and turn.ttl == 600


def test_link_values_are_rfc_9725_s_and_read_back_as_ice_servers():
    turn = TurnCredentials(URLS, SECRET, 600)
    header = turn.link_header()
    values = header.split(", <")
    assert len(values) == 2 and values[0].startswith(f"<{URLS[0]}>; rel=\"ice-server\"; username=\"")
    assert values[1].endswith('credential-type="password"')
    servers = ice_servers([header])
    assert [s.urls for s in servers] == list(URLS)
    username = servers[0].username
    assert servers[1].username == username and all(s.credential == turn_password(SECRET, username) for s in servers)
    assert int(username.split(":")[0]) - time.time() == pytest.approx(600, abs=5)
    # Several headers, other relations ignored, unquoted parameters, a rel listing several types.
    assert [(s.urls, s.username, s.credential) for s in ice_servers([
        '</next>; rel="next"', '<stun:stun.example.net>; rel="ice-server"',
        '<turn:t.example.net?transport=udp>; rel="other ice-server"; username=u; credential="p=="',
    ])] == [("stun:stun.example.net", None, None), ("turn:t.example.net?transport=udp", "u", "p==")]


# ---- WHEP hands them out ----------------------------------------------------------------------

async def _whep_client(turn: TurnCredentials | None) -> TestClient:
    async def allow(_request: web.Request) -> None:
        return None

    viewing = WebRtcViewing(PacketBus(), lambda: None, IceSettings(), max_viewers=1, live=lambda: True,
                            authorize_feed=allow, turn=turn)
    app = web.Application()
    app.add_routes(viewing.routes())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_options_whep_carries_fresh_credentials_a_page_on_another_edge_can_read():
    client = await _whep_client(TurnCredentials(URLS, SECRET, 600))
    try:
        asked = []
        for _ in range(2):
            response = await client.options("/whep", headers={"Origin": "https://edge-2.example.org"})
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "Link" in [h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")]
            assert response.headers["Cache-Control"] == "no-store"  # a credential is never cached for others
            asked.append(ice_servers(response.headers.getall("Link")))
        assert [s.urls for s in asked[0]] == list(URLS) and asked[0][0].username != asked[1][0].username
        # A CORS preflight's headers never reach the page: no credential is minted for it.
        preflight = await client.options("/whep", headers={"Origin": "https://edge-2.example.org",
                                                           "Access-Control-Request-Method": "POST"})
        assert preflight.status == 204 and "Link" not in preflight.headers
        assert "OPTIONS" in preflight.headers["Access-Control-Allow-Methods"]  # a page may send OPTIONS itself
        session = await client.options("/whep/some-session")
        assert session.status == 204 and "Link" not in session.headers
    finally:
        await client.close()
    client = await _whep_client(None)
    try:
        response = await client.options("/whep")
        assert response.status == 204 and "Link" not in response.headers
    finally:
        await client.close()


# ---- a real coturn ------------------------------------------------------------------------------

def test_viewers_that_may_only_relay_play_through_coturn_over_tcp_and_tls_and_bad_credentials_are_refused():
    result = run_in_private_network("turn-relay", "6", timeout=150, module=MODULE)
    assert result["preflight"]["links"] == []  # a preflight is answered without a credential
    for name, transport, port in (("tcp", "turn:", 3478), ("tls", "turns:", 5349)):
        viewer = result[name]
        options = viewer["options"]
        assert options["status"] == 204 and options["allow_origin"] == "*" and "Link" in options["expose"]
        assert viewer["server"].startswith(transport)
        # Relay only: the offer has no host candidate, so nothing but coturn could carry the media.
        assert viewer["offer_candidates"] and set(viewer["offer_candidates"]) == {"relay"}, viewer
        assert viewer["status"] == 201 and viewer["post_usernames"] and viewer["post_usernames"][0] != viewer["username"]
        assert viewer["frames"] >= 0.95 * viewer["expected"] and viewer["expected"] >= 5 * result["fps"], viewer
        assert viewer["keyframes"] >= 1 and viewer["audio_packets"] > 0, viewer
        # coturn's own account: the allocation on its TCP (TLS) listener, and the server's media relayed.
        log = "\n".join(viewer["coturn"])
        assert "ALLOCATE processed, success" in log and f"local 127.0.0.1:{port}" in log, log
        # One allocation per media section gathered for (aiortc, like a browser's balanced bundle
        # policy, gathers for audio and video); the one BUNDLE keeps carries everything.
        usage = [(int(p), int(b)) for p, b in re.findall(r"peer usage: .*rp=(\d+), rb=(\d+)", log)]
        packets, octets = sum(p for p, _ in usage), sum(b for _, b in usage)
        assert usage and packets >= viewer["frames"] + viewer["audio_packets"], log
        print(f"\nTURN/{name.upper()} viewer: relay allocated {viewer['gathered_after'] * 1000:.0f} ms after "
              f"OPTIONS, connected after {viewer['connected_after'] * 1000:.0f} ms, first frame after "
              f"{viewer['first_frame_after'] * 1000:.0f} ms; {viewer['frames']}/{viewer['expected']} frames, "
              f"{viewer['audio_packets']} audio packets; coturn relayed {packets} packets ({octets / 1e6:.2f} MB) "
              f"from the server over {len(usage)} allocations")
    direct = result["direct"]
    assert direct["status"] == 201 and direct["frames"] > 0, direct
    print(f"for comparison, a viewer with its own host candidate: connected after "
          f"{direct['connected_after'] * 1000:.0f} ms, first frame after {direct['first_frame_after'] * 1000:.0f} ms")
    refused = result["refused"]
    assert refused["control"]["candidates"] == ["relay"]  # the same request with a good credential works
    assert "ALLOCATE processed, success" in "\n".join(refused["control"]["coturn"])
    for case in ("tampered", "expired", "other secret"):
        assert refused[case]["candidates"] == [], (case, refused[case])
        log = "\n".join(refused[case]["coturn"])
        assert "error 401" in log and "success" not in log, (case, log)
    print("coturn refused the tampered, expired and foreign credentials (401, no relay candidate)")
    # The expiry bounds when a credential may start a relay, not how long a relay lasts: coturn
    # checks it when a TURN session first authenticates (coturn issues #774, #1204).
    expiry = result["expiry"]
    log = "\n".join(expiry["coturn"])
    assert "401" in expiry["new_allocation"], expiry
    assert log.count("ALLOCATE processed, success") == 1 and "CHANNEL_BIND processed, success" in log, log
    assert "REFRESH processed, success" in log, log
    print("a relay allocated before its credential expired bound a channel and refreshed after; "
          "the expired credential could not allocate again")


# ---- the manifests' coturn -------------------------------------------------------------------------

def _coturn_pod_spec(objects: dict) -> dict:
    """What the rendered dev overlay runs as coturn, and the TURN URLs its edges hand out pointed at
    127.0.0.1 through the Service's port mapping (443 -> 5349), as a viewer's packets would go."""
    template = objects[("Deployment", "coturn")]["spec"]["template"]["spec"]
    container = template["containers"][0]
    volumes = {volume["name"]: volume for volume in template["volumes"]}
    config_map = objects[("ConfigMap", volumes["config"]["configMap"]["name"])]["data"]["turnserver.conf"]
    mounts = {mount["mountPath"]: ("config" if "configMap" in volumes[mount["name"]] else
                                   "tls" if "secret" in volumes[mount["name"]] else "run")
              for mount in container["volumeMounts"]}
    container_ports = {(p["name"]): p["containerPort"] for p in container["ports"]}
    service = {(p["port"], p.get("protocol", "TCP")): container_ports[p["targetPort"]]
               for p in objects[("Service", "coturn")]["spec"]["ports"]}
    edge = objects[("Deployment", "edge")]["spec"]["template"]["spec"]["containers"][0]
    ref = next(e for e in edge["env"] if e["name"] == "LAUNCHKIT_TURN_URLS")["valueFrom"]["configMapKeyRef"]
    network = next(d for (kind, n), d in objects.items() if kind == "ConfigMap" and n.startswith(ref["name"]))
    urls = []
    for url in network["data"][ref["key"]].split(","):
        parsed = re.fullmatch(r"(turns?):([^:?]+):(\d+)\?transport=(udp|tcp)", url)
        assert parsed, url
        scheme, _, port, transport = parsed.groups()
        urls.append(f"{scheme}:127.0.0.1:{service[(int(port), transport.upper())]}?transport={transport}")
    assert {urllib.parse.urlsplit("//" + u.split(":", 1)[1]).port for u in urls} <= set(container_ports.values())
    return {"script": container["args"][0], "config": config_map, "mounts": mounts,
            "tls_mount": next(path for path, kind in mounts.items() if kind == "tls"),
            "listening": sorted({p["containerPort"] for p in container["ports"] if p.get("protocol", "TCP") == "TCP"}),
            "turn_urls": urls, "ttl": 43200}


def test_the_rendered_coturn_relays_for_what_the_rendered_edges_sign_and_keeps_the_secret_off_its_command_line(
        tmp_path: Path):
    spec = _coturn_pod_spec(by_kind_and_name(render("dev")))
    path = tmp_path / "coturn-pod.json"
    path.write_text(json.dumps(spec))
    result = run_in_private_network("rendered-coturn", str(path), timeout=60, module=MODULE)
    schemes = {url.split(":")[0] + "/" + url.rsplit("=", 1)[1] for url in result["allocated"]}
    assert schemes == {"turn/udp", "turn/tcp", "turns/tcp"}, result["allocated"]
    assert all(types == ["relay"] for types in result["allocated"].values()), result["allocated"]
    assert result["refused"] == [] and result["foreign_refused_by_coturn"] and result["errors"] == [], result
    assert not result["secret_in_command_line"] and result["config_mode"] == "0o600", result
    print(f"\nrendered coturn: relay allocated over {sorted(result['allocated'])}; a foreign credential got "
          f"none; its command line: {result['command_line']!r}")

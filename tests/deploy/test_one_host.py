"""The one-host deployment, for real: deploy/compose.yaml brought up with podman-compose from the image
deploy/build-image builds (origin, two edges, Redis, Prometheus; Redis and Prometheus from Debian
stand-in images, no registry being reachable here). The ffmpeg CLI publishes over RTMP to the origin
container, the operator goes live with the ops token, ffprobe decodes the HLS through an edge
container, Prometheus in its container scrapes origin and both edges with the alert rules loaded, a
wall post reaches an SSE client through the other edge, and SIGTERM drains an edge, which exits 0.
Everything is stopped and removed by container id at the end (tests/support/containers.py)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import aiohttp
import pytest
import yaml

from loadtests.target import free_port, http_status
from tests.support.client import fetch
from tests.support.containers import (
    DEPLOY,
    NICE,
    PODMAN,
    PODMAN_COMPOSE,
    ROOT,
    VERSION,
    environment,
    podman,
    project_containers,
    remove_project,
    stand_ins,
)
from tests.support.prometheus import query
from tests.support.wall import sse

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

COMPOSE = DEPLOY / "compose.yaml"
CREDENTIALS = ("LAUNCHKIT_PUBLISH_TOKEN", "LAUNCHKIT_OPS_TOKEN", "LAUNCHKIT_EDGE_TOKEN", "LAUNCHKIT_METRICS_TOKEN",
               "LAUNCHKIT_ADMISSION_SECRET")
PORTS = {"origin": "LAUNCHKIT_ORIGIN_HTTP_PORT", "edge-1": "LAUNCHKIT_EDGE1_HTTP_PORT",
         "edge-2": "LAUNCHKIT_EDGE2_HTTP_PORT", "prometheus": "LAUNCHKIT_PROMETHEUS_PORT"}
# Small media: the machine has two cores and other tests beside this one.
MEDIA = {"LAUNCHKIT_LADDER": "180p:320x180:200", "LAUNCHKIT_FPS": "15", "LAUNCHKIT_WEBRTC": "off"}
DRAIN_SECONDS = 4
PUBLISHER_INPUT = ["-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15", "-f", "lavfi",
                   "-i", "sine=frequency=440:sample_rate=48000", "-c:v", "libx264", "-preset", "veryfast",
                   "-tune", "zerolatency", "-g", "15", "-c:a", "aac"]
QUESTION = {"text": "Does it ship from a container?", "kind": "question", "name": "A. Journalist"}


@dataclass
class OneHost:
    project: str
    env: dict[str, str]
    urls: dict[str, str]
    rtmp_port: int
    publishers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ops(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['LAUNCHKIT_OPS_TOKEN']}", "Content-Type": "application/json"}

    def container(self, service: str) -> str:
        """The id of the service's container (podman-compose labels each with its service)."""
        out = podman("ps", "--all", "--quiet", "--no-trunc", "--filter", f"label=io.podman.compose.project={self.project}",
                     "--filter", f"label=com.docker.compose.service={service}").stdout.split()
        assert len(out) == 1, (service, out)
        return out[0]

    def logs(self, service: str) -> str:
        result = podman("logs", "--tail", "40", self.container(service), check=False)
        return f"--- {service} ---\n{result.stdout}{result.stderr}"

    def ops_call(self, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(self.urls["origin"] + path, headers=self.ops,
                                         data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def wait(condition, timeout: float, what: str, diagnose=lambda: "", step: float = 0.25) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s\n{diagnose()}")
        time.sleep(step)
    return time.monotonic() - started


def compose_environment(image: str, project_ports: dict[str, int], rtmp_port: int, srt_port: int) -> dict[str, str]:
    credentials = {name: f"one-host-{secrets.token_hex(16)}" for name in CREDENTIALS}
    ports = {PORTS[service]: str(port) for service, port in project_ports.items()}
    return environment(LAUNCHKIT_IMAGE=image, **stand_ins(), **credentials, **ports, **MEDIA,
                       LAUNCHKIT_RTMP_HOST_PORT=str(rtmp_port), LAUNCHKIT_SRT_HOST_PORT=str(srt_port),
                       LAUNCHKIT_DRAIN_SECONDS=str(DRAIN_SECONDS))


@pytest.fixture(scope="module")
def one_host(launchkit_image):
    """The deployment, up and ready (tests/deploy/conftest.py builds the image once per session)."""
    project = f"lktest{secrets.token_hex(4)}"
    ports = {service: free_port() for service in PORTS}
    rtmp_port, srt_port = free_port(), free_port(socket.SOCK_DGRAM)
    env = compose_environment(launchkit_image, ports, rtmp_port, srt_port)
    deployment = OneHost(project, env, {service: f"http://127.0.0.1:{port}" for service, port in ports.items()},
                         rtmp_port)
    try:
        started = time.monotonic()
        up = subprocess.run([*NICE, PODMAN_COMPOSE, "--project-name", project, "--file", str(COMPOSE), "up", "--detach"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert up.returncode == 0 and len(project_containers(project)) == 5, up.stdout[-3000:] + up.stderr[-3000:]
        diagnose = lambda: "\n".join(deployment.logs(s) for s in ("origin", "edge-1", "edge-2", "prometheus"))  # noqa: E731
        for service in ("origin", "edge-1", "edge-2"):
            wait(lambda s=service: http_status(deployment.urls[s] + "/readyz") == 200, 120, f"{service} ready", diagnose)
        print(f"one host up (podman-compose, project {project}) in {time.monotonic() - started:.1f} s")
        yield deployment
    finally:
        for publisher in deployment.publishers:
            publisher.kill()
            publisher.wait(10)
        left = remove_project(project)
        assert left == [], f"left behind: {left}"


def test_the_compose_file_publishes_on_loopback_and_passes_credentials_by_name_only():
    document = yaml.safe_load(COMPOSE.read_text())
    services = document["services"]
    assert set(services) == {"origin", "edge-1", "edge-2", "redis", "prometheus"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("${LAUNCHKIT_BIND_ADDRESS:-127.0.0.1}:"), (name, port)
        for variable, value in (service.get("environment") or {}).items():
            if variable in CREDENTIALS or variable.endswith("_SECRET"):
                assert value is None, f"{name}: {variable} would be on podman's command line"
    # The edges use the origin by its service name and share Redis; Prometheus loads k8s/'s alert rules.
    for edge in ("edge-1", "edge-2"):
        assert services[edge]["command"] == ["edge", "--origin", "http://origin:8080"]
        assert services[edge]["environment"]["LAUNCHKIT_REDIS"] == "redis://redis:6379/0"
    assert any(volume.startswith("../k8s/base/monitoring/alerts.yaml:") for volume in services["prometheus"]["volumes"])
    # The image is the one deploy/build-image tags for this version.
    assert services["origin"]["image"] == f"${{LAUNCHKIT_IMAGE:-localhost/launchkit:{VERSION}}}"
    # Every LAUNCHKIT_* variable a user may set is documented in the file's header and in the README.
    header = COMPOSE.read_text().split("\nx-", 1)[0]
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"\$\{(LAUNCHKIT_\w+)", COMPOSE.read_text()))
    assert {v for v in used if v not in header} == set()
    assert {v for v in used if v not in readme} == set()


def test_rtmp_publish_go_live_and_ffprobe_decodes_the_hls_through_an_edge(one_host):
    publisher = subprocess.Popen(
        [*NICE, "ffmpeg", "-nostdin", "-loglevel", "error", *PUBLISHER_INPUT, "-t", "600", "-f", "flv",
         f"rtmp://127.0.0.1:{one_host.rtmp_port}/live/{one_host.env['LAUNCHKIT_PUBLISH_TOKEN']}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    one_host.publishers.append(publisher)
    took = wait(lambda: one_host.ops_call("/api/ops/status")["on_air"] == "primary", 30,
                "the RTMP publisher on air", lambda: one_host.logs("origin"))
    assert one_host.ops_call("/api/ops/event", {"action": "live"})["state"] == "live"
    edge = one_host.urls["edge-1"]
    wait(lambda: fetch(edge + "/hls/index.m3u8")[0] == 200, 20, "the live playlist at the edge")
    multivariant = fetch(edge + "/hls/index.m3u8")[2].decode()
    playlists = [line for line in multivariant.splitlines() if line.endswith("index.m3u8")]
    assert playlists == ["180p/index.m3u8"], multivariant
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-read_intervals", "%+3", "-show_entries",
         "stream=codec_name,width,height:frame=media_type", "-of", "json", f"{edge}/hls/{playlists[0]}"],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stderr == "", probe.stderr
    decoded = json.loads(probe.stdout)
    assert {s["codec_name"] for s in decoded["streams"]} == {"h264", "aac"}
    assert [s["height"] for s in decoded["streams"] if s["codec_name"] == "h264"] == [180]
    kinds = [f["media_type"] for f in decoded["frames"]]
    assert kinds.count("video") >= 15 and kinds.count("audio") >= 15, kinds
    assert publisher.poll() is None, publisher.stderr.read().decode() if publisher.stderr else ""
    print(f"RTMP publisher on air after {took:.1f} s; ffprobe through edge-1 decoded "
          f"{kinds.count('video')} video and {kinds.count('audio')} audio frames")


def test_prometheus_in_its_container_scrapes_origin_and_both_edges_with_the_alert_rules(one_host):
    prometheus = one_host.urls["prometheus"]
    wait(lambda: http_status(prometheus + "/-/ready") == 200, 60, "Prometheus ready", lambda: one_host.logs("prometheus"))

    def up() -> dict[str, str]:
        return {r["metric"]["pod"]: r["metric"]["component"] for r in query(prometheus, "up == 1")}

    took = wait(lambda: up() == {"origin": "origin", "edge-1": "edge", "edge-2": "edge"}, 60,
                "up == 1 for origin, edge-1 and edge-2", lambda: json.dumps(query(prometheus, "up")))
    # Scraped with the metrics token: the series are there, labelled as the alert rules select them.
    assert query(prometheus, 'launchkit_build_info{component="origin"}')
    assert len(query(prometheus, 'launchkit_edge_origin_up{component="edge"} == 1')) == 2
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as response:
        groups = json.loads(response.read())["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    alerts = yaml.safe_load((ROOT / "k8s" / "base" / "monitoring" / "alerts.yaml").read_text())
    assert loaded == {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    print(f"up == 1 for origin, edge-1, edge-2 after {took:.1f} s; {len(loaded)} alert rules loaded")


async def post_approve_and_receive(one_host: OneHost) -> tuple[float, dict]:
    """A viewer asks at edge-2; the operator approves at the origin; a viewer of edge-1 gets it over SSE."""
    async with aiohttp.ClientSession() as session:
        async with sse(session, one_host.urls["edge-1"]) as client:
            await client.wait_for(1, timeout=10)  # the snapshot
            async with session.post(one_host.urls["edge-2"] + "/api/wall/posts", json=QUESTION) as response:
                assert response.status == 202, await response.text()
                post_id = (await response.json())["id"]
            deadline = time.monotonic() + 20
            while True:  # from edge-2 through Redis to the origin's moderation queue
                async with session.get(one_host.urls["origin"] + "/api/ops/wall/queue", headers=one_host.ops) as response:
                    queue = await response.json()
                if post_id in {p["id"] for p in queue["pending"] + queue["questions"]}:
                    break
                assert time.monotonic() < deadline, f"the question never reached moderation: {queue}"
                await asyncio.sleep(0.25)
            approved = time.monotonic()
            async with session.post(f"{one_host.urls['origin']}/api/ops/wall/{post_id}/approve", data="{}",
                                    headers=one_host.ops) as response:
                assert response.status == 200, await response.text()
            deadline = time.monotonic() + 15
            while not [e for e in client.of_type("post") if e.data.get("id") == post_id]:
                assert time.monotonic() < deadline, [e.type for e in client.events]
                await asyncio.sleep(0.05)
            event = [e for e in client.of_type("post") if e.data.get("id") == post_id][0]
            return event.received - approved, event.data


def test_a_wall_post_reaches_an_sse_client_through_an_edge(one_host):
    lag, post = asyncio.run(post_approve_and_receive(one_host))
    assert post["text"] == QUESTION["text"]
    print(f"question asked at edge-2, approved at the origin, on edge-1's SSE stream {lag * 1000:.0f} ms later")


def test_sigterm_drains_an_edge_which_exits_0(one_host):
    edge, other = one_host.urls["edge-2"], one_host.urls["edge-1"]
    container = one_host.container("edge-2")
    seen: list[tuple[float, int | None, int | None]] = []
    # `podman stop` sends the image's STOPSIGNAL (SIGTERM) and waits up to 60 s before SIGKILL; a
    # stopped container is not restarted (restart: unless-stopped), unlike one killed behind podman's back.
    stop = subprocess.Popen([*NICE, PODMAN, "stop", "--time", "60", container], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=one_host.env)
    started = time.monotonic()
    while stop.poll() is None and time.monotonic() - started < 90:
        seen.append((time.monotonic() - started, http_status(edge + "/readyz", timeout=1),
                     http_status(edge + "/healthz", timeout=1)))
        time.sleep(0.1)
    stop.communicate(timeout=30)
    took = time.monotonic() - started
    assert stop.returncode == 0, stop.stderr
    draining = [t for t, ready, healthy in seen if ready == 503 and healthy == 200]
    assert draining, f"never seen draining (readyz 503, healthz 200): {seen[:20]}"
    assert max(draining) - min(draining) >= DRAIN_SECONDS - 1.5, seen
    assert took < DRAIN_SECONDS + 10, took
    state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container).stdout.split()
    assert state == ["exited", "0"], (state, one_host.logs("edge-2"))
    time.sleep(1)
    assert podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip() == "exited"  # not restarted
    assert "draining" in one_host.logs("edge-2")
    # The other edge kept serving the live stream.
    assert http_status(other + "/readyz") == 200 and fetch(other + "/hls/index.m3u8")[0] == 200
    print(f"edge-2 drained for {max(draining) - min(draining):.1f} s (readyz 503, healthz 200) and exited 0 "
          f"{took:.1f} s after SIGTERM; edge-1 kept serving")

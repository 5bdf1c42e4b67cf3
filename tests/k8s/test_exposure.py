"""Kubernetes exposure (issue #12, item 5): what the rendered overlays let reach which pod, and with
which credential.

Both overlays are rendered with `kubectl kustomize` and evaluated the way the cluster would:
- the Ingress with ingress-nginx's semantics for Exact and Prefix paths (Prefix matches whole path
  elements, the longest match wins, Exact wins a tie), against every route of the origin's and the
  edge's apps (read from the apps themselves, so a route is covered the day it is added) and the viewer
  paths of the public contract, on every host;
- NetworkPolicies with the API's semantics (a pod selected by a policy admits only what one of the
  policies selecting it allows);
- container environments resolved as the kubelet does (Secret, ConfigMap, field and $(VAR) references).
Then the rendered dev origin, edge and Redis run for real on loopback (Service names resolved to
loopback addresses, as cluster DNS would): first shaped like the old manifests (no Redis on the origin,
no edge token on the edge: a viewer's question gets 202 and never reaches moderation, the feed is
refused), then as rendered (the question, and the one left waiting in Redis, reach moderation; the
edge takes the feed; /metrics answers the ServiceMonitor's credentials only). Each static check is
also shown to catch the old manifests' shape.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import secrets
import shlex
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from launchkit.admission import SECRET_ENV, Admission
from launchkit.admission.settings import from_options as admission_settings
from launchkit.auth import ENV as TOKEN_ENV
from launchkit.auth import Tokens, check_token
from launchkit.config import Config
from launchkit.edge.app import create_edge_app
from launchkit.edge.settings import EdgeSettings
from launchkit.origin.app import create_app
from launchkit.wall.service import Wall, WallSettings
from launchkit.web.clients import parse_networks
from launchkit.webrtc.turn import SECRET_ENV as TURN_SECRET_ENV
from loadtests.target import LocalDemo, free_port, start_launchkit, stop_all
from stream.ladder import Rendition
from tests.support.client import fetch
from tests.support.k8s import K8S, OVERLAYS, by_kind_and_name, kustomize, render

# What only operators and their tools use: the ops host sends exactly these origin routes to the origin.
OPERATOR_ROUTES = frozenset({
    "/ops", "/ops/login", "/ops/logout", "/ops/publish", "/ops/wall",
    "/ops/static", "/ops/wall/static",  # the operator pages' own scripts and styles
    "/ops/hls/index.m3u8", "/ops/hls/{rendition}/index.m3u8", "/ops/hls/{rendition}/{name}",
    "/api/ops/status", "/api/ops/event", "/api/ops/wall/queue", "/api/ops/wall/{id}/{action}",
    "/whip", "/whip/{session}",
    "/api/wall/webhook",
})
# The public contract's viewer paths (DESIGN.md, README), whatever the apps' route tables say.
VIEWER_PATHS = (
    "/", "/embed", "/hls/index.m3u8", "/hls/720p/index.m3u8", "/hls/720p/seg-00012.m4s", "/replay/index.m3u8",
    "/replay/720p/init.mp4", "/api/status", "/api/wall/events", "/api/wall/posts", "/api/admission",
    "/api/admission/leave", "/api/qoe", "/whep", "/whep/session-1", "/api/webrtc/feed", "/metrics", "/wall",
    "/static/player.js", "/healthz", "/readyz",
)
# Paths that share characters, not path elements, with an operator path: Prefix must not take them.
NEAR_MISSES = ("/opsx", "/ops-hls/index.m3u8", "/whipx", "/api/opsx/status", "/api/ops.json",
               "/api/wall/webhook/", "/api/wall/webhooks", "/api/wall")
CREDENTIALS = frozenset({*TOKEN_ENV.values(), SECRET_ENV, "LAUNCHKIT_WALL_WEBHOOK_SECRET", TURN_SECRET_ENV})
# The origin serves no viewer (the Ingress sends it none), so it holds no TURN secret.
ORIGIN_CREDENTIALS = CREDENTIALS - {TURN_SECRET_ENV}
EDGE_CREDENTIALS = {TOKEN_ENV["edge"], TOKEN_ENV["metrics"], SECRET_ENV, TURN_SECRET_ENV}


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request) -> tuple[str, dict[tuple[str, str], dict]]:
    return request.param, by_kind_and_name(render(request.param))


# ---- the apps' routes ---------------------------------------------------------------------------

def request_paths(app: web.Application) -> dict[str, str]:
    """canonical route -> a path that requests it (each {variable} filled in; a file of a static directory)."""
    paths = {}
    for resource in app.router.resources():
        path = re.sub(r"\{\w+\}", "x1", resource.canonical)
        paths[resource.canonical] = path + "/style.css" if isinstance(resource, web.StaticResource) else path
    return paths


async def _origin_routes(data_dir: Path) -> dict[str, str]:
    config = Config.for_role("origin", {"port": 0, "data_dir": data_dir, "rtmp_port": None, "srt_port": None, "fps": 15,
                                        "ladder": (Rendition("180p", 320, 180, 300_000),)})
    return request_paths(create_app(config, Tokens.from_values(None, None)))


async def _edge_routes() -> dict[str, str]:
    """The edge as `launchkit edge` assembles it with Redis: the app, admission and the wall."""
    settings = EdgeSettings(origin="http://127.0.0.1:9", redis="redis://127.0.0.1:9/0")
    admission = Admission(admission_settings(settings), [secrets.token_bytes(32)])
    app = create_edge_app(settings, capacity=admission.status, edges=admission.edges)
    app.add_routes(admission.routes())
    app.add_routes(Wall(WallSettings(role="edge", redis_url=settings.redis)).routes())
    return request_paths(app)


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    """(origin routes, edge routes), every optional route on: WebRTC, replay, the wall's webhook."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAUNCHKIT_WALL_WEBHOOK_SECRET", secrets.token_hex(24))  # read by create_app, not an option
        origin = asyncio.run(_origin_routes(tmp_path_factory.mktemp("origin-routes")))
        edge = asyncio.run(_edge_routes())
    assert {"/api/webrtc/feed", "/replay/index.m3u8", "/api/wall/webhook"} <= set(origin)
    assert {"/whep", "/api/wall/posts", "/api/admission"} <= set(edge)
    return origin, edge


# ---- the Ingress, as ingress-nginx routes it ----------------------------------------------------

@dataclass(frozen=True)
class IngressPath:
    host: str
    path: str
    kind: str
    service: str


def ingress_paths(ingress: dict) -> list[IngressPath]:
    assert "defaultBackend" not in ingress["spec"]
    found = []
    for rule in ingress["spec"]["rules"]:
        assert rule.get("host"), "a rule without a host applies to every host"
        for item in rule["http"]["paths"]:
            found.append(IngressPath(rule["host"], item["path"], item["pathType"], item["backend"]["service"]["name"]))
    return found


def matches(rule: IngressPath, path: str) -> bool:
    if rule.kind == "Exact":
        return path == rule.path
    if rule.kind == "Prefix":  # by path element: /ops matches /ops, /ops/ and /ops/wall, never /opsx
        prefix = rule.path.rstrip("/")
        return path == prefix or path.startswith(prefix + "/")
    raise AssertionError(f"{rule.path}: pathType {rule.kind} is up to the controller: use Exact or Prefix")


def backend(rules: list[IngressPath], host: str, path: str) -> str | None:
    """The Service that gets `path` on `host`, or None (the controller's default backend: 404)."""
    candidates = [rule for rule in rules if rule.host == host and matches(rule, path)]
    if not candidates:
        return None
    return max(candidates, key=lambda rule: (len(rule.path.rstrip("/")), rule.kind == "Exact")).service


def origin_leaks(rules: list[IngressPath], paths: set[str]) -> dict[tuple[str, str], str | None]:
    """(host, path) -> backend, for every path in `paths` that does not go to the edges."""
    hosts = sorted({rule.host for rule in rules})
    return {(host, path): backend(rules, host, path) for host in hosts for path in sorted(paths)
            if backend(rules, host, path) != "edge"}


def test_the_path_semantics_are_ingress_nginx_s():
    rules = [IngressPath("h", "/", "Prefix", "edge"), IngressPath("h", "/ops", "Prefix", "origin"),
             IngressPath("h", "/api/wall/webhook", "Exact", "origin"), IngressPath("h", "/a/", "Prefix", "a"),
             IngressPath("h", "/a", "Exact", "exact")]
    assert [backend(rules, "h", p) for p in ("/ops", "/ops/", "/ops/wall", "/opsx", "/ops-x/y")] == \
        ["origin", "origin", "origin", "edge", "edge"]
    assert [backend(rules, "h", p) for p in ("/api/wall/webhook", "/api/wall/webhook/", "/api/wall/webhooks")] == \
        ["origin", "edge", "edge"]
    assert backend(rules, "h", "/a") == "exact" and backend(rules, "h", "/a/b") == "a"  # Exact wins a tie
    assert backend(rules, "other", "/") is None
    with pytest.raises(AssertionError, match="ImplementationSpecific"):
        matches(IngressPath("h", "/ops", "ImplementationSpecific", "origin"), "/ops")


def test_the_ops_host_routes_only_operator_paths_to_the_origin(overlay, app_routes):
    name, objects = overlay
    rules = ingress_paths(objects[("Ingress", "launchkit")])
    origin_routes, _ = app_routes
    assert OPERATOR_ROUTES <= set(origin_routes), "an operator route the origin no longer has"
    ops_hosts = {rule.host for rule in rules if rule.service == "origin"}
    assert len(ops_hosts) == 1, ops_hosts
    hosts = {rule.host for rule in rules}
    for host in hosts:
        reached = {route for route, path in origin_routes.items() if backend(rules, host, path) == "origin"}
        assert reached == (OPERATOR_ROUTES if host in ops_hosts else set()), host
    print(f"{name}: {sorted(ops_hosts)[0]} sends {len(OPERATOR_ROUTES)} of the origin's {len(origin_routes)} "
          f"routes to the origin; {sorted(hosts - ops_hosts)} none")


def test_no_viewer_path_reaches_the_origin_on_any_host(overlay, app_routes):
    name, objects = overlay
    rules = ingress_paths(objects[("Ingress", "launchkit")])
    origin_routes, edge_routes = app_routes
    viewer = ({path for route, path in origin_routes.items() if route not in OPERATOR_ROUTES}
              | set(edge_routes.values()) | set(VIEWER_PATHS) | set(NEAR_MISSES))
    assert origin_leaks(rules, viewer) == {}
    hosts = {rule.host for rule in rules}
    print(f"{name}: {len(viewer)} viewer paths x {len(hosts)} hosts, all to the edges")


def test_the_route_checks_catch_the_old_ops_host(overlay):
    """The old ops host (every path to the origin) fails both checks above."""
    _, objects = overlay
    ingress = copy.deepcopy(objects[("Ingress", "launchkit")])
    ops = next(rule for rule in ingress["spec"]["rules"]
               if any(p["backend"]["service"]["name"] == "origin" for p in rule["http"]["paths"]))
    ops["http"]["paths"] = [{"path": "/", "pathType": "Prefix",
                             "backend": {"service": {"name": "origin", "port": {"name": "http"}}}}]
    leaks = origin_leaks(ingress_paths(ingress), set(VIEWER_PATHS))
    assert {(ops["host"], path) for path in ("/hls/index.m3u8", "/api/webrtc/feed", "/metrics")} <= set(leaks)
    assert set(leaks.values()) == {"origin"}


# ---- NetworkPolicies --------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """Who opens a connection: a pod (its namespace and labels) or, with namespace None, not a pod."""
    name: str
    namespace: str | None
    labels: tuple[tuple[str, str], ...] = ()


def selects(selector: dict, labels: dict[str, str]) -> bool:
    assert "matchExpressions" not in selector, "matchExpressions are not modelled here"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def peer_allowed(item: dict, policy_namespace: str, peer: Peer) -> bool:
    assert "ipBlock" not in item, "ipBlock is not modelled here"
    if peer.namespace is None:
        return False  # selectors select pods only
    if "namespaceSelector" in item:
        if not selects(item["namespaceSelector"], {"kubernetes.io/metadata.name": peer.namespace}):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return selects(item.get("podSelector", {}), dict(peer.labels))


def admits(policies: list[dict], pod: dict, namespace: str, peer: Peer, port: int, protocol: str = "TCP") -> bool:
    """Does the NetworkPolicy API let `peer` open `port`/`protocol` on `pod` (a pod template)?"""
    labels = pod["metadata"]["labels"]
    named = {p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
             for container in pod["spec"]["containers"] for p in container.get("ports", [])}
    selecting = [policy for policy in policies if "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
                 and selects(policy["spec"]["podSelector"], labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            if sources and not any(peer_allowed(item, namespace, peer) for item in sources):
                continue
            if _port_allowed(rule.get("ports"), named, port, protocol):
                return True
    return False


def _port_allowed(ports: list[dict] | None, named: dict[str, tuple[int, str]], port: int, protocol: str) -> bool:
    """Whether a rule's `ports` (none: every port) include `port`/`protocol`; a numbered port with
    `endPort` is a range."""
    for item in ports or [{"port": port, "protocol": protocol}]:
        if item.get("protocol", "TCP") != protocol:
            continue
        if isinstance(item["port"], str):
            if named.get(item["port"], (None, None))[0] == port:
                return True
        elif item["port"] <= port <= item.get("endPort", item["port"]):
            return True
    return False


def egress_admits(policies: list[dict], pod: dict, namespace: str, peer: Peer, port: int, protocol: str) -> bool:
    """Does the NetworkPolicy API let `pod` (a template) send to `peer` on `port`/`protocol`?"""
    labels = pod["metadata"]["labels"]
    selecting = [policy for policy in policies if "Egress" in policy["spec"].get("policyTypes", [])
                 and selects(policy["spec"]["podSelector"], labels)]
    if not selecting:
        return True
    return any((not rule.get("to") or any(peer_allowed(item, namespace, peer) for item in rule["to"]))
               and _port_allowed(rule.get("ports"), {}, port, protocol)
               for policy in selecting for rule in policy["spec"].get("egress", []))


def pod(objects: dict, component: str) -> dict:
    return objects[("Deployment", component)]["spec"]["template"]


def peers(objects: dict, namespace: str) -> list[Peer]:
    def labels(component: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(pod(objects, component)["metadata"]["labels"].items()))

    return [
        Peer("edge", namespace, labels("edge")),
        Peer("origin", namespace, labels("origin")),
        Peer("redis", namespace, labels("redis")),
        Peer("coturn", namespace, labels("coturn")),
        Peer("another pod here", namespace, (("app.kubernetes.io/name", "debug"),)),
        Peer("ingress-nginx", "ingress-nginx", (("app.kubernetes.io/name", "ingress-nginx"),)),
        Peer("prometheus", "monitoring", (("app.kubernetes.io/name", "prometheus"),)),
        Peer("rehearsal", "launchkit-rehearsal", (("app.kubernetes.io/component", "rehearsal"),)),
        Peer("internet", None),
    ]


# Ports no container declares: an edge's ICE port (aioice takes an ephemeral one per viewer) and a
# coturn relay port (turnserver.conf's range), one sample each.
UNDECLARED_PORTS = {"edge": {"ice": (40000, "UDP")}, "coturn": {"relay": (50000, "UDP")}}


def reachability(objects: dict, namespace: str) -> dict[str, set[str]]:
    """'<component>:<port>/<protocol>' -> the peers admitted there."""
    policies = [d for (kind, _), d in objects.items() if kind == "NetworkPolicy"]
    found = {}
    for component in ("origin", "edge", "redis", "coturn"):
        template = pod(objects, component)
        ports = {port["name"]: (port["containerPort"], port.get("protocol", "TCP"))
                 for container in template["spec"]["containers"] for port in container["ports"]}
        for name, (number, protocol) in {**ports, **UNDECLARED_PORTS.get(component, {})}.items():
            found[f"{component}:{name}/{protocol}"] = {
                peer.name for peer in peers(objects, namespace)
                if admits(policies, template, namespace, peer, number, protocol)}
    return found


ANYONE = {"edge", "origin", "redis", "coturn", "another pod here", "ingress-nginx", "prometheus", "rehearsal",
          "internet"}
EXPECTED_REACHABILITY = {
    "origin:http/TCP": {"edge", "ingress-nginx", "prometheus"},
    "origin:rtmp/TCP": ANYONE,
    "origin:srt/UDP": ANYONE,
    "edge:http/TCP": {"edge", "ingress-nginx", "prometheus"},
    "edge:ice/UDP": {"coturn"},  # WebRTC reaches edges relayed by coturn only
    "redis:redis/TCP": {"edge", "origin"},
    "coturn:turn-udp/UDP": ANYONE,  # viewers' TURN: the credential guards allocations
    "coturn:turn-tcp/TCP": ANYONE,
    "coturn:turns/TCP": ANYONE,
    "coturn:relay/UDP": {"edge"},
}


def test_network_policies_admit_exactly_who_needs_each_port(overlay):
    name, objects = overlay
    namespace, _ = OVERLAYS[name]
    assert reachability(objects, namespace) == EXPECTED_REACHABILITY
    # The old Redis policy (edges only) shuts the origin out: the check sees it.
    objects = copy.deepcopy(objects)
    redis = objects[("NetworkPolicy", "redis")]
    redis["spec"]["ingress"][0]["from"] = [item for item in redis["spec"]["ingress"][0]["from"]
                                           if item["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "edge"]
    assert reachability(objects, namespace)["redis:redis/TCP"] == {"edge"}


def test_coturn_relays_to_the_edges_and_nowhere_else(overlay):
    """A TURN credential is handed to anyone who loads the page: coturn may send UDP to edge pods only."""
    name, objects = overlay
    namespace, _ = OVERLAYS[name]
    policies = [d for (kind, _), d in objects.items() if kind == "NetworkPolicy"]
    coturn = pod(objects, "coturn")

    def relayed_to(rules: list[dict]) -> set[str]:
        return {peer.name for peer in peers(objects, namespace) for port, protocol in ((40000, "UDP"), (6379, "TCP"))
                if egress_admits(rules, coturn, namespace, peer, port, protocol)}

    assert relayed_to(policies) == {"edge"}
    config = next(d for (kind, n), d in objects.items() if kind == "ConfigMap" and n.startswith("coturn"))
    assert "no-tcp-relay" in config["data"]["turnserver.conf"].split()
    # Without the egress rule coturn could relay to anything: the check sees it.
    open_policies = copy.deepcopy(policies)
    for policy in open_policies:
        if policy["metadata"]["name"] == "coturn":
            policy["spec"]["policyTypes"] = ["Ingress"]
    assert relayed_to(open_policies) == ANYONE


# ---- environments and credentials -------------------------------------------------------------

def container(objects: dict, component: str) -> dict:
    return pod(objects, component)["spec"]["containers"][0]


def resolve_env(spec: dict, objects: dict, secret_values: dict[tuple[str, str], str],
                pod_ip: str = "127.0.0.1") -> dict[str, str]:
    """A container's environment as the kubelet builds it."""
    env: dict[str, str] = {}
    for item in spec.get("env", []):
        if "value" in item:
            value = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) not in secret_values:
                assert ref.get("optional"), f"{item['name']}: no secret {ref['name']}/{ref['key']}"
                continue
            value = secret_values[(ref["name"], ref["key"])]
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            value = objects[("ConfigMap", ref["name"])]["data"][ref["key"]]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", item
            value = pod_ip
        env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
    return env


def secret_refs(spec: dict) -> dict[str, tuple[str, str]]:
    return {item["name"]: (ref["name"], ref["key"]) for item in spec.get("env", [])
            if (ref := item.get("valueFrom", {}).get("secretKeyRef"))}


def made_up_secrets(objects: dict) -> dict[tuple[str, str], str]:
    """A value for every Secret key origin and edge refer to, as k8s/README.md has them made."""
    return {ref: secrets.token_hex(24) for component in ("origin", "edge")
            for ref in secret_refs(container(objects, component)).values()}


def test_credentials_come_from_the_secret_and_edges_hold_no_ops_token(overlay):
    name, objects = overlay
    for (kind, _), document in objects.items():
        if kind == "Deployment":
            for spec in document["spec"]["template"]["spec"]["containers"]:
                for item in spec.get("env", []):
                    if item["name"] in CREDENTIALS:
                        assert "value" not in item and "secretKeyRef" in item["valueFrom"], item
    origin, edge = secret_refs(container(objects, "origin")), secret_refs(container(objects, "edge"))
    assert set(origin) == ORIGIN_CREDENTIALS
    assert set(edge) == EDGE_CREDENTIALS  # never the ops or the publish token
    assert all(origin[variable] == edge[variable] for variable in EDGE_CREDENTIALS & ORIGIN_CREDENTIALS)
    # coturn checks with the very key edges sign with, and holds nothing else.
    assert secret_refs(container(objects, "coturn")) == {TURN_SECRET_ENV: edge[TURN_SECRET_ENV]}
    assert not secret_refs(container(objects, "redis"))
    for endpoint in objects[("ServiceMonitor", "launchkit")]["spec"]["endpoints"]:
        authorization = endpoint["authorization"]
        assert authorization["type"] == "Bearer" and "bearerTokenSecret" not in endpoint
        assert (authorization["credentials"]["name"], authorization["credentials"]["key"]) == \
            origin[TOKEN_ENV["metrics"]]
    print(f"{name}: origin {sorted(origin)}; edges {sorted(edge)}")


def service_port(template: dict, target: str | int) -> int:
    """The container port a Service's targetPort (a name or a number) lands on."""
    ports = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
    found = [p["containerPort"] for p in ports if target in (p["name"], p["containerPort"])]
    assert len(found) == 1, (target, ports)
    return found[0]


def test_the_origin_reads_the_edges_wall_posts_through_redis(overlay):
    name, objects = overlay
    origin = resolve_env(container(objects, "origin"), objects, made_up_secrets(objects))
    edge = resolve_env(container(objects, "edge"), objects, made_up_secrets(objects))
    assert origin["LAUNCHKIT_REDIS"] == edge["LAUNCHKIT_REDIS"]
    url = urllib.parse.urlsplit(origin["LAUNCHKIT_REDIS"])
    service = objects[("Service", url.hostname)]["spec"]
    port = next(p for p in service["ports"] if p["port"] == url.port)
    redis_pod = pod(objects, "redis")
    assert selects({"matchLabels": service["selector"]}, redis_pod["metadata"]["labels"])
    policies = [d for (kind, _), d in objects.items() if kind == "NetworkPolicy"]
    namespace, _ = OVERLAYS[name]
    origin_peer = next(peer for peer in peers(objects, namespace) if peer.name == "origin")
    assert admits(policies, redis_pod, namespace, origin_peer, service_port(redis_pod, port["targetPort"]))


def test_trusted_proxies_are_set_by_each_overlay(overlay):
    name, objects = overlay
    placeholder = by_kind_and_name(kustomize(K8S / "base"))
    base_value = next(d for (kind, n), d in placeholder.items()
                      if kind == "ConfigMap" and n.startswith("launchkit-network"))["data"]["trusted-proxies"]
    values = {component: resolve_env(container(objects, component), objects, made_up_secrets(objects))[
        "LAUNCHKIT_TRUSTED_PROXIES"] for component in ("origin", "edge")}
    assert values["origin"] == values["edge"] != base_value
    networks = parse_networks(values["origin"])
    assert networks and all(network.is_private for network in networks)
    assert not any(network.overlaps(candidate) for network in networks for candidate in parse_networks(base_value))
    print(f"{name}: trusted proxies {values['origin']} (base placeholder {base_value})")


def test_the_documented_secret_commands_make_acceptable_values_for_every_key(overlay):
    _, objects = overlay
    readme = (K8S / "README.md").read_text()
    command = re.search(r"create secret generic launchkit-tokens(.*?)\n(?!\s*--)", readme, re.S).group(1)
    literals = dict(re.findall(r'--from-literal=([\w-]+)="\$\(([^)]*)\)"', command))
    referenced = {ref[1] for component in ("origin", "edge") for ref in secret_refs(container(objects, component)).values()}
    monitor = objects[("ServiceMonitor", "launchkit")]["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert set(literals) == referenced | {monitor["key"]}
    for key, generator in literals.items():
        values = {subprocess.run(shlex.split(generator), capture_output=True, text=True, check=True,
                                 timeout=10).stdout.strip() for _ in range(2)}
        assert len(values) == 2, f"{key}: `{generator}` is not random"
        for value in values:
            check_token(key, value)  # raises TokenError naming the key


def test_the_rehearsal_scrapes_with_a_metrics_token_from_a_secret():
    jobs = {d["metadata"]["name"]: d for d in kustomize(K8S / "rehearsal") if d["kind"] == "Job"}
    env = {item["name"]: item for item in jobs["rehearsal-workers"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env[TOKEN_ENV["metrics"]]["valueFrom"]["secretKeyRef"]
    assert ref["name"] in (K8S / "rehearsal" / "README.md").read_text()


# ---- the rendered dev overlay, running --------------------------------------------------------

QUESTION = {"text": "When does it ship in Europe?", "kind": "question", "name": "A. Journalist"}
MEDIA = {"LAUNCHKIT_LADDER": "180p:320x180:200", "LAUNCHKIT_FPS": "15", "LAUNCHKIT_WEBRTC": "320x180:200"}
EDGE_FAILURES = 'launchkit_auth_failures_total{credential="edge"}'


def on_loopback(env: dict[str, str], services: dict[str, str]) -> dict[str, str]:
    """Cluster DNS on loopback: `//<service>:<port>` in any value becomes that Service's local address."""
    return {name: re.sub(r"//([a-z0-9-]+):(\d+)", lambda m: "//" + services.get(f"{m[1]}:{m[2]}", m[0][2:]), value)
            for name, value in env.items()}


def metric(base_url: str, name: str, authorization: str) -> float | None:
    status, _, body = fetch(f"{base_url}/metrics", headers={"Authorization": authorization})
    assert status == 200, status
    found = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
    return float(found.group(1)) if found else None


def moderation_queue(origin: str, ops_token: str) -> set[str]:
    status, _, body = fetch(f"{origin}/api/ops/wall/queue", headers={"Authorization": f"Bearer {ops_token}"})
    assert status == 200, body
    queue = json.loads(body)
    return {post["id"] for post in queue["pending"] + queue["questions"]}


def shared_capacity(edge: str) -> dict:
    status, _, body = fetch(f"{edge}/api/status")
    assert status == 200, body
    capacity = json.loads(body)["capacity"]
    return {"max_viewers": capacity["max_viewers"], "scope": capacity["scope"]}


def ask(edge: str) -> str:
    status, _, body = fetch_post(f"{edge}/api/wall/posts", QUESTION)
    assert status == 202, body
    return json.loads(body)["id"]


def fetch_post(url: str, payload: dict) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_until(check, timeout: float) -> float | None:
    """Seconds until `check()` is true, polling every 0.2 s; None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def test_the_rendered_origin_edge_and_redis_carry_questions_feed_and_metrics(tmp_path, own_redis, monkeypatch):
    objects = by_kind_and_name(render("dev"))
    secret_values = made_up_secrets(objects)
    ops_token = secret_values[secret_refs(container(objects, "origin"))[TOKEN_ENV["ops"]]]
    monitor = objects[("ServiceMonitor", "launchkit")]["spec"]["endpoints"][0]["authorization"]
    scrape = f"{monitor['type']} {secret_values[(monitor['credentials']['name'], monitor['credentials']['key'])]}"
    origin_port = free_port()
    services = {"origin:8080": f"127.0.0.1:{origin_port}", "redis:6379": f"127.0.0.1:{own_redis.port}"}
    for variable in [name for name in os.environ if name.startswith("LAUNCHKIT_")]:
        monkeypatch.delenv(variable)  # only what the manifests give (tests/support/environment.py sets some for every server)
    # Not the pod's: where to listen and keep data on a shared machine (RTMP/SRT ports off: fixed ports
    # would collide), a small ladder, 127.0.0.1 as the only ICE address, and a short drain.
    local = {"LAUNCHKIT_HOST": "127.0.0.1", "LAUNCHKIT_DATA_DIR": str(tmp_path / "data"), "LAUNCHKIT_RTMP_PORT": "off",
             "LAUNCHKIT_SRT_PORT": "off", "LAUNCHKIT_ICE_ADDRESSES": "127.0.0.1", "LAUNCHKIT_DRAIN_SECONDS": "0.5",
             **MEDIA}
    origin_env = {**on_loopback(resolve_env(container(objects, "origin"), objects, secret_values), services), **local}
    edge_env = {**on_loopback(resolve_env(container(objects, "edge"), objects, secret_values), services), **local}
    assert "LAUNCHKIT_OPS_TOKEN" not in edge_env and origin_env["LAUNCHKIT_REDIS"] == own_redis.url

    def start(role: str, env: dict[str, str], *args: str) -> LocalDemo:
        return start_launchkit(role, *args, env=env, log_dir=tmp_path)

    origin = edge = None
    try:
        # The old manifests' shape: an origin without Redis, an edge without the edge token. The edge
        # stops once its feed is refused: its retries would soon lock 127.0.0.1 (the test's operator
        # too) out of the origin's credentials.
        origin = start("origin", {**origin_env, "LAUNCHKIT_REDIS": ""}, "--port", str(origin_port))
        edge = start("edge", {**edge_env, TOKEN_ENV["edge"]: ""})
        lost = ask(edge.url)
        refused = wait_until(lambda: (metric(origin.url, EDGE_FAILURES, scrape) or 0) >= 1, 10)
        assert refused is not None and metric(edge.url, "launchkit_webrtc_feed_connected", scrape) == 0
        stop_all(edge)
        assert wait_until(lambda: lost in moderation_queue(origin.url, ops_token), 4) is None
        print(f"old shape: the feed refused after {refused:.1f} s; the question got 202 and was not in "
              "moderation after 4 s")
        stop_all(origin)

        # As rendered.
        origin = start("origin", origin_env, "--port", str(origin_port))
        edge = start("edge", edge_env)
        asked = ask(edge.url)
        took = wait_until(lambda: {asked, lost} <= moderation_queue(origin.url, ops_token), 10)
        assert took is not None, "a viewer's question never reached moderation"
        # The origin in Redis takes no part in the shared waiting room: the capacity is the edge's alone.
        capacity = {"max_viewers": int(edge_env["LAUNCHKIT_MAX_VIEWERS"]), "scope": "shared"}
        assert wait_until(lambda: shared_capacity(edge.url) == capacity, 5) is not None, shared_capacity(edge.url)
        feed = wait_until(lambda: metric(edge.url, "launchkit_webrtc_feed_connected", scrape) == 1, 10)
        assert feed is not None and metric(origin.url, "launchkit_webrtc_feed_downstreams", scrape) == 1
        for server in (origin, edge):
            assert fetch(f"{server.url}/metrics")[0] == 401
            assert fetch(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ops_token[::-1]}"})[0] == 401
        print(f"as rendered: both questions in moderation after {took:.1f} s (the one left in Redis included); "
              f"shared capacity {capacity}; feed connected after {feed:.1f} s; /metrics 200 with the "
              "ServiceMonitor's token, 401 without")
    finally:
        stop_all(edge, origin)


def test_the_loopback_dns_rewrites_service_addresses_only():
    env = on_loopback({"A": "redis://redis:6379/0", "B": "http://origin:8080", "C": "http://10.1.2.3:8080",
                       "D": "http://origin:9999"}, {"redis:6379": "127.0.0.1:1", "origin:8080": "127.0.0.1:2"})
    assert env == {"A": "redis://127.0.0.1:1/0", "B": "http://127.0.0.1:2", "C": "http://10.1.2.3:8080",
                   "D": "http://origin:9999"}

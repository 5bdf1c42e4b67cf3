"""Monitoring, for real: promtool checks and unit-tests the alerts, every PromQL expression (dashboard,
alerts, KEDA triggers) parses and names only metrics a running Launchkit exports, and a real Prometheus
scraping a running origin + edge (two workers, Redis) answers every dashboard panel's queries."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import yaml

from launchkit import catalogue
from loadtests.player import PlayerConfig, Swarm
from loadtests.target import http_status
from tests.support.environment import METRICS_AUTH, METRICS_TOKEN
from tests.support.k8s import OPS_TOKEN
from tests.support.prometheus import query, start_prometheus

MONITORING = catalogue.MONITORING
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SCRAPE_SECONDS = 28
LABELS = {"namespace": "ci", "event": "rehearsal"}


def substitute(expression: str) -> str:
    """Grafana's variables as the test's Prometheus sees them; the rate window spans the whole run."""
    return (expression.replace("$namespace", LABELS["namespace"]).replace("$event", LABELS["event"])
            .replace("$__rate_interval", f"{SCRAPE_SECONDS + 10}s").replace("$viewers_per_edge", "280"))


def expressions() -> dict[str, str]:
    """Every PromQL expression in k8s/: the dashboard's, the alerts', the autoscaler's (both overlays)."""
    found = {f"panel {who}": substitute(expr) for who, expr in catalogue.dashboard_uses()}
    found.update({f"alert {who}": expr for who, expr in catalogue.alert_uses()})
    for path in [catalogue.SCALER, *(catalogue.ROOT / "k8s" / "overlays").glob("*/capacity-plan.yaml")]:
        for doc in yaml.safe_load_all(path.read_text()):
            for trigger in doc["spec"].get("triggers", []) if doc["kind"] == "ScaledObject" else []:
                if trigger["type"] == "prometheus":
                    found[f"{path.parent.name} trigger {trigger['name']}"] = trigger["metadata"]["query"]
    return found


def promtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_alert_rules_check_and_every_alert_has_a_firing_and_a_silent_unit_test():
    promtool("check", "rules", "alerts.yaml", cwd=MONITORING)
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yaml", cwd=MONITORING)
    alerts = {rule["alert"] for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
              for rule in group["rules"]}
    cases = [case for test in yaml.safe_load((MONITORING / "alerts_test.yaml").read_text())["tests"]
             for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fires == alerts and silent == alerts
    for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            assert rule.get("for") and rule["labels"]["severity"] in ("warning", "critical") \
                and rule["annotations"]["runbook"], rule["alert"]


def test_every_expression_parses(tmp_path):
    rules = {"groups": [{"name": "parse", "rules": [
        {"record": f"check:expression_{i}", "expr": expr} for i, expr in enumerate(expressions().values())]}]}
    (tmp_path / "parse.yaml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in promtool("check", "rules",
                                                                                  str(tmp_path / "parse.yaml"))


def test_the_metrics_catalogue_is_up_to_date():
    assert catalogue.main(["--check"]) == 0, "run: python -m launchkit.catalogue"


def test_probes_answer_on_a_running_origin_and_edge(stack):
    rendered = (MONITORING.parent / "origin.yaml").read_text() + (MONITORING.parent / "edge.yaml").read_text()
    paths = set(re.findall(r"httpGet: \{path: (\S+),", rendered))
    assert paths == {"/healthz", "/readyz"}
    for server in stack:
        for path in paths:
            assert http_status(f"{server.url}{path}") == 200, (server.url, path)


def scrape_config(origin: str, edge: str) -> dict:
    """What the Prometheus Operator makes of the ServiceMonitor's endpoint (path, bearer authorization
    from the Secret: here the metrics token every test server has), with static targets."""
    def target(url: str, component: str) -> dict:
        return {"targets": [url.split("://", 1)[1]], "labels": {**LABELS, "component": component, "pod": f"{component}-0"}}

    endpoint = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"] == {"name": "launchkit-tokens", "key": "metrics-token"}
    job = {"job_name": "launchkit", "metrics_path": endpoint["path"],
           "authorization": {"type": endpoint["authorization"]["type"], "credentials": METRICS_TOKEN},
           "static_configs": [target(origin, "origin"), target(edge, "edge")]}
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [job]}


async def fill_the_waiting_room(edge: str) -> None:
    """Viewers take the edge's places, the next one waits, the others leave, the waiting one gets in: the
    waiting room's gauges, refusals, admissions from the queue and waiting time all get real data."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def ask(ticket: str | None = None) -> tuple[int, dict]:
            body = json.dumps({"ticket": ticket}) if ticket else None
            async with session.post(f"{edge}/api/admission", data=body) as response:
                return response.status, await response.json()

        admitted = []
        for _ in range(12):  # bounded: the places are 6 in all (workers register their shares in Redis)
            status, answer = await ask()
            if status != 200:
                break
            admitted.append(answer["ticket"])
        assert status == 429 and admitted, answer
        queued = answer["ticket"]
        await asyncio.sleep(2.5)  # the queue gauge is visible to a few scrapes
        for ticket in admitted:
            async with session.post(f"{edge}/api/admission/leave", data=json.dumps({"ticket": ticket})):
                pass
        for _ in range(20):  # bounded: the head of the queue is let in on its next try
            status, _ = await ask(queued)
            if status == 200:
                return
            await asyncio.sleep(0.2)
        raise AssertionError("the queued viewer was never admitted")


async def player_and_wall_traffic(origin: str, edge: str) -> None:
    """QoE beacons as players send them (to the edge and the origin), and one wall question asked,
    approved with the ops token and delivered to an open SSE client: the QoE and wall rows get data."""
    beacon = {"protocol": "llhls", "startup": 1.2, "played": 10, "stalls": 1, "rebuffer": 0.4, "errors": {},
              "webrtc": {"failed": 1}}
    async with aiohttp.ClientSession() as session:
        for server in (edge, origin, edge):
            async with session.post(f"{server}/api/qoe", json=beacon) as response:
                assert response.status == 204, await response.text()
        async with session.get(f"{origin}/api/wall/events", timeout=aiohttp.ClientTimeout(total=10)) as events:
            async with session.post(f"{origin}/api/wall/posts", json={"text": "When does it ship?", "kind": "question"}) \
                    as response:
                assert response.status == 202
                post = await response.json()
            async with session.post(f"{origin}/api/ops/wall/{post['id']}/approve", json={},
                                    headers={"Authorization": f"Bearer {OPS_TOKEN}"}) as response:
                assert response.status == 200, await response.text()
            for _ in range(200):  # bounded: the approved post arrives within a second or two
                line = await events.content.readline()
                if b"When does it ship?" in line:
                    return
        raise AssertionError("the approved question never reached the SSE client")


def test_prometheus_scrapes_origin_and_edge_and_every_panel_has_data(stack, tmp_path):
    origin, edge = stack
    exported = set()
    process, base = start_prometheus(tmp_path, scrape_config(origin.url, edge.url))
    try:
        deadline = time.monotonic() + 20
        # Ready, and both targets scraped once (Prometheus applies discovered targets every 5 s): the
        # traffic below must happen while it watches.
        while http_status(f"{base}/-/ready") != 200 or len(query(base, "up == 1")) < 2:
            assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.2)
        started = time.monotonic()
        asyncio.run(fill_the_waiting_room(edge.url))
        asyncio.run(player_and_wall_traffic(origin.url, edge.url))
        # A few LL-HLS viewers through the edge: relayed parts, blocking reloads and coalescing while
        # Prometheus scrapes.
        swarm = asyncio.run(Swarm(f"{edge.url}/hls/index.m3u8", 4, PlayerConfig(duration=12, request_timeout=5)).run())
        assert swarm.summary()["started"] >= 1, swarm.summary()  # the others may wait: places are few
        for server in stack:  # what a running Launchkit exports, from the servers themselves
            request = urllib.request.Request(f"{server.url}/metrics", headers=METRICS_AUTH)
            with urllib.request.urlopen(request, timeout=5) as response:
                exported |= set(re.findall(r"^(launchkit_\w+?)[{ ]", response.read().decode(), re.M))
        time.sleep(max(0.0, SCRAPE_SECONDS - (time.monotonic() - started)))

        used = {name for expr in expressions().values() for name in re.findall(r"\blaunchkit_\w+", expr)}
        assert used - exported == set(), "not exported by a running Launchkit"

        empty = {}
        for who, expression in expressions().items():
            if not who.startswith("panel "):
                continue
            values = [float(r["value"][1]) for r in query(base, expression)]
            if not any(math.isfinite(v) for v in values):
                empty[who] = (expression, values)
        assert empty == {}, f"panels without data: {sorted(empty)}"
        # The multiprocess edge: both workers' admitted viewers add up, and the scrape target is healthy.
        assert query(base, 'up{component="edge"}')[0]["value"][1] == "1"
        assert len(query(base, 'launchkit_admission_viewers{component="edge", scope="local"}')) == 2  # one per pid
    finally:
        process.terminate()
        process.wait(10)

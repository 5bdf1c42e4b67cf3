"""k8s/: both overlays render, every object validates against the Kubernetes schemas (offline), and the
manifests keep the promises the README makes (labels, secrets, probes, drain, autoscaling)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from launchkit import plan
from launchkit.admission import SECRET_ENV
from launchkit.auth import ENV as TOKEN_ENV
from launchkit.config import EDGE_ONLY_OPTIONS, ORIGIN_OPTIONS, env_name
from launchkit.webrtc.ice import ADDRESSES_ENV
from launchkit.webrtc.turn import SECRET_ENV as TURN_SECRET_ENV
from tests.support.k8s import K8S, OVERLAYS, by_kind_and_name, render

KUBERNETES_VERSION = "1.32.0"  # the kubectl here; the sleep preStop action needs >= 1.30
# Kinds kubernetes-validate has no schema for (CRDs): checked structurally below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
# Secrets created out of band (k8s/README.md says how); nothing in k8s/ carries a value.
SECRETS = {"launchkit-tokens": {"publish-token", "ops-token", "edge-token", "metrics-token", "admission-secret",
                                "wall-webhook-secret", "turn-secret"},
           "launchkit-tls": {"tls"}, "turn-tls": {"tls"}}
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by",
          "app.kubernetes.io/instance")
# Credentials are read from the environment only (never options: a command line is public).
ENV_OK = {env_name(o.name) for o in ORIGIN_OPTIONS + EDGE_ONLY_OPTIONS} | set(TOKEN_ENV.values()) | {
    SECRET_ENV, "LAUNCHKIT_WALL_WEBHOOK_SECRET", TURN_SECRET_ENV, ADDRESSES_ENV, "POD_IP"}


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request) -> tuple[str, dict[tuple[str, str], dict]]:
    return request.param, by_kind_and_name(render(request.param))


def containers(objects: dict) -> list[tuple[str, dict]]:
    return [(name, c) for (kind, name), d in objects.items() if kind == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]]


def test_every_builtin_object_validates_strictly_and_crds_are_well_formed(overlay):
    name, objects = overlay
    namespace, event = OVERLAYS[name]
    for (kind, obj_name), doc in objects.items():
        assert doc["metadata"].get("namespace") == namespace, (kind, obj_name)
        for label in LABELS:
            assert label in doc["metadata"]["labels"], (kind, obj_name, label)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == event
        if kind in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any schema error
    assert {kind for kind, _ in objects} >= {
        "Deployment", "Service", "PersistentVolumeClaim", "PodDisruptionBudget", "Ingress", "NetworkPolicy",
        "ConfigMap", *CRD_KINDS}
    # CRDs, structurally: what the operators (Prometheus Operator, KEDA) need to act on them.
    monitor = objects[("ServiceMonitor", "launchkit")]["spec"]
    assert monitor["endpoints"][0]["port"] == "http" and monitor["endpoints"][0]["path"] == "/metrics"
    scraped = [d for (kind, _), d in objects.items() if kind == "Service"
               and d["metadata"]["labels"].get("app.kubernetes.io/component") in ("origin", "edge")
               and any(p["name"] == "http" for p in d["spec"]["ports"])]
    assert {s["metadata"]["name"] for s in scraped} == {"origin", "edge"}
    targets = {r["targetLabel"] for r in monitor["endpoints"][0]["relabelings"]}
    assert targets == {"component", "event"}  # the labels every query selects on
    rules = objects[("PrometheusRule", "launchkit")]["spec"]
    assert rules == yaml.safe_load((K8S / "base" / "monitoring" / "alerts.yaml").read_text())
    scaler = objects[("ScaledObject", "edge")]["spec"]
    assert ("Deployment", scaler["scaleTargetRef"]["name"]) in objects
    assert 1 <= scaler["minReplicaCount"] <= scaler["maxReplicaCount"]
    assert {t["type"] for t in scaler["triggers"]} <= {"prometheus", "cron"}
    for trigger in scaler["triggers"]:
        assert trigger["type"] != "cpu"
        if trigger["type"] == "prometheus":
            query = trigger["metadata"]["query"]
            assert f'namespace="{namespace}"' in query and f'event="{event}"' in query


def test_no_secret_values_and_every_secret_is_referenced_and_documented(overlay):
    _, objects = overlay
    assert not [name for kind, name in objects if kind == "Secret"]  # created out of band, never committed
    for path in K8S.rglob("*"):
        if path.suffix in (".yaml", ".yml", ".json"):
            text = path.read_text()
            assert not re.search(r"^\s*(data|stringData):", text, re.M) or path.name == "launchkit-dashboard.json", path
    referenced: dict[str, set[str]] = {}
    for _, container in containers(objects):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                referenced.setdefault(ref["name"], set()).add(ref["key"])
    for tls in objects[("Ingress", "launchkit")]["spec"].get("tls", []):
        referenced.setdefault(tls["secretName"], set()).add("tls")
    for (kind, _), document in objects.items():  # certificates mounted as files (coturn's)
        if kind == "Deployment":
            for volume in document["spec"]["template"]["spec"].get("volumes", []):
                if "secret" in volume:
                    referenced.setdefault(volume["secret"]["secretName"], set()).add("tls")
    assert set(referenced) <= set(SECRETS)
    assert referenced["launchkit-tokens"] == SECRETS["launchkit-tokens"]
    readme = (K8S / "README.md").read_text()
    for secret, keys in SECRETS.items():
        assert secret in readme and all(key in readme for key in keys - {"tls"})


def test_workloads(overlay):
    _, objects = overlay
    origin = objects[("Deployment", "origin")]["spec"]
    assert origin["replicas"] == 1 and origin["strategy"]["type"] == "Recreate"
    pod = origin["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert mounts["data"] == env["LAUNCHKIT_DATA_DIR"] and ("PersistentVolumeClaim", claim["data"]) in objects

    edge = objects[("Deployment", "edge")]["spec"]
    assert "replicas" not in edge  # KEDA owns it
    pod = edge["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LAUNCHKIT_ORIGIN"] == "http://origin:8080" and env["LAUNCHKIT_WORKERS"] == "1"
    # SIGTERM comes after preStop; the edge then serves for --drain-seconds; in-flight responses need a margin.
    drain = float(env["LAUNCHKIT_DRAIN_SECONDS"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert edge["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = objects[("PodDisruptionBudget", "edge")]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"].items() <= \
        edge["selector"]["matchLabels"].items()
    for name, container in containers(objects):
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        for variable in container.get("env", []):
            if name != "redis":
                assert variable["name"] in ENV_OK, (name, variable["name"])  # a real option, no typo


def test_scale_down_never_outruns_the_drain(overlay):
    _, objects = overlay
    scaler = objects[("ScaledObject", "edge")]["spec"]
    down = scaler["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    grace = objects[("Deployment", "edge")]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert down["stabilizationWindowSeconds"] >= 300 and down["selectPolicy"] == "Min"
    pods = [p for p in down["policies"] if p["type"] == "Pods"]
    assert pods and all(p["periodSeconds"] >= 2 * grace for p in pods)  # one pod gone before the next drains


def test_the_base_triggers_and_committed_plans_are_what_launchkit_plan_writes(tmp_path, capsys):
    base = yaml.safe_load((K8S / "base" / "edge-scaledobject.yaml").read_text())
    assert plan.main(["--audience", "1000", "--patch", str(tmp_path / "default.yaml")]) == 0
    generated = list(yaml.safe_load_all((tmp_path / "default.yaml").read_text()))[1]["spec"]["triggers"]
    assert base["spec"]["triggers"] == generated
    for overlay in OVERLAYS:
        committed = (K8S / "overlays" / overlay / "capacity-plan.yaml").read_text()
        argv = re.match(r"# Generated by `launchkit plan (.*)`", committed).group(1).split()
        assert plan.main([*argv, "--patch", str(tmp_path / f"{overlay}.yaml")]) == 0
        assert (tmp_path / f"{overlay}.yaml").read_text() == committed, f"re-plan {overlay}"
    capsys.readouterr()

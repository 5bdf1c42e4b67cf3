"""Shared by tests/k8s (and the TURN tests): the manifests as `kubectl kustomize` renders them, and
the arguments of the Launchkit tests/k8s/conftest.py runs as Kubernetes would run it."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
OVERLAYS = {"dev": ("launchkit-dev", "launch-dev"), "production": ("launchkit", "launch")}
LADDER = ("--ladder", "360p:640x360:500,180p:320x180:200", "--fps", "15")
# The WebRTC rendition is encoded (its metrics are exported) but nobody may watch it over WHEP here
# (tests/support/environment.py: no WebRTC viewers outside the network namespaces a test builds).
WEBRTC = ("--webrtc", "320x180:200")
OPS_TOKEN = "k8s-stack-ops-token-0123456789"


@functools.cache
def _kustomize(directory: Path) -> str:
    result = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize DIRECTORY` renders (rendered once per session, parsed afresh
    for every caller, so a test may change what it gets)."""
    return [doc for doc in yaml.safe_load_all(_kustomize(directory)) if doc]


def render(overlay: str) -> list[dict]:
    return kustomize(K8S / "overlays" / overlay)


def by_kind_and_name(documents: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}

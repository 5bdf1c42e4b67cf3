"""Launchkit's container image (Containerfile, deploy/build-image): it builds from the checkout, runs the
CLI as an unprivileged user, carries no build tool or test dependency, and declares what a container
engine needs (health check, stop signal, ports, OCI labels). Every container is removed by its id."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from loadtests.target import free_port
from tests.support.containers import VERSION, podman

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]


def run_once(image: str, *args: str, entrypoint: str | None = None, timeout: float = 120):
    """`podman run --rm` without a network; the container is removed by id even if podman is cut short."""
    cidfile = Path(f"/tmp/launchkit-test-{uuid.uuid4().hex}.cid")
    command = ["run", "--rm", "--network=none", f"--cidfile={cidfile}"]
    if entrypoint is not None:
        command.append(f"--entrypoint={entrypoint}")
    try:
        return podman(*command, image, *args, timeout=timeout, check=False)
    finally:
        if cidfile.exists():
            podman("rm", "--force", "--ignore", cidfile.read_text().strip(), check=False)
            cidfile.unlink()


def inspect(image: str) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


def test_the_cli_runs_in_the_image(launchkit_image):
    version = run_once(launchkit_image, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["launchkit", VERSION]
    help_text = run_once(launchkit_image, "demo", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: launchkit demo" in help_text.stdout


def test_it_runs_as_an_unprivileged_user(launchkit_image):
    assert inspect(launchkit_image)["Config"]["User"] == "10001:10001"  # numeric: runAsNonRoot can check it
    ids = run_once(launchkit_image, "-c", "import os; print(os.getuid(), os.getgid())", entrypoint="python3")
    assert ids.stdout.split() == ["10001", "10001"], ids.stderr
    who = run_once(launchkit_image, "-u", "-n", entrypoint="id")
    assert who.stdout.strip() == "launchkit", who.stderr


RUNTIME_CHECK = """
import ctypes, importlib.util, json, shutil
from importlib.resources import files
print(json.dumps({
    "modules": {name: importlib.util.find_spec(name) is not None for name in
                ("pip", "setuptools", "wheel", "pytest", "_pytest", "playwright", "ruff", "matplotlib",
                 "kubernetes_validate")},
    "programs": {name: shutil.which(name) for name in ("gcc", "cc", "c++", "make", "ld", "pip", "pip3", "ffmpeg")},
    "hls_js": (files("landing") / "static/vendor/hls.light.min.js").is_file(),
    "libsrt": bool(ctypes.CDLL("libsrt-gnutls.so.1.5")),
}))
"""


def test_no_build_tool_or_test_dependency_inside(launchkit_image):
    """The venv holds Launchkit and its runtime dependencies only (pip ran from its wheel in the
    build stage); the runtime has libsrt for the SRT listener, hls.js in the package, no ffmpeg CLI."""
    result = run_once(launchkit_image, "-c", RUNTIME_CHECK, entrypoint="python3")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert not any(found["modules"].values()), found["modules"]
    assert not any(found["programs"].values()), found["programs"]
    assert found["hls_js"] and found["libsrt"]


def test_the_image_declares_health_check_stop_signal_ports_and_labels(launchkit_image):
    image = inspect(launchkit_image)
    config = image["Config"]
    health = image.get("Healthcheck") or config.get("Healthcheck")
    assert health and "/healthz" in " ".join(health["Test"]), image
    assert config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"] == ["launchkit"] and config["Cmd"] == ["demo"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "1935/tcp", "8890/udp"}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    for key in ("title", "description", "licenses", "source"):
        assert labels[f"org.opencontainers.image.{key}"], key


def test_a_demo_container_becomes_healthy_and_stops_on_sigterm(launchkit_image):
    port = free_port()
    # A small ladder keeps the encoder light beside the other tests.
    started = podman("run", "--detach", "--network=slirp4netns", f"--publish=127.0.0.1:{port}:8080",
                     launchkit_image, "demo", "--ladder", "low:320x180:200", "--fps", "10", "--webrtc", "off")
    container = started.stdout.strip().splitlines()[-1]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, podman("logs", container, check=False).stderr
                time.sleep(0.5)
        health = podman("healthcheck", "run", container, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        state = json.loads(podman("container", "inspect", container).stdout)[0]["State"]
        status = state.get("Health", state.get("Healthcheck", {})).get("Status")
        assert status == "healthy", state
        podman("stop", "--time=10", container, timeout=30)
        state = json.loads(podman("container", "inspect", container).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", container, check=False).stderr
    finally:
        podman("rm", "--force", "--ignore", container, check=False)

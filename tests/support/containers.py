"""Containers for tests/deploy: podman with the project's containers.conf, the tag of Launchkit's image
(tests/deploy/conftest.py builds it with deploy/build-image), and Debian stand-ins for the Redis and
Prometheus images, which no registry can provide here. Everything a test starts is found and removed
by its compose project label and container ids."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINERS_CONF = DEPLOY / "containers.conf"
PODMAN = shutil.which("podman") or "/usr/bin/podman"
PODMAN_COMPOSE = shutil.which("podman-compose") or "/usr/bin/podman-compose"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"localhost/launchkit:{VERSION}"  # what deploy/build-image tags
# One Debian root file system with both servers, imported under two names (the compose file picks each
# image's `redis-server` / `prometheus` from the PATH).
REDIS_STAND_IN = "localhost/launchkit-test-redis:bookworm"
PROMETHEUS_STAND_IN = "localhost/launchkit-test-prometheus:bookworm"
NICE = ["nice", "-n", "19", "ionice", "-c3"]  # builds must not slow the timing-sensitive tests beside them


def environment(**extra: str) -> dict[str, str]:
    """The host's environment for podman: the project's containers.conf (runc, no default ulimits),
    and none of the LAUNCHKIT_* variables tests/conftest.py sets for local servers."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LAUNCHKIT_")}
    return {**env, "CONTAINERS_CONF": str(CONTAINERS_CONF), **extra}


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout, env=environment())
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
    return result


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def require_podman() -> None:
    for tool in (PODMAN, PODMAN_COMPOSE):
        if not Path(tool).exists():
            pytest.fail(f"{tool} is not installed (run `make container-packages` as root)", pytrace=False)


def stand_ins() -> dict[str, str]:
    """LAUNCHKIT_REDIS_IMAGE and LAUNCHKIT_PROMETHEUS_IMAGE for deploy/compose.yaml: Debian 12's
    redis-server and prometheus in one root file system (mmdebstrap, this machine's apt sources),
    built once and kept (the next run reuses it)."""
    require_podman()
    if not (image_exists(REDIS_STAND_IN) and image_exists(PROMETHEUS_STAND_IN)):
        mmdebstrap = shutil.which("mmdebstrap")
        if mmdebstrap is None:
            pytest.fail("mmdebstrap is not installed (run `make container-packages` as root)", pytrace=False)
        sources = [str(path) for pattern in ("*.sources", "*.list") for path in
                   sorted(Path("/etc/apt/sources.list.d").glob(pattern))]
        sources += [path for path in ["/etc/apt/sources.list"] if Path(path).is_file() and Path(path).stat().st_size]
        with tempfile.TemporaryDirectory(prefix="launchkit-stand-ins.") as work:
            tarball = Path(work) / "rootfs.tar"
            build = subprocess.run(
                [*NICE, mmdebstrap, "--quiet", "--variant=apt", "--include=redis-server,prometheus",
                 "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr", "--dpkgopt=path-exclude=/usr/share/doc/*",
                 "--dpkgopt=path-exclude=/usr/share/man/*", "bookworm", str(tarball), *sources],
                capture_output=True, text=True, timeout=1800, env=environment())
            assert build.returncode == 0, build.stderr
            for name in (REDIS_STAND_IN, PROMETHEUS_STAND_IN):
                podman("import", "--quiet", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       str(tarball), name, timeout=600)
    return {"LAUNCHKIT_REDIS_IMAGE": REDIS_STAND_IN, "LAUNCHKIT_PROMETHEUS_IMAGE": PROMETHEUS_STAND_IN}


def project_containers(project: str) -> list[str]:
    """Ids of every container of a compose project, running or not."""
    out = podman("ps", "--all", "--quiet", "--no-trunc", "--filter", f"label=io.podman.compose.project={project}").stdout
    return out.split()


def remove_project(project: str) -> list[str]:
    """Stop and remove a compose project's containers (by id), volumes and network; what was left over."""
    for container in project_containers(project):
        podman("rm", "--force", "--time", "5", container, timeout=120, check=False)
    volumes = podman("volume", "ls", "--quiet", "--filter", f"label=io.podman.compose.project={project}").stdout.split()
    for volume in volumes:
        podman("volume", "rm", "--force", volume, check=False)
    network = f"{project}_default"
    if podman("network", "exists", network, check=False).returncode == 0:
        podman("network", "rm", network, check=False)
    left = project_containers(project)
    left += podman("volume", "ls", "--quiet", "--filter", f"label=io.podman.compose.project={project}").stdout.split()
    if podman("network", "exists", network, check=False).returncode == 0:
        left.append(network)
    return left

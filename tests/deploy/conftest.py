"""tests/deploy: Launchkit's container image and what runs from it. Every test here is marked `deploy`
(builds and runs the container image; `-m "not deploy"` leaves them out of a quick local run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.containers import DEPLOY, IMAGE, NICE, environment, image_exists, require_podman

HERE = Path(__file__).parent
BUILD_TIMEOUT = 840  # a cold build (mmdebstrap base, wheels from the package index) takes a few minutes


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.deploy)


@pytest.fixture(scope="session")
def launchkit_image() -> str:
    """Launchkit's image, built from this checkout once per session by deploy/build-image (as
    `make image` does: the base only if missing, the wheels and the image every time)."""
    require_podman()
    build = subprocess.run([*NICE, str(DEPLOY / "build-image")], capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT, env=environment())
    assert build.returncode == 0, f"deploy/build-image failed:\n{build.stdout}\n{build.stderr}"
    assert image_exists(IMAGE), build.stdout
    return IMAGE

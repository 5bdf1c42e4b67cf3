"""Programs the tests run, which `make test` installs (`make system-packages`)."""

from __future__ import annotations

from pathlib import Path

import pytest


def require(tool: str) -> None:
    """`make test` installs every tool the tests use: a missing one is a setup defect, never a skip."""
    if not Path(tool).exists():
        pytest.fail(f"{tool} is not installed (run `make system-packages` as root)", pytrace=False)

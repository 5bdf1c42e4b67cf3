"""Where tests leave what a person may want to look at after a run: tests/artifacts/ (gitignored),
never a tracked file, so `git status` stays clean after `make test`. The README's screenshots are
refreshed on purpose only: `make screenshots` points SCREENSHOTS_DIR at docs/screenshots/."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS_ENV = "SCREENSHOTS_DIR"


def artifact(name: str) -> Path:
    """The path of artifact `name` under tests/artifacts/ (its directory made)."""
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def screenshots_dir() -> Path:
    """Where the landing page's state screenshots go: SCREENSHOTS_DIR (relative to the repository's
    root) when set, else tests/artifacts/screenshots/."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    directory = ROOT / chosen if chosen else ARTIFACTS / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory

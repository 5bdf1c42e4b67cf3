"""A disk that really fills up, for the tests of writers under faults: a tiny tmpfs (ENOSPC for real)
and a ballast file that takes every free page of it."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = 4096  # tmpfs allocates whole pages


@contextlib.contextmanager
def tiny_disk(path: Path, kib: int) -> Iterator[Path]:
    """A tmpfs of `kib` KiB at `path`: it really fills up (ENOSPC), and is gone afterwards."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (the test machine runs the suite as root)", pytrace=False)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(disk: Path) -> Path:
    """Take every free page of `disk` with a ballast file (unbuffered: each write either fits or fails)."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as file:
        for _ in range(100_000):  # bounded: the disks here are a few MiB at most
            try:
                file.write(bytes(PAGE))
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
    assert os.statvfs(disk).f_bavail == 0
    return ballast

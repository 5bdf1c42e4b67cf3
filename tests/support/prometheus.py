"""A real Prometheus (Debian's `prometheus`) on a free loopback port, for the tests that check what it
scrapes and which alerts fire. The caller stops it (by PID) when done."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from loadtests.target import free_port
from tests.support.tools import require

PROMETHEUS = "/usr/bin/prometheus"


def start_prometheus(directory: Path, config: dict) -> tuple[subprocess.Popen, str]:
    """(process, base URL) of Prometheus running `config`; its configuration, data and log in `directory`."""
    require(PROMETHEUS)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    with open(directory / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={directory / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    return process, f"http://127.0.0.1:{port}"


def query(base: str, expression: str) -> list[dict]:
    """The result of an instant query against the Prometheus at `base` (its HTTP API)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]

"""`launchkit plan`: the numbers follow from the measured per-pod capacity, and the patch applies."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from launchkit import plan

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def run_plan(capsys, *argv: str) -> tuple[int, str, str]:
    code = plan.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_50000_viewers_60_percent_in_the_first_minute(capsys):
    code, out, _ = run_plan(capsys, "--audience", "50000", "--first-minute-share", "0.6", "--json")
    assert code == 0
    result = json.loads(out)["plan"]
    # Default ladder, everyone on 720p (3000 kbit/s) + AAC 128 kbit/s, +5 % CMAF overhead.
    mbps = (3.0 + 0.128) * plan.CONTAINER_OVERHEAD
    assert result["viewer_mbps"] == pytest.approx(mbps, abs=1e-4)
    # LL-HLS with 0.5 s parts (auto at 30 fps, 2 s segments): a part and a blocking reload per part.
    assert result["viewer_requests_per_second"] == 4.0
    # The pod's measured budgets: 1600 viewers × 1 request/s, 1600 viewers × 3.14 Mbit/s.
    assert plan.POD_REQUESTS_PER_SECOND == 1600 and plan.POD_EGRESS_MBPS == pytest.approx(5024)
    per_pod = math.floor(min(1600 / 4.0, 5024 / mbps))
    assert result["viewers_per_pod"] == per_pod == 400  # LL-HLS is request-bound, not byte-bound
    target = math.floor(per_pod * 0.7)
    assert result["target_viewers_per_pod"] == target == 280
    assert result["target_mbps_per_pod"] == pytest.approx(target * mbps, abs=0.1)
    assert result["peak_edges"] == math.ceil(50000 / target) == 179
    assert result["max_edges"] == math.ceil(50000 * 1.5 / target) == 268
    # 30,000 arrive in the first minute; by T+120 s another 20,000 × 60/600 = 2,000.
    assert result["peak_join_rate"] == 500.0
    assert result["audience_at_reaction"] == 32000
    # Joins cost 6 requests each: 500/s × 6 / 4 requests per viewer = 750 viewer-equivalents.
    assert result["prescale_edges"] == math.ceil((32000 + 750) / target) == 117
    assert result["egress_gbps"] == pytest.approx(50000 * mbps / 1000, abs=0.01)
    # Origin: O(edges): each edge fetches each part and each blocking reload once, one rendition.
    assert result["origin_requests_per_second"] == pytest.approx(268 * 1 * 4.0)
    assert result["origin_egress_mbps"] == pytest.approx(268 * mbps, abs=0.1)


def test_classic_hls_mix_is_byte_bound_and_the_origin_serves_every_watched_rendition(capsys):
    code, out, _ = run_plan(capsys, "--audience", "10000", "--ll-hls-share", "0", "--json",
                            "--ladder", "1080p:1920x1080:6000,360p:640x360:600", "--mix", "1080p:3,360p:1")
    assert code == 0
    result = json.loads(out)["plan"]
    mbps = (0.75 * 6.128 + 0.25 * 0.728) * 1.05
    assert result["viewer_mbps"] == pytest.approx(mbps, abs=1e-4)
    assert result["viewer_requests_per_second"] == 1.0
    assert result["viewers_per_pod"] == math.floor(min(1600 / 1.0, 5024 / mbps))  # egress-bound here
    edges = result["max_edges"]
    # Each edge: per rendition one segment per 2 s + the live playlist at most every 0.2 s.
    assert result["origin_requests_per_second"] == pytest.approx(edges * 2 * (1 / 2 + 1 / 0.2), abs=0.1)


def test_table_and_bad_input(capsys):
    code, out, _ = run_plan(capsys, "--audience", "50000", "--first-minute-share", "0.6")
    assert code == 0
    assert "pre-scale 117, peak 179, ceiling 268" in out and "T-30 min" in out
    for argv, message in [
        (["--audience", "0"], "--audience: expected 1–100000000 viewers"),
        (["--audience", "10", "--first-minute-share", "1.5"], "expected a share within 0–1"),
        (["--audience", "10", "--mix", "4k:1"], "--mix: 4k not in the ladder"),
        (["--audience", "10", "--start-at", "2026-12-01T14:00:00"], "UTC offset"),
        (["--first-minute-share", "0.5"], "the following arguments are required: --audience"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            code = plan.main(argv)
            raise SystemExit(code)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, argv
        assert message in err and err.count("\n") == 1, err


def test_patch_applies_to_the_production_overlay(tmp_path, capsys):
    tree = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", tree)
    patch = tree / "overlays" / "production" / "capacity-plan.yaml"
    assert run_plan(capsys, "--audience", "50000", "--first-minute-share", "0.6", "--start-at",
                    "2026-12-01T14:00:00+01:00", "--patch", str(patch))[0] == 0
    rendered = subprocess.run([KUBECTL, "kustomize", str(tree / "overlays" / "production")],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    edge = docs[("Deployment", "edge")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in edge["env"]}
    assert env["LAUNCHKIT_MAX_VIEWERS"] == "400"
    assert env["LAUNCHKIT_DRAIN_SECONDS"] == "30"  # the base's other variables survive the patch
    scaler = docs[("ScaledObject", "edge")]["spec"]
    assert (scaler["minReplicaCount"], scaler["maxReplicaCount"]) == (2, 268)
    triggers = {t["name"]: t for t in scaler["triggers"]}
    assert triggers["viewers"]["metadata"]["threshold"] == "280"
    # 14:00 +01:00 = 13:00 UTC; the floor from 12:30 until T + 1 + 10 + 15 min = 13:26 UTC.
    assert triggers["prescale"]["metadata"] == {"timezone": "Etc/UTC", "start": "30 12 1 12 *",
                                                "end": "26 13 1 12 *", "desiredReplicas": "117"}
    assert scaler["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"] == 600  # the base's behaviour is kept


def test_without_a_start_time_the_floor_is_the_prescale(tmp_path, capsys):
    patch = tmp_path / "plan.yaml"
    assert run_plan(capsys, "--audience", "50000", "--first-minute-share", "0.6", "--patch", str(patch))[0] == 0
    text = patch.read_text()
    assert text.startswith("# Generated by `launchkit plan --audience 50000 --first-minute-share 0.6`")
    scaler = list(yaml.safe_load_all(text))[1]["spec"]
    assert scaler["minReplicaCount"] == 117 and [t["type"] for t in scaler["triggers"]] == ["prometheus"] * 2

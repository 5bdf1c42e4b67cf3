"""`launchkit rehearse` (loadtests/rehearse/): profiles and shards, the loopback guard, and real
rehearsals against a local `launchkit demo` with a capacity limit (queue forms and drains: pass;
capacity far too low: fail, and the report says which SLO), and two workers merged into one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loadtests.rehearse import profiles, slo
from loadtests.rehearse.cli import main
from loadtests.rehearse.results import merge, summarize
from loadtests.rehearse.targets import DEMO_ARGS, LOOPBACK_ICE_ENV
from loadtests.target import start_demo

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ("arrivals", "startup", "rebuffer", "egress", "server")
# 60 arrivals in 15 s (a trickle, a step at the start time, a decay), viewers who watch 5–7 s.
FLASH_CROWD = {
    "phases": [{"name": "trickle", "seconds": 5, "rate": 1}, {"name": "start", "seconds": 5, "rate": 8},
               {"name": "decay", "seconds": 5, "rate": [4, 2]}],
    "arrivals": "even", "mix": {"llhls": 0.55, "hls": 0.2, "whep": 0.05, "visitor": 0.2},
    "watch_seconds": [5, 7], "patience_seconds": 60, "visit_seconds": [5, 10], "seed": 3,
}


def _profile_file(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def _rehearse(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadtests.rehearse", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


# ---- no network ---------------------------------------------------------------------------------

def test_even_schedule_counts_and_shards_partition_it() -> None:
    profile = profiles.from_dict(FLASH_CROWD)
    schedule = profile.schedule()
    assert len(schedule) == 60
    assert [a.at for a in schedule] == sorted(a.at for a in schedule)
    assert sum(a.at < 5 for a in schedule) == 5 and sum(5 <= a.at < 10 for a in schedule) == 40
    assert schedule == profile.schedule()  # seeded: every worker computes the same schedule
    shards = [profiles.shard(schedule, i, 3) for i in range(3)]
    assert sorted(a.index for s in shards for a in s) == list(range(60))
    assert profile.stretched(30).expected_arrivals == pytest.approx(120)
    assert profile.scaled(0.5).expected_arrivals == pytest.approx(30)


def test_builtin_profiles_and_bad_ones() -> None:
    for name in profiles.BUILT_INS:
        assert profiles.load(name).schedule()
    with pytest.raises(ValueError, match="mix"):
        profiles.from_dict({**FLASH_CROWD, "mix": {"torrent": 1}})
    with pytest.raises(ValueError, match="phases"):
        profiles.from_dict({**FLASH_CROWD, "phases": [{"seconds": 5, "rate": -1}]})


def test_remote_target_needs_allow_remote(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--target", "http://192.0.2.10:8080", "--profile", "flash-crowd", "--report", str(tmp_path)])
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before any traffic or file


def test_slo_file_overrides_defaults(tmp_path: Path) -> None:
    path = _profile_file(tmp_path, "slo", {"startup_p95_max_seconds": 5})
    thresholds = slo.load(str(path))
    assert thresholds == {**slo.DEFAULTS, "startup_p95_max_seconds": 5}
    with pytest.raises(ValueError):
        slo.load(str(_profile_file(tmp_path, "bad", {"startup": 1})))


# ---- against a local demo ----------------------------------------------------------------------

@pytest.mark.timeout(150)
def test_flash_crowd_queue_forms_and_drains_and_slos_hold(tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = _rehearse("--profile", str(_profile_file(tmp_path, "flash", FLASH_CROWD)), "--report", str(report),
                     "--demo-args", "--max-viewers 20", timeout=140)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "verdict: PASS" in done.stdout
    assert "arrivals 60/60" in done.stderr  # live progress lines
    document = json.loads((report / "report.json").read_text())
    summary, timeline = document["summary"], document["timeline"]
    assert document["verdict"] == {"pass": True, "failed": [], "checks": document["verdict"]["checks"]}
    assert summary["arrivals"] == 60
    assert summary["viewers"]["joined"] == summary["viewers"]["arrivals"] > 0
    assert summary["viewers"]["waited"] > 0 and summary["viewers"]["max_position"] > 0
    # The queue formed and drained, seen by the clients and by the server's own gauge.
    assert summary["queue"]["clients"]["peak"] > 0 and summary["queue"]["clients"]["drained"]
    assert summary["queue"]["server"]["peak"] > 0
    # Viewers leaving let the next in line in: after the queue's peak, viewers are admitted again.
    waiting = [row["waiting"] for row in timeline]
    peak_at = waiting.index(max(waiting))
    admitted_after = [row["playing"] + row["stalled"] for row in timeline[peak_at:]]
    assert max(admitted_after) > admitted_after[0]
    assert summary["queue"]["clients"]["peak_admitted"] <= 20
    assert summary["visitors"]["page_ok"] == summary["visitors"]["arrivals"] > 0
    assert summary["http_5xx"] == 0 and summary["server"]["samples"] > 10
    for name in CHARTS:
        assert (report / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    page = (report / "report.html").read_text()
    assert "SLOs hold" in page and page.count("data:image/png;base64,") == len(CHARTS)
    assert "src='http" not in page and 'src="http' not in page  # self-contained


@pytest.mark.timeout(100)
def test_capacity_too_low_fails_and_names_the_slo(tmp_path: Path) -> None:
    crowd = {**FLASH_CROWD, "phases": [{"name": "start", "seconds": 5, "rate": 4}],
             "mix": {"llhls": 1}, "watch_seconds": [4, 5], "patience_seconds": 8}
    report = tmp_path / "report"
    done = _rehearse("--profile", str(_profile_file(tmp_path, "tight", crowd)), "--report", str(report),
                     "--demo-args", "--max-viewers 2", timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "FAIL  join_success" in done.stdout
    document = json.loads((report / "report.json").read_text())
    assert document["verdict"]["pass"] is False
    assert "join_success" in document["verdict"]["failed"]
    failed = next(c for c in document["verdict"]["checks"] if c["name"] == "join_success")
    assert failed["measured"] < 0.999 and "viewers who eventually played" in failed["why"]
    assert "SLOs failed: join_success" in (report / "report.html").read_text()


@pytest.mark.timeout(120)
def test_two_workers_merge_into_one_report_equal_to_the_sum(tmp_path: Path) -> None:
    crowd = {**FLASH_CROWD, "phases": [{"name": "start", "seconds": 6, "rate": 2}],
             "mix": {"llhls": 0.4, "hls": 0.2, "whep": 0.2, "visitor": 0.2}, "watch_seconds": [4, 6]}
    profile = _profile_file(tmp_path, "crowd", crowd)
    workers = tmp_path / "workers"
    with start_demo(*DEMO_ARGS, env=LOOPBACK_ICE_ENV, log_dir=tmp_path, ready_timeout=40) as demo:
        running = [subprocess.Popen([sys.executable, "-m", "loadtests.rehearse", "--target", demo.url,
                                     "--profile", str(profile), "--report", str(workers), "--worker-of", f"{i}/2",
                                     "--fps", "15", "--quiet"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
        outputs = [p.communicate(timeout=90) for p in running]
        assert [p.returncode for p in running] == [0, 0], outputs
    shards = [json.loads((workers / f"raw-{i}-of-2.json").read_text()) for i in (0, 1)]
    merged_dir = tmp_path / "merged"
    done = _rehearse("merge", str(workers), "--report", str(merged_dir), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = json.loads((merged_dir / "raw.json").read_text())
    assert merged == merge(shards)
    # Every arrival of the schedule exactly once, split between the workers.
    assert [a["index"] for a in merged["arrivals"]] == list(range(12))
    assert {a["index"] % 2 for a in shards[1]["arrivals"]} == {1}
    # Totals of the merged report are the sums of the shards' totals.
    parts = [summarize(s) for s in shards]
    total = json.loads((merged_dir / "report.json").read_text())["summary"]
    assert total["arrivals"] == sum(p["arrivals"] for p in parts) == 12
    assert total["by_kind"] == dict(sum((Counter(p["by_kind"]) for p in parts), Counter()))
    for key in ("joined", "arrivals", "waited"):
        assert total["viewers"][key] == sum(p["viewers"][key] for p in parts)
    for key in ("bytes", "error_count", "http_5xx"):
        assert total[key] == sum(p[key] for p in parts)
    assert total["rebuffer"]["stalls"] == sum(p["rebuffer"]["stalls"] for p in parts)
    assert sum(row["arrived"] for row in merged["timeline"]) == 12
    assert total["server"]["samples"] == len(shards[0]["server"]) > 0 and not shards[1]["server"]  # worker 0 scrapes
    # WebRTC viewers received media, or fell back to LL-HLS as the page does; either way they played.
    whep = [a for a in merged["arrivals"] if a["kind"] == "whep"]
    assert whep and all(a["joined"] for a in whep), whep
    assert total["whep"]["connected"] + total["whep"]["fell_back_to_llhls"] == len(whep)


# ---- Kubernetes: the workers' Indexed Job and the merge Job ---------------------------------------

def test_k8s_rehearsal_manifests_render_validate_and_shard_consistently() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    yaml = pytest.importorskip("yaml")
    documents = []
    for directory in ("k8s/rehearsal", "k8s/rehearsal/merge"):
        rendered = subprocess.run(["kubectl", "kustomize", str(ROOT / directory)], capture_output=True, text=True,
                                  timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        documents += [d for d in yaml.safe_load_all(rendered.stdout) if d]
    for document in documents:
        kubernetes_validate.validate(document, "1.32.0", strict=True)
    jobs = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Job"}
    workers = jobs["rehearsal-workers"]
    assert workers["completionMode"] == "Indexed" and workers["completions"] == workers["parallelism"]
    args = workers["template"]["spec"]["containers"][0]["args"]
    assert f"--worker-of=$(JOB_INDEX)/{workers['completions']}" in args and "--allow-remote" in args
    assert jobs["rehearsal-merge"]["template"]["spec"]["containers"][0]["args"][:2] == ["rehearse", "merge"]
    profile = profiles.load(str(ROOT / "k8s" / "rehearsal" / "profile.json"))
    per_worker = profile.expected_arrivals / workers["completions"]
    assert per_worker < 5000  # what one worker process accepts (loadtests/rehearse/run.py)

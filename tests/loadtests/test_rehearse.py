"""`launchkit rehearse` (loadtests/rehearse/): profiles and shards, the loopback guard, the waiting
room's figures and the journal on made-up data, and real rehearsals against a local `launchkit
demo` with a capacity limit (queue forms and drains: pass; capacity far too low: fail, and the report
says which SLO), two workers merged into one report, a rehearsal without matplotlib, a rehearsal
SIGKILLed mid-run and reported from its journal, and 10x capacity arriving within 10 s on two
edges sharing Redis (the waiting room's acceptance figures)."""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from loadtests.rehearse import journal, places, profiles, slo
from loadtests.rehearse.cli import main
from loadtests.rehearse.results import merge, summarize
from loadtests.rehearse.targets import DEMO_ARGS, LOOPBACK_ICE_ENV
from loadtests.target import start_demo

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ("arrivals", "line", "startup", "rebuffer", "egress", "server")
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


# An interpreter as a plain install (`pip install .`, no [rehearse] extra) sees it: matplotlib cannot
# be found, and importing it fails with the same ModuleNotFoundError.
PLAIN_INSTALL = """
import importlib.abc, sys

class PlainInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, PlainInstall())
try:
    import matplotlib
except ModuleNotFoundError as error:
    print(f"plain install: {error}", file=sys.stderr)
else:
    sys.exit("matplotlib is still importable")
from loadtests.rehearse.cli import main
sys.exit(main(sys.argv[1:]))
"""
# A short queue that forms and drains in ~10 s: 30 arrivals, 6 places, viewers who watch 2-3 s.
SMALL_CROWD = {"phases": [{"name": "crowd", "seconds": 10, "rate": 3}], "arrivals": "even", "mix": {"llhls": 1},
               "watch_seconds": [2, 3], "patience_seconds": 60, "seed": 7}


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory):
    with start_demo(*DEMO_ARGS, "--max-viewers", "6", env=LOOPBACK_ICE_ENV,
                    log_dir=tmp_path_factory.mktemp("rehearsal-demo"), ready_timeout=40) as demo:
        yield demo


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


def _viewer(index: int, at: float, *, queued: float | None = None, admitted: float | None = None,
            left: float | None = None, seq: int | None = None) -> dict:
    return {"index": index, "at": at, "kind": "llhls", "queued_at": queued, "admitted_at": admitted,
            "playing_at": None if admitted is None else admitted + 0.1, "left_at": left,
            "place": None if seq is None else ["g", seq]}


def test_line_figures_count_idle_places_while_people_wait_and_out_of_order_admissions() -> None:
    # Two places. A and B play from 0; C and D queue at 1 and 2. A leaves at 4: C is in 0.2 s later.
    # B leaves at 6, but D only gets in at 7 (a place idle 1 s while D waits). E arrives at 8, is let in
    # directly while F (queued at 7.2, place 4) waits until 9: E jumped the line.
    arrivals = [_viewer(0, 0.0, admitted=0.0, left=4.0), _viewer(1, 0.0, admitted=0.0, left=6.0),
                _viewer(2, 1.0, queued=1.0, admitted=4.2, left=10.0, seq=1),
                _viewer(3, 2.0, queued=2.0, admitted=7.0, left=8.5, seq=2),
                _viewer(4, 8.0, admitted=8.0, left=10.0), _viewer(5, 7.2, queued=7.2, admitted=9.0, left=10.0, seq=4)]
    line = places.figures(arrivals, capacity=2, end=10.0)
    # Someone waits from 1 to 7 and from 7.2 to 9: 7.8 s. Idle while waiting: 4-4.2 and 6-7 (E took the
    # place D freed at 8.5, so F found none).
    assert line["queue_seconds"] == pytest.approx(7.8)
    assert line["idle_place_seconds_while_waiting"] == pytest.approx(0.2 + 1.0)
    assert line["idle_ratio_while_waiting"] == pytest.approx(1.2 / (2 * 7.8), abs=1e-4)
    # Freed -> admitted: C 0.2 s after A left, D 1.0 s after B left, F: the place D freed at 8.5, 0.5 s.
    assert line["freed_to_admitted"]["count"] == 3 and line["freed_to_admitted"]["max"] == pytest.approx(1.0)
    assert line["fifo"] == {"jitter_seconds": 0.5, "compared": 3, "inversions": 0, "inversions_any_lead": 0,
                            "worst_lead_seconds": 0.0, "jumped": 1, "violations": 1}
    assert line["admitted_beyond_capacity"] == 1  # E took a place the clients never saw free
    # A later place let in 0.3 s before an earlier one is within the jitter; 0.8 s is not.
    swapped = [_viewer(0, 0, queued=0, admitted=5.0, seq=1), _viewer(1, 0, queued=0, admitted=4.7, seq=2),
               _viewer(2, 0, queued=0, admitted=4.0, seq=3)]
    assert places.fifo(swapped) | {"compared": 3} == {
        "jitter_seconds": 0.5, "compared": 3, "inversions": 2, "inversions_any_lead": 3, "worst_lead_seconds": 1.0,
        "jumped": 0, "violations": 2}
    points = places.series(arrivals, 2, 10.0)
    assert [0.0, 0, 0, 0] == points[0] and [6.0, 1, 1, 1] in points and [7.0, 0, 2, 0] in points


def test_a_journal_without_its_end_reads_as_an_incomplete_run(tmp_path: Path) -> None:
    path = tmp_path / journal.NAME
    log = journal.Journal(path)
    profile = profiles.from_dict({**FLASH_CROWD, "mix": {"llhls": 1}})
    schedule = profile.schedule()
    log.write("start", {"format": "launchkit-rehearsal-raw/1", "shard": [0, 1], "target": "http://127.0.0.1:1",
                        "targets": ["http://127.0.0.1:1"], "profile": profile.as_dict(), "started_at": 1e9,
                        "capacity": 20, "schedule": [[a.index, a.at, a.kind] for a in schedule]})
    for t in (1, 2, 3):
        log.write("tick", {"t": t, "arrived": 1, "errors": 0, "bytes": 0, "loading": 0, "waiting": 0, "playing": 1,
                           "stalled": 0, "visiting": 0, "lag": 0.001})
    log.write("arrival", {**_viewer(0, schedule[0].at, admitted=0.5, left=2.5), "joined": True, "played": 2.0})
    log.close()
    with open(path, "a") as torn:
        torn.write('{"type": "arrival", "index": 1, "at"')  # the line being written when the process died
    raw = journal.read(path)
    assert not raw["complete"] and raw["wall_seconds"] == 3
    assert [a["index"] for a in raw["arrivals"]] == [0]
    assert raw["unfinished"] == sum(a.at <= 3 for a in schedule) - 1 > 0
    assert raw["never_started"] == len(schedule) - 1 - raw["unfinished"]
    summary = summarize(raw)
    verdict = slo.evaluate(summary, slo.DEFAULTS)
    assert "complete" in verdict["failed"] and summary["arrivals"] == 1


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
    summary = document["summary"]
    assert document["timeline"] and document["verdict"] == {"pass": True, "failed": [], "checks": document["verdict"]["checks"]}
    assert summary["arrivals"] == 60
    assert summary["viewers"]["joined"] == summary["viewers"]["arrivals"] > 0
    assert summary["viewers"]["waited"] > 0 and summary["viewers"]["max_position"] > 0
    # The queue formed and drained, seen by the clients and by the server's own gauge.
    assert summary["queue"]["clients"]["peak"] > 0 and summary["queue"]["clients"]["drained"]
    assert summary["queue"]["server"]["peak"] > 0
    # Viewers leaving let the next in line in: every viewer who waited was admitted from the line (and
    # the verdict says the places stayed taken meanwhile: idle_while_waiting).
    assert summary["line"]["admitted_from_queue"] == summary["viewers"]["waited"]
    assert summary["queue"]["clients"]["peak_admitted"] <= 20
    assert summary["visitors"]["page_ok"] == summary["visitors"]["arrivals"] > 0
    assert summary["http_5xx"] == 0 and summary["server"]["samples"] > 10
    # The waiting room on one demo: the line served in order, freed places taken at once.
    line = summary["line"]
    assert line["capacity"] == 20 and line["admitted_from_queue"] > 0
    assert line["freed_to_admitted"]["p95"] <= 1.0 and line["fifo"]["violations"] == 0
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
    # The workers' journals say the same: `rehearse report` over them gives the merged report's figures.
    assert sorted(p.name for p in journal.find(workers)) == ["journal-0-of-2.jsonl", "journal-1-of-2.jsonl"]
    from_journals = _rehearse("report", str(workers), "--report", str(tmp_path / "journals"), timeout=60)
    assert from_journals.returncode == 0, from_journals.stdout + from_journals.stderr
    again = json.loads((tmp_path / "journals" / "report.json").read_text())["summary"]
    assert again == total


@pytest.mark.timeout(90)
def test_without_matplotlib_the_rehearsal_still_writes_both_reports(small_demo, tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = subprocess.run([sys.executable, "-c", PLAIN_INSTALL, "--target", small_demo.url, "--fps", "15",
                           "--profile", str(_profile_file(tmp_path, "small", SMALL_CROWD)), "--report", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=80,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "plain install: No module named 'matplotlib'" in done.stderr
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # Said before the run started, not discovered after it.
    notice = done.stderr.index("no charts: No module named 'matplotlib' (to get them: pip install 'launchkit[rehearse]')")
    assert notice < done.stderr.index("[   1s] arrivals")
    document = json.loads((report / "report.json").read_text())
    assert document["verdict"]["pass"] and document["summary"]["arrivals"] == 30
    assert document["charts"].startswith("no charts") and "pip install 'launchkit[rehearse]'" in document["charts"]
    assert document["summary"]["line"]["admitted_from_queue"] > 0  # every figure is there, charts aside
    page = html.unescape((report / "report.html").read_text())
    assert "SLOs hold" in page and "pip install 'launchkit[rehearse]'" in page and "data:image/png" not in page
    assert "place freed → next viewer admitted" in page
    assert not list(report.glob("*.png"))


@pytest.mark.timeout(90)
def test_a_rehearsal_killed_mid_run_leaves_a_journal_that_reports_what_ran(small_demo, tmp_path: Path) -> None:
    report = tmp_path / "report"
    running = subprocess.Popen([sys.executable, "-m", "loadtests.rehearse", "--target", small_demo.url, "--fps", "15",
                                "--profile", str(_profile_file(tmp_path, "small", SMALL_CROWD)),
                                "--report", str(report), "--quiet"],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = report / journal.NAME
    try:
        deadline = time.monotonic() + 40
        while not (path.is_file() and path.read_text().count('"type":"arrival"') >= 5):
            assert time.monotonic() < deadline and running.poll() is None, "no arrival journaled"
            time.sleep(0.1)
        running.send_signal(signal.SIGKILL)  # no cleanup, no report: only what the journal already holds
        running.wait(10)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(10)
    assert not (report / "report.json").exists()
    journaled = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    finished = [entry["index"] for entry in journaled if entry["type"] == "arrival"]
    assert journaled[0]["type"] == "start" and journaled[-1]["type"] != "end"
    done = _rehearse("report", str(report), timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the run did not finish" in done.stderr and "FAIL  complete" in done.stdout
    document = json.loads((report / "report.json").read_text())
    summary = document["summary"]
    assert document["complete"] is False and document["verdict"]["failed"] == ["complete"]
    assert summary["arrivals"] == len(finished) >= 5 and summary["unfinished"] > 0
    assert summary["viewers"]["joined"] == len(finished)  # what ran, ran well
    assert summary["server"]["samples"] > 0 and document["timeline"]
    page = html.unescape((report / "report.html").read_text())
    assert "Incomplete: the run stopped after" in page and page.count("data:image/png;base64,") == len(CHARTS)
    print(f"\nkilled after {summary['wall_seconds']} s: {summary['arrivals']} arrivals reported, "
          f"{summary['unfinished']} in flight")


# 10x capacity within 10 s: two edges with 20 places each sharing Redis, 400 viewers in 10 s who watch
# 3-5 s, so places free all along while the line drains (~40 s).
TEN_TIMES = {"phases": [{"name": "10x capacity in 10 s", "seconds": 10, "rate": 40}], "arrivals": "even",
             "mix": {"llhls": 0.8, "hls": 0.2}, "watch_seconds": [3, 5], "patience_seconds": 120, "seed": 5}


@pytest.mark.timeout(150)
def test_ten_times_capacity_in_ten_seconds_on_two_edges_sharing_redis_wastes_no_place(tmp_path: Path) -> None:
    report = tmp_path / "report"
    started = time.monotonic()
    done = _rehearse("--profile", str(_profile_file(tmp_path, "ten-times", TEN_TIMES)), "--report", str(report),
                     "--edges", "2", "--edge-args", "--max-viewers 20", "--quiet", timeout=140)
    elapsed = time.monotonic() - started
    document = json.loads((report / "report.json").read_text())
    summary = document["summary"]
    line, fifo = summary["line"], summary["line"]["fifo"]
    print(f"\n10x capacity in 10 s, 2 edges + Redis ({elapsed:.0f} s, load {os.getloadavg()[0]:.1f}): "
          f"freed -> admitted p50 {line['freed_to_admitted']['p50']} s p95 {line['freed_to_admitted']['p95']} s "
          f"max {line['freed_to_admitted']['max']} s; freed -> playing p95 {line['freed_to_playing']['p95']} s; "
          f"idle {line['idle_place_seconds_while_waiting']} place-s = {100 * line['idle_ratio_while_waiting']:.2f} % "
          f"of {line['capacity_seconds_while_waiting']} capacity-s while waiting; FIFO {fifo['inversions']} "
          f"inversions beyond {fifo['jitter_seconds']} s ({fifo['inversions_any_lead']} at any lead, worst "
          f"{fifo['worst_lead_seconds']} s), {fifo['jumped']} jumped; rebuffer {summary['rebuffer']['ratio']}; "
          f"errors {summary['error_count']}")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert document["targets"] and len(document["targets"]) == 2
    assert line["capacity"] == 40 and summary["viewers"]["arrivals"] == summary["viewers"]["joined"] == 400
    assert line["admitted_from_queue"] >= 350 and line["queue_seconds"] > 20
    assert line["freed_to_admitted"]["count"] >= 350 and line["freed_to_admitted"]["p95"] <= 1.0
    assert line["idle_ratio_while_waiting"] <= 0.02
    assert fifo["violations"] == 0 and fifo["compared"] == line["admitted_from_queue"]
    assert summary["error_count"] == 0 and summary["http_5xx"] == 0
    assert summary["rebuffer"]["ratio"] < 0.005
    assert summary["queue"]["clients"]["peak_admitted"] <= 40
    assert summary["queue"]["server"]["peak"] > 100  # the shared line, as both edges' metrics saw it
    page = html.unescape((report / "report.html").read_text())
    assert "The waiting room: places and order" in page and "line chart" in page
    assert (report / "line.png").read_bytes().startswith(b"\x89PNG")


# ---- Kubernetes: the workers' Indexed Job and the merge Job ---------------------------------------

def test_k8s_rehearsal_manifests_render_validate_and_shard_consistently() -> None:
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

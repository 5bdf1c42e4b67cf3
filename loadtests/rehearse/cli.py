"""`launchkit rehearse ...` (and `python -m loadtests.rehearse ...`): run a flash-crowd rehearsal,
a worker's shard of one, merge workers' shards into one report, or report what a journal recorded.

    launchkit rehearse [--target URL]... [--profile NAME|PATH] [--duration S] [--rate-scale F]
                       [--report DIR] [--slo PATH] [--allow-remote] [--demo-args "..."]
                       [--edges N [--edge-args "..."]] [--worker-of I/M]
    launchkit rehearse merge RAW... --report DIR [--slo PATH]
    launchkit rehearse report DIR [--report OUT] [--slo PATH]

Exit status: 0 the SLOs hold, 1 they do not (or the run did not finish), 2 usage or setup error
(bad profile, refused target). A worker (`--worker-of I/M`) writes its raw results and exits 0
once it has run: the verdict belongs to the merged report.

Nothing a run measured is lost: optional dependencies are checked before it starts (without
matplotlib the report has no charts and says how to get them), every result goes to DIR's journal
as it comes (journal.py), and an interrupted run (Ctrl-C, SIGTERM) is reported from it as
incomplete; after a SIGKILL or a crash, `rehearse report DIR` does the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
_WORKER = re.compile(r"^(\d+)/(\d+)$")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "rehearse", help="flash-crowd rehearsal: simulated viewers against a target, SLO verdict, report",
        description="Drive a target with an open-model audience (HLS/LL-HLS players at real pace, WHEP viewers, "
                    "landing-page visitors), scrape its /metrics, check the SLOs and write DIR/report.json and "
                    "DIR/report.html. Exit 0 when the SLOs hold, 1 when not.",
    )
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", metavar="URL", action="append",
                        help="base URL of the target (default: a local `launchkit demo` started for the run); "
                             "repeat for several edges (arrival i goes to the i-th mod N); not loopback: needs "
                             "--allow-remote")
    parser.add_argument("--profile", default="flash-crowd", metavar="NAME|PATH",
                        help="built-in profile (flash-crowd, ramp, soak) or a JSON file (default: %(default)s)")
    parser.add_argument("--duration", type=float, metavar="S", help="stretch the profile's arrival window to S seconds")
    parser.add_argument("--rate-scale", type=float, default=1.0, metavar="F", help="multiply every arrival rate by F")
    parser.add_argument("--report", default="rehearsal-report", metavar="DIR",
                        help="directory for the report (default: %(default)s)")
    parser.add_argument("--slo", metavar="PATH", help="JSON file with SLO thresholds (default: the built-in ones)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a target that is not on this machine (only systems you may load-test)")
    parser.add_argument("--demo-args", default="", metavar="ARGS",
                        help='extra options for the local demo, e.g. --demo-args="--max-viewers 50"')
    parser.add_argument("--edges", type=int, metavar="N",
                        help="instead of the demo alone: the local demo as the origin of N local `launchkit edge` "
                             "processes sharing admission through a local redis-server (needs redis-server)")
    parser.add_argument("--edge-args", default="", metavar="ARGS",
                        help='extra options for each local edge, e.g. --edge-args="--max-viewers 20"')
    parser.add_argument("--fps", type=int, metavar="N", help="the target's frame rate, for WHEP frame delivery (default: 15 for "
                                                "the local demo, 30 otherwise)")
    parser.add_argument("--worker-of", metavar="I/M", help="run shard I (0-based) of M and write raw-I-of-M.json "
                                                           "into --report, for `rehearse merge`; needs --target")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    actions = parser.add_subparsers(dest="rehearse_action", metavar="ACTION", parser_class=type(parser))
    merge = actions.add_parser("merge", help="merge workers' raw results into one report",
                               description="Merge raw-I-of-M.json files (or directories holding them) into one "
                                           "report with one SLO verdict.")
    merge.add_argument("raw", nargs="+", help="raw result files or directories")
    merge.add_argument("--report", default="rehearsal-report", metavar="DIR", help="directory for the merged report")
    merge.add_argument("--slo", metavar="PATH", help="JSON file with SLO thresholds")
    report = actions.add_parser("report", help="report what a rehearsal's journal recorded (a killed run too)",
                                description="Rebuild the raw results of a rehearsal from the journal(s) in DIR "
                                            "(journal.jsonl, or the workers' journal-I-of-M.jsonl) and write its "
                                            "report; a run whose journal has no end is reported as incomplete.")
    report.add_argument("directory", metavar="DIR", help="the rehearsal's report directory")
    report.add_argument("--report", dest="report_out", metavar="OUT", help="where to write the report (default: DIR)")
    report.add_argument("--slo", metavar="PATH", help="JSON file with SLO thresholds")


def run(args: argparse.Namespace) -> int:
    # Heavy imports (matplotlib, aiortc) only when rehearsing: `launchkit --help` stays fast.
    from loadtests.rehearse import profiles, slo
    from loadtests.rehearse.targets import TargetError

    try:
        thresholds = slo.load(args.slo)
        if args.rehearse_action == "merge":
            return _merge(args, thresholds)
        if args.rehearse_action == "report":
            return _from_journal(args, thresholds)
        profile = _profile(args, profiles)
        worker = _worker(args)
        return _rehearse(args, profile, worker, thresholds)
    except (ValueError, TargetError, OSError) as error:
        print(f"launchkit rehearse: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _profile(args: argparse.Namespace, profiles: Any) -> Any:
    profile = profiles.load(args.profile)
    if args.duration is not None:
        if args.duration <= 0:
            raise ValueError("--duration must be > 0")
        profile = profile.stretched(args.duration)
    if args.rate_scale != 1.0:
        if args.rate_scale <= 0:
            raise ValueError("--rate-scale must be > 0")
        profile = profile.scaled(args.rate_scale)
    profiles.check(profile)
    return profile


def _worker(args: argparse.Namespace) -> tuple[int, int]:
    if args.worker_of is None:
        return (0, 1)
    match = _WORKER.match(args.worker_of)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)) <= 10_000:
        raise ValueError(f"--worker-of: I/M with 0 <= I < M, got {args.worker_of!r}")
    if not args.target:
        raise ValueError("--worker-of needs --target: every worker must load the same target")
    return int(match.group(1)), int(match.group(2))


def _rehearse(args: argparse.Namespace, profile: Any, worker: tuple[int, int], thresholds: dict[str, Any]) -> int:
    from loadtests.rehearse import journal, report
    from loadtests.rehearse.run import RunSettings, rehearse
    from loadtests.rehearse.targets import DEMO_FPS, check_target, local_demo, local_edges

    if args.edges is not None and args.target:
        raise ValueError("--edges starts its own targets: leave out --target")
    targets = [check_target(url, args.allow_remote) for url in args.target or []]
    report_dir = Path(args.report)
    report_dir.mkdir(parents=True, exist_ok=True)
    missing = report.chart_support()  # before the run, not after it
    if missing is not None and worker[1] == 1:
        print(f"launchkit rehearse: {missing}; the report will have every figure but no chart", file=sys.stderr)
    log = journal.Journal(report_dir / journal.name(*worker))

    def go(urls: list[str], fps: int) -> dict[str, Any]:
        settings = RunSettings(target=urls[0], targets=tuple(urls), profile=profile, worker=worker[0],
                               workers=worker[1], ice=_ice(urls[0]), webrtc_fps=args.fps or fps,
                               printer=(lambda _line: None) if args.quiet else None, journal=log)
        print(f"rehearsal {profile.name}: ~{profile.expected_arrivals:.0f} arrivals over {profile.seconds:.0f} s "
              f"against {', '.join(urls)} (shard {worker[0]}/{worker[1]}); journal {log.path}",
              file=sys.stderr, flush=True)
        return asyncio.run(rehearse(settings))

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if targets:
            raw = go(targets, 30)
        elif args.edges is not None:
            with local_edges(args.edges, args.demo_args, args.edge_args, log_dir=report_dir) as urls:
                raw = go(urls, DEMO_FPS)
        else:
            with local_demo(args.demo_args, log_dir=report_dir) as url:
                raw = go([url], DEMO_FPS)
    except KeyboardInterrupt:
        log.close()
        if not log.path.stat().st_size:
            print("launchkit rehearse: interrupted before the run started", file=sys.stderr)
            return EXIT_FAIL
        print(f"launchkit rehearse: interrupted; what ran is in {log.path}", file=sys.stderr)
        if worker[1] > 1:
            return EXIT_FAIL
        return _report(journal.read(log.path), report_dir, thresholds)
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.close()
    if worker[1] > 1:
        path = report_dir / f"raw-{worker[0]}-of-{worker[1]}.json"
        path.write_text(json.dumps(raw))
        print(f"worker {worker[0]}/{worker[1]}: {len(raw['arrivals'])} arrivals, raw results in {path}")
        return EXIT_PASS
    (report_dir / "raw.json").write_text(json.dumps(raw))
    return _report(raw, report_dir, thresholds)


def _interrupt(_signum: int, _frame: Any) -> None:
    """SIGTERM (Kubernetes, a deadline, kill): stop as Ctrl-C does, so the servers started are stopped
    and what ran is reported."""
    raise KeyboardInterrupt


def _ice(target: str) -> Any:
    """Loopback targets: gather 127.0.0.1 only, no STUN server. Otherwise LAUNCHKIT_ICE_ADDRESSES /
    LAUNCHKIT_ICE_SERVERS (default: this machine's interfaces, no STUN server)."""
    from urllib.parse import urlsplit

    from launchkit.webrtc.ice import IceSettings
    from loadtests.rehearse.targets import is_loopback

    if is_loopback(urlsplit(target).hostname or ""):
        return IceSettings(addresses=("127.0.0.1",), servers=())
    return IceSettings.from_env()


def _merge(args: argparse.Namespace, thresholds: dict[str, Any]) -> int:
    from loadtests.rehearse.results import merge

    files: list[Path] = []
    for name in args.raw:
        path = Path(name)
        files.extend(sorted(path.glob("raw-*-of-*.json")) if path.is_dir() else [path])
    if not files:
        raise ValueError("no raw-I-of-M.json files found")
    raw = merge([json.loads(f.read_text()) for f in files])
    if raw["missing_shards"]:
        print(f"launchkit rehearse merge: warning: shards {raw['missing_shards']} missing: the report covers "
              f"{len(files)} of {raw['shard'][1]} workers", file=sys.stderr)
    report_dir = Path(args.report)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "raw.json").write_text(json.dumps(raw))
    return _report(raw, report_dir, thresholds)


def _from_journal(args: argparse.Namespace, thresholds: dict[str, Any]) -> int:
    from loadtests.rehearse import journal
    from loadtests.rehearse.results import merge

    directory = Path(args.directory)
    paths = journal.find(directory)
    if not paths:
        raise ValueError(f"{directory}: no journal.jsonl (nor journal-I-of-M.jsonl) to report")
    raws = [journal.read(path) for path in paths]
    raw = raws[0] if len(raws) == 1 and raws[0]["shard"][1] == 1 else merge(raws)
    if not raw["complete"]:
        print(f"launchkit rehearse report: the run did not finish (no end in the journal): reporting the "
              f"{len(raw['arrivals'])} arrivals that did, {raw['unfinished']} were in flight", file=sys.stderr)
    out = Path(args.report_out) if args.report_out else directory
    out.mkdir(parents=True, exist_ok=True)
    return _report(raw, out, thresholds)


def _report(raw: dict[str, Any], report_dir: Path, thresholds: dict[str, Any]) -> int:
    from loadtests.rehearse import report, slo
    from loadtests.rehearse.results import summarize

    summary = summarize(raw)
    verdict = slo.evaluate(summary, thresholds)
    paths = report.write(report_dir, raw, summary, verdict)
    for check in verdict["checks"]:
        print(f"  {'pass' if check['pass'] else 'FAIL'}  {check['name']}: {check['measured']} "
              f"(target {check['threshold']}){'  ' + check['why'] if check['why'] else ''}")
    print(f"verdict: {'PASS' if verdict['pass'] else 'FAIL'}; report: {paths['html']}")
    return EXIT_PASS if verdict["pass"] else EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.rehearse", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))

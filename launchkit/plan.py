"""`launchkit plan`: how many edges a launch needs, and when to have them.

From the expected audience, its arrival curve (the share arriving in the first minute after the
start, the rest spread over the following minutes), the ladder and how viewers spread over it, the
protocol mix (LL-HLS or classic HLS) and the per-pod capacity measured by the benchmarks, it
derives: viewers per edge pod, edges at the peak, the autoscaler's ceiling, egress, the origin's
load (O(edges), not O(viewers)) and the pre-scale schedule. `--patch PATH` writes a kustomize patch
for `k8s/overlays/production` (the edge's admission limit and the KEDA ScaledObject: thresholds,
bounds and the pre-scale cron window).

The capacity model is deliberately pessimistic: one measured point (classic HLS, one 3.14 Mbit/s
rendition, one process on one core) gives a request budget and a byte budget per pod, and a viewer
mix must fit both. Rehearse with `launchkit rehearse` to replace the model with your own numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn, Sequence

from launchkit.config import MEDIA_OPTIONS, ORIGIN_OPTIONS, Option
from launchkit.edge.relay.relay import REVALIDATE_HOLD
from launchkit.option_parsers import ConfigError
from stream.packager.hls import default_part_duration

EXIT_USAGE = 2

# --- measured (loadtests/RESULTS.md, "Edge vs nginx serving the same HLS to real-pace 3 Mbit/s
# viewers"): `launchkit edge --workers 1` pinned to one core sustained 1,600 real-pace classic-HLS
# viewers of a 785 kB / 2 s segment (3.14 Mbit/s) with zero errors and p99 TTFB 86 ms, and failed
# at 2,400. An edge pod is that: one worker process, one core requested (k8s/base/edge.yaml).
BENCH_VIEWERS_PER_POD = 1600
BENCH_MBPS_PER_VIEWER = 3.14
# The bench's player (loadtests/player.py, classic HLS): one segment and about one playlist reload
# per 2 s segment.
BENCH_REQUESTS_PER_VIEWER_SECOND = 1.0
POD_REQUESTS_PER_SECOND = BENCH_VIEWERS_PER_POD * BENCH_REQUESTS_PER_VIEWER_SECOND
POD_EGRESS_MBPS = BENCH_VIEWERS_PER_POD * BENCH_MBPS_PER_VIEWER

# --- policy -----------------------------------------------------------------------------------
TARGET_UTILISATION = 0.7  # the autoscaler keeps pods at 70 % of measured capacity: room for join bursts
CONTAINER_OVERHEAD = 1.05  # CMAF boxes over the nominal bitrate (the packager's BANDWIDTH uses the same)
JOIN_REQUESTS = 6  # a viewer's start: multivariant, media playlist, init, three parts (player start_parts)
# Seconds from a rise in viewers to a new edge serving: 15 s scrape, 1 min rate window, 15 s KEDA
# polling, ~30 s pod start and readiness. Everything that arrives before that needs pre-scaled pods.
REACTION_SECONDS = 120
PRESCALE_LEAD = timedelta(minutes=30)  # pods up and rehearsed before the doors open
PRESCALE_HOLD = timedelta(minutes=15)  # the floor stays this long after the last expected arrival
OVERSHOOT = 1.5  # the autoscaler's ceiling over the forecast: audiences beat forecasts (the founding story)
MIN_EDGES = 2  # never one edge: a drain or a node failure must not empty the service

DEFAULT_NAMESPACE, DEFAULT_EVENT = "launchkit", "launch"
PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"


def _option(name: str) -> Option:
    """The origin's own option, so the plan parses --ladder, --start-at ... exactly as the origin does."""
    return next(o for o in MEDIA_OPTIONS + ORIGIN_OPTIONS if o.name == name)


@dataclass(frozen=True)
class Inputs:
    audience: int
    first_minute_share: float
    arrival_minutes: float  # the rest of the audience arrives evenly over this many minutes after the first
    ladder: tuple  # stream.ladder.Rendition, largest first (the origin's --ladder)
    mix: dict[str, float]  # rendition name -> share of viewers
    audio_kbps: int
    segment_duration: float
    part_duration: float
    ll_hls_share: float
    start_at: datetime | None
    namespace: str = DEFAULT_NAMESPACE
    event: str = DEFAULT_EVENT


@dataclass(frozen=True)
class Plan:
    viewer_mbps: float  # average egress per viewer
    viewer_requests_per_second: float
    viewers_per_pod: int  # measured capacity for this mix: the edge's admission limit (--max-viewers)
    target_viewers_per_pod: int  # what the autoscaler aims at
    target_mbps_per_pod: float
    peak_join_rate: float  # viewers per second in the first minute
    audience_at_reaction: int  # viewers in by the time a scale-up triggered at the start serves
    prescale_edges: int
    peak_edges: int
    max_edges: int
    egress_gbps: float
    origin_requests_per_second: float
    origin_egress_mbps: float
    schedule: list[dict[str, Any]]


def viewer_mbps(inputs: Inputs) -> float:
    rates = {r.name: r.bitrate / 1e6 for r in inputs.ladder}
    return sum(share * (rates[name] + inputs.audio_kbps / 1000) for name, share in inputs.mix.items()) \
        * CONTAINER_OVERHEAD


def viewer_requests_per_second(inputs: Inputs) -> float:
    """LL-HLS: a part and a blocking playlist reload per part; classic: a segment and a reload per segment."""
    ll, classic = 2 / inputs.part_duration, 2 / inputs.segment_duration
    return inputs.ll_hls_share * ll + (1 - inputs.ll_hls_share) * classic


def audience_at(inputs: Inputs, seconds: float) -> float:
    """Viewers present `seconds` after the start (nobody leaves during the launch)."""
    first = inputs.audience * inputs.first_minute_share * min(seconds, 60) / 60
    rest_window = inputs.arrival_minutes * 60
    rest = inputs.audience * (1 - inputs.first_minute_share) * min(max(seconds - 60, 0) / rest_window, 1)
    return first + rest


def origin_load(inputs: Inputs, edges: int) -> tuple[float, float]:
    """(requests/s, Mbit/s) the origin serves to `edges` edge pods (one worker each): every edge
    fetches each object once (coalescing), whatever its audience."""
    renditions = [r.name for r in inputs.ladder if inputs.mix.get(r.name, 0) > 0]
    ladder_mbps = sum(r.bitrate / 1e6 + inputs.audio_kbps / 1000 for r in inputs.ladder if r.name in renditions) \
        * CONTAINER_OVERHEAD
    requests, modes = 0.0, 0
    if inputs.ll_hls_share > 0:  # each part once, each blocking reload once per part
        requests, modes = requests + 2 / inputs.part_duration, modes + 1
    if inputs.ll_hls_share < 1:  # each segment once, the live playlist at most once per hold
        requests, modes = requests + 1 / inputs.segment_duration + 1 / REVALIDATE_HOLD, modes + 1
    return edges * len(renditions) * requests, edges * ladder_mbps * modes


def make_plan(inputs: Inputs) -> Plan:
    mbps, rps = viewer_mbps(inputs), viewer_requests_per_second(inputs)
    per_pod = math.floor(min(POD_REQUESTS_PER_SECOND / rps, POD_EGRESS_MBPS / mbps))
    target = max(1, math.floor(per_pod * TARGET_UTILISATION))
    join_rate = inputs.audience * inputs.first_minute_share / 60
    # Joins cost requests too: JOIN_REQUESTS each, counted in viewer-equivalents of steady requests.
    reaction_audience = audience_at(inputs, REACTION_SECONDS)
    prescale = max(MIN_EDGES, math.ceil((reaction_audience + join_rate * JOIN_REQUESTS / rps) / target))
    peak = max(MIN_EDGES, math.ceil(inputs.audience / target))
    maximum = max(peak, prescale, math.ceil(inputs.audience * OVERSHOOT / target))
    origin_rps, origin_mbps = origin_load(inputs, maximum)
    return Plan(
        viewer_mbps=round(mbps, 4), viewer_requests_per_second=round(rps, 4), viewers_per_pod=per_pod,
        target_viewers_per_pod=target, target_mbps_per_pod=round(target * mbps, 1),
        peak_join_rate=round(join_rate, 1), audience_at_reaction=round(reaction_audience),
        prescale_edges=prescale, peak_edges=peak, max_edges=maximum,
        egress_gbps=round(inputs.audience * mbps / 1000, 2),
        origin_requests_per_second=round(origin_rps, 1), origin_egress_mbps=round(origin_mbps, 1),
        schedule=schedule(inputs, prescale),
    )


def prescale_window(inputs: Inputs) -> tuple[datetime, datetime] | None:
    if inputs.start_at is None:
        return None
    start = inputs.start_at.astimezone(timezone.utc)
    return start - PRESCALE_LEAD, start + timedelta(minutes=1 + inputs.arrival_minutes) + PRESCALE_HOLD


def schedule(inputs: Inputs, prescale: int) -> list[dict[str, Any]]:
    window = prescale_window(inputs)
    lead, hold = PRESCALE_LEAD.total_seconds() / 60, PRESCALE_HOLD.total_seconds() / 60
    at = (lambda t: t.isoformat()) if window else (lambda t: None)
    first, last = window or (None, None)
    return [
        {"at": at(first), "relative": f"T-{lead:g} min", "min_edges": prescale,
         "why": "pre-scale: pods pulled, ready and rehearsed before the doors open"},
        {"at": at(last), "relative": f"T+{1 + inputs.arrival_minutes + hold:g} min", "min_edges": MIN_EDGES,
         "why": "arrivals over: the floor goes, viewers/egress drive the edges (slow scale-down)"},
    ]


# --- the kustomize patch ----------------------------------------------------------------------

def selector(inputs: Inputs) -> str:
    return f'namespace="{inputs.namespace}", event="{inputs.event}", component="edge"'


def queue_expression(match: str) -> str:
    """Viewers waiting: the Redis queue (scope shared, the same on every edge: max) plus local queues
    (non-empty only while an edge has fallen back from Redis)."""
    return f'max(launchkit_admission_queued{{{match}, scope="shared"}}) + ' \
           f'sum(launchkit_admission_queued{{{match}, scope="local"}})'


def viewer_query(inputs: Inputs) -> str:
    """Demand on the edges: admitted viewers plus those waiting (the waiting room must empty too)."""
    return f'sum(launchkit_admission_viewers{{{selector(inputs)}, scope="local"}}) + ' \
           f'{queue_expression(selector(inputs))}'


def egress_query(inputs: Inputs) -> str:
    return f"sum(rate(launchkit_http_response_bytes_total{{{selector(inputs)}}}[1m])) * 8 / 1e6"


def _cron(moment: datetime) -> str:
    return f"{moment.minute} {moment.hour} {moment.day} {moment.month} *"


def triggers(inputs: Inputs, plan: Plan) -> list[dict[str, Any]]:
    """The ScaledObject's triggers: scale on viewers and egress (not CPU), plus the pre-scale window."""
    result: list[dict[str, Any]] = [
        {"type": "prometheus", "name": "viewers", "metricType": "AverageValue",
         "metadata": {"serverAddress": PROMETHEUS_URL, "query": viewer_query(inputs),
                      "threshold": str(plan.target_viewers_per_pod)}},
        {"type": "prometheus", "name": "egress-mbps", "metricType": "AverageValue",
         "metadata": {"serverAddress": PROMETHEUS_URL, "query": egress_query(inputs),
                      "threshold": f"{plan.target_mbps_per_pod:g}"}},
    ]
    window = prescale_window(inputs)
    if window is not None:
        result.append({"type": "cron", "name": "prescale", "metadata": {
            "timezone": "Etc/UTC", "start": _cron(window[0]), "end": _cron(window[1]),
            "desiredReplicas": str(plan.prescale_edges)}})
    return result


def patch_documents(inputs: Inputs, plan: Plan) -> list[dict[str, Any]]:
    # Without a start time there is no cron window: the floor itself is the pre-scale (apply the patch
    # PRESCALE_LEAD before the start, re-plan without it afterwards).
    floor = MIN_EDGES if inputs.start_at is not None else plan.prescale_edges
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge"},
         "spec": {"template": {"spec": {"containers": [{"name": "edge", "env": [
             {"name": "LAUNCHKIT_MAX_VIEWERS", "value": str(plan.viewers_per_pod)}]}]}}}},
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "edge"},
         "spec": {"minReplicaCount": floor, "maxReplicaCount": plan.max_edges, "triggers": triggers(inputs, plan)}},
    ]


def _without_patch(argv: Sequence[str]) -> list[str]:
    """The arguments that determine the plan (not the subcommand, the output format or the patch's path)."""
    kept, skip = [], False
    for argument in argv[1:] if argv[:1] == ["plan"] else argv:
        if skip:
            skip = False
        elif argument == "--patch":
            skip = True
        elif not argument.startswith("--patch=") and argument != "--json":
            kept.append(argument)
    return kept


def patch_text(argv: Sequence[str], inputs: Inputs, plan: Plan) -> str:
    """YAML (each document is JSON, which is YAML), headed by the command that made it."""
    header = "# Generated by `launchkit plan " + " ".join(_without_patch(argv)) + "`: do not edit, re-plan.\n"
    return header + "---\n".join(json.dumps(doc, indent=2) + "\n" for doc in patch_documents(inputs, plan))


# --- command line -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Errors as one line an operator can act on, exit 2 (as launchkit/cli.py)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _typed(name: str, parse: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ConfigError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name  # argparse names the type in its messages
    return convert


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"expected a share within 0–1, got {text}")
    return value


def _audience(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100_000_000:
        raise ValueError(f"expected 1–100000000 viewers, got {text}")
    return value


def _minutes(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 240:
        raise ValueError(f"expected 1–240 minutes, got {text}")
    return value


def _mix(text: str) -> dict[str, float] | str:
    """`top`, or `name:share,...` (shares are normalised)."""
    if text == "top":
        return text
    mix: dict[str, float] = {}
    for item in text.split(","):
        name, _, share = item.strip().partition(":")
        if not name or float(share or "nan") < 0 or math.isnan(float(share or "nan")):
            raise ValueError(f"expected top or name:share items separated by commas, got {item.strip()!r}")
        mix[name] = float(share)
    if sum(mix.values()) <= 0:
        raise ValueError("the shares add up to 0")
    return mix


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """`launchkit plan` as a subcommand of `commands` (launchkit/cli.py's subparsers)."""
    parser = commands.add_parser(
        "plan", help="capacity plan: edges, egress, origin load, pre-scale schedule, kustomize patch",
        description="Plan a launch's capacity from the expected audience and its arrival curve, with the per-pod "
                    "capacity measured in loadtests/RESULTS.md.",
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    ladder, audio = _option("ladder"), _option("audio-bitrate")
    segment, part = _option("segment-duration"), _option("part-duration")
    parser.add_argument("--audience", type=_typed("audience", _audience), required=True,
                        help="expected concurrent viewers at the peak")
    parser.add_argument("--first-minute-share", type=_typed("share", _share), default=0.5, metavar="F",
                        help="share of the audience arriving in the first minute after the start (default: %(default)s)")
    parser.add_argument("--arrival-minutes", type=_typed("minutes", _minutes), default=10.0, metavar="M",
                        help="the rest arrives evenly over this many minutes after the first (default: %(default)s)")
    parser.add_argument("--ladder", type=_typed("ladder", ladder.parse), default=ladder.default, metavar="LIST",
                        help=f"the origin's ladder (default: {ladder.show(ladder.default)})")
    parser.add_argument("--mix", type=_typed("mix", _mix), default="top", metavar="MIX",
                        help="viewers per rendition, name:share,... or top (everyone on the first; default)")
    parser.add_argument("--audio-bitrate", type=_typed("audio-bitrate", audio.parse), default=audio.default,
                        metavar="KBPS", help="AAC bitrate (default: %(default)s)")
    parser.add_argument("--segment-duration", type=_typed("segment-duration", segment.parse),
                        default=segment.default, metavar="S", help="segment duration (default: %(default)s)")
    parser.add_argument("--part-duration", type=_typed("part-duration", part.parse), default=None, metavar="S",
                        help="LL-HLS part duration (default: the origin's auto at --fps)")
    parser.add_argument("--fps", type=_typed("fps", _option("fps").parse), default=_option("fps").default,
                        metavar="N", help="frame rate, for the automatic part duration (default: %(default)s)")
    parser.add_argument("--ll-hls-share", type=_typed("share", _share), default=1.0, metavar="F",
                        help="share of viewers playing LL-HLS (the landing page does; default: %(default)s)")
    parser.add_argument("--start-at", type=_typed("start-at", _option("start-at").parse), default=None, metavar="TIME",
                        help="event start, ISO 8601 with UTC offset: the patch gets a KEDA cron pre-scale window")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace of the edges (default: %(default)s)")
    parser.add_argument("--event", default=DEFAULT_EVENT,
                        help="the deployment's app.kubernetes.io/instance label (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the inputs and the plan as JSON")
    parser.add_argument("--patch", type=Path, metavar="PATH",
                        help="write a kustomize patch for k8s/overlays/production (e.g. its capacity-plan.yaml)")


def inputs_from(args: argparse.Namespace) -> Inputs:
    """Raises ValueError for combinations the parser cannot check alone."""
    names = [r.name for r in args.ladder]
    mix = {names[0]: 1.0} if args.mix == "top" else args.mix
    unknown = sorted(set(mix) - set(names))
    if unknown:
        raise ValueError(f"--mix: {', '.join(unknown)} not in the ladder ({', '.join(names)})")
    total = sum(mix.values())
    part = args.part_duration or default_part_duration(args.fps, args.segment_duration)
    if part > args.segment_duration:
        raise ValueError(f"--part-duration {part:g} is longer than --segment-duration {args.segment_duration:g}")
    return Inputs(
        audience=args.audience, first_minute_share=args.first_minute_share, arrival_minutes=args.arrival_minutes,
        ladder=args.ladder, mix={name: share / total for name, share in mix.items()}, audio_kbps=args.audio_bitrate,
        segment_duration=args.segment_duration, part_duration=part, ll_hls_share=args.ll_hls_share,
        start_at=args.start_at, namespace=args.namespace, event=args.event,
    )


def table(inputs: Inputs, plan: Plan) -> str:
    mix = ", ".join(f"{name} {share:.0%}" for name, share in inputs.mix.items())
    rows = [
        ("audience", f"{inputs.audience:,} viewers, {inputs.first_minute_share:.0%} in the first minute, the rest "
                     f"over {inputs.arrival_minutes:g} min"),
        ("viewer mix", f"{mix}; LL-HLS {inputs.ll_hls_share:.0%} (parts {inputs.part_duration:g} s), "
                       f"classic {1 - inputs.ll_hls_share:.0%} (segments {inputs.segment_duration:g} s)"),
        ("per viewer", f"{plan.viewer_mbps:g} Mbit/s, {plan.viewer_requests_per_second:g} requests/s"),
        ("edge pod capacity", f"{plan.viewers_per_pod:,} viewers (admission limit; measured "
                              f"{POD_REQUESTS_PER_SECOND:g} req/s and {POD_EGRESS_MBPS:g} Mbit/s per core)"),
        ("autoscaler target", f"{plan.target_viewers_per_pod:,} viewers or {plan.target_mbps_per_pod:g} Mbit/s "
                              f"per pod ({TARGET_UTILISATION:.0%})"),
        ("peak join rate", f"{plan.peak_join_rate:,g} viewers/s"),
        ("in by T+{:g} s".format(REACTION_SECONDS), f"{plan.audience_at_reaction:,} viewers (before a scale-up "
                                                    "triggered at the start serves)"),
        ("edges", f"pre-scale {plan.prescale_edges}, peak {plan.peak_edges}, ceiling {plan.max_edges}"),
        ("egress at the peak", f"{plan.egress_gbps:g} Gbit/s"),
        ("origin load", f"{plan.origin_requests_per_second:,g} requests/s, {plan.origin_egress_mbps:,g} Mbit/s "
                        f"(at the ceiling of {plan.max_edges} edges)"),
    ]
    for step in plan.schedule:
        rows.append((f"schedule {step['relative']}", f"min {step['min_edges']} edges"
                     + (f" at {step['at']}" if step["at"] else "") + f": {step['why']}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows) + "\n"


def as_json(inputs: Inputs, plan: Plan) -> dict[str, Any]:
    data = asdict(inputs)
    data["ladder"] = [{"name": r.name, "kbps": r.bitrate // 1000} for r in inputs.ladder]
    data["start_at"] = inputs.start_at.isoformat() if inputs.start_at else None
    return {"inputs": data, "plan": asdict(plan), "measured": {
        "source": "loadtests/RESULTS.md", "viewers_per_pod": BENCH_VIEWERS_PER_POD,
        "mbps_per_viewer": BENCH_MBPS_PER_VIEWER, "requests_per_viewer_second": BENCH_REQUESTS_PER_VIEWER_SECOND}}


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    try:
        inputs = inputs_from(args)
    except ValueError as error:
        print(f"launchkit plan: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    plan = make_plan(inputs)
    print(json.dumps(as_json(inputs, plan), indent=2) if args.json else table(inputs, plan), end="" if not args.json
          else "\n")
    if args.patch is not None:
        try:
            args.patch.write_text(patch_text(argv, inputs, plan))
        except OSError as error:
            print(f"launchkit plan: error: cannot write {args.patch}: {error.strerror}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="launchkit plan", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())

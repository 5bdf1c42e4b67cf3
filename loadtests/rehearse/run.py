"""The open-model driver: every arrival of the profile's schedule (or of this worker's shard)
starts on time, whatever the server is doing, and becomes an HLS or LL-HLS player, a WHEP viewer or
a page visitor. Once a second the driver samples what every arrival is doing (the timeline),
prints one progress line, and (worker 0) scrapes the target's /metrics.

Several targets (edges): arrival i goes to target i mod N, as a round-robin load balancer would
send it. The target's capacity is read from `/api/status` at the start (the waiting room's figures
need it: places.py). With a journal, every finished arrival, every timeline row and every scraped
sample is written to it at once (journal.py): a run that dies still leaves its results.

Bounded: at most `MAX_ARRIVALS_PER_PROCESS` arrivals in one process, and a hard deadline (last
arrival + the longest stay + grace) after which stragglers are cancelled and counted.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from launchkit.webrtc.ice import IceSettings
from loadtests.player import MAX_VIEWERS, percentiles
from loadtests.rehearse import metrics_scrape
from loadtests.rehearse.journal import Journal
from loadtests.rehearse.profiles import Arrival, Profile, shard
from loadtests.rehearse.results import FORMAT, GAUGES, ArrivalResult
from loadtests.rehearse.viewers import hls_viewer, whep_viewer
from loadtests.rehearse.visitors import visitor
from loadtests.whep import install_counting_decoders

MAX_ARRIVALS_PER_PROCESS = MAX_VIEWERS  # what one event loop can drive (see loadtests/player.py)
GRACE_SECONDS = 10.0
STATUS_TIMEOUT = 5.0
CONNECTIONS_PER_ARRIVAL = 2  # like a browser: playlist + media, or status poll + wall stream

Printer = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    target: str  # base URL, no trailing slash
    profile: Profile
    targets: tuple[str, ...] = ()  # several base URLs (edges); empty: `target` alone
    worker: int = 0
    workers: int = 1
    ice: IceSettings = IceSettings(addresses=("127.0.0.1",), servers=())
    webrtc_fps: int = 15  # the target's program frame rate, for WHEP expected frames
    scrape: bool = True
    printer: Printer | None = None
    journal: Journal | None = None

    @property
    def all_targets(self) -> tuple[str, ...]:
        return self.targets or (self.target,)


def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def rehearse(settings: RunSettings) -> dict[str, Any]:
    """Run this process's share of the rehearsal; the raw results (see results.py)."""
    arrivals = shard(settings.profile.schedule(), settings.worker, settings.workers)
    if len(arrivals) > MAX_ARRIVALS_PER_PROCESS:
        raise ValueError(f"{len(arrivals)} arrivals for one process; at most {MAX_ARRIVALS_PER_PROCESS}: "
                         f"use more workers (--worker-of) or a smaller --rate-scale")
    if any(a.kind == "whep" for a in arrivals):
        install_counting_decoders()
    loop = asyncio.get_running_loop()
    targets = settings.all_targets
    records = [ArrivalResult(a.index, round(a.at, 3), a.kind, target=a.index % len(targets)) for a in arrivals]
    deadline = max((a.at for a in arrivals), default=0.0) + settings.profile.longest_stay + GRACE_SECONDS
    limit = max(10, CONNECTIONS_PER_ARRIVAL * len(arrivals))
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300)
    timeline: list[dict[str, Any]] = []
    server: list[dict[str, Any]] = []
    lag: list[float] = []
    journal = settings.journal
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False) as session:
        capacity = await target_capacity(session, targets)
        started_at, epoch = time.time(), loop.time()
        head = {"format": FORMAT, "shard": [settings.worker, settings.workers], "target": settings.target,
                "targets": list(targets), "profile": settings.profile.as_dict(), "started_at": started_at,
                "capacity": capacity}
        if journal is not None:
            journal.write("start", {**head, "schedule": [[a.index, round(a.at, 3), a.kind] for a in arrivals]})
        tasks = [asyncio.create_task(_arrive(session, settings, a, r, epoch)) for a, r in zip(arrivals, records)]
        helpers = [asyncio.create_task(_sample(records, epoch, deadline, timeline, lag,
                                               settings.printer or _print_stderr, journal))]
        if settings.scrape and settings.worker == 0:
            helpers.append(asyncio.create_task(metrics_scrape.scrape_every_second(
                session, list(targets), epoch, deadline, server,
                on_sample=(lambda sample: journal.write("server", sample)) if journal is not None else None)))
        pending: set[asyncio.Task] = set()
        try:
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        wall = loop.time() - epoch
    if journal is not None:
        journal.write("end", {"wall_seconds": round(wall, 3), "cancelled": len(pending)})
    return {
        **head, "wall_seconds": round(wall, 3), "arrivals": [r.as_dict() for r in records], "cancelled": len(pending),
        "timeline": timeline, "server": server, "generator_lag": lag, "complete": True, "unfinished": 0,
    }


async def target_capacity(session: aiohttp.ClientSession, targets: tuple[str, ...]) -> int | None:
    """Viewers the targets admit together (`/api/status` capacity): the shared figure when they
    share Redis, else the sum; None when any is unlimited or does not say."""
    shared = None
    total = 0
    for target in targets:
        try:
            async with session.get(f"{target}/api/status",
                                   timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT)) as response:
                capacity = (await response.json(content_type=None)).get("capacity") or {}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError):
            return None
        limit = capacity.get("max_viewers")
        if not capacity.get("enforced") or not isinstance(limit, int):
            return None
        if capacity.get("scope") == "shared":
            shared = max(shared or 0, limit)
        total += limit
    return shared if shared is not None else total


async def _arrive(session: aiohttp.ClientSession, settings: RunSettings, arrival: Arrival, record: ArrivalResult,
                  epoch: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, epoch + arrival.at - loop.time()))
    record.state = "loading"
    target = settings.all_targets[record.target]
    try:
        if arrival.kind == "visitor":
            await visitor(session, target, arrival, record)
        elif arrival.kind == "whep":
            await whep_viewer(session.connector, target, arrival, record, ice=settings.ice,
                              fps=settings.webrtc_fps, epoch=epoch)
        else:
            await hls_viewer(session, target, arrival, record, low_latency=arrival.kind == "llhls", epoch=epoch)
    except asyncio.CancelledError:
        record.detail["cancelled"] = True  # cut short: at the deadline, or the whole run was stopped
        raise
    except Exception as error:  # noqa: BLE001 - one broken viewer is a finding, not the end of the rehearsal
        record.errors[f"generator_{type(error).__name__}"] = record.errors.get(f"generator_{type(error).__name__}",
                                                                               0) + 1
    finally:
        record.state = "done"
        if settings.journal is not None:
            settings.journal.write("arrival", record.as_dict())


async def _sample(records: list[ArrivalResult], epoch: float, seconds: float, timeline: list[dict[str, Any]],
                  lag: list[float], printer: Printer, journal: Journal | None) -> None:
    """One timeline row and one progress line per second."""
    loop = asyncio.get_running_loop()
    previous = {"arrived": 0, "errors": 0, "bytes": 0}
    for tick in range(1, int(seconds) + 2):
        planned = epoch + tick
        await asyncio.sleep(max(0.0, planned - loop.time()))
        lag.append(round(max(0.0, loop.time() - planned), 4))
        totals = {"arrived": sum(r.state != "pending" for r in records),
                  "errors": sum(sum(r.errors.values()) for r in records),
                  "bytes": sum(r.bytes for r in records)}
        states = {g: 0 for g in GAUGES}
        for record in records:
            if record.state in states:
                states[record.state] += 1
        timeline.append({"t": tick, **{k: totals[k] - previous[k] for k in totals}, **states})
        if journal is not None:
            journal.write("tick", {**timeline[-1], "lag": lag[-1]})
        previous = totals
        printer(_progress_line(tick, len(records), totals, states, records))
        if all(r.state == "done" for r in records):
            return


def _progress_line(tick: int, planned: int, totals: dict[str, int], states: dict[str, int],
                   records: list[ArrivalResult]) -> str:
    finished = [r for r in records if r.state == "done" and r.kind != "visitor"]
    startup = percentiles([r.startup - r.waited for r in finished if r.joined and r.startup is not None], 3)
    ttfb = percentiles([t for r in finished for values in r.ttfb.values() for t in values], 3)
    joined = sum(r.joined for r in finished)
    return (f"[{tick:4d}s] arrivals {totals['arrived']}/{planned}  admitted {states['playing'] + states['stalled']}"
            f"  queued {states['waiting']}  loading {states['loading']}  visitors {states['visiting']}"
            f"  left {len(finished)} (joined {joined})  errors {totals['errors']}"
            f"  startup p95 {_seconds(startup['p95'])}  ttfb p95 {_seconds(ttfb['p95'])}")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"

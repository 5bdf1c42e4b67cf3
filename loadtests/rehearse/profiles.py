"""Open-model arrival profiles: how many people arrive per second over the rehearsal, and what
each arrival does (HLS or LL-HLS player, WHEP viewer, landing-page visitor).

Open model: arrivals follow the clock, never the server. A flash crowd keeps arriving while the
servers struggle, which a closed model (N looping users that wait for each answer) hides.

A profile is a JSON object (built-ins below, or a file):

    {"name": "my-launch",
     "phases": [{"name": "trickle", "seconds": 60, "rate": 0.5},        # arrivals per second
                {"name": "start", "seconds": 20, "rate": 20},
                {"name": "decay", "seconds": 60, "rate": [20, 2]}],     # linear from → to
     "arrivals": "poisson",                 # or "even" (exact counts: tests)
     "mix": {"llhls": 0.6, "hls": 0.1, "whep": 0.1, "visitor": 0.2},   # weights
     "watch_seconds": [30, 90],             # viewers play this long once playing (a number or [lo, hi])
     "patience_seconds": 120,               # viewers give up if not playing by then (waiting room included)
     "visit_seconds": [10, 30],             # page visitors stay this long
     "seed": 1}

The schedule is a pure function of the profile (seeded), so M workers compute the same schedule
and each keeps every M-th arrival: the shards partition the audience exactly.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

KINDS = ("hls", "llhls", "whep", "visitor")
VIEWER_KINDS = ("hls", "llhls", "whep")
MAX_ARRIVALS = 100_000  # one schedule, all workers together
MAX_SECONDS = 4 * 3600  # arrival window, watch time, patience: each at most this
Range = tuple[float, float]


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    rate_from: float  # arrivals per second at the phase's start
    rate_to: float  # ... and at its end (linear in between)

    @property
    def expected(self) -> float:
        return self.seconds * (self.rate_from + self.rate_to) / 2

    def time_of(self, count: float) -> float:
        """Seconds into the phase at which `count` arrivals are expected (inverse of the
        cumulative rate, a quadratic when the rate changes linearly)."""
        if count <= 0:
            return 0.0
        slope = (self.rate_to - self.rate_from) / self.seconds
        if abs(slope) < 1e-12:
            return count / self.rate_from
        root = math.sqrt(max(0.0, self.rate_from ** 2 + 2 * slope * count))
        return min(self.seconds, (root - self.rate_from) / slope)


@dataclass(frozen=True)
class Arrival:
    index: int
    at: float  # seconds after the rehearsal's start
    kind: str
    stay: float  # viewers: seconds of playback; visitors: seconds on the page
    patience: float  # viewers: seconds to start playing before giving up


@dataclass(frozen=True)
class Profile:
    name: str
    phases: tuple[Phase, ...]
    mix: dict[str, float]
    watch_seconds: Range = (30.0, 90.0)
    patience_seconds: float = 120.0
    visit_seconds: Range = (10.0, 30.0)
    arrivals: str = "poisson"
    seed: int = 1
    description: str = ""
    source: str = field(default="built-in", compare=False)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def expected_arrivals(self) -> float:
        return sum(p.expected for p in self.phases)

    @property
    def longest_stay(self) -> float:
        """Seconds after its arrival by which any arrival is over."""
        return max(self.patience_seconds + self.watch_seconds[1], self.visit_seconds[1])

    def stretched(self, seconds: float) -> Profile:
        """The same shape over `seconds` (rates kept: a longer rehearsal has more arrivals)."""
        factor = seconds / self.seconds
        return replace(self, phases=tuple(replace(p, seconds=p.seconds * factor) for p in self.phases))

    def scaled(self, factor: float) -> Profile:
        """Rates times `factor` (a bigger or smaller audience, same shape)."""
        return replace(self, phases=tuple(replace(p, rate_from=p.rate_from * factor, rate_to=p.rate_to * factor)
                                          for p in self.phases))

    def schedule(self) -> list[Arrival]:
        rng = random.Random(self.seed)
        times = self._arrival_times(rng)
        kinds, weights = zip(*sorted(self.mix.items()))
        return [Arrival(index, at, kind, self._stay(rng, kind), self.patience_seconds)
                for index, (at, kind) in enumerate(zip(times, rng.choices(kinds, weights, k=len(times))))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "phases": [{"name": p.name, "seconds": round(p.seconds, 3), "rate": [p.rate_from, p.rate_to]}
                       for p in self.phases],
            "arrivals": self.arrivals, "mix": self.mix, "watch_seconds": list(self.watch_seconds),
            "patience_seconds": self.patience_seconds, "visit_seconds": list(self.visit_seconds), "seed": self.seed,
        }

    def _arrival_times(self, rng: random.Random) -> list[float]:
        """Even: the k-th arrival where the expected count reaches k + ½. Poisson: unit-rate
        exponential gaps in expected-count space, mapped back to time (time rescaling)."""
        total = self.expected_arrivals
        targets: list[float] = []
        if self.arrivals == "even":
            targets = [k + 0.5 for k in range(int(total + 0.5))]
        else:
            level = rng.expovariate(1.0)
            while level <= total and len(targets) < MAX_ARRIVALS:
                targets.append(level)
                level += rng.expovariate(1.0)
        return [self._time_of(target) for target in targets]

    def _time_of(self, count: float) -> float:
        start = 0.0
        for phase in self.phases:
            if count <= phase.expected or phase is self.phases[-1]:
                return start + phase.time_of(count)
            count -= phase.expected
            start += phase.seconds
        return start

    def _stay(self, rng: random.Random, kind: str) -> float:
        low, high = self.visit_seconds if kind == "visitor" else self.watch_seconds
        return rng.uniform(low, high)


def shard(arrivals: list[Arrival], worker: int, workers: int) -> list[Arrival]:
    """Worker `worker` of `workers` (0-based) takes every `workers`-th arrival."""
    return [a for a in arrivals if a.index % workers == worker]


BUILT_INS: dict[str, dict[str, Any]] = {
    "flash-crowd": {
        "description": "pre-queue trickle, a step at the start time, decay, soak",
        "phases": [{"name": "pre-queue trickle", "seconds": 20, "rate": 0.5},
                   {"name": "start time", "seconds": 10, "rate": 8},
                   {"name": "decay", "seconds": 30, "rate": [8, 1]},
                   {"name": "soak", "seconds": 60, "rate": 1}],
        "mix": {"llhls": 0.6, "hls": 0.1, "whep": 0.1, "visitor": 0.2},
        "watch_seconds": [30, 90], "patience_seconds": 120, "visit_seconds": [10, 30],
    },
    "ramp": {
        "description": "a linear ramp from nobody to the peak rate",
        "phases": [{"name": "ramp", "seconds": 120, "rate": [0, 4]}],
        "mix": {"llhls": 0.6, "hls": 0.1, "whep": 0.1, "visitor": 0.2},
        "watch_seconds": [30, 90], "patience_seconds": 120, "visit_seconds": [10, 30],
    },
    "soak": {
        "description": "a steady audience for a long time",
        "phases": [{"name": "soak", "seconds": 600, "rate": 0.5}],
        "mix": {"llhls": 0.6, "hls": 0.1, "whep": 0.1, "visitor": 0.2},
        "watch_seconds": [60, 300], "patience_seconds": 120, "visit_seconds": [10, 60],
    },
}


def load(name_or_path: str) -> Profile:
    """A built-in by name, or a JSON file."""
    if name_or_path in BUILT_INS:
        return from_dict({"name": name_or_path, **BUILT_INS[name_or_path]}, source="built-in")
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"no profile {name_or_path!r}: use one of {', '.join(BUILT_INS)} or a JSON file")
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile is a JSON object")
    return from_dict({"name": path.stem, **data}, source=str(path))


def from_dict(data: dict[str, Any], source: str = "dict") -> Profile:
    phases = tuple(_phase(i, p) for i, p in enumerate(_required(data, "phases", list)))
    if not phases:
        raise ValueError("a profile needs at least one phase")
    mix = {str(k): _number(v, f"mix.{k}", low=0) for k, v in _required(data, "mix", dict).items()}
    unknown = set(mix) - set(KINDS)
    if unknown or not any(mix.values()):
        raise ValueError(f"mix: weights for {', '.join(KINDS)} (unknown: {sorted(unknown)})")
    arrivals = data.get("arrivals", "poisson")
    if arrivals not in ("poisson", "even"):
        raise ValueError("arrivals: 'poisson' or 'even'")
    profile = Profile(
        name=str(data.get("name", "profile")), phases=phases, mix={k: v for k, v in mix.items() if v > 0},
        watch_seconds=_range(data.get("watch_seconds", (30, 90)), "watch_seconds"),
        patience_seconds=_number(data.get("patience_seconds", 120), "patience_seconds", low=0, high=MAX_SECONDS),
        visit_seconds=_range(data.get("visit_seconds", (10, 30)), "visit_seconds"),
        arrivals=arrivals, seed=int(data.get("seed", 1)), description=str(data.get("description", "")),
        source=source,
    )
    check(profile)
    return profile


def check(profile: Profile) -> None:
    """Bounds every run must respect, also after --duration / --rate-scale."""
    if profile.seconds > MAX_SECONDS:
        raise ValueError(f"the arrival window is {profile.seconds:.0f} s; at most {MAX_SECONDS} s")
    if profile.expected_arrivals > MAX_ARRIVALS:
        raise ValueError(f"{profile.expected_arrivals:.0f} arrivals expected; at most {MAX_ARRIVALS}")


def _phase(index: int, data: Any) -> Phase:
    if not isinstance(data, dict):
        raise ValueError(f"phases[{index}]: an object with seconds and rate")
    seconds = _number(data.get("seconds"), f"phases[{index}].seconds", low=1e-3, high=MAX_SECONDS)
    rate = data.get("rate")
    low, high = (rate, rate) if not isinstance(rate, list) else (rate + [None, None])[:2]
    rate_from = _number(low, f"phases[{index}].rate", low=0)
    rate_to = _number(high, f"phases[{index}].rate", low=0)
    if rate_from == rate_to == 0:
        raise ValueError(f"phases[{index}]: a phase without arrivals: use a rate > 0")
    return Phase(str(data.get("name", f"phase {index + 1}")), seconds, rate_from, rate_to)


def _range(value: Any, name: str) -> Range:
    low, high = (value, value) if not isinstance(value, (list, tuple)) else (list(value) + [None, None])[:2]
    low, high = _number(low, name, low=0, high=MAX_SECONDS), _number(high, name, low=0, high=MAX_SECONDS)
    if low > high:
        raise ValueError(f"{name}: [low, high] with low <= high")
    return (low, high)


def _number(value: Any, name: str, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}: a number within {low}..{high}, got {value!r}")
    return float(value)


def _required(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key}: required ({kind.__name__})")
    return value

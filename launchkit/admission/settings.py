"""Admission settings. Every field maps to a CLI option / LAUNCHKIT_* variable (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    # Capacity of this server (one process). 0 = no limit. Enforcement is on when either is set.
    max_viewers: int = 0
    max_egress_mbps: float = 0.0
    # Egress of one viewer assumed by the egress limit until enough viewers are measured (top
    # rendition + audio is a safe guess).
    viewer_mbps: float = 4.0
    # Event-loop lag above which nobody new is admitted (seconds; 0 disables) once it has lasted
    # lag_sustain seconds (one spike is not overload), and how long the door stays shut after the lag
    # is gone (hysteresis: no flapping).
    max_loop_lag: float = 0.1
    lag_sustain: float = 1.0
    lag_cooldown: float = 2.0
    # Tickets: lifetime (renewed while the viewer fetches media), and the shorter probation of a new
    # ticket never seen on a media request (a viewer who is admitted and leaves frees the slot soon).
    ticket_ttl: float = 60.0
    probation: float = 20.0
    # Waiting room: Retry-After = base + jitter, with jitter uniform in 0..retry_jitter (whole
    # seconds; the page adds < 1 s). Viewers far back retry less often (up to retry_after_max) once
    # an admission rate is known. A place is kept until retry_after + queue_grace after the answer.
    retry_after: int = 5
    retry_jitter: int = 5
    retry_after_max: int = 30
    queue_grace: float = 20.0
    # Held waiting: a waiting-room request may be held open (long poll) up to hold_max seconds and
    # answered the moment its turn comes; while held its place is kept alive, and it lapses
    # hold_grace seconds after the request ends (a closed tab loses its place within seconds).
    # The line is pumped every hold_tick.
    hold_max: float = 25.0
    hold_grace: float = 3.0
    hold_tick: float = 0.25
    max_queue: int = 200_000
    # Window over which admissions from the queue are counted to estimate the wait.
    rate_window: float = 60.0
    # Path prefixes that need a ticket when enforcement is on.
    guarded_prefixes: tuple[str, ...] = ("/hls/", "/whep")
    # Shared state: Redis URL (None: this process only), key prefix, and how this server is reached
    # by viewers (for the recommended edge; None: not advertised).
    redis_url: str | None = None
    redis_prefix: str = "launchkit"
    redis_timeout: float = 1.0  # per Redis call; a timeout sends that decision to the local path
    advertise_url: str | None = None
    edge_ttl: float = 5.0
    # Background work: heartbeat, touch flush, expiry (seconds).
    tick: float = 1.0
    # None: enforce when a limit is configured; True/False forces it.
    enforce: bool | None = None

    def __post_init__(self) -> None:
        checks = (
            (self.max_viewers >= 0, "max_viewers must be >= 0"),
            (self.max_egress_mbps >= 0, "max_egress_mbps must be >= 0"),
            (self.viewer_mbps > 0, "viewer_mbps must be > 0"),
            (self.max_loop_lag >= 0 and self.lag_cooldown >= 0 and self.lag_sustain >= 0, "loop lag settings must be >= 0"),
            (self.ticket_ttl >= 2, "ticket_ttl must be >= 2 s"),
            (0 < self.probation <= self.ticket_ttl, "probation must be within 0..ticket_ttl"),
            (self.retry_after >= 1 and self.retry_jitter >= 0, "retry_after >= 1 and retry_jitter >= 0"),
            (self.retry_after_max >= self.retry_after, "retry_after_max must be >= retry_after"),
            (self.queue_grace > 0 and self.max_queue > 0 and self.rate_window > 0, "queue settings must be > 0"),
            (self.hold_max >= 0 and self.hold_grace > 0 and self.hold_tick > 0, "hold settings must be > 0"),
            (self.tick > 0 and self.edge_ttl > self.tick, "edge_ttl must exceed tick"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def enforced(self) -> bool:
        if self.enforce is not None:
            return self.enforce
        return self.max_viewers > 0 or self.max_egress_mbps > 0


def from_options(options: object, *, viewer_mbps: float = 4.0, share: float = 1.0) -> AdmissionSettings:
    """Settings from a role's options (the `--max-viewers` … `--advertise-url` attributes of a
    Config or EdgeSettings); `share` divides the limits among the worker processes of one server."""
    max_viewers = options.max_viewers or 0
    return AdmissionSettings(
        max_viewers=max(1, int(max_viewers * share)) if max_viewers else 0,
        max_egress_mbps=options.max_egress_mbps * share,
        viewer_mbps=viewer_mbps,
        max_loop_lag=options.max_loop_lag_ms / 1000,
        ticket_ttl=options.ticket_ttl,
        retry_after=options.retry_after,
        retry_jitter=options.retry_jitter,
        redis_url=options.redis or None,
        advertise_url=options.advertise_url or None,
    )

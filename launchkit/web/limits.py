"""Limits a public HTTP server needs so that idle or trickling sockets (slowloris) cannot starve
viewers: enough file descriptors to hold them, and a bound on how long one may be held without a
complete request.

Open files. Every TCP connection is a file descriptor, and the soft RLIMIT_NOFILE most servers
start with is 1024 (systemd's default for services, containerd 2's for containers; the hard limit is
usually 524288). About a thousand sockets that never send a request then exhaust the process:
accept() fails with EMFILE, asyncio logs "socket.accept() out of system resource" and stops
accepting for a second at a time, so viewers, /healthz and Kubernetes probes time out, and the
process cannot open an upstream connection or a file either (measured: 1,146 idle sockets on a
demo; every /healthz timed out). `raise_open_file_limit()` sets the soft limit to the hard limit at
startup, as nginx (`worker_rlimit_nofile`), HAProxy and systemd's own guidance do: the hard limit
is the administrator's decision, the soft one is only a default for programs that still use
select(). asyncio uses epoll, so descriptors above 1024 are safe here. The ceiling (MAX_OPEN_FILES)
keeps a process whose hard limit is "infinity" (about a billion in some container runtimes) from
asking for more than it could ever use. A hard limit below MIN_OPEN_FILES is logged as a warning:
only the administrator can raise it.

Idle connections. aiohttp closes a connection that has not completed a request within
`keepalive_timeout` of connecting or of its last response (the timer RequestHandler arms in
`connection_made`); header bytes trickling in do not reset it, so this is also the header-read
timeout. `web.AppRunner` defaults it to 3,630 s: a socket that never finishes its headers holds a
descriptor (and about 5 KB of memory, measured) for an hour. IDLE_TIMEOUT is nginx's
keepalive_timeout: longer than the 60 s after which the common reverse proxies (nginx ingress
upstream keep-alive, AWS ALB) drop an idle upstream connection themselves, so a proxy never sends a
request on a connection we have just closed, and short enough that holding sockets costs an
attacker a new connection every 75 s.
Beyond what one process should hold, connections per client address are the ingress's to limit
(nginx `limit_conn`), where the real address is known.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 75.0  # seconds; pass as `web.AppRunner(..., keepalive_timeout=IDLE_TIMEOUT)`
MAX_OPEN_FILES = 1_048_576
MIN_OPEN_FILES = 16_384  # below this, a few thousand idle sockets and the viewers compete for descriptors


def raise_open_file_limit(ceiling: int = MAX_OPEN_FILES) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (at most `ceiling`); returns the soft
    limit now in force. Never lowers it; a refusal from the kernel is logged, not raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("open files: cannot raise the soft limit from %d to %d (%s)", soft, target, error)
            return soft
        log.info("open files: soft limit raised from %d to %d", soft, target)
        soft = target
    if soft != resource.RLIM_INFINITY and soft < MIN_OPEN_FILES:
        log.warning("open files: at most %d per process (hard limit): a few thousand idle connections would "
                    "exhaust it; raise the hard limit (systemd LimitNOFILE=, the container runtime's nofile ulimit)",
                    soft)
    return soft

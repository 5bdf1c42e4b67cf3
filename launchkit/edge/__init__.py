"""`launchkit edge --origin URL`: a stateless pull-through edge, scaled horizontally.

An edge serves the same public contract to viewers as the origin, so viewers, CDNs and other
edges cannot tell them apart (edge → edge → origin tiers work):

| path | at the edge |
| --- | --- |
| `/`, `/embed`, `/static/…` | rendered and served locally (landing package), from the origin's status |
| `/api/status` | the origin's JSON (polled once per second per process, for everyone) with this edge's `viewers`, `capacity` and an `edge` section |
| `/hls/…`, `/replay/…` | relayed: cached per the origin's Cache-Control, one upstream request per object however many viewers (launchkit/edge/relay) |
| `/whep` | WebRTC viewers, fanned out here from one feed of the WebRTC rendition per worker (stream/webrtc) |
| `/api/webrtc/feed` | that feed again, for edges below this one |
| `/metrics`, `/healthz`, `/readyz` | this edge (all its workers for /metrics) |
| `/ops`, `/api/ops/…`, `/whip` | not served: 404 (operators and publishers talk to the origin) |

Origin load is O(edges × workers): each worker process coalesces on its own (and holds one
WebRTC feed).

Readiness (`/readyz`) is 503 while draining, before the origin has answered once, and when the
origin has been unreachable for longer than `origin_grace` with no playlist left to serve.

`run_edge(settings)` runs the process(es): with `workers == 1` this process serves; with more, the
parent binds nothing that listens, spawns N workers that each listen on the same port with
SO_REUSEPORT (the kernel spreads connections), restarts a worker that dies, and forwards signals.
Metrics use prometheus_client's multiprocess mode in a temporary directory removed at exit.
SIGTERM (or a first Ctrl-C) drains: readiness false at once, serving goes on for `drain_seconds`
(responses ask clients to reconnect, so load balancers move them), then the process exits.
A second Ctrl-C exits at once. The demo's 2 s shutdown rule does not apply to a draining edge.
"""

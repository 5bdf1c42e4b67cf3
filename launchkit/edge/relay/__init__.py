"""Edge relay: a stateless pull-through cache for the origin's HLS (and replay), with request
coalescing so origin load grows with the number of edges, not of viewers.

- `upstream.py`: the HTTP client to the origin (or a parent edge), bounded in time and size,
  tracking reachability.
- `cache.py`: whole responses in memory, freshness from Cache-Control, LRU within a byte budget.
- `coalescing.py`: single-flight: concurrent requests for one object share one upstream fetch.
- `relay.py`: cache → single-flight → upstream, stale-if-error, negative caching.
- `http.py`: the /hls and /replay routes (validation, headers, ranges).

`launchkit/edge/` assembles these into the `launchkit edge` app (`app.py`) and processes (`process.py`).
"""

"""The HTTP kit every role uses: one way to refuse a request, read a bounded body, answer CORS,
and know who the client is behind trusted proxies.

- `refusal`: `Refusal`, the one exception a handler raises to answer 4xx/5xx with a message;
- `body`: bounded body reads and strict JSON parsing (413/415/400, never a traceback);
- `cors`: the CORS headers of public endpoints (embeds and edges on other origins);
- `clients`: the client's address and scheme behind `--trusted-proxies`;
- `ratelimit`: per-client token buckets (wall posts, QoE beacons, failed credentials);
- `probes`: /healthz, /readyz and /metrics, what each role's readiness means given by the role;
- `routes`: the media URL patterns the origin serves and the edge relays.
"""

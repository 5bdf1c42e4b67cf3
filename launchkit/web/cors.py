"""CORS for public endpoints: pages, embeds on news sites and other edges read media, status,
admission, wall and WHEP answers cross-origin. No endpoint answers with credentials
(`Access-Control-Allow-Credentials` is never sent), so `*` exposes nothing a cookie protects."""

from __future__ import annotations

from typing import Iterable

ALLOW_ANY_ORIGIN = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT_MAX_AGE = 600


def cors(expose: Iterable[str] = ()) -> dict[str, str]:
    """Headers of a public answer; `expose` names response headers scripts may read."""
    exposed = ", ".join(expose)
    return {**ALLOW_ANY_ORIGIN, **({"Access-Control-Expose-Headers": exposed} if exposed else {})}


def preflight(methods: Iterable[str], headers: Iterable[str] = ("Content-Type",),
              expose: Iterable[str] = ()) -> dict[str, str]:
    """Headers of the 204 answer to an OPTIONS preflight."""
    return {
        **cors(expose),
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Allow-Headers": ", ".join(headers),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
    }

"""The edge cache: freshness from Cache-Control, LRU within a byte budget, stale windows."""

from __future__ import annotations

import pytest

from launchkit.edge.relay.cache import ENTRY_OVERHEAD, CachedObject, ObjectCache, cache_control, freshness


@pytest.mark.parametrize(
    ("header", "age", "expected"),
    [
        ("public, max-age=31536000, immutable", None, (31536000, 0, False)),
        ("public, max-age=1", None, (1, 0, False)),
        ("public, max-age=5", "3", (2, 0, False)),  # an upstream cache already spent 3 s
        ("public, max-age=5", "9", (0, 0, False)),
        ("max-age=60, s-maxage=10", None, (10, 0, False)),  # a shared cache reads s-maxage first
        ("public, max-age=5, stale-if-error=600", None, (5, 600, False)),
        ("public, no-cache", None, (0, 0, True)),  # the LL-HLS live playlist: revalidate every use
        ("no-store", None, (0, 0, False)),
        ("private, max-age=60", None, (0, 0, False)),  # e.g. a response carrying a viewer's ticket
        ("public", None, (0, 0, False)),  # no lifetime, no heuristic freshness
        (None, None, (0, 0, False)),
        ("max-age=abc", None, (0, 0, False)),
        ('max-age="7"', None, (7, 0, False)),
    ],
)
def test_freshness_follows_the_shared_cache_rules(header, age, expected):
    headers = {k: v for k, v in (("Cache-Control", header), ("Age", age)) if v is not None}
    result = freshness(headers)
    assert (result.ttl, result.stale_if_error, result.revalidate) == expected


def test_playlists_get_a_default_stale_if_error_window():
    assert freshness({"Cache-Control": "public, max-age=1"}, default_stale_if_error=4).stale_if_error == 4
    assert freshness({"Cache-Control": "public, no-cache"}, default_stale_if_error=4).stale_if_error == 4
    assert freshness({"Cache-Control": "no-store"}, default_stale_if_error=4).stale_if_error == 0


def test_cache_control_parsing():
    assert cache_control("Public, MAX-AGE=5 ,immutable") == {"public": None, "max-age": "5", "immutable": None}
    assert cache_control("") == {}


def _object(size: int, ttl: float = 60, stale: float = 0, now: float = 0, status: int = 200) -> CachedObject:
    return CachedObject.build(status, (), b"x" * size, ttl, stale, now=now)


def test_lru_eviction_keeps_the_byte_budget():
    evicted: list[tuple[str, int]] = []
    budget = 10 * (1000 + ENTRY_OVERHEAD)
    cache = ObjectCache(budget, on_evict=lambda reason, n: evicted.append((reason, n)))
    for index in range(10):
        assert cache.put(f"/hls/a/{index}.m4s", _object(1000))
    assert len(cache) == 10 and cache.bytes == budget
    assert cache.get("/hls/a/0.m4s", now=1) is not None  # recently used: survives
    for index in range(10, 19):
        cache.put(f"/hls/a/{index}.m4s", _object(1000))
        assert cache.bytes <= budget
    assert len(cache) == 10
    assert "/hls/a/0.m4s" in cache and "/hls/a/1.m4s" not in cache and "/hls/a/18.m4s" in cache
    cache.put("/hls/a/19.m4s", _object(1000))
    assert "/hls/a/0.m4s" not in cache  # now the least recently used
    assert sum(n for reason, n in evicted if reason == "budget") == 10


def test_a_flood_of_distinct_objects_stays_within_budget():
    budget = 1_000_000
    cache = ObjectCache(budget)
    for index in range(20_000):
        cache.put(f"/hls/a/{index}.m4s", _object(index % 5000))
        assert cache.bytes <= budget
    assert cache.bytes == sum(cache.get(key, now=0).size for key in cache.keys())


def test_objects_over_the_limit_are_refused():
    cache = ObjectCache(100_000, max_object_bytes=10_000)
    assert not cache.put("big", _object(20_000))
    assert cache.put("small", _object(5_000))
    assert len(cache) == 1


def test_stale_objects_live_for_their_error_window_only():
    cache = ObjectCache(1_000_000)
    cache.put("/hls/a/index.m3u8", _object(100, ttl=1, stale=4, now=0))
    cache.put("/hls/a/missing.m4s", _object(100, ttl=0.5, now=0, status=404))
    playlist = cache.get("/hls/a/index.m3u8", now=2)
    assert playlist is not None and not playlist.is_fresh(2) and playlist.can_serve_stale(2)
    assert cache.get("/hls/a/missing.m4s", now=2) is None  # a 404 is never served stale
    assert cache.sweep(now=5.5) == 1 and len(cache) == 0

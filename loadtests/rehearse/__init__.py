"""Flash-crowd rehearsal: `launchkit rehearse` (or `python -m loadtests.rehearse`).

    profiles.py        open-model arrival profiles (built-ins and JSON files), the seeded schedule, shards
    run.py             the driver: arrivals on time, a timeline and a progress line every second
    viewers.py         HLS / LL-HLS players and WHEP viewers that wait, play, leave like the page
    visitors.py        landing-page visitors: page, /api/status, wall SSE, questions
    metrics_scrape.py  the target's /metrics once a second
    results.py         raw results, merging workers' shards, the summary
    slo.py             thresholds and the verdict
    report.py          report.json, PNG charts, self-contained report.html
    targets.py         loopback-only unless --allow-remote; the local demo
    cli.py             `launchkit rehearse` and `rehearse merge`
"""

"""Flash-crowd rehearsal: `launchkit rehearse` (or `python -m loadtests.rehearse`).

    profiles.py        open-model arrival profiles (built-ins and JSON files), the seeded schedule, shards
    run.py             the driver: arrivals on time, a timeline and a progress line every second
    viewers.py         HLS / LL-HLS players and WHEP viewers that wait, play, leave like the page
    visitors.py        landing-page visitors: page, /api/status, wall SSE, questions
    metrics_scrape.py  the targets' /metrics once a second
    results.py         raw results, merging workers' shards, the summary
    places.py          the waiting room's figures: idle places while anyone waits, freed → admitted, FIFO
    journal.py         raw results written as the run goes (a killed run can still be reported)
    slo.py             thresholds and the verdict
    report.py          report.json, self-contained report.html (charts when matplotlib is installed)
    charts.py          the PNG charts (matplotlib: `pip install 'launchkit[rehearse]'`)
    targets.py         loopback-only unless --allow-remote; the local demo, or local edges + Redis
    cli.py             `launchkit rehearse`, `rehearse merge` and `rehearse report`
"""

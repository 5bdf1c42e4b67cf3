"""Rerun every side-by-side benchmark: `.venv/bin/python -m loadtests.bench` (or `make bench`)."""

import sys

from loadtests.bench import edge, encoder, ladder, landing, latency, slate

BENCHMARKS = {
    "encoder CPU vs ffmpeg CLI": encoder.main,
    "ABR ladder CPU vs ffmpeg CLI, real-time lag": ladder.main,
    "HLS glass-to-glass latency": latency.main,
    "slate switch and recovery": slate.main,
    "edge vs nginx, real-pace viewers": edge.main,
    "landing page requests/s vs nginx": landing.main,
}

if __name__ == "__main__":
    failed = []
    for name, run in BENCHMARKS.items():
        print(f"\n## {name}\n", flush=True)
        if run([]) != 0:
            failed.append(name)
    print("\nall benchmarks within target" if not failed else f"\nout of target: {', '.join(failed)}")
    sys.exit(1 if failed else 0)

"""Rerun every side-by-side benchmark: `.venv/bin/python -m loadtests.bench [--write] [NAME ...]`
(or `make bench`).

Each benchmark prints its own markdown (its table, the command and the machine's load). With
`--write`, each output replaces that benchmark's generated block in loadtests/RESULTS.md, between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->` (appended at the end the first time), under a
line naming the machine and the date; hand-written analysis outside the blocks is kept.
"""

import argparse
import contextlib
import io
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from loadtests.bench import edge, encoder, image, ladder, landing, latency, slate, sse, startup, webrtc

RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"
BENCHMARKS = {
    "encoder": ("encoder CPU vs ffmpeg CLI", encoder.main),
    "ladder": ("ABR ladder CPU vs ffmpeg CLI, real-time lag", ladder.main),
    "latency": ("HLS glass-to-glass latency", latency.main),
    "slate": ("slate switch and recovery", slate.main),
    "edge": ("edge vs nginx, real-pace viewers", edge.main),
    "webrtc": ("WebRTC viewers per core vs stock aiortc", webrtc.main),
    "landing": ("landing page requests/s vs nginx", landing.main),
    "sse": ("wall SSE fan-out to 5,000 clients", sse.main),
    "startup": ("time to first picture on open and UDP-blocked networks", startup.main),
    "image": ("container image size and build time", image.main),
}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return (f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
            f"load average {' / '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")


def write_block(text: str, name: str, title: str, body: str) -> str:
    """`text` with the generated block of `name` replaced by `body` (or appended)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- bench:{name} -->\n### {title} (generated {stamp})\n\nMachine: {machine()}.\n\n"
             f"{body.strip()}\n<!-- /bench:{name} -->")
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def run(name: str, title: str, main) -> tuple[int, str]:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main([])
    sys.stdout.write(output.getvalue())
    return status, output.getvalue()


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--write", action="store_true", help="replace their generated blocks in RESULTS.md")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name in args.names or list(BENCHMARKS):
        title, main = BENCHMARKS[name]
        print(f"\n## {title}\n", flush=True)
        status, output = run(name, title, main)
        if status != 0:
            failed.append(name)
        if args.write:
            RESULTS.write_text(write_block(RESULTS.read_text(), name, title, output))
    print("\nall benchmarks within target" if not failed else f"\nout of target: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())

"""Landing page requests/s: one Launchkit edge process vs Debian's nginx serving the same HTML file.

What it shows: the page is cheap enough that a CDN miss storm (every CDN node asking at once when
the page's 5 s max-age runs out) does not hurt the edges. Both servers get the same single core;
the load generator (ApacheBench, C, keep-alive) runs on the other core:

    * Launchkit: `launchkit edge` (1 worker) renders `/` from the origin's status, which a stub
      origin serves (the benchmark measures the page, not the media pipeline). The edge renders a
      page once per distinct content and answers from memory with an ETag (landing/app.py).
    * nginx: 1 worker process, no access log, serving the HTML the edge just rendered, as a file,
      with the same Cache-Control header (nginx adds its own ETag).

Each side: a warm-up, then `--runs` runs of `ab -k -c CONCURRENCY -n REQUESTS`; the median
requests/s is reported, as a markdown table and JSON (`--json PATH` also writes it).

    .venv/bin/python -m loadtests.bench.landing [--requests 20000] [--concurrency 64] [--runs 3]

Needs 2+ cores, /usr/sbin/nginx and /usr/bin/ab (Debian: nginx, apache2-utils). Exit 0 when the
edge serves at least a tenth of nginx's rate (the target is "cheap enough", not "faster than C").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loadtests.bench.edge import NGINX, affinity, machine_info, start_nginx, stop
from loadtests.target import free_port, start_launchkit

AB = "/usr/bin/ab"
PAGE_CACHE = "public, max-age=5, stale-while-revalidate=30, stale-if-error=600"
MIN_RATIO = 0.1
# What a live origin's /api/status says (only the fields the page reads matter).
STATUS = {
    "event": {"title": "Launch of the new TV box", "description": "Watch the unveiling live.", "state": "live",
              "start_at": None, "starts_in": None, "live_at": None, "ended_at": None, "image": None,
              "agenda": {"speakers": [{"name": "Ada Lovelace", "role": "CEO"}],
                         "agenda": [{"time": "14:00", "title": "Welcome", "speaker": "Ada Lovelace"}]}},
    "stream": {"live": True, "on_air": "primary", "hls": "/hls/index.m3u8", "segment_duration": 2.0, "renditions": []},
    "replay": {"available": False, "url": None},
    "viewers": 0, "capacity": {"max_viewers": None, "headroom": None},
    "recommended": {"protocol": "hls", "url": "/hls/index.m3u8", "edge": None, "edges": []},
}

NGINX_PAGE_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ text/html html; }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        root {root};
        index index.html;
        add_header Cache-Control "{cache}";
    }}
}}
"""


class _StubOrigin(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps(STATUS).encode() if self.path == "/api/status" else b"{}"
        self.send_response(200 if self.path == "/api/status" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def ab(url: str, requests: int, concurrency: int) -> dict[str, float]:
    result = subprocess.run([AB, "-q", "-k", "-c", str(concurrency), "-n", str(requests), url],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"ab failed: {result.stderr or result.stdout}")

    def field(pattern: str) -> float:
        match = re.search(pattern, result.stdout, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return {"requests_per_second": field(r"^Requests per second:\s+([\d.]+)"),
            "failed": field(r"^Failed requests:\s+(\d+)"), "non_2xx": field(r"^Non-2xx responses:\s+(\d+)"),
            "document_bytes": field(r"^Document Length:\s+(\d+)"),
            "p50_ms": field(r"^\s+50%\s+(\d+)"), "p99_ms": field(r"^\s+99%\s+(\d+)")}


def measure(name: str, url: str, args: argparse.Namespace, generator_core: int) -> dict[str, Any]:
    with affinity({generator_core}):
        ab(url, min(2000, args.requests), args.concurrency)  # warm-up: connections, caches, JIT-less but fair
        runs = [ab(url, args.requests, args.concurrency) for _ in range(args.runs)]
    for run in runs:
        if run["failed"] or run["non_2xx"]:
            raise RuntimeError(f"{name}: {run}")
    rates = [run["requests_per_second"] for run in runs]
    return {"server": name, "requests_per_second": statistics.median(rates), "runs": rates,
            "p50_ms": statistics.median(r["p50_ms"] for r in runs), "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "document_bytes": runs[0]["document_bytes"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("needs 2 cores: one for the servers, one for the load generator")
    server_core, generator_core = cores[0], cores[1]
    work = Path(tempfile.mkdtemp(prefix="launchkit-bench-landing-"))
    stub = ThreadingHTTPServer(("127.0.0.1", free_port()), _StubOrigin)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    results = []
    edge = nginx = None
    try:
        with affinity({server_core}):  # the servers (and their children) run on this core only
            edge = start_launchkit("edge", "--origin", f"http://127.0.0.1:{stub.server_address[1]}",
                                   "--max-webrtc-viewers", "0", "--drain-seconds", "0", log_dir=work)
        page = urllib.request.urlopen(edge.url + "/", timeout=5).read()
        results.append(measure("launchkit edge (1 process)", edge.url + "/", args, generator_core))
        edge.stop()
        work.chmod(0o755)  # nginx's worker runs unprivileged: it must read the page
        (work / "root").mkdir(mode=0o755)
        (work / "root" / "index.html").write_bytes(page)
        port = free_port()
        with affinity({server_core}):
            nginx = start_nginx(work / "root", work / "nginx", port, NGINX_PAGE_CONF, cache=PAGE_CACHE)
        results.append(measure("nginx (1 worker, same HTML file)", f"http://127.0.0.1:{port}/", args, generator_core))
    finally:
        if edge is not None and edge.process.poll() is None:
            edge.stop()
        stop(nginx)
        stub.shutdown()
        stub.server_close()
    ratio = results[0]["requests_per_second"] / results[1]["requests_per_second"]
    return {"benchmark": "landing page requests/s, one core each", "requests": args.requests,
            "concurrency": args.concurrency, "runs": args.runs, "page_bytes": len(page), "results": results,
            "edge_vs_nginx": round(ratio, 3), "machine": machine_info()}


def table(report: dict[str, Any]) -> str:
    lines = ["| server (1 core) | requests/s (median) | runs | p50 ms | p99 ms | bytes |", "| --- | --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        lines.append(f"| {r['server']} | {r['requests_per_second']:,.0f} | "
                     f"{' / '.join(f'{x:,.0f}' for x in r['runs'])} | {r['p50_ms']:g} | {r['p99_ms']:g} | "
                     f"{r['document_bytes']:.0f} |")
    lines.append(f"\nedge / nginx = {report['edge_vs_nginx']:.2f}× (ab -k -c {report['concurrency']} "
                 f"-n {report['requests']}, {report['runs']} runs each, load generator on the other core)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    for tool in (NGINX, AB):
        if not Path(tool).exists():
            print(f"{tool} is missing (Debian: nginx, apache2-utils)", file=sys.stderr)
            return 1
    report = run(args)
    print(table(report))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["edge_vs_nginx"] >= MIN_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

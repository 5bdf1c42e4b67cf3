"""SSE wall fan-out: N connected clients on one server process, one approved post delivered to all.

    .venv/bin/python -m loadtests.bench.sse [--clients 5000] [--posts 3] [--budget 180]

A server process (the wall alone, as an edge or origin would mount it: in-memory store, manual
moderation, ops token) listens on 127.0.0.1; this process opens N SSE connections in batches,
sampling the server's RSS (/proc) as they come, so memory per client is the slope of a least-squares
line (not one noisy difference). Then, `--posts` times: a post is submitted and approved with the ops
token, and the time from sending the approval to each client reading the event is recorded. Prints
JSON: p50/p99/max delivery latency over every (post, client), clients that missed a post, and the
RSS slope. Exit 0 when every client got every post with p99 < 1 s. Bounded by `--budget` seconds;
the server is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request

from loadtests.target import free_port

TOKEN = "bench-ops-token-0123456789abcdef"
BATCH = 250
TARGET_P99 = 1.0


# ---- the server process ---------------------------------------------------------------------------

def serve(port: int, clients: int) -> None:
    from aiohttp import web

    from launchkit.auth import bearer_token
    from launchkit.wall.service import Wall, WallSettings
    from launchkit.wall.sse import StreamSettings

    def is_operator(request: web.Request) -> bool:
        return bearer_token(request.headers.get("Authorization")) == TOKEN

    async def main() -> None:
        wall = Wall(WallSettings(stream=StreamSettings(max_clients=clients + 100)), is_operator)
        app = web.Application()
        wall.setup(app)
        app.add_routes(wall.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    _raise_fd_limit()
    asyncio.run(main())


# ---- the load generator ----------------------------------------------------------------------------

def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def slope(points: list[tuple[int, int]]) -> float:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / denominator if denominator else 0.0


class Client:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.received: dict[str, float] = {}  # post id -> monotonic time read

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(f"GET /api/wall/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        await self.writer.drain()
        await self.reader.readuntil(b"event: snapshot")  # connected and served

    async def read(self) -> None:
        assert self.reader is not None
        while True:
            block = await self.reader.readuntil(b"\n\n")
            if b"event: post" in block:
                data = block.split(b"data: ", 1)[1].split(b"\n", 1)[0]
                self.received[json.loads(data)["id"]] = time.monotonic()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _request(port: int, path: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace, port: int, server_pid: int) -> dict:
    clients: list[Client] = []
    memory = [(0, rss_bytes(server_pid))]
    started = time.monotonic()
    for start in range(0, args.clients, BATCH):
        batch = [Client() for _ in range(min(BATCH, args.clients - start))]
        await asyncio.wait_for(asyncio.gather(*(c.connect(port) for c in batch)), 60)
        clients += batch
        await asyncio.sleep(0.2)  # let the server settle before sampling
        memory.append((len(clients), rss_bytes(server_pid)))
    connect_seconds = time.monotonic() - started
    readers = [asyncio.create_task(c.read()) for c in clients]
    latencies: list[float] = []
    missed = 0
    try:
        for n in range(args.posts):
            post = await asyncio.to_thread(_request, port, "/api/wall/posts", {"text": f"bench post {n}"})
            sent = time.monotonic()
            await asyncio.to_thread(_request, port, f"/api/ops/wall/{post['id']}/approve", {}, TOKEN)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and sum(post["id"] in c.received for c in clients) < len(clients):
                await asyncio.sleep(0.01)
            got = [c.received[post["id"]] - sent for c in clients if post["id"] in c.received]
            missed += len(clients) - len(got)
            latencies += got
            await asyncio.sleep(0.5)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for client in clients:
            client.close()
    return {
        "clients": len(clients), "posts": args.posts, "connect_seconds": round(connect_seconds, 2),
        "deliveries": len(latencies), "missed": missed,
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "server_rss_idle_mb": round(memory[0][1] / 2**20, 1),
        "server_rss_loaded_mb": round(memory[-1][1] / 2**20, 1),
        "rss_per_client_kb": round(slope(memory) / 1024, 1),
        "target_p99_ms": TARGET_P99 * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--posts", type=int, default=3)
    parser.add_argument("--budget", type=float, default=180.0, help="seconds before everything is stopped")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 20_000 or not 1 <= args.posts <= 20:
        parser.error("--clients 1-20000, --posts 1-20")
    if args.serve:
        serve(args.serve, args.clients)
        return 0
    _raise_fd_limit()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "loadtests.bench.sse", "--serve", str(port),
                               "--clients", str(args.clients)], stdout=subprocess.PIPE, env=os.environ.copy())
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready", "server did not start"
        result = asyncio.run(asyncio.wait_for(run(args, port, server.pid), args.budget))
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(json.dumps(result, indent=2))
    return 0 if result["missed"] == 0 and result["latency_p99_ms"] < TARGET_P99 * 1000 else 1


if __name__ == "__main__":
    sys.exit(main())

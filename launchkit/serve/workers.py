"""N worker processes serving one port (SO_REUSEPORT: the kernel spreads connections), under a
supervisor that binds nothing that listens, restarts a worker that dies, and forwards signals.

Workers are plain interpreters running a role's entry point (`python -c ENTRY INDEX READY_FD`):
nothing depends on how the parent was started (multiprocessing's spawn would re-import the
caller's __main__ module). A worker reads its settings from stdin (they may hold secrets such as
a Redis password, and a command line is visible to every user), listens, and writes `ready PID`
(or `error MESSAGE`) to its readiness pipe. Metrics use prometheus_client's multiprocess mode in a
temporary directory removed at exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from launchkit.serve.lifecycle import SHUTDOWN_GRACE
from launchkit.serve.listening import ListenError, authority, hold_port, listen_shared

log = logging.getLogger("launchkit")

WORKER_START_TIMEOUT = 30.0
MAX_RESTARTS_PER_MINUTE = 5


@dataclass(frozen=True)
class WorkerGroup:
    """What the supervisor needs to know of a role's workers."""

    entry: str  # Python source run by each worker; calls `worker_main` with sys.argv[1:]
    workers: int
    host: str
    port: int  # 0: a free port, chosen once for the group
    drain_seconds: float
    name: str  # in the metrics directory's name: launchkit-NAME-PID-metrics-…


class Supervisor:
    """The parent of N workers: holds the port, restarts crashed workers, forwards signals, cleans up."""

    def __init__(self, group: WorkerGroup, settings: Callable[[int], bytes], announce: Callable[[int], None]) -> None:
        self.group = group
        self._settings = settings  # the workers' stdin, given the port the group listens on
        self._announce = announce
        self._payload = b""
        self._signals: list[int] = []
        self._workers: dict[int, subprocess.Popen] = {}  # index -> process
        self._restarts: list[float] = []
        self._metrics_dir = ""

    def run(self) -> int:
        holder = hold_port(self.group.host, self.group.port)  # fails fast, nothing started
        port = holder.getsockname()[1]
        self._payload = self._settings(port)
        self._metrics_dir = tempfile.mkdtemp(prefix=f"launchkit-{self.group.name}-{os.getpid()}-metrics-")
        previous = {sig: signal.signal(sig, lambda signum, frame: self._signals.append(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            failure = self._start_all()
            if failure:
                log.error("%s", failure)
                raise ListenError(failure)
            self._announce(port)
            return self._supervise()
        finally:
            self._stop_all(SHUTDOWN_GRACE + 2)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            holder.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _spawn(self, index: int) -> int:
        """Start worker `index`; returns the read end of its readiness pipe."""
        read_fd, write_fd = os.pipe()
        # prometheus_client picks multiprocess mode from this variable when the worker imports it.
        environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        try:
            process = self._workers[index] = subprocess.Popen(
                [sys.executable, "-c", self.group.entry, str(index), str(write_fd)],
                pass_fds=(write_fd,), env=environment, stdin=subprocess.PIPE,
            )
        finally:
            os.close(write_fd)
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(self._payload)
        return read_fd

    def _start_all(self) -> str | None:
        pending = {self._spawn(index): index for index in range(self.group.workers)}
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        try:
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"workers {sorted(pending.values())} did not start within {WORKER_START_TIMEOUT:g} s"
                if self._signals:
                    return "interrupted while starting"
                readable, _, _ = select.select(list(pending), [], [], min(remaining, 0.5))
                for fd in readable:
                    index = pending.pop(fd)
                    message = os.read(fd, 4096).decode(errors="replace").strip()
                    os.close(fd)
                    if not message.startswith("ready"):
                        return message.removeprefix("error ") or (
                            f"worker {index} exited while starting (exit code {self._workers[index].poll()})")
            return None
        finally:
            for fd in pending:
                os.close(fd)

    def _supervise(self) -> int:
        from prometheus_client import multiprocess

        draining_since: float | None = None
        status = 0
        while self._workers:
            time.sleep(0.1)
            while self._signals:
                signum = self._signals.pop(0)
                if draining_since is None:
                    draining_since = time.monotonic()
                    log.info("draining %d workers for %g s (%s)", len(self._workers), self.group.drain_seconds,
                             "Ctrl-C again stops at once" if signum == signal.SIGINT else "SIGTERM")
                    self._signal_all(signal.SIGTERM)
                elif signum == signal.SIGINT:
                    log.info("stopping at once")
                    self._signal_all(signal.SIGTERM)  # a worker's second SIGTERM stops it at once
            for index, process in list(self._workers.items()):
                if process.poll() is None:
                    continue
                del self._workers[index]
                multiprocess.mark_process_dead(process.pid, path=self._metrics_dir)
                if draining_since is not None:
                    status = status or (1 if process.returncode not in (0, -signal.SIGTERM) else 0)
                    continue
                log.error("worker %d (pid %s) exited with %s: restarting it", index, process.pid, process.returncode)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                if len(self._restarts) > MAX_RESTARTS_PER_MINUTE:
                    log.error("workers keep dying (%d restarts in a minute): giving up", len(self._restarts))
                    return 1
                os.close(self._spawn(index))  # not awaited: the other workers serve meanwhile
            if draining_since is not None and time.monotonic() - draining_since > self.group.drain_seconds + 5:
                log.error("workers did not stop after the drain: killing them")
                for process in self._workers.values():
                    process.kill()
                status = 1
        return status

    def _signal_all(self, signum: int) -> None:
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def _stop_all(self, timeout: float) -> None:
        """Leftovers only (start failure, giving up): SIGTERM twice (= stop at once), then SIGKILL."""
        if not self._workers:
            return
        self._signal_all(signal.SIGTERM)
        time.sleep(0.05)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._workers.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._workers.clear()


Serve = Callable[[dict[str, Any], socket.socket, Callable[[], None]], Awaitable[int]]


def worker_main(index: str, ready_fd: str, serve: Serve) -> None:
    """A worker's life: read the settings (JSON on stdin, with `host`, `port` and `log_level`),
    listen with SO_REUSEPORT, then `serve(settings, sock, on_listening)`, which tells the supervisor."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the supervisor, who decides
    values = json.loads(sys.stdin.buffer.read())
    logging.basicConfig(level=values["log_level"].upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)-7s %(name)s [worker {index}]: %(message)s")
    channel = os.fdopen(int(ready_fd), "w")

    def tell(message: str) -> None:
        try:
            channel.write(message + "\n")
            channel.close()
        except OSError:
            pass  # the supervisor does not wait for a restarted worker's message

    try:
        sock = listen_shared(values["host"], values["port"])
    except OSError as error:
        tell(f"error cannot listen on {authority(values['host'], values['port'])}: {error.strerror or error}")
        sys.exit(1)
    sys.exit(asyncio.run(serve(values, sock, lambda: tell(f"ready {os.getpid()}"))))

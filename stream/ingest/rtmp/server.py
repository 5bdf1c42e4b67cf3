"""The public RTMP port: per connection, the handshake, the gate until `publish`, then a plain
relay to FFmpeg's listener (demuxer.py); the caps, deadlines and evictions that keep hostile
clients from holding anything (the package docstring says why each is what it is)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from dataclasses import dataclass
from typing import Callable, Protocol

from stream import telemetry
from stream.ingest.rtmp import handshake
from stream.ingest.rtmp.demuxer import LOOPBACK, READ_TIMEOUT, RtmpDemuxer
from stream.ingest.rtmp.gate import PREPUBLISH_BYTES, PublishGate
from stream.ingest.rtmp.handshake import HANDSHAKE_PACKET_SIZE
from stream.ingest.rtmp.refusal import LockedOut, Refused, malformed
from stream.program import Program, ProgramInput, Role, SlotBusy

log = logging.getLogger(__package__)  # one logger for the whole RTMP ingest

# Seconds from the TCP accept: a publisher on the other side of the world needs a few round trips.
HANDSHAKE_DEADLINE = 3.0  # to the end of C2
PUBLISH_DEADLINE = 6.0  # to an accepted `publish`
# Sessions not publishing yet (each may hold a thread); legitimate publishers need 2 (primary + backup).
MAX_PENDING, MAX_PENDING_PER_ADDRESS = 32, 4
READ_SIZE = 64 * 1024  # once publishing: plain copying
NEGOTIATION_READ_SIZE = 4096  # before `publish`: parsed in Python, so at most this much per loop turn
MAX_NEGOTIATION_READS = 64  # FFmpeg's negotiation arrives in ~6 reads; a byte-by-byte trickle costs a turn each
UPSTREAM_CONNECT_ATTEMPTS, UPSTREAM_CONNECT_INTERVAL = 50, 0.02  # FFmpeg's listener binds within ms
JOIN_TIMEOUT = 0.8  # stop() must be done within ~1 s


class PublisherAccess(Protocol):
    """What the server asks the application about publishers: their key, their failed keys and
    their connection rate (the embedding server answers with its publish token, its process-wide
    memory of failed credentials and a per-address token bucket)."""

    def client(self, address: str) -> str:
        """Who `address` is for the per-client caps and rates (e.g. an IPv6 /64)."""

    def over_rate(self, client: str) -> bool:
        """Whether a new connection from `client` is one too many (if not, it is counted)."""

    def is_publish_key(self, presented: str) -> bool: ...

    def locked_out(self, address: str) -> int:
        """Seconds `address` must wait before presenting a key again (0: it may), counting the refusal."""

    def retry_after(self, address: str) -> int:
        """`locked_out` without counting anything."""

    async def failed(self, address: str) -> None:
        """Count a wrong key from `address`; returns after the failure delay."""


@dataclass(frozen=True, slots=True)
class _Peer:
    address: str  # the client's IP address: what failed keys count by, as every credential check does
    group: str  # what the pending caps and the connection rate count by
    remote: str  # address:port, for the log


def _peer(writer: asyncio.StreamWriter, client: Callable[[str], str]) -> _Peer:
    peer = writer.get_extra_info("peername")
    if not peer:
        return _Peer("unknown", "unknown", "unknown")
    host, port = peer[0], peer[1]
    return _Peer(host, client(host), f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies until EOF; drain() keeps a slow side from making us buffer without bound."""
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()


class _ListenerFailed(Exception):
    """FFmpeg's internal listener never accepted our connection (a server fault, not the client's)."""


class _Session:
    """One publisher connection: the handshake, gatekeeping until `publish`, then a plain relay."""

    def __init__(self, ingest: RtmpIngest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: _Peer, number: int) -> None:
        self._ingest = ingest
        self._closing = False
        self._client_reader, self._client_writer = reader, writer
        self.address, self.group, self.remote = peer.address, peer.group, peer.remote
        accepted = asyncio.get_running_loop().time()
        # Eviction order: silent before spoken (C0/C1 received), then least recently heard first.
        self.spoke, self.last_heard = False, accepted
        self._handshake_deadline = accepted + min(ingest.handshake_deadline, ingest.publish_deadline)
        self._publish_deadline = accepted + ingest.publish_deadline
        self._handshake_done = False
        self._number = number
        self._demuxer: RtmpDemuxer | None = None  # FFmpeg's side, started once `connect` is valid
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._input: ProgramInput | None = None
        # Its own task, not start_server's: Python 3.11 logs an error when that one ends cancelled.
        self.task = asyncio.create_task(self.run(), name=f"rtmp-session-{number}")

    def cancel(self) -> None:
        """Ends the session, unless it is already cleaning up: a cancelled cleanup could skip release()."""
        if not self._closing:
            self.task.cancel()

    def evict(self, why: str) -> None:
        """Ends a pending session to make room for a new connection (counted here: the task may
        be cancelled before it ever runs)."""
        log.info("evicted RTMP connection from %s (busy): %s", self.remote, why)
        telemetry.counter("ingest_rejected", "rtmp", "busy").inc()
        self.cancel()

    async def run(self) -> None:
        try:
            await self._serve()
        except LockedOut:  # AUTH_LOCKED_OUT counted it; one WARNING was logged when the lockout began
            log.debug("refused RTMP publisher from %s (bad_key): locked out", self.remote)
            telemetry.counter("ingest_rejected", "rtmp", "bad_key").inc()
        except Refused as refusal:
            log.warning("refused RTMP publisher from %s (%s): %s", self.remote, refusal.reason, refusal)
            telemetry.counter("ingest_rejected", "rtmp", refusal.reason).inc()
            if refusal.reason == "bad_key":
                await self._slow_down()
        except TimeoutError:
            stage, seconds = (("publish", self._ingest.publish_deadline) if self._handshake_done
                              else ("handshake", min(self._ingest.handshake_deadline, self._ingest.publish_deadline)))
            log.warning("refused RTMP publisher from %s (bad_request): no %s within %g s", self.remote, stage, seconds)
            telemetry.counter("ingest_rejected", "rtmp", "bad_request").inc()
        except asyncio.IncompleteReadError as error:
            if error.partial:  # nothing at all is a TCP health check, not worth a line
                log.info("RTMP connection from %s closed during the handshake", self.remote)
        except ConnectionError as error:
            log.info("RTMP connection from %s lost: %s", self.remote, error)
        except _ListenerFailed as error:
            log.error("RTMP publisher from %s dropped: %s", self.remote, error)
        finally:
            self._closing = True
            await self._close()

    async def _serve(self) -> None:
        async with asyncio.timeout_at(self._handshake_deadline):
            await self._handshake()
        self._handshake_done = True
        async with asyncio.timeout_at(self._publish_deadline):
            upstream = await self._negotiate()
        if upstream is None:
            log.info("RTMP publisher from %s left before publishing", self.remote)
            return
        self._tasks.append(asyncio.create_task(_relay(self._client_reader, upstream)))
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # raises what ended the session

    async def _handshake(self) -> None:
        """The server's side, as FFmpeg's listener answers it (handshake.py)."""
        c0 = await self._client_reader.readexactly(1)
        handshake.check_version(c0)
        c1 = await self._client_reader.readexactly(HANDSHAKE_PACKET_SIZE)
        self.spoke, self.last_heard = True, asyncio.get_running_loop().time()
        self._client_writer.write(handshake.server_answer(c0, c1))
        await self._client_writer.drain()
        await self._client_reader.readexactly(HANDSHAKE_PACKET_SIZE)  # C2
        self.last_heard = asyncio.get_running_loop().time()

    async def _negotiate(self) -> asyncio.StreamWriter | None:
        """Passes the client's bytes through the gate until an accepted `publish` (None: the client
        left). FFmpeg's side is opened only once `connect` is valid: the first point where a thread
        is worth starting."""
        gate = PublishGate(self._is_publish_key)
        loop = asyncio.get_running_loop()
        upstream: asyncio.StreamWriter | None = None
        waiting = bytearray()  # allowed to pass before FFmpeg's side is open; bounded by the gate's budget
        for _ in range(MAX_NEGOTIATION_READS):
            data = await self._client_reader.read(NEGOTIATION_READ_SIZE)
            if not data:
                return None
            self.last_heard = loop.time()
            forward, request = gate.feed(data)
            waiting += forward
            if upstream is None and gate.role is not None:
                upstream = await self._open_upstream()
            if upstream is not None:
                upstream.write(waiting)
                waiting.clear()
            if request is not None:
                self._claim(request.role)
                upstream.write(request.held)
                await upstream.drain()
                return upstream
            if upstream is not None:
                await upstream.drain()
            await asyncio.sleep(0)  # a read that was already buffered does not yield: hand the loop over
        raise malformed(f"{MAX_NEGOTIATION_READS} reads and no publish")

    async def _open_upstream(self) -> asyncio.StreamWriter:
        """Starts FFmpeg's listener and plays the client's side of the handshake with it; from then
        on FFmpeg's answers go to the publisher, and FFmpeg closing ends the session in any phase."""
        demuxer = self._demuxer = RtmpDemuxer(f"ingest-rtmp-{self._number}", self.remote,
                                              self._ingest.publish_deadline + READ_TIMEOUT)
        demuxer.start()
        reader, writer = await self._connect_upstream(demuxer)
        writer.write(handshake.client_hello())
        try:
            s0_s1_s2 = await reader.readexactly(1 + 2 * HANDSHAKE_PACKET_SIZE)
        except asyncio.IncompleteReadError:
            raise _ListenerFailed("FFmpeg's RTMP listener closed during the handshake") from None
        writer.write(handshake.client_ack(s0_s1_s2))
        downstream = asyncio.create_task(_relay(reader, self._client_writer))
        downstream.add_done_callback(self._upstream_ended)
        self._tasks.append(downstream)
        return writer

    def _upstream_ended(self, relay: asyncio.Task[None]) -> None:
        """FFmpeg closed its side: the client's pending read ends too (a cancelled relay is ours to end)."""
        if not relay.cancelled():
            self._client_writer.transport.abort()

    async def _connect_upstream(self, demuxer: RtmpDemuxer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(UPSTREAM_CONNECT_ATTEMPTS):
            try:
                reader, self._upstream_writer = await asyncio.open_connection(LOOPBACK, demuxer.port)
                return reader, self._upstream_writer
            except ConnectionRefusedError:
                if demuxer.finished.is_set():
                    break
                await asyncio.sleep(UPSTREAM_CONNECT_INTERVAL)
        raise _ListenerFailed(f"FFmpeg's RTMP listener on port {demuxer.port} did not start")

    def _is_publish_key(self, presented: str) -> bool:
        """The gate's key check; a locked-out client's keys are not compared (nor counted as failures).
        A session that presents the right key (releaseStream and publish do) is the operator's encoder:
        from then on it is never evicted."""
        if self._ingest.access.locked_out(self.address):
            raise LockedOut()
        if not self._ingest.access.is_publish_key(presented):
            return False
        self._ingest.leave_pending(self)
        return True

    def _claim(self, role: Role) -> None:
        try:
            self._input = self._ingest.program.claim(role, "rtmp", self.remote)
        except SlotBusy as busy:
            raise Refused("busy", str(busy)) from None
        self._demuxer.attach(self._input)  # started by the `connect` that came before

    async def _slow_down(self) -> None:
        """Answers a wrong key only after the failure delay, FFmpeg's side already closed: meanwhile
        the client holds nothing but its socket (and still counts as pending)."""
        await self._stop_tasks()
        await self._close_upstream()
        access = self._ingest.access
        already_locked_out = access.retry_after(self.address) > 0
        await access.failed(self.address)
        if not already_locked_out and (seconds := access.retry_after(self.address)):
            log.warning("RTMP publishers from %s locked out for %d s after repeated wrong keys", self.address,
                        seconds)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_upstream(self) -> None:
        """Ends FFmpeg's side of the session: its connection, then its thread (idempotent)."""
        demuxer = self._demuxer
        if demuxer is None:
            return
        if self._upstream_writer is None:  # FFmpeg still waits in accept(): only a connection ends that
            with contextlib.suppress(_ListenerFailed, OSError):
                await self._connect_upstream(demuxer)
        if self._upstream_writer is not None:
            self._upstream_writer.transport.abort()  # FFmpeg's read ends, so does the thread
        demuxer.request_stop()
        await demuxer.wait_ended(JOIN_TIMEOUT)

    async def _close(self) -> None:
        self._ingest.leave_pending(self)
        await self._stop_tasks()
        self._client_writer.transport.abort()
        await self._close_upstream()
        if self._input is not None:
            self._input.release()


class RtmpIngest:
    """The public RTMP port: one gatekept session per connection, publishers into `program`."""

    publish_deadline = PUBLISH_DEADLINE
    handshake_deadline = HANDSHAKE_DEADLINE

    def __init__(self, program: Program, access: PublisherAccess, host: str, port: int) -> None:
        self.program, self.access = program, access
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self.sessions: set[_Session] = set()
        self._pending: set[_Session] = set()  # not publishing yet: evictable
        self._numbers = itertools.count(1)

    async def start(self) -> None:
        try:
            # A small read buffer per connection: nothing before `publish` needs more, media flows anyway.
            self._server = await asyncio.start_server(self._on_connection, self._host, self._port,
                                                      limit=PREPUBLISH_BYTES)
        except OSError as error:
            raise OSError(error.errno, f"RTMP ingest cannot listen on {self._host}:{self._port}: {error.strerror}"
                          " (is another RTMP server running? choose another --rtmp-port)") from error
        log.info("RTMP ingest listening on rtmp://%s:%d/live/<publish token>", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        sessions = list(self.sessions)
        for session in sessions:
            session.cancel()
        if sessions:
            await asyncio.wait([s.task for s in sessions], timeout=1.0)

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    @property
    def pending(self) -> int:
        """Sessions not publishing yet."""
        return len(self._pending)

    def leave_pending(self, session: _Session) -> None:
        """`session` presented the right key (never to be evicted) or is closing (its place is free)."""
        self._pending.discard(session)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer, self.access.client)
        # Closed at once, before any thread, and without taking anyone's place. DEBUG only: a client
        # that keeps knocking must not flood the log (the metrics count each).
        if self.access.locked_out(peer.address):
            log.debug("refused RTMP publisher from %s (bad_key): locked out", peer.remote)
            telemetry.counter("ingest_rejected", "rtmp", "bad_key").inc()
            writer.transport.abort()
            return
        if self.access.over_rate(peer.group):
            log.debug("refused RTMP connection from %s (busy): too many connections from its address", peer.remote)
            telemetry.counter("ingest_rejected", "rtmp", "busy").inc()
            writer.transport.abort()
            return
        self._make_room(peer.group)
        session = _Session(self, reader, writer, peer, next(self._numbers))
        self.sessions.add(session)
        self._pending.add(session)
        try:
            await asyncio.wait([session.task])  # unlike `await`, does not raise when stop() cancels it
        finally:
            self.sessions.discard(session)
            self.leave_pending(session)
            writer.transport.abort()  # a session cancelled before its task ever ran did not close it

    def _make_room(self, group: str) -> None:
        """Evicts a pending session if a new one from `group` would exceed a cap."""
        from_group = [s for s in self._pending if s.group == group]
        if len(from_group) >= MAX_PENDING_PER_ADDRESS:
            candidates, why = from_group, f"{len(from_group)} connections from its address not publishing"
        elif len(self._pending) >= MAX_PENDING:
            load = collections.Counter(s.group for s in self._pending)
            most = max(load.values())
            candidates = [s for s in self._pending if load[s.group] == most]
            why = f"{len(self._pending)} connections not publishing"
        else:
            return
        victim = min(candidates, key=lambda s: (s.spoke, s.last_heard))
        self._pending.discard(victim)
        victim.evict(why)

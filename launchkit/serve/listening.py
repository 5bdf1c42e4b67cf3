"""Sockets a server listens on, and how an address is written in announcements and URLs."""

from __future__ import annotations

import errno
import socket

BACKLOG = 1024


class ListenError(RuntimeError):
    pass


def authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertised(host: str) -> str:
    """The host to print in URLs for a listening address: a wildcard is reachable on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), family=_family(host), backlog=BACKLOG)
    except OSError as error:
        reason = "address already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise ListenError(f"cannot listen on {authority(host, port)}: {reason}") from None


def listen_shared(host: str, port: int) -> socket.socket:
    """A listening socket on a port other processes listen on too (SO_REUSEPORT: the kernel spreads
    connections between them)."""
    return socket.create_server((host, port), family=_family(host), backlog=BACKLOG, reuse_port=True)


def hold_port(host: str, port: int) -> socket.socket:
    """Binds `host:port` (0: a free port) for a group of SO_REUSEPORT listeners without listening
    itself, so it gets no connections; fails fast when the port is taken."""
    probe = listen(host, port)
    port = probe.getsockname()[1]
    holder = socket.socket(_family(host), socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    probe.close()
    try:
        holder.bind((host, port))
    except OSError as error:
        holder.close()
        raise ListenError(f"cannot listen on {authority(host, port)}: {error.strerror}") from None
    return holder

"""Who the client is, behind the proxies we trust (`--trusted-proxies`).

Behind an ingress controller, a CDN or a load balancer every request comes from the proxy's
address, so per-client rules (wall and QoE rate limits, bans, failed-credential delays) would
treat a whole audience as one client, and `request.secure` would be false behind TLS termination.
The `middleware` hands every handler a request whose `remote` is the client and whose `scheme` is
what the client used, read from `X-Forwarded-For` / `X-Forwarded-Proto` -- but only when the
connecting peer is a trusted proxy; anyone else's headers are ignored (they are trivially forged).

`X-Forwarded-For` is read from the right: each trusted proxy appends the address it received the
request from, so the first untrusted address from the right is the client; whatever lies to its
left was written by that client and is not believed. `X-Forwarded-Proto` is taken from the nearest
proxy (its last value). RFC 7239 `Forwarded` is not read: ingress-nginx, nginx, Varnish, HAProxy
and CDNs all send the X-Forwarded-* pair.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from aiohttp import web

from launchkit.web.routes import Handler

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HOPS = 32  # a longer X-Forwarded-For is not read further (nobody chains 32 proxies)


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs or addresses (`10.0.0.0/8, ::1`); raises ValueError naming the bad one."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """An address from a forwarded hop: `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:80` or `2001:db8::1`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: list[str]) -> str | None:
        """The client's address: `peer` unless it is a trusted proxy that says whom it forwards."""
        if not self.trusts(_address(peer or "")):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",")][-MAX_HOPS:]
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break  # garbage (or "unknown"): the last address we could read stands
            client = str(address)
            if not self.trusts(address):
                break
        return client

    def scheme(self, peer: str | None, request_scheme: str, forwarded_proto: str | None) -> str:
        if forwarded_proto and self.trusts(_address(peer or "")):
            proto = forwarded_proto.split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                return proto
        return request_scheme

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.networks:
            return await handler(request)
        peer = request.remote
        client = self.client(peer, request.headers.getall("X-Forwarded-For", []))
        scheme = self.scheme(peer, request.scheme, request.headers.get("X-Forwarded-Proto"))
        if client != peer or scheme != request.scheme:
            request = request.clone(remote=client, scheme=scheme)
        return await handler(request)

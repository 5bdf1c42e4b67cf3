"""ICE for every peer connection Launchkit makes: which local addresses it gathers and
advertises, and which STUN/TURN servers it uses.

Two aiortc/aioice defaults are wrong for a server, so nothing else should build an
`RTCConfiguration` or rely on the stock gathering:
- aiortc's default configuration contacts a public STUN server (stun.l.google.com). We always
  pass our own server list, empty unless LAUNCHKIT_ICE_SERVERS names some.
- aioice gathers every interface except loopback. A server wants exactly the addresses it is
  reachable on (LAUNCHKIT_ICE_ADDRESSES), and tests want 127.0.0.1 only.

Our candidates are never mDNS names: aioice advertises plain IP host candidates. Remote mDNS
candidates (`<uuid>.local`, sent by browsers that hide their addresses) are dropped by
`without_mdns_candidates`: a server cannot resolve a name that lives on the publisher's LAN, and
resolving would multicast on ours. The publisher's connectivity checks still reach our advertised
addresses, which yields a peer-reflexive candidate, so ICE succeeds without them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

from launchkit.option_parsers import ConfigError

ADDRESSES_ENV = "LAUNCHKIT_ICE_ADDRESSES"
SERVERS_ENV = "LAUNCHKIT_ICE_SERVERS"

_STOCK_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses


@dataclass(frozen=True, slots=True)
class IceSettings:
    """`addresses`: local IPs to gather and advertise (empty: every non-loopback interface, the
    aioice default). `servers`: STUN/TURN URLs (RFC 7064/7065), empty by default."""

    addresses: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for address in self.addresses:
            _check_address(address)
        for url in self.servers:
            _check_server(url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> IceSettings:
        """Settings from LAUNCHKIT_ICE_ADDRESSES / LAUNCHKIT_ICE_SERVERS (comma-separated)."""
        return cls(
            addresses=_env_items(environ, ADDRESSES_ENV, _check_address),
            servers=_env_items(environ, SERVERS_ENV, _check_server),
        )

    def rtc_configuration(self) -> RTCConfiguration:
        """The configuration every RTCPeerConnection gets: never aiortc's default STUN server."""
        return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in self.servers])


def _check_address(address: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"expected IP addresses, got {address!r}") from None


def _check_server(url: str) -> None:
    try:
        parse_stun_turn_uri(url)
    except ValueError:
        raise ConfigError(f"expected stun:, turn: or turns: URLs, got {url!r}") from None


def _env_items(environ: Mapping[str, str], name: str, check: Callable[[str], None]) -> tuple[str, ...]:
    items = tuple(item.strip() for item in environ.get(name, "").split(",") if item.strip())
    for item in items:
        try:
            check(item)
        except ConfigError as error:
            raise ConfigError(f"{name}: {error}") from None
    return items


def apply_host_addresses(settings: IceSettings) -> None:
    """Make aioice gather exactly `settings.addresses` (the stock interface scan when empty).

    aioice has no per-connection hook: `Connection.gather_candidates` calls the module-level
    `aioice.ice.get_host_addresses`, so this replaces that function for the whole process. Call
    it before the first peer connection gathers; calling it again with the same or new settings
    is harmless (the last call wins), so every endpoint can apply the settings it was given.
    """
    if not settings.addresses:
        aioice.ice.get_host_addresses = _STOCK_GET_HOST_ADDRESSES
        return
    configured = settings.addresses

    def configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        wanted = {4: use_ipv4, 6: use_ipv6}
        return [address for address in configured if wanted[ipaddress.ip_address(address).version]]

    aioice.ice.get_host_addresses = configured_host_addresses


def without_mdns_candidates(sdp: str) -> str:
    """`sdp` minus `a=candidate` lines whose address is an mDNS name (see the module docstring)."""
    return "".join(line for line in sdp.splitlines(keepends=True) if not _is_mdns_candidate(line))


def _is_mdns_candidate(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    if not line.startswith("a=candidate:"):
        return False
    fields = line.split()
    return len(fields) > 4 and fields[4].lower().endswith(".local")

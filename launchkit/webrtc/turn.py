"""TURN for viewers whose network drops UDP: short-lived credentials Launchkit signs and a TURN
server (coturn) checks, handed to WHEP viewers in `Link` headers.

    turn = TurnCredentials.from_env(config.turn_urls, config.turn_credential_ttl)  # None: no TURN
    response.headers["Link"] = turn.link_header()   # on OPTIONS /whep and on the 201 of POST /whep
    servers = ice_servers(response.headers.getall("Link", []))  # a client: RTCIceServer list

Design decisions:
- The credential scheme is the TURN REST API's (draft-uberti-behave-turn-rest-00), what coturn's
  `use-auth-secret` + `static-auth-secret` check: username `<expiry unix time>:<random id>`,
  password base64(HMAC-SHA1(secret, username)). Launchkit and coturn share only the secret: no
  call between them, no state, so any edge process signs for any coturn replica. SHA-1 because it
  is what coturn computes; HMAC does not rest on SHA-1's collision resistance.
- The username carries nothing about the viewer (no address, no ticket): coturn logs it and every
  proxy on the way may see it. The random id only keeps usernames apart in coturn's logs and quotas.
- Expiry bounds when a credential may start a relay, not how long a relay lasts: coturn checks the
  time when a TURN session first authenticates, and an allocation made in time keeps refreshing
  and binding channels after it (tests/stream/webrtc/test_turn.py shows it; coturn issues #774,
  #1204). A page asks for fresh credentials before each attempt, so the TTL only has to cover the
  seconds to its allocation plus any clock skew between edges and coturn: minutes, not the length
  of a viewing. A leaked credential can start relays until it expires, to the edges only (coturn
  is set to relay nowhere else, k8s/base/coturn.yaml).
- Delivery is RFC 9725 §4.6's (WHIP; WHEP follows it): one `Link: <url>; rel="ice-server";
  username=…; credential=…; credential-type="password"` value per URL, on the answer to an
  OPTIONS request (a page learns them before it gathers candidates) and on the 201 of a POST. Not
  on CORS preflights: a browser never shows a preflight's headers to the page, and RFC 9725 asks
  endpoints not to mint credentials for them. One credential per answer, for all its URLs.
- The secret (LAUNCHKIT_TURN_SECRET) is held to the tokens' rules (launchkit.auth: 16-256
  characters of A-Z a-z 0-9 . _ ~ -, 64 bits at least): the same bytes go into coturn's
  configuration file, where spaces, quotes and `#` would not survive as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiortc import RTCIceServer

from launchkit.auth import TokenError, check_token
from launchkit.option_parsers import ConfigError

SECRET_ENV = "LAUNCHKIT_TURN_SECRET"
# `<url>` then `; name=value` parameters (quoted or not): one link-value of a Link header (RFC 8288).
_LINK_VALUE = re.compile(r'\s*<([^>]*)>((?:\s*;\s*[^;,=\s]+(?:\s*=\s*(?:"[^"]*"|[^;,\s]*))?)*)\s*(?:,|$)')
_PARAMETER = re.compile(r';\s*([^;,=\s]+)(?:\s*=\s*(?:"([^"]*)"|([^;,\s]*)))?')


def turn_password(secret: str, username: str) -> str:
    """The TURN REST API password of `username`: base64(HMAC-SHA1(secret, username)), what coturn
    computes with `use-auth-secret` to check it."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class TurnCredential:
    """What a viewer gets: a username and password valid on every URL until `expires` (unix time)."""

    urls: tuple[str, ...]
    username: str
    password: str
    expires: int

    def link_values(self) -> list[str]:
        """RFC 9725 §4.6 link-values, one per URL (usernames and passwords never contain a quote)."""
        return [f'<{url}>; rel="ice-server"; username="{self.username}"; credential="{self.password}"; '
                'credential-type="password"' for url in self.urls]


class TurnCredentials:
    """Signs expiring TURN credentials for `urls` with `secret`; one `issue()` per viewer answer."""

    def __init__(self, urls: Sequence[str], secret: str, ttl: int, clock: Callable[[], float] = time.time) -> None:
        if not urls:
            raise ValueError("TurnCredentials needs at least one TURN URL")
        self.urls = tuple(urls)
        self.ttl = ttl
        self._secret = secret
        self._clock = clock

    @classmethod
    def from_env(cls, urls: Sequence[str], ttl: int,
                 environ: Mapping[str, str] = os.environ) -> TurnCredentials | None:
        """None without TURN URLs; else credentials signed with LAUNCHKIT_TURN_SECRET. Raises
        ConfigError (for the startup message) when the URLs are set and the secret is missing or weak."""
        if not urls:
            return None
        secret = environ.get(SECRET_ENV, "")
        if not secret:
            raise ConfigError(f"--turn-urls is set but {SECRET_ENV} is not: set it to the TURN server's "
                              "static-auth-secret (coturn: use-auth-secret), e.g. the output of `openssl rand -hex 24`")
        try:
            check_token(SECRET_ENV, secret)  # a token's characters: coturn's configuration holds it as it is
        except TokenError as error:
            raise ConfigError(str(error)) from None
        return cls(urls, secret, ttl)

    def issue(self) -> TurnCredential:
        expires = int(self._clock()) + self.ttl
        username = f"{expires}:{secrets.token_hex(8)}"
        return TurnCredential(self.urls, username, turn_password(self._secret, username), expires)

    def link_header(self) -> str:
        """A `Link` header value carrying a fresh credential for every URL (RFC 8288: comma-separated)."""
        return ", ".join(self.issue().link_values())


def ice_servers(link_headers: Iterable[str]) -> list[RTCIceServer]:
    """A client's view: the `rel="ice-server"` links of `Link` header values, as aiortc ICE servers
    (what landing/static/webrtc.js does for the page). Other links are ignored."""
    servers = []
    for header in link_headers:
        for match in _LINK_VALUE.finditer(header):
            parameters = {parameter.group(1).lower(): parameter.group(2) or parameter.group(3) or ""
                          for parameter in _PARAMETER.finditer(match.group(2))}
            if "ice-server" not in parameters.get("rel", "").split():  # rel may list several types
                continue
            servers.append(RTCIceServer(urls=match.group(1), username=parameters.get("username"),
                                        credential=parameters.get("credential"),
                                        credentialType=parameters.get("credential-type", "password")))
    return servers

"""The real topology for WebRTC tests: a server and a viewer, each in a network namespace of its own,
joined by a veth pair, as a viewer's computer and a server are joined by a network.

    with two_namespaces(udp_dropped=False, viewer_addresses=1) as net:
        origin = net.start_demo("--webrtc", "320x180:300")       # in the server namespace
        result = net.run_scenario(MODULE, "whep-browser", origin.url)   # in the viewer namespace

Why two namespaces, not one with only `lo`: Chromium in its default WebRTC privacy (what viewers
have: no mDNS or IP-handling flag) gathers only on the interface of the default route and hides
the address behind an mDNS name. In a namespace with only `lo` there is no such interface: it
gathers nothing, sends an empty offer, and WebRTC fails after the page's timeout; tests then needed
`--force-webrtc-ip-handling-policy=default --disable-features=WebRtcHideLocalIpsWithMdns
--allow-loopback-in-peer-connection`, flags no viewer has, which hid the real behaviour. Here the
viewer has an ordinary interface and a default route, so Chromium does what it does on a laptop
(the server drops the `.local` candidates; the viewer's checks reach the server's host candidate).

Layout, one private /24 per topology (10.64.0.0/10, from this process's PID and a counter; the pairs
are isolated from each other and from the host anyway, so a clash between two runs changes nothing):

    server namespace   lo up, eth0 10.X.Y.1/24                 servers listen and gather here
    viewer namespace   lo up, eth0 10.X.Y.2/24 (+ .3, .4, …)   default route via 10.X.Y.1

`viewer_addresses` > 1 adds addresses to the viewer's interface: simulated viewers (aiortc) then
speak HTTP from addresses of their own, as viewers on machines of their own do (servers count
clients per address). With `udp_dropped`, nftables drops every UDP packet in and out of the viewer
namespace at its interface (netdev ingress and egress hooks, with counters): a socket's send still
succeeds and the packet vanishes on the way, as behind a corporate firewall that drops UDP.

Servers start under `ip netns exec SERVER` on the server's address, gathering ICE there
(loadtests/target.py). Scenarios (a module's SCENARIOS, see tests/stream/webrtc/scenario.py) run
in the viewer namespace by default and print their JSON result last; a scenario that hosts an
in-process server runs in the server namespace (`side="server"`) and reaches the viewer through
`topology.chromium`, a launcher that starts Chromium in the viewer namespace (Playwright drives it
over inherited pipes, so nothing else changes). A scenario finds the topology in its environment
(`Topology.from_env()`). Traffic stays in the two namespaces.

Cleanup, even when a step fails: the servers it started are stopped by PID; then every process left
in either namespace (only ours can be there: a scenario's browser, a child it forgot) is killed by
PID, and both namespaces are deleted (the veth pair goes with them). Needs root, iproute2 and,
for `udp_dropped`, nftables (Debian packages; `make system-packages`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loadtests.browser import CHROMIUM
from loadtests.target import LocalDemo, start_edge, start_launchkit

ROOT = Path(__file__).parents[2]
TOPOLOGY_ENV = "LAUNCHKIT_TEST_TOPOLOGY"  # how a scenario learns the topology it runs in
INTERFACE = "eth0"  # the veth end in each namespace, named as on an ordinary machine
_COUNTER = itertools.count()
_SETUP_TIMEOUT = 10.0
_KILL_TIMEOUT = 5.0


@dataclass
class Topology:
    server: str  # namespace names (`ip netns add`)
    viewer: str
    server_ip: str
    viewer_ips: tuple[str, ...]  # the viewer's address first: the one Chromium gathers on
    udp_dropped: bool
    directory: Path  # server logs, the Chromium launcher
    servers: list[LocalDemo] = field(default_factory=list)  # stopped by PID at cleanup

    @property
    def viewer_ip(self) -> str:
        return self.viewer_ips[0]

    @property
    def chromium(self) -> str:
        """An executable that runs Debian's Chromium in the viewer namespace (Playwright's
        `executable_path`), wherever the scenario that launches it runs."""
        return str(self.directory / "chromium-in-viewer-namespace")

    def command(self, namespace: str, *argv: str) -> list[str]:
        """`argv` run in `namespace` (`ip netns exec` execs it: its PID is the command's)."""
        return ["ip", "netns", "exec", namespace, *argv]

    def run(self, namespace: str, *argv: str, timeout: float = 30.0,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` in `namespace` to completion; the caller checks the outcome."""
        return subprocess.run(self.command(namespace, *argv), capture_output=True, text=True, input=stdin,
                              timeout=timeout)

    def start_launchkit(self, role: str, *args: str, **kwargs: Any) -> LocalDemo:
        """`launchkit ROLE` in the server namespace on the server's address (ICE gathered there)."""
        kwargs.setdefault("log_dir", self.directory)
        kwargs.setdefault("ready_timeout", 40)
        server = start_launchkit(role, *args, host=self.server_ip, namespace=self.server, **kwargs)
        self.servers.append(server)
        return server

    def start_demo(self, *args: str, **kwargs: Any) -> LocalDemo:
        return self.start_launchkit("demo", *args, **kwargs)

    def start_edge(self, origin_url: str, **settings: object) -> LocalDemo:
        """An edge process (loadtests/target.py `start_edge`) in the server namespace, beside the origin."""
        edge = start_edge(origin_url, self.directory, namespace=self.server, host=self.server_ip, **settings)
        self.servers.append(edge)
        return edge

    def run_scenario(self, module: str, scenario: str, *args: str, side: str = "viewer",
                     timeout: float = 60.0) -> dict[str, Any]:
        """Run `scenario` of `module` (`python -m module scenario args…`) in the viewer namespace (or
        the server's) and return its result, the JSON its last stdout line holds."""
        namespace = {"viewer": self.viewer, "server": self.server}[side]
        command = self.command(namespace, sys.executable, "-m", module, scenario, *args)
        return run_scenario_command(command, scenario, timeout=timeout,
                                   env={**os.environ, TOPOLOGY_ENV: self.describe()})

    def describe(self) -> str:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "servers"}
        return json.dumps(values | {"directory": str(self.directory)})

    @classmethod
    def from_env(cls) -> Topology:
        """The topology a scenario runs in (set by `run_scenario`)."""
        values = json.loads(os.environ[TOPOLOGY_ENV])
        return cls(**values | {"viewer_ips": tuple(values["viewer_ips"]), "directory": Path(values["directory"])})


def run_scenario_command(command: list[str], scenario: str, *, timeout: float,
                         env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a scenario process (`command`, from the repository's root) and return the JSON of its
    last stdout line; its stderr (the scenario's log) is shown when it fails or takes too long."""
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"scenario {scenario} took over {timeout:g} s; its log:\n{_text(expired.stderr)[-4000:]}",
                    pytrace=False)
    if done.returncode != 0 or not done.stdout.strip():
        hint = " (network namespaces need root)" if "Operation not permitted" in done.stderr else ""
        pytest.fail(f"scenario {scenario} failed with exit code {done.returncode}{hint}; its log:\n"
                    f"{done.stderr[-4000:]}", pytrace=False)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


@contextmanager
def two_namespaces(*, udp_dropped: bool = False, viewer_addresses: int = 1) -> Iterator[Topology]:
    """Build the topology (see the module's docstring), yield it, and tear it down whatever happens."""
    _require_tools(udp_dropped)
    if not 1 <= viewer_addresses <= 250:
        raise ValueError(f"viewer_addresses: 1 to 250, not {viewer_addresses}")
    number = next(_COUNTER)
    index = (os.getpid() % 256) * 64 + number % 64  # 16384 /24s in 10.64.0.0/10
    prefix = f"10.{64 + index // 256}.{index % 256}"
    name = f"launchkit-{os.getpid()}-{number}"
    topology = Topology(server=f"{name}-server", viewer=f"{name}-viewer", server_ip=f"{prefix}.1",
                        viewer_ips=tuple(f"{prefix}.{2 + i}" for i in range(viewer_addresses)),
                        udp_dropped=udp_dropped, directory=Path(tempfile.mkdtemp(prefix=f"{name}-")))
    try:
        _build(topology)
        yield topology
    finally:
        _tear_down(topology)


def _require_tools(udp_dropped: bool) -> None:
    tools = ("ip", "nft") if udp_dropped else ("ip",)
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: WebRTC tests build network namespaces (Debian packages "
                    "iproute2 and nftables: `make system-packages`)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("WebRTC tests build network namespaces: run them as root", pytrace=False)


def _ip(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, input=stdin, timeout=_SETUP_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def _build(topology: Topology) -> None:
    server, viewer = topology.server, topology.viewer
    _ip("netns", "add", server)
    _ip("netns", "add", viewer)
    # Created inside the server namespace with its peer moved at once: the host never sees either end.
    _ip("-n", server, "-batch", "-", stdin="\n".join([
        f"link add {INTERFACE} type veth peer name {INTERFACE} netns {viewer}",
        f"addr add {topology.server_ip}/24 dev {INTERFACE}",
        f"link set {INTERFACE} up", "link set lo up", ""]))
    _ip("-n", viewer, "-batch", "-", stdin="\n".join([
        *(f"addr add {address}/24 dev {INTERFACE}" for address in topology.viewer_ips),
        f"link set {INTERFACE} up", "link set lo up",
        f"route add default via {topology.server_ip}", ""]))
    if topology.udp_dropped:
        done = topology.run(viewer, "nft", "-f", "-", stdin=udp_drop_rules())
        if done.returncode != 0:
            raise RuntimeError(f"nft: {done.stderr.strip()}")
    launcher = Path(topology.chromium)
    launcher.write_text(f'#!/bin/sh\n# Chromium as a viewer runs it: in the viewer namespace.\n'
                        f'exec ip netns exec {viewer} {CHROMIUM} "$@"\n')
    launcher.chmod(0o755)


def udp_drop_rules(interface: str = INTERFACE) -> str:
    """nftables rules that drop every UDP packet (IPv4 and IPv6) arriving on or leaving `interface`,
    counted: on the device's ingress and egress hooks, below the sockets, so a sender is not told."""
    return "\n".join([
        "table netdev corporate_firewall {",
        f'  chain ingress {{ type filter hook ingress device "{interface}" priority 0; policy accept; '
        "meta l4proto udp counter drop; }",
        f'  chain egress {{ type filter hook egress device "{interface}" priority 0; policy accept; '
        "meta l4proto udp counter drop; }",
        "}", ""])


def dropped_udp_packets(topology: Topology) -> dict[str, int]:
    """How many UDP packets the viewer's firewall dropped so far, per hook (ingress, egress)."""
    done = topology.run(topology.viewer, "nft", "-j", "list", "table", "netdev", "corporate_firewall")
    if done.returncode != 0:
        raise RuntimeError(f"nft: {done.stderr.strip()}")
    counts: dict[str, int] = {}
    for item in json.loads(done.stdout)["nftables"]:
        rule = item.get("rule")
        if rule:
            counter = next(expression["counter"] for expression in rule["expr"] if "counter" in expression)
            counts[rule["chain"]] = counter["packets"]
    return counts


def namespaces() -> set[str]:
    """The network namespaces `ip netns` knows now."""
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=_SETUP_TIMEOUT)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def _pids_in(namespace: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                          timeout=_SETUP_TIMEOUT)
    return [int(pid) for pid in done.stdout.split()]


def _tear_down(topology: Topology) -> None:
    for server in topology.servers:
        if server.process.poll() is None:
            try:
                server.stop()
            except subprocess.TimeoutExpired:  # stop() killed it
                pass
    present = namespaces()
    for namespace in (topology.viewer, topology.server):
        if namespace not in present:
            continue  # setup failed before creating it
        _kill_everything_in(namespace)
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=_SETUP_TIMEOUT)


def _kill_everything_in(namespace: str) -> None:
    """Kill, by PID, what is left in a namespace this topology made: our processes' descendants only
    (a scenario's browser, a viewer process it started). Bounded in time."""
    deadline = time.monotonic() + _KILL_TIMEOUT
    while (pids := _pids_in(namespace)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)

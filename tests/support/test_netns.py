"""The real topology itself (netns.py): the viewer reaches the server over the veth pair by its
default route; with UDP dropped, no UDP datagram crosses in either direction while TCP still
works (and with UDP open the same probe gets through, so the probe can fail); and nothing is left
behind, even when the test inside fails with a process still running in a namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support.netns import Topology, dropped_udp_packets, namespaces, two_namespaces

PORT = 9000
# The server's side: a UDP echo and a TCP echo on PORT, and a UDP sender to the viewer on request.
SERVER = """
import socket, sys, threading
address, port = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((address, port))
tcp = socket.create_server((address, port))
def echo_tcp():
    while True:
        connection, _ = tcp.accept()
        with connection: connection.sendall(connection.recv(64))
threading.Thread(target=echo_tcp, daemon=True).start()
print("ready", flush=True)
while True:
    data, peer = udp.recvfrom(64)
    if data.startswith(b"send to "):  # 'send to PORT': a datagram to the asker's PORT, unasked for by it
        udp.sendto(b"from the server", (peer[0], int(data.split()[-1])))
    else:
        udp.sendto(data, peer)
"""
# The viewer's side: the route to the server, then TCP and UDP echoes, then a datagram the server
# sends to a port the viewer did not send from (inbound UDP, not a reply).
PROBE = """
import json, socket, subprocess, sys
server, port = sys.argv[1], int(sys.argv[2])
route = subprocess.run(["ip", "-4", "route", "get", "192.0.2.1"], capture_output=True, text=True).stdout.split()
result = {"default_via": route[route.index("via") + 1] if "via" in route else None}
with socket.create_connection((server, port), timeout=2) as tcp:
    tcp.sendall(b"tcp ping"); result["tcp"] = tcp.recv(64).decode()
def udp_answer(payload, listen=None):
    asker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    result.setdefault("sent", 0); result["sent"] += asker.sendto(payload, (server, port)) > 0
    receiver = listen or asker; receiver.settimeout(1.5)
    try:
        return receiver.recvfrom(64)[0].decode()
    except TimeoutError:
        return None
result["udp"] = udp_answer(b"udp ping")
inbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); inbound.bind(("0.0.0.0", 0))
result["inbound_udp"] = udp_answer(f"send to {inbound.getsockname()[1]}".encode(), listen=inbound)
print(json.dumps(result))
"""


def _probe(net: Topology) -> dict:
    server = subprocess.Popen(net.command(net.server, sys.executable, "-c", SERVER, net.server_ip, str(PORT)),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        done = net.run(net.viewer, sys.executable, "-c", PROBE, net.server_ip, str(PORT), timeout=20)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    finally:
        server.kill()
        server.wait()


def test_udp_dropped_drops_every_datagram_both_ways_and_tcp_still_works():
    with two_namespaces() as net:
        assert net.server in namespaces() and net.viewer in namespaces()
        open_network = _probe(net)
    assert open_network == {"default_via": net.server_ip, "tcp": "tcp ping", "sent": 2, "udp": "udp ping",
                            "inbound_udp": "from the server"}, open_network
    with two_namespaces(udp_dropped=True) as net:
        blocked = _probe(net)
        dropped = dropped_udp_packets(net)
    # The sender is not told (sendto succeeded): the datagrams vanish on the way, as at a firewall.
    assert blocked == {"default_via": net.server_ip, "tcp": "tcp ping", "sent": 2, "udp": None,
                       "inbound_udp": None}, blocked
    # Both asks dropped leaving; the inbound datagram never came (the server never got the ask).
    assert dropped == {"ingress": 0, "egress": 2}, dropped
    print(f"\nUDP dropped: {dropped['egress']} datagrams dropped leaving the viewer, TCP echo fine; "
          f"with UDP open both echoes came back")


def test_the_firewall_drops_udp_arriving_from_the_server_too():
    with two_namespaces(udp_dropped=True) as net:
        sender = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                  "[s.sendto(b'x', (sys.argv[1], 9)) for _ in range(3)]")
        done = net.run(net.server, sys.executable, "-c", sender, net.viewer_ip)
        assert done.returncode == 0, done.stderr
        assert dropped_udp_packets(net) == {"ingress": 3, "egress": 0}


def test_cleanup_kills_what_is_left_and_deletes_both_namespaces_even_when_the_test_fails():
    with pytest.raises(RuntimeError, match="a step failed"), two_namespaces(viewer_addresses=3) as net:
        left = subprocess.Popen(net.command(net.viewer, "sleep", "600"))  # e.g. a scenario's browser
        server = net.start_launchkit("origin", "--data-dir", str(net.directory / "data"), wait_for_media=False)
        assert {net.server, net.viewer} <= namespaces()
        raise RuntimeError("a step failed")
    assert left.wait(5) == -signal.SIGKILL  # killed by PID (and reaped here: it is this process's child)
    assert server.process.poll() is not None  # stopped by PID
    assert not {net.server, net.viewer} & namespaces()
    assert not os.path.exists(f"/run/netns/{net.server}") and not os.path.exists(f"/run/netns/{net.viewer}")

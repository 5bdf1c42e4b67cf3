"""A real coturn (Debian package `coturn`, binary `turnserver`) for tests: TURN over UDP and TCP on
one port, TLS (`turns:`) on another when given a certificate, checking Launchkit's TURN REST API
credentials (`use-auth-secret` + `static-auth-secret`), relaying from the given address only.

    coturn = start_coturn("127.0.0.1", secret, directory)   # in a network namespace the test made
    ...; coturn.log(); coturn.stop()                        # stopped by its PID

The configuration goes in a file in `directory` (mode 0600: it holds the secret, which a command
line would show to every user). Loopback peers, which coturn refuses by default, are allowed only
when `address` is a loopback address: in a private namespace the server under test lives there too.
`verbose` makes coturn log every allocation (`ALLOCATE processed, success`) and refusal (`error
401`), which tests read.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtests.target import within_namespace

REALM = "launchkit.test"
PORT = 3478
TLS_PORT = 5349
RELAY_PORTS = (49152, 49183)  # bounded: a test needs one relay port per viewer
READY_TIMEOUT = 10.0


@dataclass
class Coturn:
    process: subprocess.Popen
    address: str
    port: int
    tls_port: int | None
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def urls(self) -> tuple[str, ...]:
        """TURN/TCP, then TURN/TLS when configured (the URLs Launchkit's --turn-urls takes)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        tls = (f"turns:{host}:{self.tls_port}?transport=tcp",) if self.tls_port else ()
        return (f"turn:{host}:{self.port}?transport=tcp", *tls)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def self_signed_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """(certificate, key) for `address` as an IP subjectAltName: a client that trusts the certificate
    (SSL_CERT_FILE) verifies `turns:ADDRESS` for real."""
    cert, key = directory / "turn-cert.pem", directory / "turn-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={address}",
                    "-addext", f"subjectAltName=IP:{address}"], check=True, capture_output=True, timeout=30)
    return cert, key


def start_coturn(address: str, secret: str, directory: Path, *, port: int = PORT,
                 tls: tuple[Path, Path] | None = None, tls_port: int = TLS_PORT,
                 relay_ports: tuple[int, int] = RELAY_PORTS, namespace: str | None = None) -> Coturn:
    """coturn listening on `address` (UDP and TCP on `port`; TLS on `tls_port` with `tls` = (cert,
    key)), relaying from `address`, ready to allocate when this returns; in network namespace
    `namespace` (an `ip netns add` name, e.g. the server's of tests/support/netns.py) when given."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.fail("turnserver not found: TURN tests run a real coturn (Debian package coturn; "
                    "`make system-packages`)", pytrace=False)
    low, high = relay_ports
    lines = [
        f"listening-ip={address}", f"relay-ip={address}", f"listening-port={port}",
        f"min-port={low}", f"max-port={high}",
        "use-auth-secret", f"static-auth-secret={secret}", f"realm={REALM}",
        "fingerprint", "no-cli", "no-dtls", "no-multicast-peers",
        "log-file=stdout", "simple-log", "verbose",
        f"pidfile={directory / 'turnserver.pid'}", f"userdb={directory / 'turndb'}",  # not the system's
    ]
    lines += ([f"tls-listening-port={tls_port}", f"cert={tls[0]}", f"pkey={tls[1]}"] if tls else ["no-tls"])
    if ipaddress.ip_address(address).is_loopback:
        lines.append("allow-loopback-peers")
    config = directory / "turnserver.conf"
    config.touch(mode=0o600)
    config.write_text("\n".join(lines) + "\n")
    log_path = directory / "turnserver.log"
    with log_path.open("wb") as log:
        prefix = ["ip", "netns", "exec", namespace] if namespace else []
        process = subprocess.Popen([*prefix, binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    coturn = Coturn(process, address, port, tls_port if tls else None, log_path)
    problem = wait_listening(process, log_path, address, [port, tls_port] if tls else [port], namespace)
    if problem is not None:
        coturn.stop()
        pytest.fail(problem, pytrace=False)
    return coturn


def wait_listening(process: subprocess.Popen, log_path: Path, address: str, ports: list[int],
                   namespace: str | None = None, timeout: float = READY_TIMEOUT) -> str | None:
    """Poll a starting coturn until every TCP port of `ports` on `address` accepts (from inside
    `namespace` when given): None then, otherwise why not (it exited, or `timeout` passed), with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"turnserver exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
        if within_namespace(namespace, lambda: all(_accepts(address, port) for port in ports)):
            return None
        time.sleep(0.05)
    return f"turnserver did not listen on {ports} within {timeout:g} s:\n{log_path.read_text(errors='replace')[-3000:]}"


def _accepts(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, port)) == 0

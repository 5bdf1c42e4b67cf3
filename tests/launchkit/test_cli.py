"""The command line as an operator meets it: help, bad input, busy port, signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from launchkit.config import DEMO_OPTIONS, EDGE_OPTIONS, ORIGIN_OPTIONS, env_name
from loadtests.target import launchkit_command, start_demo
from tests.support.client import fetch

SMALL = ("--ladder", "180p:320x180:300", "--fps", "15", "--segment-duration", "1")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        launchkit_command(*args), capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_help_documents_every_option_and_its_variable():
    top = run_cli("--help")
    assert top.returncode == 0 and "demo" in top.stdout
    for role, options in (("demo", DEMO_OPTIONS), ("origin", ORIGIN_OPTIONS)):
        help_text = run_cli(role, "--help")
        assert help_text.returncode == 0
        for option in options:
            assert f"--{option.name}" in help_text.stdout and env_name(option.name) in help_text.stdout, option.name


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (("--port", "70000"), "--port"),
        (("--port", "http"), "--port"),
        (("--fps", "0"), "--fps"),
        (("--ladder", "big:641x360:300"), "even"),
        (("--webrtc", "641x360:800"), "even"),
        (("--webrtc", "hd"), "WIDTHxHEIGHT:KBPS"),
        (("--max-webrtc-viewers", "-1"), "--max-webrtc-viewers"),
        (("--captions", "javascript:alert(1)"), "WebVTT"),
        (("--captions-lang", "english please"), "BCP 47"),
        (("--ladder", "360p:640x360:600,720p:1280x720:3000"), "largest"),
        (("--ladder", "720p"), "name:WIDTHxHEIGHT:KBPS"),
        (("--slate-image", "/nonexistent.png"), "no such image"),
        (("--segment-duration", "1.5", "--fps", "25"), "whole number of frames"),
        (("--log-level", "loud"), "--log-level"),
        (("--no-such-option",), "unrecognized"),
    ],
)
def test_invalid_option_is_one_clear_line_and_exit_2(args, mentions):
    result = run_cli("demo", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert mentions in lines[0] and "error" in lines[0]
    assert "Traceback" not in result.stderr


def test_invalid_environment_value_names_the_variable():
    result = run_cli("demo", env={"LAUNCHKIT_PORT": "eighty"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "LAUNCHKIT_PORT" in result.stderr


def test_port_already_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "--port", str(port), *SMALL)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_shuts_down_cleanly_within_two_seconds(tmp_path, signum):
    demo = start_demo(*SMALL, log_dir=tmp_path)
    elapsed = demo.stop(signum)
    assert demo.process.returncode == 0
    assert elapsed < 2.0
    assert "Traceback" not in demo.log() and "stopped" in demo.log()


def test_options_read_from_environment_and_flags_win(tmp_path):
    demo = start_demo(*SMALL, "--description", "From the flag", log_dir=tmp_path,
                      env={"LAUNCHKIT_TITLE": "Env Launch", "LAUNCHKIT_DESCRIPTION": "From the env"})
    try:
        _, _, body = fetch(demo.url + "/")
        assert b"<title>Env Launch</title>" in body
        assert b"From the flag" in body and b"From the env" not in body
    finally:
        demo.stop()


def test_readme_documents_every_option():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for option in ORIGIN_OPTIONS + EDGE_OPTIONS:
        assert f"`--{option.name}" in readme and f"`{env_name(option.name)}`" in readme, option.name


@pytest.mark.parametrize("source", ["/nonexistent.mp4", "/etc/hostname"])
def test_a_rehearsal_source_that_cannot_play_is_refused_at_startup(source):
    result = run_cli("origin", "--source", source, "--rtmp-port", "off", "--srt-port", "off")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--source" in result.stderr and "Traceback" not in result.stderr

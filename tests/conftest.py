"""Shared fixtures: a real `launchkit demo` process, redis-server processes, and the environment every
server a test starts inherits (tests/support/environment.py). Helpers live in tests/support/."""

from __future__ import annotations

import os

import pytest

from loadtests.target import REDIS_SERVER, RedisProcess, free_port, start_demo
from tests.support.environment import SERVER_ENVIRONMENT
from tests.support.tools import require

os.environ.update(SERVER_ENVIRONMENT)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """One default (720p30) demo for the whole session: the product as a newcomer runs it."""
    running = start_demo(log_dir=tmp_path_factory.mktemp("demo"))
    yield running
    if running.process.poll() is None:
        running.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    require(REDIS_SERVER)
    server = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path):
    require(REDIS_SERVER)
    server = RedisProcess(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()

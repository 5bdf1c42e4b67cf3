"""The fault suite's own fixture: a persistent redis-server that can be SIGKILLed and restarted.
Plain fixtures of tests/conftest.py (`redis_server`, `own_redis`, `demo`) stay available to every
test here unchanged; helpers are in tests/support/faults.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtests.target import REDIS_SERVER, RedisProcess, free_port
from tests.support.tools import require


@pytest.fixture(scope="module")
def persistent_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    require(REDIS_SERVER)
    server = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"), persistent=True)
    server.start()
    yield server
    server.stop()

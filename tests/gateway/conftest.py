"""Fixtures of the gateway tests (helpers in support.py).  The tests run on uvloop, as the
gateway does."""
from __future__ import annotations

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestServer

from .support import Runtimes


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def runtimes(tmp_path_factory):
    pool = Runtimes(tmp_path_factory.mktemp("runtimes"))
    yield pool
    pool.stop_all()


@pytest.fixture
async def fake_upstream():
    """fake_upstream(handler) -> an in-process instance on loopback that answers POST /invoke
    with the aiohttp HANDLER; each is closed after the test."""
    servers: list[TestServer] = []

    async def start(handler) -> TestServer:
        app = web.Application()
        app.router.add_post("/invoke", handler)
        servers.append(TestServer(app, host="127.0.0.1"))
        await servers[-1].start_server()
        return servers[-1]

    yield start
    for server in servers:
        await server.close()

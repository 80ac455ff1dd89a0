"""The pytest plugin h2proxy registers (entry point ``pytest11``): the ``h2proxy`` fixture.

``h2proxy`` is a factory: each call starts a proxy with fault rules in front
of an upstream and gives a :class:`~proxy.testing.RunningProxy`; all of them
stop when the test ends::

    async def test_client_retries_refused_streams(h2proxy):
        proxy = await h2proxy("h2c://127.0.0.1:8443",
                              faults=["rst_stream code=REFUSED_STREAM type=headers "
                                      "direction=server->client first=1 towards=client"])
        ...   # run the client under test against proxy.url
        assert proxy.hits("rst_stream-1") == 1

``demo_origin`` is the URL (``h2c://127.0.0.1:PORT``) of h2proxy's demo origin,
started for the test: a server to put the proxy in front of when the code under
test is a client (``/size/N``, ``/big``, ``/push``, ``/echo``, ``/headers``).

The fixtures need pytest-asyncio (any mode: they are declared with
``pytest_asyncio.fixture``). In its default strict mode, mark the async tests
(``pytestmark = pytest.mark.asyncio`` at the top of the module).
"""
from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Optional

import pytest

pytest_asyncio: Optional[ModuleType]
try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the plugin loads, the fixture explains
    pytest_asyncio = None


if pytest_asyncio is not None:
    @pytest_asyncio.fixture
    async def h2proxy():
        """Start proxies with fault rules: ``proxy = await h2proxy(upstream, faults=[...], **options)``."""
        from . import h2proxy_running
        async with contextlib.AsyncExitStack() as stack:
            async def start(upstream: str, faults=(), **options):
                return await stack.enter_async_context(h2proxy_running(upstream, faults, **options))
            yield start

    @pytest_asyncio.fixture
    async def demo_origin():
        """The URL of h2proxy's demo origin, running for the duration of the test."""
        from ..demo_origin import DemoOrigin
        origin = DemoOrigin()
        await origin.start()
        try:
            yield origin.url
        finally:
            await origin.stop()
else:  # pragma: no cover
    @pytest.fixture
    def h2proxy():
        pytest.skip("the h2proxy fixture needs pytest-asyncio (pip install pytest-asyncio)")

    @pytest.fixture
    def demo_origin():
        pytest.skip("the demo_origin fixture needs pytest-asyncio (pip install pytest-asyncio)")

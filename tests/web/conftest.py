"""Fixtures of the web tests: the services and an in-process client of the app, on the
``settings`` each test module gives (the real Redis, and the store of ``store_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.services import Services, open_services
from gateway.settings import Settings
from tests.support.recording import gateway_client


@pytest.fixture
async def services(real_redis: aioredis.Redis, settings: Settings) -> AsyncIterator[Services]:
    built = open_services(settings)
    yield built
    await built.close()


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(create_app(settings, services=services)) as http:
        yield http

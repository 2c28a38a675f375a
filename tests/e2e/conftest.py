"""Whole-process fixtures: stub backends in a thread, gateway replicas as uvicorn processes.

For other teams' e2e tests:

- ``backends`` (session): two ``StubBackend`` s (``codegen``, ``review``), aiohttp servers on
  free ports in a background thread. Each counts hits, records every request by its
  ``X-Gateway-Request-Id`` (headers, body, whether the signature verified with
  ``SIGNING_SECRET``) and answers by the path's last segment: ``json`` (JSON with
  ``usage.total_tokens`` = ``?tokens=``, default 1234), ``nousage`` (JSON without usage,
  ``X-Tokens-Used`` = ``?htokens=`` if given), ``list`` (a JSON array), ``plain`` (text with
  ``X-Tokens-Used: 77``), ``sse`` (one event, then waits for ``release(?token=)``, then a final
  event with usage 4321 and ``[DONE]``), ``status`` (``?code=``), ``hang`` (records
  ``?token=`` as started and waits for ``release``), anything else echoes.
- ``gateway`` (session): ``GatewayCluster`` of ``REPLICAS`` ``creditgate serve`` processes on
  free ports sharing the test Redis db and a PostgreSQL store (``CREDITGATE_TEST_PG_URL``),
  routes from a TOML file: ``/api/projects/`` and ``/api/costly/`` (cost 3) to codegen,
  ``/api/review/`` to review, ``/api/metered/`` (``pricing = "tokens"``, cost 2, max_credits
  5) to codegen, ``/api/dead/`` to a closed port. Upstream timeout 2 s.
  ``gateway.urls``, ``gateway.env`` (the replicas' environment).
- ``services`` (function): ``Services`` on the same Redis and store, for ``create_account``.
- ``account`` (function): a factory ``await account(tier="pro", bonus=0) -> NewAccount``.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from gateway.accounts.operations import create_account
from gateway.services import Services, open_services
from store.database import upgrade
from tests.support.gateways import (
    ADMIN_TOKEN,
    REPLICAS,
    SIGNING_SECRET,
    Backends,
    BackendThread,
    GatewayCluster,
    NewAccount,
    StubBackend,
    free_port,
    settings_of,
    start_replica,
    stop_procs,
    wait_ready,
)
from tests.support.processes import creditgate_env
from tests.support.servers import PG_URL, REDIS_URL


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    found = Backends(StubBackend("codegen"), StubBackend("review"))
    runner = BackendThread([found.codegen, found.review])
    runner.start()
    yield found
    runner.stop()


@pytest.fixture(scope="session")
def gateway_env(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("gateway")
    config = workdir / "creditgate.toml"
    config.write_text(
        "\n".join(
            [
                "[[routes]]",
                'prefix = "/api/projects/"',
                f'upstream = "{backends.codegen.url}"',
                "[[routes]]",
                'prefix = "/api/review/"',
                f'upstream = "{backends.review.url}"',
                "[[routes]]",
                'prefix = "/api/costly/"',
                f'upstream = "{backends.codegen.url}"',
                "cost = 3",
                "[[routes]]",
                'prefix = "/api/metered/"',
                f'upstream = "{backends.codegen.url}"',
                'pricing = "tokens"',
                "cost = 2",
                "max_credits = 5",
                "[[routes]]",
                'prefix = "/api/dead/"',
                f'upstream = "http://127.0.0.1:{free_port()}"',
            ]
        )
    )
    redis.Redis.from_url(REDIS_URL).flushdb()
    upgrade(PG_URL)
    return creditgate_env(
        {
            "CREDITGATE_REDIS_URL": REDIS_URL,
            "CREDITGATE_DATABASE_URL": PG_URL,
            "CREDITGATE_SIGNING_SECRET": SIGNING_SECRET,
            "CREDITGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "CREDITGATE_CONFIG": str(config),
            "CREDITGATE_UPSTREAM_TIMEOUT": "2",
            "CREDITGATE_TEST_WORKDIR": str(workdir),
        }
    )


@pytest.fixture(scope="session")
def gateway(gateway_env: dict[str, str]) -> Iterator[GatewayCluster]:
    workdir = Path(gateway_env["CREDITGATE_TEST_WORKDIR"])
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    logs: list[Path] = []
    try:
        for index in range(REPLICAS):
            url, proc, log = start_replica(gateway_env, workdir, f"replica-{index}.log")
            procs.append(proc)
            urls.append(url)
            logs.append(log)
        for url, proc, log in zip(urls, procs, logs, strict=True):
            wait_ready(url, proc, log)
        yield GatewayCluster(urls, gateway_env, procs, logs)
    finally:
        stop_procs(procs)


@pytest.fixture
async def services(gateway_env: dict[str, str]) -> AsyncIterator[Services]:
    svc = open_services(settings_of(gateway_env))
    yield svc
    await svc.close()


@pytest.fixture
def account(services: Services) -> Callable[..., Awaitable[NewAccount]]:
    async def make(tier: str = "pro", *, months: int = 1, bonus: int = 0) -> NewAccount:
        created = await create_account(
            services, tier=tier, months=months if tier != "free" else 0, reason="e2e"
        )
        if bonus:
            await services.credits.grant(created.account_id, bonus, reason="e2e")
        return NewAccount(created.account_id, created.api_key, created.key_id)

    return make

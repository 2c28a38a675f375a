"""The credits library: its text, its loading on a real Redis, and its versioned names."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.credits import scripts
from tests.conftest import REDIS_URL

FOLDER = resources.files("gateway.credits")
DEFINED = re.compile(r"^local function (\w+)\(", re.MULTILINE)


@pytest.fixture
async def raw_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


def test_the_prelude_defines_each_function_once() -> None:
    found = [
        name
        for part in scripts.PRELUDE
        for name in DEFINED.findall(FOLDER.joinpath(f"{part}.lua").read_text())
    ]
    assert len(found) == len(set(found))


def test_every_script_is_one_function_named_with_the_version() -> None:
    library = scripts.library()
    version = library.name.removeprefix("creditgate_")
    assert re.fullmatch(r"[0-9a-f]{12}", version)
    assert library.functions == {name: f"creditgate_{name}_{version}" for name in scripts.NAMES}
    assert library.batch == f"creditgate_batch_{version}"
    for function in (*library.functions.values(), library.batch):
        assert library.text.count(f"redis.register_function('{function}',") == 1


async def test_redis_loads_the_library(raw_redis: aioredis.Redis) -> None:
    # A library's top level may define, not call: Redis refuses one that reaches `string`.
    library = scripts.library()
    assert await raw_redis.function_load(library.text, replace=True) == library.name
    [listed] = await raw_redis.function_list(library=library.name)  # RESP2: flat pairs
    functions = dict(zip(listed[::2], listed[1::2], strict=True))["functions"]
    assert {dict(zip(f[::2], f[1::2], strict=True))["name"] for f in functions} == {
        *library.functions.values(),
        library.batch,
    }


async def test_an_older_release_library_and_this_one_live_side_by_side(
    raw_redis: aioredis.Redis,
) -> None:
    # A rolling deploy: each gateway calls the functions of its own release.
    older = "#!lua name=creditgate_000000000000\n" + (
        "redis.register_function('creditgate_status_000000000000', "
        "function(KEYS, ARGV) return 'older' end)"
    )
    await raw_redis.function_load(older, replace=True)
    try:
        await scripts.load(raw_redis)
        assert await raw_redis.fcall("creditgate_status_000000000000", 0) == "older"
        state = "cg-test:scripts:no-such-account"
        answer = await raw_redis.fcall(
            scripts.library().functions["status"], 2, state, "cg-test:outbox", "x", "", "free=5/20"
        )
        assert answer == ["missing"]
    finally:
        await raw_redis.function_delete("creditgate_000000000000")


async def loads(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_function|load", {}).get("calls", 0))


async def test_a_missing_function_is_loaded_once_and_other_errors_load_nothing(
    raw_redis: aioredis.Redis,
) -> None:
    status = scripts.Scripts.register(raw_redis).status
    tiers = "free=5/20"
    await raw_redis.function_delete(scripts.library().name)
    before = await loads(raw_redis)
    assert await status(["cg-test:scripts:none", "cg-test:outbox"], ["x", "", tiers]) == ["missing"]
    assert await loads(raw_redis) == before + 1
    # A function this library does not have: loaded once, then the error is the caller's.
    with pytest.raises(ResponseError, match="Function not found"):
        await scripts.Script(raw_redis, "creditgate_status_x")(["k"], [])
    assert await loads(raw_redis) == before + 2
    # The script's own error (an account key of another type) loads nothing.
    await raw_redis.rpush("cg-test:scripts:a-list", "x")
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await status(["cg-test:scripts:a-list", "cg-test:outbox"], ["x", "", tiers])
    finally:
        await raw_redis.delete("cg-test:scripts:a-list")
    assert await loads(raw_redis) == before + 2
    assert scripts.is_missing(ResponseError("Function not found"))
    assert not scripts.is_missing(ResponseError("WRONGTYPE Operation against a key"))

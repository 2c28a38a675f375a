"""Loads the ``.lua`` files beside this module, each prefixed by ``common.lua``.

The scripts are read once per process and registered per client with ``register_script``,
which runs EVALSHA and reloads the script on NOSCRIPT (a restarted or failed-over Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, get_args

from gateway.credits.client import RedisClient, RedisScript

ScriptName = Literal[
    "reserve",
    "settle",
    "refund",
    "extend",
    "open",
    "grant",
    "set_tier",
    "status",
    "restore",
    "seed_keys",
]
NAMES: tuple[ScriptName, ...] = get_args(ScriptName)


@cache
def source(name: str) -> str:
    """The full text of one script: the shared prelude, then the script itself."""
    folder = resources.files(__package__)
    prelude = (folder / "common.lua").read_text(encoding="utf-8")
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    return f"{prelude}\n{body}"


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one Redis client."""

    reserve: RedisScript
    settle: RedisScript
    refund: RedisScript
    extend: RedisScript
    open: RedisScript
    grant: RedisScript
    set_tier: RedisScript
    status: RedisScript
    restore: RedisScript
    seed_keys: RedisScript

    @classmethod
    def register(cls, redis: RedisClient) -> Scripts:
        return cls(**{name: redis.register_script(source(name)) for name in NAMES})

    def named(self, name: ScriptName) -> RedisScript:
        script: RedisScript = getattr(self, name)
        return script

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


PARTS: dict[str, tuple[str, ...]] = {
    "reserve": ("gcra", "hold"),
    "settle": ("spend", "hold"),
    "refund": ("spend", "hold"),
    "extend": ("hold",),
    "restore": ("hold",),
    "grant": ("once",),
    "set_tier": ("once",),
}
"""The parts of the prelude beside ``common.lua`` that a script uses: every function the
prelude defines is made anew on each call of a script, so each script gets only its own."""


@cache
def source(name: str) -> str:
    """The full text of one script: the shared prelude and its parts, then the script itself."""
    folder = resources.files(__package__)
    parts = ("common", *PARTS.get(name, ()), name)
    return "\n".join((folder / f"{part}.lua").read_text(encoding="utf-8") for part in parts)


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

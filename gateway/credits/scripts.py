"""The credit scripts as one library of Redis Functions, built from the ``.lua`` files beside
this module, and called with ``FCALL``.

A library, not ``EVALSHA``: Redis runs a library's top level once, at ``FUNCTION LOAD``, so the
prelude's functions (``common.lua`` and its parts) are made once per Redis rather than on every
call of every script, and an ``FCALL`` costs Redis less than an ``EVALSHA`` besides. Measured
under callgrind (issue 16): 31,000 fewer instructions per charged request, about a tenth.

Each script's file is the body of one function. The library's name and its functions' names
end with a hash of its text, so gateways of two releases can share a Redis during a rolling
deploy, each calling its own. Redis forgets functions as it forgets scripts (a restart
without persistence, a new node): a call answered "Function not found" loads the library and
runs again. Loading twice is harmless (``REPLACE`` of the same text), so gateways that race
to load need no lock.

One more function, ``batch`` (``batch.lua``), runs several calls of the others in one
``FCALL``: the batcher's pipelines go so (``gateway.credits.batching``). Each script's body is
kept in the library's table ``bodies``, by its number in ``NAMES``, for it to call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args

from redis.exceptions import ResponseError

from gateway.credits.client import RedisClient, ScriptArg

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

PRELUDE = ("common", "hold", "gcra", "spend", "once")
"""The library's top level: ``common.lua`` and its parts, each defining what scripts share."""


@dataclass(frozen=True, slots=True)
class Library:
    """The library's text and what its functions are called."""

    name: str
    text: str
    functions: dict[ScriptName, str]
    """Each script's function name, by script."""
    batch: str
    """The function that runs several calls of the scripts in one (``batch.lua``)."""


def _version(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]


@cache
def library() -> Library:
    """The library: the prelude, then one function per script. Built once per process."""
    return build()


def build(before: str = "") -> Library:
    """The library, with Lua of the caller's ``before`` the prelude (``bench/scripts.py``
    puts a stand-in for Redis's commands there)."""
    folder = resources.files(__package__)

    def read(part: str) -> str:
        return (folder / f"{part}.lua").read_text(encoding="utf-8")

    prelude = "\n".join((before, *(read(part) for part in PRELUDE)))
    bodies = {name: read(name) for name in NAMES}
    batch = read("batch")
    version = _version(
        prelude + "".join(f"\0{n}\0{b}" for n, b in bodies.items()) + f"\0batch\0{batch}"
    )
    functions = {name: f"creditgate_{name}_{version}" for name in NAMES}
    batch_function = f"creditgate_batch_{version}"
    registered = (
        # `packers()` (common.lua) on the first call: a library's top level, run at load,
        # cannot reach Lua's `string` or `struct`.
        f"bodies[{number}] = function(KEYS, ARGV)\nif not bpack then packers() end\n{body}\nend\n"
        f"redis.register_function('{functions[name]}', bodies[{number}])"
        for number, (name, body) in enumerate(bodies.items(), start=1)
    )
    batched = f"redis.register_function('{batch_function}', function(KEYS, ARGV)\n{batch}\nend)"
    name = f"creditgate_{version}"
    text = "\n".join((f"#!lua name={name}", prelude, "local bodies = {}", *registered, batched))
    return Library(name=name, text=text, functions=functions, batch=batch_function)


def is_missing(reply: object) -> bool:
    """Whether a reply says that Redis does not have the function called."""
    return isinstance(reply, ResponseError) and "Function not found" in str(reply)


async def load(redis: RedisClient) -> None:
    """Load the library (on every master of a cluster). ``REPLACE``: a gateway that loaded it
    first, or a replica promoted with it, is no error."""
    await redis.function_load(library().text, replace=True)


@dataclass(frozen=True, slots=True)
class Script:
    """One script's function, called on one client."""

    redis: RedisClient
    function: str
    """Its name in Redis (``FCALL``)."""
    number: int = 0
    """Its number in its library's batch function (``batch.lua``); 0: never batched."""
    batch: str = ""
    """Its library's batch function."""

    async def __call__(self, keys: Sequence[str], args: Iterable[ScriptArg]) -> Any:
        """``FCALL``, loading the library first when Redis does not have it."""
        args = tuple(args)
        try:
            return await self.redis.fcall(self.function, len(keys), *keys, *args)
        except ResponseError as exc:
            if not is_missing(exc):
                raise
        await load(self.redis)
        return await self.redis.fcall(self.function, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class Scripts:
    """The scripts' functions on one Redis client."""

    reserve: Script
    settle: Script
    refund: Script
    extend: Script
    open: Script
    grant: Script
    set_tier: Script
    status: Script
    restore: Script
    seed_keys: Script

    @classmethod
    def register(cls, redis: RedisClient, of: Library | None = None) -> Scripts:
        """The functions of library ``of`` (default: ``library()``) on ``redis``."""
        lib = of or library()
        return cls(
            **{
                name: Script(redis, lib.functions[name], number, lib.batch)
                for number, name in enumerate(NAMES, start=1)
            }
        )

    def named(self, name: ScriptName) -> Script:
        script: Script = getattr(self, name)
        return script

"""Redis's own cost of the credit scripts: CPU per charged request (a reserve and its settle),
and the commands each script runs, on a private Redis.

The figures come from Redis itself, read around each run: ``used_cpu_user + used_cpu_sys``
(``INFO cpu``: everything the server did for the run, reading the pipelines and writing the
replies included), the time ``INFO commandstats`` gives FCALL (EVALSHA in older trees: the
scripts alone, wall time: a busy machine inflates it), and the count of every command a
script ran (``redis.call``).
Then the same run once more with every command but TIME answered by a stand-in in Lua
(``STAND_IN``): what is left is the cost of the calls themselves, their arguments, the Lua and
the replies, and the difference is what the commands cost.

``--against REV`` measures the scripts of an older commit too, in the same run on the same
Redis: that commit's ``gateway`` package is unpacked into a temporary folder and driven by its
own engine (so its scripts get their own arguments), the two taking turns round after round.
Each run is a separate process driving ``CreditEngine`` with batching, as the gateway does,
with ``--concurrency`` tasks each doing reserve then settle; Redis is flushed between runs.

``--callgrind`` runs the private Redis under Valgrind's callgrind and adds the instructions
Redis executed per charged request (``kIr``: thousands), counted from the start to the end of
the measured requests: unlike CPU time, the count does not move with the machine's load or
speed (the CPU figures of such a run are Valgrind's, to be ignored).

Scenarios: ``flat``, what ``bench/proxy.py`` does (no rate limit, a key without limits of its
own, so KEYS[5] is not touched); ``limits``, a tier with a rate limit and a key with a credit
limit, a rate limit and routes (every per-key field read and written); ``proxy``, ``flat`` with
each settle made as the proxy makes it, ``settle_soon`` (deferred to share the next batch, its
answer not awaited by the request; from issue 16's work on, without the account).

    python bench/scripts.py [--against REV] [--pairs 5000] [--rounds 3] [--callgrind]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("flat", "limits", "proxy")
FLAT = ("flat", "proxy")
"""The scenarios a tree from before per-key limits (issue 14) can run."""
ROUTE = "/api/projects/"
PATH = "/api/projects/start"
SCRIPT_CALLS = ("fcall", "evalsha", "function|load", "script|load")
"""How a tree calls its scripts (the library, or EVALSHA before it) and loads them."""


# --- the driver: one run, in its own process, on one tree's engine ---------------------


def _info(raw: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in raw.items()}


def _cpu_s(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _commands(stats: dict[str, Any]) -> dict[str, tuple[int, float]]:
    """``INFO commandstats`` as command: (calls, usec)."""
    found = {}
    for name, value in stats.items():
        command = str(name).removeprefix("cmdstat_")
        found[command] = (int(value["calls"]), float(value["usec"]))
    return found


def _delta(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]
) -> dict[str, tuple[int, float]]:
    ignored = ("info", "config|resetstat", "ping", "client|setinfo", "hello", "select")
    delta = {}
    for name, (calls, usec) in after.items():
        was = before.get(name, (0, 0.0))
        if calls > was[0] and name not in ignored:
            delta[name] = (calls - was[0], usec - was[1])
    return delta


def _callgrind(command: str, target: str) -> None:
    """``callgrind_control`` on the Redis of ``target`` (its pid and its dumps' folder)."""
    pid, _, _ = target.partition(":")
    subprocess.run(["callgrind_control", command, pid], capture_output=True, check=True)


def _instructions(target: str) -> int:
    """The instructions counted since the counters were zeroed, dumped now."""
    folder = Path(target.partition(":")[2])
    for old in folder.glob("callgrind.*"):
        old.unlink()
    _callgrind("-d", target)
    [dump] = folder.glob("callgrind.*")
    found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
    assert found is not None, dump
    return int(found.group(1))


async def drive(
    url: str, scenario: str, pairs: int, concurrency: int, callgrind: str | None = None
) -> dict[str, Any]:
    """Run ``pairs`` charged requests on this tree's engine; what Redis says they cost
    (``callgrind``: the pid and dumps' folder of a Redis run by callgrind, to count its
    instructions too)."""
    import inspect

    import redis.asyncio as aioredis

    from gateway.credits.engine import CreditEngine
    from gateway.settings import Tier

    limited = scenario == "limits"
    soon = scenario == "proxy"
    rpm = 1_000_000 if limited else 0
    tiers = {
        "free": Tier(credits=5, requests_per_minute=20),
        "bench": Tier(credits=1_000_000_000, requests_per_minute=rpm),
    }
    rules = None
    if limited:
        from gateway.credits.scopes import KeyRules

        rules = KeyRules(
            "key1", credit_limit=1_000_000_000, requests_per_minute=1_000_000, routes=("/api",)
        )
    # An engine from before per-key limits (issue 14) takes no key: the flat scenario only.
    keyed = "key_id" in inspect.signature(CreditEngine.reserve).parameters
    key: dict[str, Any] = {"key_id": "key1", "rules": rules, "route": ROUTE, "path": PATH}
    if not keyed:
        key = {}
    client = aioredis.Redis.from_url(url, decode_responses=True)
    engine = CreditEngine(client, tiers, batch=True)
    account = "bench-acct"
    counter = iter(range(10**9))

    async def pair() -> None:
        rid = f"r{next(counter)}"
        reservation = await engine.reserve(account, rid, 1, **key)
        assert reservation.status == "ok", reservation
        if soon:
            settled = await engine.settle_soon(account, rid, 42)
        else:
            settled = await engine.settle(account, rid, 42)
        assert settled.status == "charged", settled

    async def many(n: int) -> None:
        async def task(share: int) -> None:
            for _ in range(share):
                await pair()

        shares = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(task(s) for s in shares if s))

    try:
        await engine.open(account, tier="bench")
        await many(200)  # load the scripts, warm the connections
        # Each script alone, for its count of commands.
        rids = [f"c{i}" for i in range(100)]
        counts: dict[str, dict[str, int]] = {}
        for name in ("reserve", "settle"):
            before = _commands(await client.info("commandstats"))
            for rid in rids:
                if name == "reserve":
                    await engine.reserve(account, rid, 1, **key)
                else:
                    await engine.settle(account, rid, 42)
            after = _commands(await client.info("commandstats"))
            counts[name] = {
                command: calls // len(rids)
                for command, (calls, _) in _delta(before, after).items()
                if command not in SCRIPT_CALLS
            }
        info = _info(await client.info("cpu"))
        before = _commands(await client.info("commandstats"))
        if callgrind:
            _callgrind("-z", callgrind)
        started = time.perf_counter()
        await many(pairs)
        elapsed = time.perf_counter() - started
        kir = _instructions(callgrind) / pairs / 1000 if callgrind else float("nan")
        after_info = _info(await client.info("cpu"))
        after = _commands(await client.info("commandstats"))
        delta = _delta(before, after)
        # The stand-in answers the fields of this version's scripts: not an older one's.
        alone = keyed and not callgrind
        lua_us = await lua_alone(engine, client, many, pairs) if alone else float("nan")
        return {
            "cpu_us": (_cpu_s(after_info) - _cpu_s(info)) * 1e6 / pairs,
            "evalsha_us": sum(u for c, (_, u) in delta.items() if c in SCRIPT_CALLS) / pairs,
            "inner_us": sum(u for c, (_, u) in delta.items() if c not in SCRIPT_CALLS) / pairs,
            "pairs_s": pairs / elapsed,
            "lua_us": lua_us,
            "kir": kir,
            "calls": counts,
        }
    finally:
        await engine.aclose()
        await client.aclose()


STAND_IN = """\
-- bench/scripts.py: every command but TIME answered here, as for an account with credits
local function real_time()
  return redis.call('TIME')  -- the global, read when called: the full API
end
local redis = (function(real)
  local values = { plan = '1000000000', bonus = '0', tier = 'bench', sub = '1', se = '0',
    pe = '4102444800000', tt = '0', mt = '0', v = '1', hp = '1', hb = '0', rl = '0', rn = '0',
    rr = '0', st = 'held', pp = '1', bp = '0', k = 'key1', rt = 'ROUTE' }
  local function call(command, key, ...)
    if command == 'TIME' then
      return real_time()
    elseif command == 'HMGET' then
      local out = {}
      for i, field in ipairs({ ... }) do
        out[i] = values[field] or false
      end
      return out
    elseif command == 'HGET' then
      return false
    end
    return 1
  end
  return { call = call, pcall = call, register_function = real.register_function }
end)(redis)
""".replace("ROUTE", ROUTE)


async def lua_alone(engine: Any, client: Any, many: Any, pairs: int) -> float:
    """Redis's CPU per pair when the scripts' commands (but TIME) are answered by a stand-in
    in Lua: what the scripts cost without the work of their commands (the stand-in's own
    table building included, so a little more than that)."""
    try:
        from gateway.credits.scripts import NAMES, Script, Scripts, build
    except ImportError:  # a tree from before the library: not measured
        return float("nan")

    real = engine._scripts
    stand_in = build(STAND_IN)
    await client.function_load(stand_in.text, replace=True)
    try:
        engine._scripts = Scripts.register(client, stand_in)
    except TypeError:  # a tree from before the batch function: its register takes no library
        engine._scripts = Scripts(**{n: Script(client, stand_in.functions[n]) for n in NAMES})
    try:
        await many(200)
        before = _cpu_s(_info(await client.info("cpu")))
        await many(pairs)
        return (_cpu_s(_info(await client.info("cpu"))) - before) * 1e6 / pairs
    finally:
        engine._scripts = real


# --- the controller ---------------------------------------------------------------------


@contextmanager
def private_redis(url: str | None, callgrind: bool = False) -> Iterator[tuple[str, str | None]]:
    """A Redis URL, and with ``callgrind`` the Redis's pid and dumps' folder."""
    if url:
        yield url, None
        return
    sys.path.insert(0, str(ROOT / "bench"))
    import servers  # bench/servers.py

    with tempfile.TemporaryDirectory(prefix="creditgate-scripts-") as tmp:
        if not callgrind:
            with servers.redis(Path(tmp)) as redis:
                yield redis.url, None
            return
        servers.require("valgrind", "callgrind_control", "redis-server")
        port = servers.free_port()
        argv = ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.%p"]
        argv += ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp]
        argv += ["--save", "", "--appendonly", "no"]
        with servers.spawn("redis under callgrind", argv, port) as proc:
            yield f"redis://127.0.0.1:{port}/0", f"{proc.pid}:{tmp}"


def unpack(rev: str, into: Path) -> Path:
    """The packages of commit ``rev``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "gateway", "store"],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_one(
    tree: Path, url: str, scenario: str, pairs: int, concurrency: int, callgrind: str | None
) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    argv = [sys.executable, __file__, "--drive", str(tree), "--url", url]
    argv += ["--scenario", scenario, "--pairs", str(pairs), "--concurrency", str(concurrency)]
    if callgrind:
        argv += ["--callgrind-target", callgrind]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: the run on {tree} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def calls_text(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = " ".join(
        f"{name.upper()}" + (f"x{n}" if n > 1 else "") for name, n in sorted(counts.items())
    )
    return f"{total} ({parts})"


def row(runs: list[dict[str, Any]]) -> str:
    """One tree's figures in one scenario: medians of its runs (and the least CPU)."""

    def med(field: str) -> float:
        return float(statistics.median(r[field] for r in runs))

    least = min(r["cpu_us"] for r in runs)
    calls = runs[0]["calls"]
    kir = med("kir")
    counted = "" if math.isnan(kir) else f"{kir:7.1f}"
    return (
        f"{med('cpu_us'):8.1f}{least:7.1f}{med('lua_us'):6.1f}{med('evalsha_us'):8.1f}"
        f"{med('inner_us'):7.1f}{counted}"
        f"{med('pairs_s'):9.0f}  {calls_text(calls['reserve'])} | {calls_text(calls['settle'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="also measure this commit's scripts")
    parser.add_argument("--pairs", type=int, default=5000, help="charged requests per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument("--url", help="a Redis to use (flushed!) instead of a private one")
    parser.add_argument(
        "--callgrind", action="store_true", help="run Redis under callgrind: count instructions"
    )
    parser.add_argument("--drive", metavar="TREE", help=argparse.SUPPRESS)
    parser.add_argument("--callgrind-target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        sys.path.insert(0, args.drive)
        run = drive(args.url, args.scenario[0], args.pairs, args.concurrency, args.callgrind_target)
        result = asyncio.run(run)
        print(json.dumps(result))
        return
    scenarios = args.scenario or list(SCENARIOS)
    with (
        tempfile.TemporaryDirectory(prefix="creditgate-trees-") as tmp,
        private_redis(args.url, args.callgrind) as (url, callgrind),
    ):
        trees = {"now": ROOT}
        if args.against:
            trees = {args.against: unpack(args.against, Path(tmp) / "old"), "now": ROOT}
        print(f"credit scripts on {url}: {args.pairs} charged requests per run, ", end="")
        print(f"{args.concurrency} tasks, median of {args.rounds} rounds")
        head = f"{'':10}{'scenario':>9}{'cpu us':>8}{'(min)':>7}{'lua':>6}{'eval us':>8}"
        head += f"{'inner':>7}" + (f"{'kIr':>7}" if callgrind else "")
        print(f"{head}{'pairs/s':>9}  commands per reserve | per settle")
        for scenario in scenarios:
            # A tree from before per-key limits (issue 14) runs the flat scenarios only.
            able = {
                name: tree
                for name, tree in trees.items()
                if scenario in FLAT or (tree / "gateway" / "credits" / "scopes.py").exists()
            }
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in able}
            for _ in range(args.rounds):
                for name, tree in able.items():
                    run = run_one(tree, url, scenario, args.pairs, args.concurrency, callgrind)
                    results[name].append(run)
            for name, runs in results.items():
                print(f"{name[:10]:10}{scenario:>9}{row(runs)}")
    print(
        "cpu us: Redis's CPU per charged request (reserve + settle), all it did (min: the least\n"
        "of the rounds, what a busy machine inflates least); lua: the same with the scripts'\n"
        "commands but TIME answered in Lua (the calls, their arguments, the Lua and the replies);\n"
        "eval us: the FCALL (or EVALSHA) time of the two scripts (wall time); inner: of which\n"
        "the commands;\n"
        "kIr (--callgrind): thousands of instructions Redis ran per charged request."
    )


if __name__ == "__main__":
    main()

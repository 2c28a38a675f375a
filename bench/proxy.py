"""Proxy benchmark: what the gateway costs next to a bare pass-through proxy, with nginx behind.

Every process is started by this script on loopback, in one run (``bench/servers.py``):

- ``nginx``: the backend, one worker answering a small JSON body with ``usage`` (measured
  directly too, for scale);
- ``minimal``: ``bench/minimal_proxy.py``, pass-throughs on the gateway's stack (uvicorn
  with uvloop and httptools, aiohttp), no auth and no credits. Two of them: the one issue 16
  measured its targets against (a Starlette route, the answer buffered: the baseline of the
  ``ratio`` column and of the targets), and a plain ASGI one, the least a Python proxy on
  this stack can do per request (the ``strict`` column: the same ratio against it);
- ``gateway``: ``creditgate serve``, an account with a billion credits and no rate limit,
  so every call is charged; on a Redis of its own (its CPU is the gateway's alone), and
  once more on a Redis Cluster of 3 primaries.

The proxies run with 1 and 2 workers. Each round takes every target in turn (a machine that
slows down during the run weighs on all alike): a 1 s warm-up, ``wrk -t1 -c50`` for
``--seconds``, then ``wrk -t1 -c1`` for ``--single-seconds``, which records every request (its
max is the worst request of the run, the stalls included). Printed, each figure the median of
the rounds: req/s and its ratios to the minimal proxies with as many workers; p50 / p99 / max at
one connection and what the gateway adds; CPU per request of the proxy's processes and of
Redis, from ``/proc`` during the 50-connection run; peak memory (``VmHWM``) per worker. Then
the CPU ceilings (``print_ceilings``: what the cores allow at that CPU per request, every
process counted, nginx too) and issue 16's targets, met or not. Nothing is asserted: the
figures are for people, and on a shared machine the same-run ratios mean more than the
absolute figures.

Run: ``python bench/proxy.py [--rounds 3] [--seconds 5] [--single-seconds 3]`` (``make bench``).
Needs ``nginx``, ``wrk`` and ``redis-server`` / ``redis-cli`` on PATH (it installs nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import servers  # noqa: E402  (bench/servers.py, next to this script)

SECRET = "bench-signing-secret-not-for-production"
PATH = "/api/projects/start-workflow"
BODY = json.dumps({"prompt": "write a function that adds two numbers"})
CONNECTIONS = 50


@dataclass(frozen=True, slots=True)
class Run:
    """One ``wrk`` run: throughput, latency (ms) and the answers that were not 2xx."""

    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    bad: int


@dataclass(slots=True)
class Target:
    """A server under load and what was measured of it, round after round."""

    name: str
    url: str
    headers: dict[str, str]
    pid: int | None = None
    """The process started (a supervisor when it has workers); None: not measured for CPU."""
    redis: servers.Redis | None = None
    workers: int = 1
    backend: list[int] = field(default_factory=list)
    """nginx's processes, measured for CPU while this target is loaded (empty: nginx itself)."""
    loaded: list[Run] = field(default_factory=list)
    single: list[Run] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    redis_us: list[float] = field(default_factory=list)
    backend_us: list[float] = field(default_factory=list)
    wrk_us: list[float] = field(default_factory=list)
    redis_reads: list[float] = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        if self.pid is None:
            return []
        pids = servers.tree(self.pid)
        return pids if len(pids) == 1 else [p for p in pids if p != self.pid]


# --- load -------------------------------------------------------------------------------


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match[2]]


def parse_wrk(output: str) -> Run:
    def find(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, output)
        return match[1] if match else default

    bad = int(find(r"Non-2xx or 3xx responses: (\d+)"))
    errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors:
        bad += sum(int(n) for n in errors.groups())
    return Run(
        rps=float(find(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"(?m)^\s*50%\s+(\S+)", "0ms")),
        p99_ms=_ms(find(r"(?m)^\s*99%\s+(\S+)", "0ms")),
        max_ms=_ms(find(r"(?m)^\s*Latency\s+\S+\s+\S+\s+(\S+)", "0ms")),
        requests=int(find(r"(\d+) requests in")),
        bad=bad,
    )


def wrk(target: Target, connections: int, seconds: float, script: Path) -> Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["-s", str(script), target.url + PATH]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    return parse_wrk(done.stdout)


def wrk_script(folder: Path, target: Target) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(BODY)}"]
    headers = {"Content-Type": "application/json", **target.headers}
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script = folder / (re.sub(r"\W+", "-", target.name) + ".lua")
    script.write_text("\n".join(lines) + "\n")
    return script


def children_cpu_s() -> float:
    """CPU seconds used by this script's finished children: the ``wrk`` runs."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def measure(target: Target, seconds: float, single_seconds: float, folder: Path) -> None:
    """One round of ``target``: warm-up, the loaded run (with CPU), the single-connection run."""
    script = wrk_script(folder, target)
    wrk(target, CONNECTIONS, 1, script)
    pids = servers.tree(target.pid) if target.pid else []
    redis_pids = target.redis.pids if target.redis else []
    reads = target.redis.reads if target.redis else int
    backend = target.backend
    before = (
        servers.cpu_s(pids),
        servers.cpu_s(redis_pids),
        children_cpu_s(),
        reads(),
        servers.cpu_s(backend),
    )
    run = wrk(target, CONNECTIONS, seconds, script)
    after = (
        servers.cpu_s(pids),
        servers.cpu_s(redis_pids),
        children_cpu_s(),
        reads(),
        servers.cpu_s(backend),
    )
    target.loaded.append(run)
    per_request = 1e6 / max(1, run.requests)
    target.cpu_us.append((after[0] - before[0]) * per_request)
    target.redis_us.append((after[1] - before[1]) * per_request)
    target.wrk_us.append((after[2] - before[2]) * per_request)
    target.redis_reads.append((after[3] - before[3]) / max(1, run.requests))
    target.backend_us.append((after[4] - before[4]) * per_request)
    if single_seconds > 0:
        target.single.append(wrk(target, 1, single_seconds, script))


# --- the targets ------------------------------------------------------------------------


def gateway_env(folder: Path, redis_url: str, cluster: bool, backend: str) -> dict[str, str]:
    config = folder / "bench.toml"
    config.write_text(
        "[tiers.bench]\ncredits = 1000000000\nrequests_per_minute = 0\n\n"
        f'[[routes]]\nprefix = "/api/projects/"\nupstream = "{backend}"\ncost = 1\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    env |= {
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
        "CREDITGATE_CONFIG": str(config),
        "CREDITGATE_SIGNING_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
    }
    if cluster:
        env["CREDITGATE_REDIS_CLUSTER"] = "1"
    return env


async def open_account(env: dict[str, str]) -> str:
    """Migrate the store, open an account in the gateway's Redis: its API key."""
    from gateway.accounts.operations import create_account
    from gateway.services import open_services
    from gateway.settings import Settings
    from store.database import upgrade

    settings = Settings.load(
        redis_url=env["CREDITGATE_REDIS_URL"],
        redis_cluster=env.get("CREDITGATE_REDIS_CLUSTER") == "1",
        database_url=env["CREDITGATE_DATABASE_URL"],
        config=Path(env["CREDITGATE_CONFIG"]),
        signing_secret=SECRET,
    )
    await asyncio.to_thread(upgrade, settings.database_url)
    services = open_services(settings)
    try:
        return (await create_account(services, tier="bench", reason="bench")).api_key
    finally:
        await services.close()


BASELINE = "minimal, Starlette"
"""The name of issue 16's baseline: the targets' ratios are against it."""
STRICT = "minimal, plain ASGI"


@contextmanager
def minimal(backend: str, workers: int, starlette: bool) -> Iterator[Target]:
    port = servers.free_port()
    argv = [sys.executable, str(ROOT / "bench" / "minimal_proxy.py"), "--upstream", backend]
    argv += ["--port", str(port), "--workers", str(workers)]
    if starlette:
        argv += ["--starlette", "--buffered"]
    with servers.spawn("minimal proxy", argv, port) as proc:
        name = f"{BASELINE if starlette else STRICT}, {workers} worker{'s' * (workers > 1)}"
        yield Target(name, f"http://127.0.0.1:{port}", {}, proc.pid, workers=workers)


@contextmanager
def gateway(
    env: dict[str, str], api_key: str, workers: int, redis: servers.Redis, label: str
) -> Iterator[Target]:
    port = servers.free_port()
    argv = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "serve"]
    argv += ["--port", str(port), "--workers", str(workers)]
    with servers.spawn("gateway", argv, port, env, cwd=ROOT) as proc:
        name = f"gateway, {workers} worker{'s' * (workers > 1)}{label}"
        auth = {"Authorization": f"Bearer {api_key}"}
        yield Target(name, f"http://127.0.0.1:{port}", auth, proc.pid, redis, workers)


# --- the run ----------------------------------------------------------------------------


def bench(rounds: int, seconds: float, single_seconds: float, workers: list[int]) -> None:
    servers.require("nginx", "wrk", "redis-server", "redis-cli")
    with tempfile.TemporaryDirectory(prefix="creditgate-bench-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        backend, nginx_proc = stack.enter_context(servers.nginx(folder))
        redis = stack.enter_context(servers.redis(folder))
        cluster = stack.enter_context(servers.redis_cluster(folder))
        single_dir, cluster_dir = folder / "single", folder / "cluster"
        single_dir.mkdir()
        cluster_dir.mkdir()
        env = gateway_env(single_dir, redis.url, False, backend)
        cluster_env = gateway_env(cluster_dir, cluster.url, True, backend)
        key, cluster_key = asyncio.run(open_account(env)), asyncio.run(open_account(cluster_env))
        targets = [Target("nginx, direct", backend, {}, nginx_proc.pid)]
        for n in workers:
            targets.append(stack.enter_context(minimal(backend, n, starlette=True)))
            targets.append(stack.enter_context(minimal(backend, n, starlette=False)))
            targets.append(stack.enter_context(gateway(env, key, n, redis, "")))
        on_cluster = gateway(cluster_env, cluster_key, 1, cluster, ", Redis Cluster")
        targets.append(stack.enter_context(on_cluster))
        for target in targets[1:]:
            target.backend = servers.tree(nginx_proc.pid)
        for done in range(rounds):
            for target in targets:
                direct = target.name.startswith("nginx")
                measure(target, seconds, 0 if direct else single_seconds, folder)
            print(f"round {done + 1} of {rounds} done", file=sys.stderr)
        memory = {t.name: [servers.rss_mb(p, "VmHWM") for p in t.worker_pids()] for t in targets}
    report(targets, memory, rounds, seconds, single_seconds)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(
    targets: list[Target],
    memory: dict[str, list[float]],
    rounds: int,
    seconds: float,
    single_seconds: float,
) -> None:
    load1, _, _ = os.getloadavg()
    print(
        f"\nproxy benchmark: POST {PATH} to nginx through each proxy; wrk -t1 -c{CONNECTIONS} "
        f"for {seconds:g} s, then -c1 for {single_seconds:g} s; median of {rounds} round(s)"
    )
    print(f"machine: {os.cpu_count()} cores, load average {load1:.1f} at the end")
    head = (
        f"{'target':<36} {'req/s':>7} {'ratio':>6} {'strict':>6} {'p50':>6} {'p99':>6} "
        f"{'max':>6} "
        f"{'+p50':>6} {'max x':>6} {'cpu us':>7} {'redis':>6} {'trips':>5} {'wrk':>5} "
        f"{'MB/wkr':>7} {'bad':>4}"
    )
    print(head + "\n" + "-" * len(head))
    baseline = {t.workers: t for t in targets if t.name.startswith(BASELINE)}
    strict = {t.workers: t for t in targets if t.name.startswith(STRICT)}
    for t in targets:
        rps = median([r.rps for r in t.loaded])
        base = baseline.get(t.workers)
        cells = [f"{t.name:<36}", f"{rps:>7.0f}"]
        for against in (base, strict.get(t.workers)):
            if against is not None and t.name.startswith("gateway"):
                base_rps = median([r.rps for r in against.loaded])
                cells.append(f"{rps / base_rps:>6.2f}" if base_rps else f"{'-':>6}")
            else:
                cells.append(f"{'':>6}")
        if t.single:
            p50 = median([r.p50_ms for r in t.single])
            p99 = median([r.p99_ms for r in t.single])
            mx = median([r.max_ms for r in t.single])
            cells += [f"{p50:>6.2f}", f"{p99:>6.2f}", f"{mx:>6.1f}"]
            if base is not None and base is not t and base.single:
                base_p50 = median([r.p50_ms for r in base.single])
                base_max = median([r.max_ms for r in base.single])
                cells += [f"{p50 - base_p50:>+6.2f}", f"{mx / base_max:>6.1f}" if base_max else "-"]
            else:
                cells += [f"{'':>6}", f"{'':>6}"]
        else:
            cells += [f"{'':>6}"] * 5
        cells.append(f"{median(t.cpu_us):>7.0f}")
        cells.append(f"{median(t.redis_us):>6.0f}" if t.redis else f"{'-':>6}")
        cells.append(f"{median(t.redis_reads):>5.2f}" if t.redis else f"{'-':>5}")
        cells.append(f"{median(t.wrk_us):>5.0f}")
        mb = memory.get(t.name, [])
        cells.append(f"{max(mb):>7.0f}" if mb and not t.name.startswith("nginx") else f"{'-':>7}")
        cells.append(f"{sum(r.bad for r in (*t.loaded, *t.single)):>4}")
        print(" ".join(cells))
    print(
        "ratio: req/s over issue 16's minimal proxy's (Starlette, buffered) with as many "
        "workers; strict: over\nthe plain ASGI one's; p50 / p99 / max: ms at one connection; "
        "+p50: ms added to issue 16's\nminimal proxy's p50; max x: max over its max; "
        "cpu us: CPU per request\nof the proxy's processes (supervisor included); redis: of "
        "the Redis servers; trips: socket reads Redis\nmade per request (one per pipeline "
        "sent); wrk: CPU per request of the load generator (all share\nthe machine's cores); "
        "MB/wkr: the largest peak RSS of a worker; bad: answers not 2xx or failed."
    )
    print_ceilings(targets)
    print_targets(targets, baseline, memory)


def print_ceilings(targets: list[Target]) -> None:
    """Why a second worker adds so little: the machine's cores shared by every process.

    Each request costs CPU in the proxy, Redis, nginx and wrk, all on the same cores, so no
    configuration can pass ``cores / (their sum per request)``; one worker, a single thread,
    cannot pass ``1 / (the proxy's CPU per request)`` either. Against those ceilings, what
    a second worker could add at most shows next to what it added.
    """
    cores = os.cpu_count() or 1
    print(f"\nCPU ceilings on {cores} cores (all processes' CPU per request, loaded run):")
    for t in targets:
        if t.pid is None or t.name.startswith("nginx"):
            continue
        own = median(t.cpu_us)
        every = own + median(t.redis_us) + median(t.backend_us) + median(t.wrk_us)
        ceiling = cores * 1e6 / every if every else 0.0
        if t.workers == 1:
            ceiling = min(ceiling, 1e6 / own if own else 0.0)
        rps = median([r.rps for r in t.loaded])
        print(
            f"  {t.name:<36} {every:>5.0f} µs a request in all -> at most {ceiling:>6.0f} req/s"
            f"; reached {rps / ceiling if ceiling else 0:.0%}"
        )


def print_targets(
    targets: list[Target], baseline: dict[int, Target], memory: dict[str, list[float]]
) -> None:
    """Issue 16's targets for the gateway on the single Redis, met or not."""
    print("\nissue 16's targets (gateway on one Redis):")
    for t in targets:
        if not t.name.startswith("gateway") or "Cluster" in t.name:
            continue
        base = baseline[t.workers]
        ratio = median([r.rps for r in t.loaded]) / max(1.0, median([r.rps for r in base.loaded]))
        checks = [
            (f"throughput {ratio:.2f} of issue 16's minimal proxy's", ratio >= 0.80, ">= 0.80")
        ]
        if t.single and base.single:
            added = median([r.p50_ms for r in t.single]) - median([r.p50_ms for r in base.single])
            times = median([r.max_ms for r in t.single]) / max(
                1e-9, median([r.max_ms for r in base.single])
            )
            checks.append((f"added p50 {added:.2f} ms", added < 0.3, "< 0.3 ms"))
            checks.append((f"max {times:.1f}x the minimal proxy's", times < 3, "< 3x"))
        mb = max(memory.get(t.name, [0.0]))
        checks.append((f"{mb:.0f} MB per worker", mb <= 60, "<= 60 MB"))
        for text, ok, goal in checks:
            print(f"  {t.name}: {text} (target {goal}): {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="every target this many times")
    parser.add_argument("--seconds", type=float, default=5, help="the 50-connection run")
    parser.add_argument("--single-seconds", type=float, default=3, help="the 1-connection run")
    parser.add_argument(
        "--workers", default="1,2", help="the proxies' worker counts, comma-separated"
    )
    args = parser.parse_args(argv)
    workers = [int(n) for n in args.workers.split(",")]
    bench(max(1, args.rounds), args.seconds, args.single_seconds, workers)


if __name__ == "__main__":
    main()

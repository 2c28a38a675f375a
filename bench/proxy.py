"""Proxy benchmark: what the gateway costs next to a bare proxy and the backend itself.

Four targets in one run, each its own process on loopback, load from another process:

- ``backend``: the demo codegen backend called directly (signed headers made up front),
- ``minimal proxy``: ``bench/minimal_proxy.py``, a pass-through proxy on the same stack
  (uvicorn, plain ASGI, aiohttp), no auth, no credits: the strict baseline,
- ``starlette proxy``: the same pass-through as a Starlette route (``--starlette``), the
  baseline issue 4 set its goal against,
- ``gateway``: creditgate, one worker, real Redis (db 15, or ``CREDITGATE_BENCH_REDIS_URL``),
  an enterprise account with a billion credits and no rate limit: every call is charged.

Load is ``wrk`` when installed (``apt-get install wrk``), else an aiohttp load loop in a
subprocess (``python bench/proxy.py load ...``). Each target gets a 1 s warm-up, a
``--seconds`` run at ``--connections`` connections and a run at one connection. Printed:
req/s, p50 / p99, CPU per request of each process, the gateway's throughput against both
baselines and its p50 overhead in ms. Nothing asserts a time: the figures are for people.

Run: ``python bench/proxy.py [--seconds 5] [--connections 50] [--rounds 1]`` (``make bench``);
with ``--rounds N`` every target is measured N times in turn and the median run is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-signing-secret-not-for-production"
PATH = "/api/projects/start-workflow"
BODY = json.dumps({"prompt": "write a function that adds two numbers"})
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Result:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    bad: int
    """Non-2xx answers and socket errors: a run with many of these measured the wrong thing."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: the {name} exited with {proc.returncode} during start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: the {name} did not listen on {port} within {START_TIMEOUT_S} s")


@contextmanager
def spawn(
    name: str, argv: list[str], port: int, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT)
    try:
        wait_listening(port, proc, name)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def signed(method: str, path: str) -> dict[str, str]:
    from gateway.signing import signed_headers

    return signed_headers(
        SECRET.encode(),
        method=method,
        path=path,
        account="bench",
        tier="enterprise",
        request_id="bench-request",
        credits_remaining=1,
    )


# --- load -------------------------------------------------------------------------------


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"wrk latency {text!r}")
    value, unit = float(match[1]), match[2]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(output: str) -> Result:
    def find(pattern: str) -> str | None:
        match = re.search(pattern, output)
        return match[1] if match else None

    requests = int(find(r"(\d+) requests in") or 0)
    bad = int(find(r"Non-2xx or 3xx responses: (\d+)") or 0)
    errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors:
        bad += sum(int(n) for n in errors.groups())
    return Result(
        requests=requests,
        rps=float(find(r"Requests/sec:\s+([\d.]+)") or 0),
        p50_ms=_wrk_ms(find(r"(?m)^\s*50%\s+(\S+)") or "0ms"),
        p99_ms=_wrk_ms(find(r"(?m)^\s*99%\s+(\S+)") or "0ms"),
        bad=bad,
    )


def run_wrk(url: str, headers: dict[str, str], connections: int, seconds: float) -> Result:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(BODY)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        done = subprocess.run(
            [*argv, "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        )
    finally:
        os.unlink(script.name)
    return parse_wrk(done.stdout)


def run_load_script(url: str, headers: dict[str, str], connections: int, seconds: float) -> Result:
    argv = [sys.executable, __file__, "load", url, "--connections", str(connections)]
    argv += ["--seconds", str(seconds), "--headers", json.dumps(headers)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30)
    return Result(**json.loads(done.stdout))


async def _load(url: str, headers: dict[str, str], connections: int, seconds: float) -> Result:
    import aiohttp

    latencies: list[float] = []
    bad = 0
    headers = {"Content-Type": "application/json", **headers}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal bad
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    async with session.post(url, data=BODY, headers=headers) as response:
                        await response.read()
                        ok = response.status < 400
                except aiohttp.ClientError:
                    ok = False
                latencies.append((time.perf_counter() - start) * 1000)
                bad += not ok

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    return Result(len(latencies), len(latencies) / elapsed, pct(0.50), pct(0.99), bad)


def measure(
    url: str, headers: dict[str, str], connections: int, seconds: float, cpu: CpuMeter
) -> tuple[Result, dict[str, float], int]:
    """A warm-up second (pools, key cache, scripts loaded), then the run: (run, CPU µs per
    request of each watched process during the run, all calls)."""
    runner = run_wrk if shutil.which("wrk") else run_load_script
    warm = runner(url, headers, connections, 1)
    before = cpu()
    result = runner(url, headers, connections, seconds)
    after = cpu()
    per_request = {
        name: (after[name] - before[name]) * 1e6 / max(1, result.requests) for name in after
    }
    return result, per_request, warm.requests + result.requests


CpuMeter = Callable[[], dict[str, float]]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, from ``/proc`` (Linux; else 0)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The most memory a process has held (``VmHWM`` in ``/proc``), in MB; 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def redis_cpu_s(redis_url: str) -> float:
    """CPU seconds the Redis server has used (``INFO cpu``), main thread and others."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --- the targets ------------------------------------------------------------------------


def serve_backend(port: int) -> None:
    import uvicorn

    from gateway.demo.backends import codegen_app

    uvicorn.run(
        codegen_app(SECRET.encode()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def gateway_env(workdir: Path, redis_url: str, backend: str) -> dict[str, str]:
    config = workdir / "bench.toml"
    config.write_text(
        "[tiers.enterprise]\ncredits = 1000000000\nrequests_per_minute = 0\n\n"
        f'[[routes]]\nprefix = "/api/projects/"\nupstream = "{backend}"\ncost = 1\n',
        encoding="utf-8",
    )
    return {
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "CREDITGATE_CONFIG": str(config),
        "CREDITGATE_SIGNING_SECRET": SECRET,
    }


async def open_account(env: dict[str, str]) -> tuple[str, str, int]:
    """Migrate the store, empty the bench Redis db, open the account: id, key, credits."""
    from gateway.accounts.operations import create_account
    from gateway.services import open_services
    from gateway.settings import Settings
    from store.database import upgrade

    settings = Settings.load(
        redis_url=env["CREDITGATE_REDIS_URL"],
        database_url=env["CREDITGATE_DATABASE_URL"],
        config=Path(env["CREDITGATE_CONFIG"]),
        signing_secret=SECRET,
    )
    await asyncio.to_thread(upgrade, settings.database_url)
    services = open_services(settings)
    try:
        await services.redis.flushdb()
        created = await create_account(services, tier="enterprise", reason="bench")
        return created.account_id, created.api_key, created.state.credits_remaining
    finally:
        await services.close()


async def credits_left(env: dict[str, str], account_id: str) -> int:
    from gateway.services import open_services
    from gateway.settings import Settings

    settings = Settings.load(
        redis_url=env["CREDITGATE_REDIS_URL"],
        database_url=env["CREDITGATE_DATABASE_URL"],
        config=Path(env["CREDITGATE_CONFIG"]),
    )
    services = open_services(settings)
    try:
        state = await services.credits.status(account_id)
        return state.credits_remaining if state is not None else -1
    finally:
        await services.close()


# --- the run ----------------------------------------------------------------------------


def median_run(
    runs: list[tuple[Result, dict[str, float]]], key: Callable[[Result], float]
) -> tuple[Result, dict[str, float]]:
    """The run in the middle by ``key`` (the lower middle of an even number)."""
    ordered = sorted(runs, key=lambda run: key(run[0]))
    return ordered[(len(ordered) - 1) // 2]


def bench(seconds: float, connections: int, redis_url: str, rounds: int) -> None:
    python = sys.executable
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    ports = {name: free_port() for name in ("backend", "minimal", "starlette", "gateway")}
    backend_url = f"http://127.0.0.1:{ports['backend']}"
    with tempfile.TemporaryDirectory(prefix="creditgate-bench-") as tmp:
        gw_env = gateway_env(Path(tmp), redis_url, backend_url)
        account_id, api_key, credits_before = asyncio.run(open_account(gw_env))
        backend_argv = [python, __file__, "serve-backend", str(ports["backend"])]
        minimal_argv = [python, str(ROOT / "bench" / "minimal_proxy.py")]
        minimal_argv += ["--upstream", backend_url]
        starlette_argv = [*minimal_argv, "--starlette", "--port", str(ports["starlette"])]
        minimal_argv += ["--port", str(ports["minimal"])]
        gateway_argv = [python, "-m", "uvicorn", "gateway.app:app_from_env", "--factory"]
        gateway_argv += ["--host", "127.0.0.1", "--port", str(ports["gateway"])]
        gateway_argv += ["--log-level", "warning", "--no-access-log"]
        with (
            spawn("backend", backend_argv, ports["backend"], base_env) as backend,
            spawn("minimal proxy", minimal_argv, ports["minimal"], base_env) as minimal,
            spawn("starlette proxy", starlette_argv, ports["starlette"], base_env) as starlette,
            spawn("gateway", gateway_argv, ports["gateway"], base_env | gw_env) as gateway,
        ):
            targets = {
                "backend direct": (backend_url, signed("POST", PATH), None),
                "minimal proxy": (
                    f"http://127.0.0.1:{ports['minimal']}",
                    signed("POST", PATH),
                    minimal,
                ),
                "starlette proxy": (
                    f"http://127.0.0.1:{ports['starlette']}",
                    signed("POST", PATH),
                    starlette,
                ),
                "gateway, charged": (
                    f"http://127.0.0.1:{ports['gateway']}",
                    {"Authorization": f"Bearer {api_key}"},
                    gateway,
                ),
            }
            runs: dict[str, list[tuple[Result, dict[str, float]]]] = {n: [] for n in targets}
            single_runs: dict[str, list[tuple[Result, dict[str, float]]]] = {n: [] for n in targets}
            calls = dict.fromkeys(targets, 0)
            # Round after round, every target in turn: a machine that speeds up or slows down
            # during the run then weighs on all of them alike.
            for _ in range(rounds):
                for name, (base, headers, proxy) in targets.items():

                    def meter(proxy: subprocess.Popen[bytes] | None = proxy) -> dict[str, float]:
                        seconds = {"backend": process_cpu_s(backend.pid)}
                        if proxy is not None:
                            seconds["proxy"] = process_cpu_s(proxy.pid)
                        if proxy is gateway:
                            seconds["redis"] = redis_cpu_s(redis_url)
                        return seconds

                    result, used, many = measure(base + PATH, headers, connections, seconds, meter)
                    runs[name].append((result, used))
                    result, used, one = measure(base + PATH, headers, 1, min(seconds, 3), meter)
                    single_runs[name].append((result, used))
                    calls[name] += many + one
            loaded = {n: median_run(r, lambda x: x.rps)[0] for n, r in runs.items()}
            cpu = {n: median_run(r, lambda x: x.rps)[1] for n, r in runs.items()}
            single = {n: median_run(r, lambda x: -x.p50_ms)[0] for n, r in single_runs.items()}
            cpu_single = {n: median_run(r, lambda x: -x.p50_ms)[1] for n, r in single_runs.items()}
            peaks = {name: peak_rss_mb(t[2].pid) for name, t in targets.items() if t[2]}
            credits_after = asyncio.run(credits_left(gw_env, account_id))
    report(
        loaded,
        single,
        {connections: cpu, 1: cpu_single},
        peaks,
        connections,
        seconds,
        rounds,
        credits_before - credits_after,
        calls["gateway, charged"],
    )


def report(
    loaded: dict[str, Result],
    single: dict[str, Result],
    cpu: dict[int, dict[str, dict[str, float]]],
    peaks: dict[str, float],
    connections: int,
    seconds: float,
    rounds: int,
    charged: int,
    gateway_calls: int,
) -> None:
    tool = "wrk -t1" if shutil.which("wrk") else "aiohttp load script"
    print(f"\nproxy benchmark: POST {PATH}, {tool}, {seconds:g} s per run, loopback, 1 worker each")
    if rounds > 1:
        print(f"each figure: the median run of {rounds} rounds, the targets taken in turn")
    load1, _, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load1:.1f} at the end (others share it)")
    header = f"{'target':<18} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'bad':>5}"
    print(header)
    print("-" * len(header))
    for runs, conns in ((loaded, connections), (single, 1)):
        for name, r in runs.items():
            print(
                f"{name:<18} {conns:>5} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.bad:>5}"
            )
    print("\nCPU per request in µs (from /proc and INFO cpu):")
    print(f"{'target':<18} {'conns':>5} {'proxy':>7} {'redis':>7} {'backend':>8}")
    for conns, runs_cpu in cpu.items():
        for name, used in runs_cpu.items():
            cells = [f"{used[k]:.0f}" if k in used else "-" for k in ("proxy", "redis", "backend")]
            print(f"{name:<18} {conns:>5} {cells[0]:>7} {cells[1]:>7} {cells[2]:>8}")
    gateway, one = loaded["gateway, charged"], single["gateway, charged"]
    gw_cpu = cpu[connections]["gateway, charged"]
    print()
    for baseline in ("minimal proxy", "starlette proxy"):
        base, base_one = loaded[baseline], single[baseline]
        ratio = gateway.rps / base.rps if base.rps else 0.0
        base_cpu = cpu[connections][baseline].get("proxy", 0.0)
        cpu_ratio = f", CPU per request {gw_cpu['proxy'] / base_cpu:.2f}x" if base_cpu else ""
        print(f"against the {baseline}:")
        print(f"  throughput at {connections} connections: {ratio:.0%} (goal: at least 70%)")
        print(
            f"  p50 overhead at 1 connection: {one.p50_ms - base_one.p50_ms:+.2f} ms "
            f"(goal: under 0.5 ms); at {connections}: {gateway.p50_ms - base.p50_ms:+.2f} ms"
            f"{cpu_ratio}"
        )
    print(f"the gateway's Redis: {gw_cpu.get('redis', 0):.0f} µs of CPU per request")
    print("peak memory: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in peaks.items()))
    print(
        f"credits charged: {charged} for {gateway_calls} completed gateway calls "
        "(warm-ups included; calls cut off at a run's end may differ)"
    )
    if any(r.bad for r in (*loaded.values(), *single.values())):
        print("WARNING: some answers were not 2xx or failed: the figures above are suspect")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    load = sub.add_parser("load", help="internal: the aiohttp load generator")
    load.add_argument("url")
    load.add_argument("--connections", type=int, default=50)
    load.add_argument("--seconds", type=float, default=5)
    load.add_argument("--headers", default="{}")
    backend = sub.add_parser("serve-backend", help="internal: the demo backend")
    backend.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every target this many times, in turn"
    )
    args = parser.parse_args(argv)
    if args.mode == "load":
        result = asyncio.run(
            _load(args.url, json.loads(args.headers), args.connections, args.seconds)
        )
        print(json.dumps(dataclasses.asdict(result)))
    elif args.mode == "serve-backend":
        serve_backend(args.port)
    else:
        redis_url = os.environ.get("CREDITGATE_BENCH_REDIS_URL", DEFAULT_REDIS)
        bench(args.seconds, args.connections, redis_url, max(1, args.rounds))


if __name__ == "__main__":
    main()

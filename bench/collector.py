"""Garbage-collector settings for the gateway, compared by the tail they give (issue 16).

For each setting the gateway (one worker, every call charged, nginx behind, a Redis of its
own) is started with ``gateway.app.tune_gc`` replaced by that setting, loaded with
``wrk -t1 -c50`` and then ``wrk -t1 -c1``; inside the gateway ``gc.callbacks`` time every
collection. Printed per setting, median of the rounds: p50 / p99 / max at one connection,
req/s at 50, and the collections (how many per 1,000 requests, the longest, the total per
request). The settings:

- ``default``: Python's thresholds (700, 10, 10), nothing frozen;
- ``freeze``: what exists after start-up frozen (``gc.freeze()``), default thresholds;
- ``raised``: frozen, and the youngest generation collected every 50,000 allocations
  (``gateway.app.tune_gc`` before issue 16);
- ``raised, not frozen``: the threshold alone.

Run: ``python bench/collector.py [--rounds 2] [--seconds 5]``; ``python bench/collector.py
serve SETTING ARGS...`` is the gateway it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import proxy
import servers

SETTINGS = ("default", "freeze", "raised", "raised, not frozen")


def apply(setting: str) -> None:
    if setting in ("freeze", "raised"):
        gc.collect()
        gc.freeze()
    if setting.startswith("raised"):
        gc.set_threshold(50_000, *gc.get_threshold()[1:])


def serve(setting: str, report: Path, argv: list[str]) -> int:
    """The gateway with ``setting`` in place of its own tuning, timing each collection; the
    figures go to ``report`` when it stops."""
    import gateway.app
    from gateway.cli import main

    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started[0]))

    def tune() -> None:
        apply(setting)
        gc.callbacks.append(timed)

    def dump(*_: object) -> None:
        report.write_text(json.dumps(pauses))

    gateway.app.tune_gc = tune
    signal.signal(signal.SIGUSR1, dump)
    return main(argv)


def one_setting(
    setting: str, env: dict[str, str], key: str, folder: Path, seconds: float
) -> dict[str, float]:
    """Start the gateway with ``setting``, load it, and read its collections' timings."""
    port = servers.free_port()
    report = folder / "pauses.json"
    argv = [sys.executable, __file__, "serve", setting, str(report)]
    argv += ["--log-level", "WARNING", "serve", "--port", str(port)]
    with servers.spawn("gateway", argv, port, env, cwd=proxy.ROOT) as proc:
        auth = {"Authorization": f"Bearer {key}"}
        target = proxy.Target(setting, f"http://127.0.0.1:{port}", auth, proc.pid)
        script = proxy.wrk_script(folder, target)
        proxy.wrk(target, proxy.CONNECTIONS, 1, script)
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.3)
        before = len(json.loads(report.read_text()))
        loaded = proxy.wrk(target, proxy.CONNECTIONS, seconds, script)
        single = proxy.wrk(target, 1, seconds, script)
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.3)
        pauses = json.loads(report.read_text())[before:]
    requests = loaded.requests + single.requests
    return {
        "rps": loaded.rps,
        "p50": single.p50_ms,
        "p99": single.p99_ms,
        "max": single.max_ms,
        "per_1000": 1000 * len(pauses) / max(1, requests),
        "longest_ms": 1000 * max((p for _, p in pauses), default=0.0),
        "us_per_request": 1e6 * sum(p for _, p in pauses) / max(1, requests),
        "full": sum(1 for g, _ in pauses if g == 2),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2], Path(sys.argv[3]), sys.argv[4:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    servers.require("nginx", "wrk", "redis-server")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="creditgate-gc-") as tmp:
        folder = Path(tmp)
        with servers.nginx(folder) as (backend, _), servers.redis(folder) as redis:
            env = proxy.gateway_env(folder, redis.url, False, backend)
            key = asyncio.run(proxy.open_account(env))
            for done in range(args.rounds):
                for setting in SETTINGS:
                    results[setting].append(one_setting(setting, env, key, folder, args.seconds))
                print(f"round {done + 1} of {args.rounds} done", file=sys.stderr)
    print(f"\ngarbage-collector settings, gateway 1 worker; median of {args.rounds} round(s)")
    columns = ("p50 ms", "p99 ms", "max ms", "req/s", "gc/1000", "longest", "us/req", "full")
    print(f"{'setting':<20}" + "".join(f"{c:>9}" for c in columns))
    for setting, runs in results.items():
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        cells = [f"{m['p50']:.2f}", f"{m['p99']:.2f}", f"{m['max']:.1f}", f"{m['rps']:.0f}"]
        cells += [f"{m['per_1000']:.1f}", f"{m['longest_ms']:.2f}", f"{m['us_per_request']:.1f}"]
        cells.append(f"{m['full']:.0f}")
        print(f"{setting:<20}" + "".join(f"{c:>9}" for c in cells))
    print(
        "p50 / p99 / max: at one connection; req/s: at 50; gc/1000: collections per 1,000 "
        "requests;\nlongest: the longest collection (ms); us/req: collections' time per "
        "request; full: oldest-generation collections"
    )


if __name__ == "__main__":
    main()

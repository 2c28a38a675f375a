"""``creditgate sync`` (the sync worker, its metrics served with ``--metrics-port``) and
``creditgate audit`` (reconciliation)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING, cast

from gateway.errors import Unavailable
from gateway.services import check_redis, check_store, open_services
from sync.audit import DEFAULT_GRACE_MS, audit, render
from sync.metrics import serve_metrics
from sync.outbox import DEFAULT_CLAIM_IDLE_MS
from sync.relayout import OutboxNotDrained, RelayoutRedis, relayout
from sync.worker import DEFAULT_BATCH_SIZE, SyncWorker

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger("creditgate.sync")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("sync", help="copy credit movements from Redis to the store of record")
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    run.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"events read per bucket per batch (default {DEFAULT_BATCH_SIZE})",
    )
    run.add_argument(
        "--consumer",
        help="consumer name in the group; give a restarted worker its old name to resume its "
        "pending events at once (default: host-pid-random)",
    )
    run.add_argument(
        "--claim-idle",
        type=float,
        default=DEFAULT_CLAIM_IDLE_MS / 1000,
        help="seconds after which another consumer's pending events are taken over "
        f"(default {DEFAULT_CLAIM_IDLE_MS / 1000:g})",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        help="serve the worker's metrics for Prometheus on this port, at /metrics, while it runs "
        "(default: off; not with --once)",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="the address of the metrics endpoint (default 127.0.0.1; 0.0.0.0 for all)",
    )
    run.set_defaults(run=run_sync)
    check = sub.add_parser(
        "audit", help="compare Redis, the store and the ledger; exit 1 on any difference"
    )
    check.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_MS / 1000,
        help="seconds past its deadline an open reservation may wait for the reaper before it "
        f"is reported (default {DEFAULT_GRACE_MS / 1000:g})",
    )
    check.set_defaults(run=run_audit)
    move = sub.add_parser(
        "relayout",
        help="move Redis's keys from layout 1 to the current layout, "
        "once, with the gateways stopped and layout 1's outboxes synced",
    )
    move.set_defaults(run=run_relayout)


def run_sync(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_sync(args, settings))


async def _sync(args: argparse.Namespace, settings: Settings) -> int:
    settings.require_redis("creditgate sync")
    await asyncio.to_thread(check_redis, settings, "creditgate sync")
    await asyncio.to_thread(check_store, settings, "creditgate sync")
    services = open_services(settings)
    try:
        worker = SyncWorker(
            services,
            consumer=args.consumer,
            batch_size=args.batch_size,
            claim_idle_ms=int(args.claim_idle * 1000),
        )
        if args.once:
            applied = await worker.run_once()
            print(f"synced {applied} event(s), reaped {worker.stats.reaped} reservation(s)")
            return 1 if worker.stats.errors else 0

        stop_metrics = None
        if args.metrics_port is not None:
            try:
                stop_metrics = serve_metrics(worker.stats, args.metrics_host, args.metrics_port)
            except OSError as exc:
                where = f"{args.metrics_host}:{args.metrics_port}"
                print(f"creditgate sync: cannot serve metrics on {where}: {exc}", file=sys.stderr)
                return 2

        def stop() -> None:
            worker.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await worker.run()
        finally:
            if stop_metrics is not None:
                await asyncio.to_thread(stop_metrics)
        return 0
    finally:
        await services.close()


def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_audit(settings, grace_ms=int(args.grace * 1000)))


async def _audit(settings: Settings, *, grace_ms: int) -> int:
    settings.require_redis("creditgate audit")
    services = open_services(settings)
    try:
        report = await audit(services, grace_ms=grace_ms)
    except Unavailable as exc:
        print(f"creditgate audit: {exc.message}", file=sys.stderr)
        return 2
    finally:
        await services.close()
    for line in render(report):
        print(line)
    return 0 if report.clean else 1


def run_relayout(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_relayout(settings))


async def _relayout(settings: Settings) -> int:
    settings.require_redis("creditgate relayout")
    services = open_services(settings)
    try:
        report = await relayout(cast(RelayoutRedis, services.redis))
    except (Unavailable, OutboxNotDrained) as exc:
        print(f"creditgate relayout: {exc}", file=sys.stderr)
        return 2
    finally:
        await services.close()
    print(
        f"moved {report.moved} key(s), re-indexed {report.deadlines} open reservation(s), "
        f"kept {len(report.kept)} key(s) the new layout had already"
    )
    return 0

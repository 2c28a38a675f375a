"""``creditgate serve [--host H] [--port P] [--workers N]``: the gateway under uvicorn.

uvloop is used when installed (it is, with ``uvicorn[standard]``), and httptools always, in
``gateway.heads``' protocol, which bounds request heads. One
worker runs the app built from the settings the CLI loaded; several run the factory
``gateway.app:app_from_env`` in each worker process, which reads the same environment, each
worker on a listening socket of its own (``gateway.listening``). Several
workers share their metrics through a directory of their own below ``--metrics-dir``
(``gateway.multiprocess``), so that any worker's ``/metrics`` answers for all.

uvicorn's own access log is never on: it knows neither the account nor the credits. The
gateway's access line (``gateway.proxy.trail``) is off unless ``--access-log`` or
``CREDITGATE_ACCESS_LOG=1``: at thousands of requests per second it costs more than the
proxying, and the gateway's own logs carry the request id.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from gateway import listening, multiprocess
from gateway.heads import bounded_http
from gateway.services import check_redis, check_store
from gateway.settings import Settings

log = logging.getLogger("creditgate.serve")

ACCESS_LOG_HELP = (
    "write one line per proxied request (logger creditgate.access: request id, account, key "
    "id, route, method, status, outcome, credits, tokens, upstream and total ms), as "
    "CREDITGATE_ACCESS_LOG=1 does. It replaces uvicorn's access log, which knows neither the "
    "account nor the credits"
)


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the gateway (uvicorn)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--access-log", action="store_true", help=ACCESS_LOG_HELP)
    parser.add_argument(
        "--metrics-dir",
        type=Path,
        help="with --workers > 1: where the workers share their metrics, in a directory of "
        "their own below this one, emptied at each start (default: the system's temp directory)",
    )
    parser.set_defaults(run=serve)


def uvicorn_options(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": bounded_http(settings),
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 30,
        "log_level": settings.log_level.lower(),
    }


def serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        print("creditgate serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if settings.embedded_redis and args.workers > 1:
        print(
            "creditgate serve: --workers > 1 needs a shared Redis: the embedded Redis lives "
            "inside one process, so workers would each count credits apart. "
            "Set CREDITGATE_REDIS_URL or use --workers 1.",
            file=sys.stderr,
        )
        return 2
    settings.require_redis("creditgate serve")
    check_redis(settings, "creditgate serve")
    check_store(settings, "creditgate serve")
    if args.access_log:
        settings = dataclasses.replace(settings, access_log=True)
    import uvicorn

    options = uvicorn_options(args, settings)
    if args.workers > 1:
        settings.hand_over()  # to the workers, which run on them without pydantic
        with multiprocess.shared_directory(args.metrics_dir, args.port):
            return run_workers(args, options)
    else:
        from gateway.app import create_app

        uvicorn.run(create_app(settings, server=True), **options)
    return 0


def run_workers(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """uvicorn's supervisor and its workers, each worker on a socket of its own
    (``gateway.listening``), where ``uvicorn.run`` would share one."""
    from uvicorn import Config
    from uvicorn.supervisors.multiprocess import Multiprocess

    config = Config("gateway.app:app_from_env", factory=True, workers=args.workers, **options)
    with ExitStack() as stack:
        try:
            sockets = stack.enter_context(listening.worker_sockets(args.host, args.port))
        except OSError as exc:
            print(
                f"creditgate serve: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        log.info(
            "creditgate serving on http://%s:%d with %d workers, a socket each",
            args.host,
            sockets.port,
            args.workers,
        )
        try:
            Multiprocess(config, sockets=sockets).run()
        except KeyboardInterrupt:
            pass
    return 0

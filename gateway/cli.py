"""The ``creditgate`` command: one sub-command per operator task.

Each command module has ``register(subparsers)`` which adds its parser and sets
``run(args, settings) -> exit code``. Settings are built here, once, and passed down.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from gateway.logs import LOG_LEVELS, configure_logging
from gateway.settings import ConfigError, Settings

COMMAND_MODULES = (
    "store.cli",
    "gateway.demo.command",
    "gateway.server",
    "sync.cli",
    "gateway.admin.cli",
    "gateway.admin.usage_cli",
)


SERVE_MODULE = "gateway.server"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; ``only``: just that command module's (see ``serving``)."""
    parser = argparse.ArgumentParser(prog="creditgate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG, INFO, WARNING or ERROR (default: CREDITGATE_LOG_LEVEL, else INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in (only,) if only else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def serving(argv: Sequence[str] | None) -> bool:
    """Whether the command line runs ``serve``: the server then loads no other command's code
    (the sync worker's and the demo's bring an HTTP client and its console libraries, some
    10 MB of memory a server would carry for nothing)."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--log-level")
    peek.add_argument("command", nargs="?")
    known, _ = peek.parse_known_args(argv)
    return bool(known.command == "serve")


def serve_validated(settings: Settings) -> NoReturn:
    """Run this same command line again in a fresh interpreter, on ``settings``.

    ``creditgate serve`` validates its settings with pydantic, which then stays in memory
    (some 12 MB) though a server never needs it again. So the process replaces itself (same
    pid, environment and arguments) with one that runs on the validated settings, handed
    over, and never loads pydantic (issue 16).
    """
    settings.hand_over()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    serve = serving(argv)
    args = build_parser(SERVE_MODULE if serve else None).parse_args(argv)
    try:
        handed = Settings.handed_over() if serve else None
        settings = handed or Settings.load()
        if args.log_level:  # the flag wins, for this process and those it starts
            settings = dataclasses.replace(settings, log_level=args.log_level)
        if serve and handed is None and argv is None:
            serve_validated(settings)
        configure_logging(settings.log_level, settings.log_format)
        code: int = args.run(args, settings)
    except ConfigError as exc:
        print(f"creditgate: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``creditgate`` command: one sub-command per operator task.

Each command module has ``register(subparsers)`` which adds its parser and sets
``run(args, settings) -> exit code``. Settings are built here, once, and passed down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway.logs import configure_logging
from gateway.settings import ConfigError, Settings

COMMAND_MODULES = (
    "store.cli",
    "gateway.demo.command",
    "gateway.server",
    "sync.cli",
    "gateway.admin.cli",
    "gateway.admin.usage_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditgate", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load()
        configure_logging(args.log_level, settings.log_format)
        code: int = args.run(args, settings)
    except ConfigError as exc:
        print(f"creditgate: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

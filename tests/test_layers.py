"""The import-linter contracts catch each wrong-way import they exist to forbid.

Each case copies ``gateway``, ``store``, ``sync`` and ``pyproject.toml`` into its own directory,
appends one offending import to one module and runs ``lint-imports`` there, with only that
directory on PYTHONPATH, so grimp reads the copies and not the installed packages: the
offending line exists only in the copy, and the report must name it. The untouched copy must
keep every contract. The runs start together (one takes a second or two).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "store", "sync")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = [
    c["name"]
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
]
LAYERS, STORE_AT_BOTTOM = CONTRACTS


@dataclass(frozen=True)
class Case:
    id: str
    module: str
    """The file that gets the import, relative to the repository root ("" for none)."""
    line: str
    broken: str | None
    """The contract the import breaks; None: every contract is kept."""
    reported: str = ""
    """The ``importer -> imported`` pair the report must show."""


CASES = [
    Case("untouched", "", "", None),
    Case(
        "accounts-imports-a-front-end",
        "gateway/accounts/operations.py",
        "from gateway.admin import routes",
        LAYERS,
        "gateway.accounts.operations -> gateway.admin.routes",
    ),
    Case(
        "credit-engine-imports-the-store",
        "gateway/credits/engine.py",
        "import store.records",
        LAYERS,
        "gateway.credits.engine -> store.records",
    ),
    Case(
        "app-imports-the-server",
        "gateway/app.py",
        "import gateway.server",
        LAYERS,
        "gateway.app -> gateway.server",
    ),
    Case(
        "sync-imports-the-proxy",
        "sync/worker.py",
        "import gateway.proxy.flow",
        LAYERS,
        "sync.worker -> gateway.proxy.flow",
    ),
    Case(
        "admin-imports-web",
        "gateway/admin/views.py",
        "import gateway.web.health",
        LAYERS,
        "gateway.admin.views -> gateway.web.health",
    ),
    Case(
        "store-imports-gateway",
        "store/repository.py",
        "import gateway.settings",
        STORE_AT_BOTTOM,
        "store.repository -> gateway.settings",
    ),
    Case(
        "accounts-import-sync",
        "gateway/accounts/restore.py",
        "import sync.worker",
        LAYERS,
        "gateway.accounts.restore -> sync.worker",
    ),
]


def copy_project(dest: Path, case: Case) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copyfile(ROOT / "pyproject.toml", dest / "pyproject.toml")
    if case.module:
        with (dest / case.module).open("a", encoding="utf-8") as module:
            module.write(f"\n{case.line}\n")
    return dest


@pytest.fixture(scope="session")
def lint_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """``lint-imports`` started on every case's copy at once, by case id."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    runs: dict[str, subprocess.Popen[str]] = {}
    try:
        for case in CASES:
            root = copy_project(tmp_path_factory.mktemp(case.id), case)
            runs[case.id] = subprocess.Popen(
                [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
                cwd=root,
                env=env | {"PYTHONPATH": str(root)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        yield runs
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_contracts_catch_a_wrong_way_import(
    case: Case, lint_runs: dict[str, subprocess.Popen[str]]
) -> None:
    out, _ = lint_runs[case.id].communicate(timeout=120)
    report = " ".join(out.split())  # contract names wrap at the terminal's width
    for name in CONTRACTS:
        assert f"{name} {'BROKEN' if name == case.broken else 'KEPT'}" in report, out
    assert lint_runs[case.id].returncode == (0 if case.broken is None else 1), out
    assert case.reported in report, out

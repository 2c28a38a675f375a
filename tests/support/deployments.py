"""A whole deployment in processes: gateway replicas and a sync worker on a given Redis (one
server or a cluster's seed nodes) and a store of its own, as an operator would run it.

``Deployment.start`` writes the config (the e2e routes, plus tiers without a rate limit:
``bulk`` with plenty of credits, ``small`` with few, so that some accounts run out under
load), starts the processes and waits until each replica is ready; ``stop`` ends them all.
``accounts`` opens accounts through ``Services`` on the same Redis and store.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from gateway.accounts.operations import create_account
from gateway.services import Services, open_services
from gateway.settings import Settings
from tests.support.gateways import (
    ADMIN_TOKEN,
    SIGNING_SECRET,
    Backends,
    NewAccount,
    start_replica,
    stop_procs,
    wait_ready,
)
from tests.support.processes import CREDITGATE, creditgate_env

TIERS = {"bulk": 1_000_000, "small": 60}
"""Credits of the tiers the deployment adds (no rate limit: load is about credits)."""


@dataclass
class Deployment:
    redis_url: str
    store_url: str
    backends: Backends
    workdir: Path
    cluster: bool = False
    urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self, replicas: int = 3, *, sync: bool = True) -> None:
        config = self.workdir / "creditgate.toml"
        lines = []
        for name, credits in TIERS.items():
            lines += [f"[tiers.{name}]", f"credits = {credits}", "requests_per_minute = 0"]
        lines += ["[[routes]]", 'prefix = "/api/projects/"']
        lines += [f'upstream = "{self.backends.codegen.url}"']
        config.write_text("\n".join(lines) + "\n")
        self.env = creditgate_env(
            {
                "CREDITGATE_REDIS_URL": self.redis_url,
                "CREDITGATE_REDIS_CLUSTER": "1" if self.cluster else "0",
                "CREDITGATE_DATABASE_URL": self.store_url,
                "CREDITGATE_SIGNING_SECRET": SIGNING_SECRET,
                "CREDITGATE_ADMIN_TOKEN": ADMIN_TOKEN,
                "CREDITGATE_CONFIG": str(config),
                "CREDITGATE_UPSTREAM_TIMEOUT": "2",
                "CREDITGATE_SYNC_INTERVAL": "0.1",
            }
        )
        logs = []
        for index in range(replicas):
            url, proc, log = start_replica(self.env, self.workdir, f"replica-{index}.log")
            self.urls.append(url)
            self.procs.append(proc)
            logs.append(log)
        if sync:
            with (self.workdir / "sync.log").open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [*CREDITGATE, "sync"],
                        env=self.env,
                        cwd=self.workdir,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        for url, proc, log in zip(self.urls, self.procs, logs, strict=False):
            wait_ready(url, proc, log)

    def services(self) -> Services:
        settings = Settings.load(
            redis_url=self.redis_url,
            redis_cluster=self.cluster,
            database_url=self.store_url,
            config=self.workdir / "creditgate.toml",
            signing_secret=SIGNING_SECRET,
        )
        return open_services(settings)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A ``creditgate`` command in the deployment's environment."""
        return subprocess.run(
            [*CREDITGATE, *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}" for path in self.workdir.glob("*.log")
        )

    def stop(self) -> None:
        stop_procs(self.procs)


async def open_accounts(services: Services, tiers: list[str]) -> list[NewAccount]:
    made = []
    for tier in tiers:
        created = await create_account(services, tier=tier, reason="fault test")
        made.append(NewAccount(created.account_id, created.api_key, created.key_id))
    return made

"""Settings: the ``CREDITGATE_*`` variables of the contract plus an optional TOML file.

Built once at the entry point (``Settings.load()``) and passed down; nothing else reads
``os.environ`` (nor writes it, but ``hand_over``). The TOML file (``CREDITGATE_CONFIG``) may
override or add tiers and replace the routes. Every mistake stops the start with a message
naming it, never a silent fallback: an unknown ``CREDITGATE_*`` variable (a typo: the closest
known name is suggested), unknown keys, values of the wrong type and duplicate route prefixes
in the file. The embedded Redis is used only when chosen (``CREDITGATE_REDIS_URL=embedded``,
or by ``creditgate demo``), and tracing only when its packages are installed.

The settings are plain frozen dataclasses; ``schema`` validates them with pydantic and
pydantic-settings, imported only by ``Settings.load``. A serving worker never loads them
(some 12 MB of its memory, issue 16): ``creditgate serve`` validates, then hands the
validated settings over (``hand_over``) to the process that serves (``handed_over``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.logs import LogFormat, LogLevel

TOKENS_PER_CREDIT = 2000
ENV_PREFIX = "CREDITGATE_"
EMBEDDED = "embedded"
"""The value of ``CREDITGATE_REDIS_URL`` that chooses the in-process Redis (one process only)."""
RESERVED_PREFIXES = ("CREDITGATE_TEST_", "CREDITGATE_BENCH_")
"""Variables of the project's own tests and benchmarks, which the settings do not read."""
HANDOFF = "_CREDITGATE_VALIDATED_SETTINGS"
"""Where ``hand_over`` puts validated settings (JSON) for the processes started from this one:
outside the ``CREDITGATE_*`` names, which are the operator's."""
DEFAULT_CODEGEN_URL = "http://127.0.0.1:9101"
DEFAULT_REVIEW_URL = "http://127.0.0.1:9102"

ErrorStyle = Literal["creditgate", "openai"]
"""A route's ``errors``: the shape of the gateway's own error bodies on it (the contract's, or
OpenAI's: ``errors.openai_error_body``)."""

Pricing = Literal["request", "tokens"]
"""A route's ``pricing``: the flat ``cost`` per request, or metered by the tokens reported
(``proxy.pricing``)."""

TracingMode = Literal["off", "console", "otlp"]
"""``CREDITGATE_TRACING``: no spans, spans printed to standard output, or exported over
OTLP/HTTP (``gateway.tracing`` says where to, and what the spans are)."""
TRACING_MODULES: dict[str, tuple[str, ...]] = {
    "off": (),
    "console": ("opentelemetry.sdk.trace",),
    "otlp": ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
}
"""What each tracing mode needs installed (``pip install 'creditgate[otel]'`` has them all)."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names what is wrong."""


def check_upstream(url: str) -> str:
    """``url`` if the gateway's client can send to it (``gateway.proxy.upstream``): http or
    https, a host, a valid port, no user info, query or fragment; else ``ValueError``."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError as exc:
        raise ValueError(f"the port is not valid ({exc})") from None
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError("must not carry user info, a query or a fragment")
    return url


@dataclass(frozen=True, slots=True)
class Tier:
    """A plan: credits refilled every monthly period and a requests-per-minute limit (0: none).

    Bounds (``schema.TierModel``): credits 0 to 10^9, requests_per_minute 0 to 10^6."""

    credits: int
    requests_per_minute: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    """A proxied path prefix, the upstream it goes to, what one request costs (flat ``cost``,
    or metered by tokens between ``cost`` and ``max_credits``) and the shape of the gateway's
    own errors on it (``errors``). Validated by ``schema.RouteModel``."""

    prefix: str
    upstream: str
    cost: int = 1
    errors: ErrorStyle = "creditgate"
    pricing: Pricing = "request"
    max_credits: int | None = None
    """``pricing = "tokens"``: the most one request may be charged (what its reserve holds)."""


DEFAULT_TIERS: dict[str, Tier] = {
    "free": Tier(credits=5, requests_per_minute=20),
    "pro": Tier(credits=100, requests_per_minute=120),
    "enterprise": Tier(credits=1000, requests_per_minute=600),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway, the sync worker and the CLI are configured by: built by
    ``load`` (validated; the bounds are ``schema.SettingsModel``'s), changed with
    ``dataclasses.replace``."""

    redis_url: str | None = None
    redis_cluster: bool = False
    database_url: str = "sqlite:///creditgate.db"
    admin_token: str | None = None
    signing_secret: str | None = None
    codegen_url: str = DEFAULT_CODEGEN_URL
    review_url: str = DEFAULT_REVIEW_URL
    sync_interval: float = 2.0
    config: Path | None = None

    # Not in the contract's table; tuning knobs with safe defaults.
    upstream_timeout: float = 300.0
    reservation_grace: float = 60.0
    webhook_url: str | None = None
    webhook_secret: str | None = None
    log_format: LogFormat = "text"
    log_level: LogLevel = "INFO"
    """The root logger's level; ``--log-level`` overrides it (and hands it to ``--workers``)."""
    access_log: bool = False
    tracing: TracingMode = "off"
    replay_max_bytes: int = 65_536
    """The largest JSON answer kept for the retries of its ``Idempotency-Key`` (0: none)."""
    ui_session_ttl: int = 1800
    """Seconds a dashboard or console session lasts after sign-in (it is not extended)."""

    # Request heads (gateway.heads): 414 / 431 beyond these, before any memory grows.
    max_request_line: int = 8192
    max_headers: int = 100
    max_header_bytes: int = 32768

    tiers: dict[str, Tier] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    routes: list[Route] = field(default_factory=list)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment (and ``.env``, and the TOML file); raise ConfigError if unusable.

        An unknown ``CREDITGATE_*`` name in the environment or the ``.env`` file is refused.
        """
        from gateway.settings.schema import load

        return load(overrides)

    def hand_over(self) -> None:
        """Put these settings in the environment of the processes started from here on, for
        ``handed_over``: they run on what this process validated, without pydantic."""
        values = dataclasses.asdict(self)
        values["config"] = None if self.config is None else str(self.config)
        os.environ[HANDOFF] = json.dumps(values)

    @classmethod
    def handed_over(cls) -> Settings | None:
        """The settings a parent process validated and handed over (``hand_over``), or None."""
        raw = os.environ.get(HANDOFF)
        if not raw:
            return None
        values = json.loads(raw)
        values["config"] = None if values["config"] is None else Path(values["config"])
        values["tiers"] = {name: Tier(**tier) for name, tier in values["tiers"].items()}
        values["routes"] = [Route(**route) for route in values["routes"]]
        return cls(**values)

    @property
    def embedded_redis(self) -> bool:
        """True when the in-process fakeredis was chosen: one process, dev and demo only."""
        return self.redis_url == EMBEDDED

    @property
    def redis_urls(self) -> list[str]:
        """The seed nodes of a cluster (``CREDITGATE_REDIS_URL`` separated by commas); the one
        URL of a single Redis; none when unset or embedded."""
        if self.redis_url is None or self.embedded_redis:
            return []
        return self.redis_url.split(",")

    def require_redis(self, command: str) -> None:
        """Refuse to run ``command`` when no Redis was chosen: never a silent embedded one."""
        if self.redis_url is None:
            raise ConfigError(
                f"{command} needs CREDITGATE_REDIS_URL: set it to your Redis "
                f"(redis://host:6379/0; with CREDITGATE_REDIS_CLUSTER=1, the cluster's seed "
                f"nodes), or to {EMBEDDED!r} for an in-process Redis that lives and dies with "
                "this one process (trials only)"
            )

    @property
    def reservation_ttl_ms(self) -> int:
        """How long a reservation may stay open before the reaper refunds it."""
        return round((self.upstream_timeout + self.reservation_grace) * 1000)


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings))


def known_variables() -> list[str]:
    """Every ``CREDITGATE_*`` variable the settings read."""
    return sorted(ENV_PREFIX + name.upper() for name in SETTING_NAMES)


def check_names(variables: Mapping[str, object] | Iterable[str]) -> None:
    """Raise ConfigError for a ``CREDITGATE_*`` name the settings do not know (a typo would
    otherwise leave its setting at the default, silently), naming the closest known one."""
    import difflib

    known = known_variables()
    for name in sorted(variables):
        upper = name.upper()  # the settings read names in any case
        if not upper.startswith(ENV_PREFIX) or upper.startswith(RESERVED_PREFIXES):
            continue
        if upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
        raise ConfigError(f"unknown variable {name}{hint}")

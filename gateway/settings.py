"""Settings: the ``CREDITGATE_*`` variables of the contract plus an optional TOML file.

Built once at the entry point (``Settings.load()``) and passed down; nothing else reads
``os.environ``. The TOML file (``CREDITGATE_CONFIG``) may override or add tiers and replace
the routes. Every mistake stops the start with a message naming it, never a silent fallback:
an unknown ``CREDITGATE_*`` variable (a typo: the closest known name is suggested), unknown
keys, values of the wrong type and duplicate route prefixes in the file. The embedded Redis is
used only when chosen (``CREDITGATE_REDIS_URL=embedded``, or by ``creditgate demo``), and
tracing only when its packages are installed.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.logs import LogFormat, LogLevel

TOKENS_PER_CREDIT = 2000
ENV_PREFIX = "CREDITGATE_"
EMBEDDED = "embedded"
"""The value of ``CREDITGATE_REDIS_URL`` that chooses the in-process Redis (one process only)."""
RESERVED_PREFIXES = ("CREDITGATE_TEST_", "CREDITGATE_BENCH_")
"""Variables of the project's own tests and benchmarks, which the settings do not read."""
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


class Tier(BaseModel):
    """A plan: credits refilled every monthly period and a requests-per-minute limit (0: none)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    credits: int = Field(ge=0, le=1_000_000_000)
    requests_per_minute: int = Field(default=0, ge=0, le=1_000_000)


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


class Route(BaseModel):
    """A proxied path prefix, the upstream it goes to, what one request costs (flat ``cost``,
    or metered by tokens between ``cost`` and ``max_credits``) and the shape of the gateway's
    own errors on it (``errors``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prefix: str
    upstream: str
    cost: int = Field(default=1, ge=1, le=1_000_000)
    errors: ErrorStyle = "creditgate"
    pricing: Pricing = "request"
    max_credits: int | None = Field(default=None, ge=1, le=1_000_000)
    """``pricing = "tokens"``: the most one request may be charged (what its reserve holds)."""

    @model_validator(mode="after")
    def _metered_has_a_bound(self) -> Route:
        if self.pricing == "tokens":
            if self.max_credits is None:
                raise ValueError('pricing = "tokens" needs max_credits, the most one call holds')
            if self.max_credits < self.cost:
                raise ValueError("max_credits must be at least cost (the least a call is charged)")
        elif self.max_credits is not None:
            raise ValueError('max_credits applies only with pricing = "tokens"')
        return self

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith(("/admin", "/api/user/")):
            raise ValueError("must start with / and not shadow /admin or /api/user/")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream_is_http(cls, value: str) -> str:
        return check_upstream(value).rstrip("/")


DEFAULT_TIERS: dict[str, Tier] = {
    "free": Tier(credits=5, requests_per_minute=20),
    "pro": Tier(credits=100, requests_per_minute=120),
    "enterprise": Tier(credits=1000, requests_per_minute=600),
}


class TierPatch(BaseModel):
    """A tier as the file gives it: what is left out keeps the tier's default (a new tier
    needs ``credits``; its ``requests_per_minute`` defaults to 0, no limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    credits: int | None = Field(default=None, ge=0, le=1_000_000_000)
    requests_per_minute: int | None = Field(default=None, ge=0, le=1_000_000)

    def over(self, name: str, base: Tier | None) -> Tier:
        """This patch applied to the tier ``name`` as it stood (None: a new tier)."""
        credits, rpm = (base.credits, base.requests_per_minute) if base else (None, 0)
        if self.credits is not None:
            credits = self.credits
        if self.requests_per_minute is not None:
            rpm = self.requests_per_minute
        if credits is None:
            raise ConfigError(f"tiers.{name}.credits: a new tier needs its credits")
        return Tier(credits=credits, requests_per_minute=rpm)


class FileConfig(BaseModel):
    """The shape of the TOML file: interface, see CONTRACT.md. Strict: ``cost = "2"`` is an
    error, not 2 (TOML has real integers, so a string there is a mistake worth naming)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tiers: dict[str, TierPatch] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, value: dict[str, TierPatch]) -> dict[str, TierPatch]:
        for name in value:
            if not name or len(name) > 32 or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"tier name {name!r} must be 1-32 letters, digits, - or _")
        return value

    @field_validator("routes")
    @classmethod
    def _one_route_per_prefix(cls, value: list[Route]) -> list[Route]:
        seen: set[str] = set()
        for index, route in enumerate(value):
            if route.prefix in seen:
                raise ValueError(
                    f"routes[{index}]: prefix {route.prefix!r} is given twice "
                    "(the second route could never be reached)"
                )
            seen.add(route.prefix)
        return value


class Settings(BaseSettings):
    """Everything the gateway, the sync worker and the CLI are configured by."""

    model_config = SettingsConfigDict(
        env_prefix="CREDITGATE_", env_file=".env", extra="ignore", frozen=True
    )

    redis_url: str | None = None
    redis_cluster: bool = False
    database_url: str = "sqlite:///creditgate.db"
    admin_token: str | None = None
    signing_secret: str | None = None
    codegen_url: str = DEFAULT_CODEGEN_URL
    review_url: str = DEFAULT_REVIEW_URL
    sync_interval: float = Field(default=2.0, gt=0, le=3600)
    config: Path | None = None

    # Not in the contract's table; tuning knobs with safe defaults.
    upstream_timeout: float = Field(default=300.0, gt=0)
    reservation_grace: float = Field(default=60.0, gt=0)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    log_format: LogFormat = "text"
    log_level: LogLevel = "INFO"
    """The root logger's level; ``--log-level`` overrides it (and hands it to ``--workers``)."""
    access_log: bool = False
    tracing: TracingMode = "off"
    replay_max_bytes: int = Field(default=65_536, ge=0, le=1_048_576)
    """The largest JSON answer kept for the retries of its ``Idempotency-Key`` (0: none)."""
    ui_session_ttl: int = Field(default=1800, ge=60, le=86_400)
    """Seconds a dashboard or console session lasts after sign-in (it is not extended)."""

    # Request heads (gateway.heads): 414 / 431 beyond these, before any memory grows.
    max_request_line: int = Field(default=8192, ge=64, le=1_048_576)
    max_headers: int = Field(default=100, ge=1, le=10_000)
    max_header_bytes: int = Field(default=32768, ge=64, le=1_048_576)

    tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    routes: list[Route] = Field(default_factory=list)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: object) -> object:
        if value == "":
            return None  # an empty variable means unset
        if not isinstance(value, str) or value == EMBEDDED:
            return value
        urls = [url.strip() for url in value.split(",")]
        if len(urls) > 1:
            for url in urls:
                if not url.startswith(("redis://", "rediss://")):
                    raise ValueError(
                        f"a list of seed nodes takes redis:// or rediss:// URLs only, "
                        f"separated by commas; {url or 'an empty entry'!r} is not one"
                    )
            if len({url.split("://", 1)[0] for url in urls}) > 1:
                raise ValueError("the seed nodes must all be redis:// or all rediss://")
            return ",".join(urls)
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, or {EMBEDDED!r}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value  # debug, as logging says

    @field_validator("tracing")
    @classmethod
    def _tracing_installed(cls, value: TracingMode) -> TracingMode:
        missing = [name for name in TRACING_MODULES[value] if not _importable(name)]
        if missing:
            raise ValueError(
                f"{value!r} needs the OpenTelemetry packages ({', '.join(missing)} is missing): "
                "pip install 'creditgate[otel]', or set CREDITGATE_TRACING=off"
            )
        return value

    @field_validator("codegen_url", "review_url")
    @classmethod
    def _upstream_url(cls, value: str) -> str:
        return check_upstream(value)

    @model_validator(mode="after")
    def _apply_file(self) -> Settings:
        tiers = dict(DEFAULT_TIERS) | dict(self.tiers)
        routes = list(self.routes)
        if self.config is not None:
            file = load_file(self.config)
            for name, patch in file.tiers.items():
                try:
                    tiers[name] = patch.over(name, tiers.get(name))
                except ConfigError as exc:
                    raise ConfigError(f"{self.config}: {exc}") from exc
            routes = routes or list(file.routes)
        if not routes:
            routes = [
                Route(prefix="/api/projects/", upstream=self.codegen_url),
                Route(prefix="/api/review/", upstream=self.review_url),
            ]
        if self.redis_cluster and (not self.redis_url or self.embedded_redis):
            raise ValueError("CREDITGATE_REDIS_CLUSTER=1 needs CREDITGATE_REDIS_URL (the seeds)")
        if len(self.redis_urls) > 1 and not self.redis_cluster:
            raise ValueError(
                "CREDITGATE_REDIS_URL lists several seed nodes: that is a Redis Cluster, "
                "set CREDITGATE_REDIS_CLUSTER=1 (a single Redis takes one URL)"
            )
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "routes", routes)
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment (and ``.env``, and the TOML file); raise ConfigError if unusable.

        An unknown ``CREDITGATE_*`` name in the environment or the ``.env`` file is refused.
        """
        check_names(os.environ)
        check_names(_dotenv(Path(".env")))
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc

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


def load_file(path: Path) -> FileConfig:
    """Parse and validate the TOML file, naming the file and the bad key in any error."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc


def known_variables() -> list[str]:
    """Every ``CREDITGATE_*`` variable the settings read."""
    return sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)


def check_names(variables: Mapping[str, object] | Iterable[str]) -> None:
    """Raise ConfigError for a ``CREDITGATE_*`` name the settings do not know (a typo would
    otherwise leave its setting at the default, silently), naming the closest known one."""
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


def export_setting(name: str, value: str) -> None:
    """Set the variable of setting ``name`` for the processes started from this one.

    uvicorn's workers (``serve --workers N``) build their settings from the environment, so a
    command-line flag that stands for a setting reaches them this way. The one writer of
    ``os.environ``, as ``Settings.load`` is its one reader.
    """
    if name not in Settings.model_fields:
        raise KeyError(f"no setting {name!r}")
    os.environ[ENV_PREFIX + name.upper()] = value


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (only its parent packages)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def _dotenv(path: Path) -> list[str]:
    """The names a ``.env`` file sets (pydantic-settings reads its values)."""
    if not path.is_file():
        return []
    from dotenv import dotenv_values

    return [name for name in dotenv_values(path) if name]


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)

"""The settings' schema: pydantic and pydantic-settings validate what ``Settings.load`` reads
(the environment, ``.env``, the TOML file and the caller's overrides) into the plain
``gateway.settings`` dataclasses. Imported only by ``Settings.load``: a serving worker, which
runs on settings validated before it started, never loads pydantic (issue 16).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.logs import LogFormat, LogLevel
from gateway.settings import (
    DEFAULT_CODEGEN_URL,
    DEFAULT_REVIEW_URL,
    DEFAULT_TIERS,
    EMBEDDED,
    SETTING_NAMES,
    TRACING_MODULES,
    ConfigError,
    ErrorStyle,
    Pricing,
    Route,
    Settings,
    Tier,
    TracingMode,
    check_names,
    check_upstream,
)


class TierModel(BaseModel):
    """``Tier``'s schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    credits: int = Field(ge=0, le=1_000_000_000)
    requests_per_minute: int = Field(default=0, ge=0, le=1_000_000)


class RouteModel(BaseModel):
    """``Route``'s schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prefix: str
    upstream: str
    cost: int = Field(default=1, ge=1, le=1_000_000)
    errors: ErrorStyle = "creditgate"
    pricing: Pricing = "request"
    max_credits: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _metered_has_a_bound(self) -> RouteModel:
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

    def route(self) -> Route:
        return Route(**self.model_dump())


def tier_model(tier: Tier) -> TierModel:
    return TierModel(credits=tier.credits, requests_per_minute=tier.requests_per_minute)


class TierPatch(BaseModel):
    """A tier as the file gives it: what is left out keeps the tier's default (a new tier
    needs ``credits``; its ``requests_per_minute`` defaults to 0, no limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    credits: int | None = Field(default=None, ge=0, le=1_000_000_000)
    requests_per_minute: int | None = Field(default=None, ge=0, le=1_000_000)

    def over(self, name: str, base: TierModel | None) -> TierModel:
        """This patch applied to the tier ``name`` as it stood (None: a new tier)."""
        credits, rpm = (base.credits, base.requests_per_minute) if base else (None, 0)
        if self.credits is not None:
            credits = self.credits
        if self.requests_per_minute is not None:
            rpm = self.requests_per_minute
        if credits is None:
            raise ConfigError(f"tiers.{name}.credits: a new tier needs its credits")
        return TierModel(credits=credits, requests_per_minute=rpm)


class FileConfig(BaseModel):
    """The shape of the TOML file: interface, see CONTRACT.md. Strict: ``cost = "2"`` is an
    error, not 2 (TOML has real integers, so a string there is a mistake worth naming)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tiers: dict[str, TierPatch] = Field(default_factory=dict)
    routes: list[RouteModel] = Field(default_factory=list)

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, value: dict[str, TierPatch]) -> dict[str, TierPatch]:
        for name in value:
            if not name or len(name) > 32 or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"tier name {name!r} must be 1-32 letters, digits, - or _")
        return value

    @field_validator("routes")
    @classmethod
    def _one_route_per_prefix(cls, value: list[RouteModel]) -> list[RouteModel]:
        seen: set[str] = set()
        for index, route in enumerate(value):
            if route.prefix in seen:
                raise ValueError(
                    f"routes[{index}]: prefix {route.prefix!r} is given twice "
                    "(the second route could never be reached)"
                )
            seen.add(route.prefix)
        return value


class SettingsModel(BaseSettings):
    """``Settings``' schema, read from the environment (and ``.env``) and the overrides."""

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

    tiers: dict[str, TierModel] = Field(default_factory=dict)
    routes: list[RouteModel] = Field(default_factory=list)

    @field_validator("tiers", "routes", mode="before")
    @classmethod
    def _dataclasses_as_dicts(cls, value: object) -> object:
        """Overrides may give ``Tier`` and ``Route`` objects: validated as their fields."""
        if isinstance(value, dict):
            return {name: _fields(item) for name, item in value.items()}
        if isinstance(value, list):
            return [_fields(item) for item in value]
        return value

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
    def _apply_file(self) -> SettingsModel:
        tiers = {name: tier_model(tier) for name, tier in DEFAULT_TIERS.items()} | dict(self.tiers)
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
                RouteModel(prefix="/api/projects/", upstream=self.codegen_url),
                RouteModel(prefix="/api/review/", upstream=self.review_url),
            ]
        if self.redis_cluster and (not self.redis_url or self.redis_url == EMBEDDED):
            raise ValueError("CREDITGATE_REDIS_CLUSTER=1 needs CREDITGATE_REDIS_URL (the seeds)")
        if len(_seed_urls(self.redis_url)) > 1 and not self.redis_cluster:
            raise ValueError(
                "CREDITGATE_REDIS_URL lists several seed nodes: that is a Redis Cluster, "
                "set CREDITGATE_REDIS_CLUSTER=1 (a single Redis takes one URL)"
            )
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "routes", routes)
        return self

    def settings(self) -> Settings:
        """The validated values as the plain ``Settings`` the rest of creditgate reads."""
        values = {name: getattr(self, name) for name in SETTING_NAMES}
        values["tiers"] = {name: Tier(**tier.model_dump()) for name, tier in self.tiers.items()}
        values["routes"] = [route.route() for route in self.routes]
        return Settings(**values)


def load(overrides: Mapping[str, Any]) -> Settings:
    """``Settings.load``: the environment, ``.env``, the TOML file and ``overrides``,
    validated; ConfigError when unusable (an unknown ``CREDITGATE_*`` name included)."""
    check_names(os.environ)
    check_names(_dotenv(Path(".env")))
    try:
        model = SettingsModel(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    return model.settings()


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


def _seed_urls(url: str | None) -> list[str]:
    return [] if url is None or url == EMBEDDED else url.split(",")


def _fields(item: object) -> object:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return item


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

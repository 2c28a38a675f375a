"""Settings: the ``CREDITGATE_*`` variables of the contract plus an optional TOML file.

Built once at the entry point (``Settings.load()``) and passed down; nothing else reads
``os.environ``. The TOML file (``CREDITGATE_CONFIG``) may override or add tiers and replace
the routes; unknown keys and bad values stop the start with a message naming them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOKENS_PER_CREDIT = 2000
DEFAULT_CODEGEN_URL = "http://127.0.0.1:9101"
DEFAULT_REVIEW_URL = "http://127.0.0.1:9102"


class ConfigError(Exception):
    """The configuration cannot be used; the message names what is wrong."""


class Tier(BaseModel):
    """A plan: credits refilled every monthly period and a requests-per-minute limit (0: none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credits: int = Field(ge=0, le=1_000_000_000)
    requests_per_minute: int = Field(default=0, ge=0, le=1_000_000)


class Route(BaseModel):
    """A proxied path prefix, the upstream it goes to and what one request costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str
    upstream: str
    cost: int = Field(default=1, ge=1, le=1_000_000)

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith(("/admin", "/api/user/")):
            raise ValueError("must start with / and not shadow /admin or /api/user/")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


DEFAULT_TIERS: dict[str, Tier] = {
    "free": Tier(credits=5, requests_per_minute=20),
    "pro": Tier(credits=100, requests_per_minute=120),
    "enterprise": Tier(credits=1000, requests_per_minute=600),
}


class TierPatch(BaseModel):
    """A tier as the file gives it: what is left out keeps the tier's default (a new tier
    needs ``credits``; its ``requests_per_minute`` defaults to 0, no limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    """The shape of the TOML file: interface, see CONTRACT.md."""

    model_config = ConfigDict(extra="forbid")

    tiers: dict[str, TierPatch] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, value: dict[str, TierPatch]) -> dict[str, TierPatch]:
        for name in value:
            if not name or len(name) > 32 or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"tier name {name!r} must be 1-32 letters, digits, - or _")
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

    tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    routes: list[Route] = Field(default_factory=list)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: object) -> object:
        if value == "":
            return None  # an empty variable means unset: the embedded Redis
        if isinstance(value, str) and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("codegen_url", "review_url")
    @classmethod
    def _upstream_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

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
        if self.redis_cluster and not self.redis_url:
            raise ValueError("CREDITGATE_REDIS_CLUSTER=1 needs CREDITGATE_REDIS_URL")
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "routes", routes)
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment (and ``.env``, and the TOML file); raise ConfigError if unusable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc

    @property
    def embedded_redis(self) -> bool:
        """True when no Redis URL is set: an in-process fakeredis, one process, dev only."""
        return self.redis_url is None

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


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)

"""Settings: the contract's defaults, the environment, and the TOML file's validation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_TIERS, HANDOFF, ConfigError, Settings, Tier
from gateway.settings.schema import SettingsModel


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CREDITGATE_* variable or .env file of the developer's leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("CREDITGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_contract_defaults() -> None:
    s = Settings.load()
    assert s.redis_url is None and not s.embedded_redis  # unset is not the embedded Redis
    assert s.database_url == "sqlite:///creditgate.db"
    assert s.admin_token is None and s.signing_secret is None
    assert s.sync_interval == 2
    assert s.tiers["free"] == Tier(credits=5, requests_per_minute=20)
    assert s.tiers["pro"] == Tier(credits=100, requests_per_minute=120)
    assert s.tiers["enterprise"] == Tier(credits=1000, requests_per_minute=600)
    assert [(r.prefix, r.upstream, r.cost) for r in s.routes] == [
        ("/api/projects/", "http://127.0.0.1:9101", 1),
        ("/api/review/", "http://127.0.0.1:9102", 1),
    ]


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("CREDITGATE_CODEGEN_URL", "http://codegen:9000/")
    monkeypatch.setenv("CREDITGATE_SYNC_INTERVAL", "0.5")
    s = Settings.load()
    assert not s.embedded_redis
    assert s.routes[0].upstream == "http://codegen:9000"
    assert s.sync_interval == 0.5


def test_toml_file_adds_tiers_and_replaces_routes(tmp_path: Path) -> None:
    path = tmp_path / "creditgate.toml"
    path.write_text(
        """
[tiers.enterprise]
credits = 5000
requests_per_minute = 0

[tiers.team]
credits = 300
requests_per_minute = 200

[[routes]]
prefix = "/v1/"
upstream = "http://127.0.0.1:9300"
cost = 3
errors = "openai"

[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:9301"

[[routes]]
prefix = "/llm/"
upstream = "http://127.0.0.1:9302"
pricing = "tokens"
max_credits = 40
"""
    )
    s = Settings.load(config=path)
    assert s.tiers["enterprise"] == Tier(credits=5000, requests_per_minute=0)
    assert s.tiers["team"].credits == 300
    assert s.tiers["free"].credits == 5
    assert [(r.prefix, r.cost, r.errors, r.pricing, r.max_credits) for r in s.routes] == [
        ("/v1/", 3, "openai", "request", None),
        ("/api/", 1, "creditgate", "request", None),
        ("/llm/", 1, "creditgate", "tokens", 40),
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[tiers.pro]\ncredits = 10\ncolour = 'red'\n", "tiers.pro.colour"),
        ("[tiers.pro]\ncredits = -1\n", "tiers.pro.credits"),
        ("unknown = 1\n", "unknown"),
        ("[[routes]]\nprefix = 'api'\nupstream = 'http://x'\n", "routes.0.prefix"),
        ("[[routes]]\nprefix = '/a/'\nupstream = 'ftp://x'\n", "routes.0.upstream"),
        ("[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\ncost = 0\n", "routes.0.cost"),
        ("[tiers.'a;b']\ncredits = 1\n", "tiers"),
        ("not toml [", "not valid TOML"),
        ("[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\ncost = '2'\n", "routes.0.cost"),
        ("[tiers.pro]\ncredits = '10'\n", "tiers.pro.credits"),
        (
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\nerrors = 'OpenAI'\n",
            "routes.0.errors",
        ),
        ("[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\nerrors = 1\n", "routes.0.errors"),
        (
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\npricing = 'token'\n",
            "routes.0.pricing",
        ),
        (
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\npricing = 'tokens'\n",
            "needs max_credits",
        ),
        (
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\npricing = 'tokens'\n"
            "cost = 3\nmax_credits = 2\n",
            "max_credits must be at least cost",
        ),
        (
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\nmax_credits = 5\n",
            "only with pricing",
        ),
        (
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\npricing = 'tokens'\n"
            "max_credits = '5'\n",
            "routes.0.max_credits",
        ),
        ("[tiers.pro]\nrequests_per_minute = 1.5\n", "tiers.pro.requests_per_minute"),
        (
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://x'\n"
            "[[routes]]\nprefix = '/a/'\nupstream = 'http://y'\n",
            "prefix '/a/' is given twice",
        ),
    ],
)
def test_bad_file_stops_the_start_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Settings.load(config=path)
    assert named in str(info.value)
    assert str(path) in str(info.value)


def test_a_tier_override_keeps_what_it_does_not_name(tmp_path: Path) -> None:
    path = tmp_path / "partial.toml"
    path.write_text("[tiers.enterprise]\ncredits = 2000\n\n[tiers.pro]\nrequests_per_minute = 0\n")
    s = Settings.load(config=path)
    assert s.tiers["enterprise"] == Tier(credits=2000, requests_per_minute=600)
    assert s.tiers["pro"] == Tier(credits=100, requests_per_minute=0)


def test_a_new_tier_needs_its_credits(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    path.write_text("[tiers.team]\nrequests_per_minute = 50\n")
    with pytest.raises(ConfigError, match="tiers.team.credits") as info:
        Settings.load(config=path)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load(config=tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CREDITGATE_REDIS_URL", "http://redis:6379"), ("CREDITGATE_CODEGEN_URL", "codegen:9101")],
)
def test_bad_urls_are_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable.removeprefix("CREDITGATE_").lower()):
        Settings.load()


def test_an_empty_redis_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_REDIS_URL", "")
    settings = Settings.load()
    assert settings.redis_url is None and not settings.embedded_redis


def test_the_embedded_redis_is_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_REDIS_URL", "embedded")
    settings = Settings.load()
    assert settings.embedded_redis
    settings.require_redis("creditgate serve")  # chosen: nothing to refuse


def test_no_redis_is_refused_saying_what_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load().require_redis("creditgate serve")
    assert "creditgate serve needs CREDITGATE_REDIS_URL" in str(info.value)
    assert "'embedded'" in str(info.value)


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("CREDITGATE_REDIS_ULR", "CREDITGATE_REDIS_URL"),
        ("CREDITGATE_DATABSE_URL", "CREDITGATE_DATABASE_URL"),
        ("CREDITGATE_ADMIN_TOKE", "CREDITGATE_ADMIN_TOKEN"),
        ("creditgate_signing_secrets", "CREDITGATE_SIGNING_SECRET"),
    ],
)
def test_a_mistyped_variable_stops_the_start_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, name: str, suggested: str
) -> None:
    monkeypatch.setenv(name, "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert f"unknown variable {name}" in str(info.value)
    assert f"did you mean {suggested}?" in str(info.value)


def test_a_mistyped_variable_in_dotenv_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OTHER_TOOL=1\nCREDITGATE_SYNC_INTERVALL=5\n")
    with pytest.raises(ConfigError, match="CREDITGATE_SYNC_INTERVALL; did you mean"):
        Settings.load()


def test_every_known_variable_and_the_tests_own_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDITGATE_SYNC_INTERVAL", "1")
    monkeypatch.setenv("CREDITGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    monkeypatch.setenv("CREDITGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    assert Settings.load().sync_interval == 1


def test_cluster_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="CLUSTER"):
        Settings.load(redis_cluster=True)


def test_a_cluster_takes_several_seed_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_REDIS_URL", "redis://a:7000, redis://b:7001,redis://c:7002")
    monkeypatch.setenv("CREDITGATE_REDIS_CLUSTER", "1")
    settings = Settings.load()
    assert settings.redis_urls == ["redis://a:7000", "redis://b:7001", "redis://c:7002"]


@pytest.mark.parametrize(
    ("value", "cluster", "message"),
    [
        ("redis://a:7000,redis://b:7001", "0", "set CREDITGATE_REDIS_CLUSTER=1"),
        ("redis://a:7000,,redis://b:7001", "1", "an empty entry"),
        ("redis://a:7000,b:7001", "1", "'b:7001' is not one"),
        ("redis://a:7000,unix:///tmp/r.sock", "1", "redis:// or rediss:// URLs only"),
        ("redis://a:7000,rediss://b:7001", "1", "must all be redis:// or all rediss://"),
    ],
)
def test_a_bad_list_of_seed_nodes_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str, cluster: str, message: str
) -> None:
    monkeypatch.setenv("CREDITGATE_REDIS_URL", value)
    monkeypatch.setenv("CREDITGATE_REDIS_CLUSTER", cluster)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load()


@pytest.mark.parametrize("value", ["10", "86401", "soon"])
def test_a_bad_page_session_ttl_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CREDITGATE_UI_SESSION_TTL", value)
    with pytest.raises(ConfigError, match="ui_session_ttl"):
        Settings.load()


def test_the_page_session_ttl_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_UI_SESSION_TTL", "600")
    assert Settings.load().ui_session_ttl == 600


def test_the_schema_and_the_settings_agree_on_every_field_and_default() -> None:
    """``Settings`` (what everything reads) and ``SettingsModel`` (what validates it) declare
    the same fields with the same defaults: a setting added to one only would be lost."""
    plain = {f.name: f for f in dataclasses.fields(Settings)}
    assert list(plain) == list(SettingsModel.model_fields)
    for name, model_field in SettingsModel.model_fields.items():
        if name in ("tiers", "routes"):  # filled in by the schema: defaults and the file
            continue
        assert plain[name].default == model_field.default, name
    assert Settings.load().tiers == DEFAULT_TIERS


def test_settings_handed_over_are_the_settings_validated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "creditgate.toml"
    config.write_text(
        '[tiers.team]\ncredits = 50\n\n[[routes]]\nprefix = "/v1/"\nupstream = "http://b/"\n'
        'pricing = "tokens"\nmax_credits = 9\n'
    )
    validated = Settings.load(config=config, redis_url="redis://r:6379/1", access_log=True)
    monkeypatch.setenv(HANDOFF, "")  # restored after the test
    assert Settings.handed_over() is None
    validated.hand_over()
    assert Settings.handed_over() == validated

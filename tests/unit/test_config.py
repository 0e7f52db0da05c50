"""Configuration: TOML into frozen dataclasses, every problem reported with its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from marketd.config import load_config, parse_config, redacted
from marketd.config_providers import missing_documented_limits
from marketd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def problems(data: dict, env: dict | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return dict(info.value.problems)


def test_example_file_loads_and_matches_defaults() -> None:
    """config.example.toml is valid and states exactly the built-in defaults."""
    example = load_config(ROOT / "config.example.toml", env={})
    defaults = parse_config({}, env={})
    assert redacted(example) == redacted(defaults)


def test_defaults_follow_the_interface() -> None:
    """The defaults are INTERFACE §3's."""
    c = parse_config({}, env={})
    assert (c.server.host, c.server.port) == ("127.0.0.1", 8787)
    assert c.scheduler.interval_seconds == 900 and c.scheduler.max_batch_size == 50
    assert [lim.text for lim in c.providers["stockx"].limits] == [
        "1/second", "25000/day", "100/hour"]
    assert c.providers["alias"].timeout_s == 60
    assert c.providers["ebay"].option("marketplace") == "EBAY_GB"


def test_unknown_keys_and_sections_are_named() -> None:
    """Unknown keys, sections and providers are reported by their dotted names."""
    p = problems({"scheduler": {"intervall": 5}, "bogus": {},
                  "providers": {"stockx": {"colour": 1}, "goat": {}}})
    assert set(p) == {"scheduler.intervall", "bogus", "providers.stockx.colour",
                      "providers.goat"}


def test_bad_values_are_named_all_at_once() -> None:
    """Every bad value is reported, not just the first."""
    p = problems({"server": {"port": 70000}, "scheduler": {"max_batch_size": 0,
                  "interval_seconds": "fast"},
                  "providers": {"ebay": {"limits": ["lots"], "enabled": "yes"}}})
    assert set(p) == {"server.port", "scheduler.max_batch_size", "scheduler.interval_seconds",
                      "providers.ebay.limits[0]", "providers.ebay.enabled"}


def test_several_limits_parse() -> None:
    """A provider may have several limits; all hold at once."""
    c = parse_config({"providers": {"stockx": {"limits": ["1/second", "100/hour", "5000/day",
                                                          "20/10s"]}}}, env={})
    assert [lim.window_s for lim in c.providers["stockx"].limits] == [1, 3600, 86400, 10]


def test_environment_secrets_win() -> None:
    """Secrets in the environment override the file."""
    c = parse_config({"security": {"cron_secret": "file"},
                      "providers": {"stockx": {"api_key": "file"}}},
                     env={"CRON_SECRET": "env", "STOCKX_API_KEY": "envkey",
                          "ALIAS_API_TOKEN": "goatapi_x"})
    assert c.security.cron_secret == "env"
    assert c.providers["stockx"].option("api_key") == "envkey"
    assert c.providers["alias"].option("api_token") == "goatapi_x"


def test_redacted_hides_secrets() -> None:
    """redacted() never shows a secret's value."""
    c = parse_config({}, env={"CRON_SECRET": "s3cret", "EBAY_CLIENT_SECRET": "hush"})
    text = repr(redacted(c))
    assert "s3cret" not in text and "hush" not in text


def test_non_loopback_host_needs_secrets() -> None:
    """A non-loopback host is refused unless cron_secret and api_token are set."""
    assert "server.host" in problems({"server": {"host": "0.0.0.0"}})
    short = problems({"server": {"host": "0.0.0.0"}},
                     env={"CRON_SECRET": "a", "MARKETD_API_TOKEN": "b"})
    assert {"security.cron_secret", "security.api_token"} <= set(short)  # under 32 characters
    ok = parse_config({"server": {"host": "0.0.0.0"}},
                      env={"CRON_SECRET": "a" * 32, "MARKETD_API_TOKEN": "b" * 32})
    assert ok.server.host == "0.0.0.0"


def test_secret_values_never_shown_and_webhooks_are_http() -> None:
    """A mistyped secret (a number, a list) is refused without its value; a webhook URL that
    is not http(s) is refused."""
    for value in (123456789, ["hunter2-list"]):
        with pytest.raises(ConfigError) as err:
            parse_config({"security": {"cron_secret": value}}, env={})
        assert "123456789" not in str(err.value) and "hunter2" not in str(err.value)
    assert "alerts.webhook_url" in problems({"alerts": {"webhook_url": "file:///etc/shadow"}})


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    """A missing file and a file that is not TOML (or repeats a provider) are errors."""
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[providers.stockx]\nenabled = true\n[providers.stockx]\nenabled = false\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})


def test_marketd_config_env_names_the_file(tmp_path: Path) -> None:
    """MARKETD_CONFIG names the file when no path is given."""
    f = tmp_path / "c.toml"
    f.write_text("[server]\nport = 9999\n")
    assert load_config(None, env={"MARKETD_CONFIG": str(f)}).server.port == 9999


def test_nan_and_inf_are_refused() -> None:
    """Numbers must be finite: nan and inf are named, not accepted."""
    p = problems({"scheduler": {"retry_base_seconds": float("nan"),
                                "fresh_for_seconds": float("inf")}})
    assert set(p) == {"scheduler.retry_base_seconds", "scheduler.fresh_for_seconds"}


def test_database_url_selects_postgresql() -> None:
    """[database] url names a PostgreSQL database; MARKETD_DATABASE_URL wins over the file."""
    c = parse_config({"database": {"url": "postgresql://marketd@db:5432/marketd"}}, env={})
    assert c.database.url == "postgresql://marketd@db:5432/marketd"
    env = parse_config({}, env={"MARKETD_DATABASE_URL": "postgresql://m@127.0.0.1/m"})
    assert env.database.url == "postgresql://m@127.0.0.1/m"
    assert parse_config({}, env={}).database.url == ""


def test_database_path_and_url_are_mutually_exclusive() -> None:
    """Both keys set (or path and the environment's URL) is one problem naming both keys."""
    both = {"database": {"path": "/tmp/m.db", "url": "postgresql://m@127.0.0.1/m"}}
    p = problems(both)
    assert "database.path" in p and "database.url" in p["database.path"]
    p = problems({"database": {"path": "/tmp/m.db"}},
                 env={"MARKETD_DATABASE_URL": "postgresql://m@127.0.0.1/m"})
    assert "MARKETD_DATABASE_URL" in p["database.path"]


def test_database_url_must_be_postgresql_and_is_redacted() -> None:
    """Only postgresql:// URLs are taken; redacted() hides a password inside the URL."""
    assert "database.url" in problems({"database": {"url": "mysql://x@h/db"}})
    c = parse_config({"database": {"url": "postgresql://m:hunter2@127.0.0.1/m"}}, env={})
    assert "hunter2" not in repr(redacted(c))
    assert redacted(c)["database"]["url"] == "postgresql://m:***@127.0.0.1/m"


def test_example_config_ships_stockx_documented_limits() -> None:
    """config.example.toml is valid and has StockX's 1/second and 25000/day plus the plan."""
    path = Path(__file__).parents[2] / "config.example.toml"
    c = parse_config(tomllib.loads(path.read_text()), env={})
    assert [lim.text for lim in c.providers["stockx"].limits] == [
        "1/second", "25000/day", "100/hour"]
    assert missing_documented_limits("stockx", c.providers["stockx"].limits) == []


def test_missing_documented_limits_names_what_a_config_drops() -> None:
    """A StockX list without the per-second or daily limit is told which it lacks; a stricter
    limit of the same window counts."""
    only_plan = parse_config({"providers": {"stockx": {"limits": ["100/hour"]}}}, env={})
    stockx = only_plan.providers["stockx"].limits
    assert missing_documented_limits("stockx", stockx) == ["1/second", "25000/day"]
    strict = parse_config({"providers": {"stockx": {
        "limits": ["1/second", "20000/day", "50/hour"]}}}, env={})
    assert missing_documented_limits("stockx", strict.providers["stockx"].limits) == []
    assert missing_documented_limits("alias", only_plan.providers["alias"].limits) == []


@pytest.mark.parametrize("region", ["AU", "CA", "JP", "MARS"])
def test_alias_regions_without_a_source_are_config_errors(region: str) -> None:
    """Only region ids with a source (US, EU, UK) or GLOBAL: AU/CA/JP were guesses."""
    assert "providers.alias.region" in problems({"providers": {"alias": {"region": region}}})

"""TOML configuration -> frozen dataclasses, with every default in one place.

:func:`load_config` reads a file (or nothing: all defaults), overlays secrets from the
environment, and reports every problem at once, each with its dotted key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from marketd.config_data import (
    DATA_BOUNDS,
    DATA_SECTIONS,
    RetentionConfig,
    WebhooksConfig,
    check_base_path,
    check_data,
    parse_fx,
)
from marketd.config_providers import PROVIDER_COMMON, PROVIDER_DEFAULTS
from marketd.errors import ConfigError
from marketd.models import PROVIDERS
from marketd.ratelimit import Limit, parse_limit


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8787
    # reverse proxies (addresses or networks) whose X-Forwarded-Proto and X-Forwarded-For are
    # believed (marketd.proxy): behind TLS the page's session cookie is then Secure
    trusted_proxies: tuple[str, ...] = ()
    # names a Host header may carry (DNS rebinding): empty means the loopback names and the
    # bound host; "*" allows any (behind a proxy that checks it)
    allowed_hosts: tuple[str, ...] = ()
    # a Unix socket (mode 0600) the daemon also listens on; the CLI prefers it to TCP
    socket: str = ""
    # the prefix a reverse proxy serves marketd under ("/marketd"): marketd.proxy.public_path
    base_path: str = ""
    # connections: 0 = below the open-file limit (marketd.conns); idle and header timeouts
    max_connections: int = 0
    keepalive_seconds: float = 15.0
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = "/var/lib/marketd/marketd.db"
    # PostgreSQL instead of the SQLite file: "postgresql://user@host:port/dbname" (or
    # MARKETD_DATABASE_URL); excludes ``path``; several daemons may share one (instance.py)
    url: str = ""

    @property
    def where(self) -> str:
        """The database as logs and messages name it: the URL without its password, or the
        SQLite file."""
        return redact_url(self.url) if self.url else self.path


@dataclass(frozen=True)
class SchedulerConfig:
    interval_seconds: float = 900.0
    max_batch_size: int = 50
    stuck_after_seconds: float = 600.0
    max_retries: int = 3
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    auth_pause_seconds: float = 300.0
    shutdown_grace_seconds: float = 10.0
    fresh_for_seconds: float = 3600.0
    limit_margin_ms: float = 250.0
    manual_wake_ms: float = 200.0
    pacing: bool = True
    manual_reserve: float = 0.05
    # budget no queued job needs refreshes prices users asked for once they are this old
    # (0: off), for keys asked within the last idle_refresh_keep_days
    idle_refresh_seconds: float = 600.0
    idle_refresh_keep_days: float = 7.0
    # a hot enqueue starts a run for its provider within this (a burst of adds makes one run)
    hot_wake_seconds: float = 30.0
    # starvation: a job waiting this long is raised to hot, twice this long to just below
    # manual (0: off)
    aging_seconds: float = 3600.0
    # beyond this many pending jobs /enqueue answers 503 with Retry-After (0: no cap)
    max_pending_jobs: int = 200_000


@dataclass(frozen=True)
class SecurityConfig:
    cron_secret: str = ""
    api_token: str = ""


@dataclass(frozen=True)
class AlertsConfig:
    failure_rate_threshold: float = 0.5
    window_seconds: float = 900.0
    min_jobs: int = 10
    webhook_url: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"  # json, console, or auto (console on a terminal, json otherwise)


@dataclass(frozen=True)
class ProviderConfig:
    name: str = ""
    enabled: bool = True
    limits: tuple[Limit, ...] = ()
    delay_ms: float = 0.0
    timeout_s: float = 30.0
    base_url: str = ""
    # provider-specific settings and secrets, by key (see PROVIDER_DEFAULTS)
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, key: str) -> Any:
        return self.options[key]


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    fx: Mapping[str, float] = field(default_factory=dict)  # [fx]: home currency per unit
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    source: str | None = None

    def enabled_providers(self) -> list[ProviderConfig]:
        return [p for p in self.providers.values() if p.enabled]


SECRET_ENV: dict[tuple[str, ...], str] = {
    ("security", "cron_secret"): "CRON_SECRET",
    ("security", "api_token"): "MARKETD_API_TOKEN",
    ("providers", "stockx", "api_key"): "STOCKX_API_KEY",
    ("providers", "stockx", "client_id"): "STOCKX_CLIENT_ID",
    ("providers", "stockx", "client_secret"): "STOCKX_CLIENT_SECRET",
    ("providers", "stockx", "refresh_token"): "STOCKX_REFRESH_TOKEN",
    ("providers", "alias", "api_token"): "ALIAS_API_TOKEN",
    ("providers", "ebay", "client_id"): "EBAY_CLIENT_ID",
    ("providers", "ebay", "client_secret"): "EBAY_CLIENT_SECRET",
}
SECRET_KEYS = frozenset(k[-1] for k in SECRET_ENV) | {"secret"}
MIN_SECRET_CHARS = 32
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
DATABASE_URL_ENV = "MARKETD_DATABASE_URL"
_URL_SCHEMES = ("postgresql://", "postgres://")
_SECTIONS = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "scheduler": SchedulerConfig,
    "security": SecurityConfig,
    "alerts": AlertsConfig,
    "logging": LoggingConfig,
    **DATA_SECTIONS,  # retention, webhooks (marketd.config_data)
}
# (minimum, maximum) for numbers; None means unbounded on that side
_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "server.port": (0, 65535),
    "server.max_connections": (0, 1_000_000),
    "server.keepalive_seconds": (0.1, 3600),
    "server.header_timeout_seconds": (0.1, 3600),
    "server.body_timeout_seconds": (0.1, 3600),
    "scheduler.max_pending_jobs": (0, None),
    "scheduler.interval_seconds": (1, 86400),
    "scheduler.max_batch_size": (1, 10000),
    "scheduler.stuck_after_seconds": (1, None),
    "scheduler.max_retries": (0, 100),
    "scheduler.retry_base_seconds": (0, None),
    "scheduler.retry_max_seconds": (0, None),
    "scheduler.auth_pause_seconds": (0, None),
    "scheduler.shutdown_grace_seconds": (0, 3600),
    "scheduler.fresh_for_seconds": (0, None),
    "scheduler.limit_margin_ms": (0, 60000),
    "scheduler.manual_wake_ms": (0, 60000),
    "scheduler.manual_reserve": (0, 0.5),
    "scheduler.idle_refresh_seconds": (0, None),
    "scheduler.idle_refresh_keep_days": (0, 3650),
    "scheduler.hot_wake_seconds": (0, 86400),
    "scheduler.aging_seconds": (0, None),
    "alerts.failure_rate_threshold": (0, 1),
    "alerts.window_seconds": (1, None),
    "alerts.min_jobs": (1, None),
    "delay_ms": (0, 3_600_000),
    "timeout_s": (0.1, 3600),
    **DATA_BOUNDS,
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "logging.level": ("debug", "info", "warning", "error"),
    "logging.format": ("auto", "json", "console"),
    "alias.consigned": ("any", "true", "false"),
    "alias.region": ("UK", "US", "EU", "GLOBAL"),  # ids with a source only (alias.REGION_IDS)
}


class _Problems(list[tuple[str, str]]):
    def add(self, key: str, message: str) -> None:
        self.append((key, message))


def _check_value(key: str, bound_key: str, default: Any, value: Any, problems: _Problems) -> Any:
    """Type- and range-check one scalar against its default's type. A secret's value is never
    shown in a problem, whatever its type."""
    if key.rsplit(".", 1)[-1] in SECRET_KEYS and not isinstance(value, str):
        problems.add(key, f"must be a string, not a {type(value).__name__} (the value of a "
                     "secret is not shown)")
        return default
    if bound_key == "server.allowed_hosts":
        if not isinstance(value, list) or not all(
                isinstance(v, str) and v and " " not in v for v in value):
            problems.add(key, f"must be a list of host names, not {value!r}")
            return default
        return tuple(v.lower() for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            problems.add(key, f"must be true or false, not {value!r}")
            return default
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.add(key, f"must be a number, not {value!r}")
            return default
        if not math.isfinite(value):
            problems.add(key, f"must be a finite number, not {value!r}")
            return default
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
                and not value.is_integer():
            problems.add(key, f"must be a whole number, not {value!r}")
            return default
        lo, hi = _BOUNDS.get(bound_key, (None, None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            problems.add(key, f"must be {span}, not {value!r}")
            return default
        return type(default)(value)
    if isinstance(default, tuple):  # server.trusted_proxies: addresses or networks
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.add(key, f"must be a list of strings, not {value!r}")
            return default
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                problems.add(key, f"{item!r} is not an IP address or network")
                return default
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            problems.add(key, f"must be a string, not {value!r}")
            return default
        if bound_key == "server.base_path":
            path, problem = check_base_path(value)
            if problem is not None:
                problems.add(key, problem)
            return path
        choices = _CHOICES.get(bound_key)
        if choices and value not in choices:
            problems.add(key, f"must be one of {', '.join(choices)}, not {value!r}")
            return default
        return value
    return value


def _url_ok(value: str) -> bool:
    return value.startswith(("http://", "https://")) and len(value) > len("https://")


def _load_provider(name: str, raw: Any, problems: _Problems) -> ProviderConfig:
    prefix = f"providers.{name}"
    if not isinstance(raw, dict):
        problems.add(prefix, "must be a table")
        raw = {}
    common = PROVIDER_COMMON[name]
    extra = PROVIDER_DEFAULTS[name]
    values: dict[str, Any] = {"enabled": True, **common}
    options: dict[str, Any] = dict(extra)
    for key, value in raw.items():
        k = f"{prefix}.{key}"
        if key == "enabled":
            values[key] = _check_value(k, key, True, value, problems)
        elif key == "limits":
            if not isinstance(value, list) or not value:
                problems.add(k, "must be a non-empty list such as [\"100/hour\"]")
                continue
            values[key] = value
        elif key in common:
            values[key] = _check_value(k, key, common[key], value, problems)
        elif key in extra:
            options[key] = _check_value(k, f"{name}.{key}", extra[key], value, problems)
        else:
            problems.add(k, "unknown key")
    limits: list[Limit] = []
    seen: set[float] = set()
    for i, text in enumerate(values["limits"]):
        try:
            limit = parse_limit(text)
        except ValueError as exc:
            problems.add(f"{prefix}.limits[{i}]", str(exc))
            continue
        if limit.window_s in seen:
            problems.add(f"{prefix}.limits[{i}]", "two limits share one window length")
        seen.add(limit.window_s)
        limits.append(limit)
    for key in ("base_url",):
        if not _url_ok(values[key]):
            problems.add(f"{prefix}.{key}", f"must be an http(s) URL, not {values[key]!r}")
    if "auth_url" in options and not _url_ok(options["auth_url"]):
        problems.add(f"{prefix}.auth_url", f"must be an http(s) URL, not {options['auth_url']!r}")
    return ProviderConfig(
        name=name,
        enabled=values["enabled"],
        limits=tuple(limits),
        delay_ms=values["delay_ms"],
        timeout_s=values["timeout_s"],
        base_url=values["base_url"].rstrip("/"),
        options=options,
    )


def parse_config(
    data: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    source: str | None = None,
) -> Config:
    """Build a :class:`Config` from parsed TOML; raise ConfigError naming every bad key."""
    env = os.environ if env is None else env
    problems = _Problems()
    sections: dict[str, Any] = {}
    for key in data:
        if key not in _SECTIONS and key not in ("providers", "fx"):
            problems.add(key, "unknown section")
    for name, cls in _SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            problems.add(name, "must be a table")
            raw = {}
        defaults = cls()
        values: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for key, value in raw.items():
            if key not in known:
                problems.add(f"{name}.{key}", "unknown key")
                continue
            values[key] = _check_value(
                f"{name}.{key}", f"{name}.{key}", getattr(defaults, key), value, problems
            )
        sections[name] = replace(defaults, **values)
    # secrets: the environment wins over the file
    for path, var in SECRET_ENV.items():
        if path[0] == "security" and env.get(var):
            sections["security"] = replace(sections["security"], **{path[1]: env[var]})
    raw_providers = data.get("providers", {})
    if not isinstance(raw_providers, dict):
        problems.add("providers", "must be a table")
        raw_providers = {}
    providers: dict[str, ProviderConfig] = {}
    for name in raw_providers:
        if name not in PROVIDERS:
            problems.add(f"providers.{name}", f"unknown provider (known: {', '.join(PROVIDERS)})")
    for name in PROVIDERS:
        pc = _load_provider(name, raw_providers.get(name, {}), problems)
        opts = dict(pc.options)
        for path, var in SECRET_ENV.items():
            if path[:2] == ("providers", name) and env.get(var):
                opts[path[2]] = env[var]
        providers[name] = replace(pc, options=opts)
    sched: SchedulerConfig = sections["scheduler"]
    if sched.retry_max_seconds < sched.retry_base_seconds:
        problems.add("scheduler.retry_max_seconds", "must not be less than retry_base_seconds")
    sections["database"] = _check_database(sections["database"], data.get("database"), env,
                                           problems)
    server: ServerConfig = sections["server"]
    security: SecurityConfig = sections["security"]
    if not _is_loopback(server.host) and not (security.cron_secret and security.api_token):
        problems.add(
            "server.host",
            f"{server.host!r} is not a loopback address: set security.cron_secret and "
            "security.api_token (or CRON_SECRET and MARKETD_API_TOKEN) to listen on it",
        )
    elif not _is_loopback(server.host):
        for name in ("cron_secret", "api_token"):
            if len(getattr(security, name)) < MIN_SECRET_CHARS:
                problems.add(f"security.{name}", f"must be at least {MIN_SECRET_CHARS} "
                             f"characters to listen on {server.host!r} (a non-loopback "
                             "address); e.g. `openssl rand -hex 32`")
    if sections["alerts"].webhook_url and not _url_ok(sections["alerts"].webhook_url):
        problems.add("alerts.webhook_url", "must be an http(s) URL such as "
                     "https://hooks.example.com/marketd")
    fx = parse_fx(data.get("fx"), problems.add)
    check_data(sections, env, problems.add)
    if problems:
        raise ConfigError(list(problems))
    return Config(providers=providers, source=source, fx=fx, **sections)


def _check_database(db: DatabaseConfig, raw: Any, env: Mapping[str, str],
                    problems: _Problems) -> DatabaseConfig:
    """``url`` (the file's, or MARKETD_DATABASE_URL, which wins) or ``path``, never both."""
    url_from = "database.url"
    if env.get(DATABASE_URL_ENV):
        db = replace(db, url=env[DATABASE_URL_ENV].strip())
        url_from = DATABASE_URL_ENV
    if not db.url:
        if not db.path.strip():
            problems.add("database.path", "must name a file, e.g. /var/lib/marketd/marketd.db")
        return db
    if isinstance(raw, dict) and "path" in raw:
        problems.add("database.path", f"database.path and database.url are mutually exclusive "
                     f"(url from {url_from}): set one, SQLite's path or PostgreSQL's url")
    if not db.url.startswith(_URL_SCHEMES) or len(db.url) <= len("postgres://"):
        problems.add(url_from, "must be a PostgreSQL URL such as "
                     f"postgresql://marketd@127.0.0.1:5432/marketd, not {redact_url(db.url)!r}")
    return db


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or $MARKETD_CONFIG, or nothing) into a Config."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get("MARKETD_CONFIG") or None
    if path is None:
        return parse_config({}, env)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([(str(p), "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(str(p), f"cannot read: {exc}")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib reports a repeated table ([providers.stockx] twice) as a decode error
        raise ConfigError([(str(p), f"not valid TOML: {exc}")]) from None
    return parse_config(data, env, source=str(p))


def redacted(config: Config) -> dict[str, Any]:
    """The configuration as plain data, with every secret replaced by ``"***"`` when set."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        section = getattr(config, name)
        out[name] = {
            f.name: ("***" if f.name in SECRET_KEYS and getattr(section, f.name) else
                     getattr(section, f.name))
            for f in fields(section)
        }
    out["database"]["url"] = redact_url(config.database.url)
    out["fx"] = dict(config.fx)
    out["providers"] = {
        name: {
            "enabled": pc.enabled,
            "limits": [lim.text for lim in pc.limits],
            "delay_ms": pc.delay_ms,
            "timeout_s": pc.timeout_s,
            "base_url": pc.base_url,
            **{k: ("***" if k in SECRET_KEYS and v else v) for k, v in pc.options.items()},
        }
        for name, pc in config.providers.items()
    }
    return out


def redact_url(url: str) -> str:
    """A URL without its password (for logs, errors and ``Store.path``); any text is
    accepted, even one that is not a URL."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    creds, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}{slash}{path}"

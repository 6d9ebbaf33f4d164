"""Configuration: a YAML file plus ``CHRONOS__SECTION__KEY`` environment overrides.

The kernel owns a few sections; every plugin owns the top-level section named
after it. Values are validated with pydantic; every problem becomes one line
saying which key, where the value came from (file or environment variable) and
what was expected, with a "did you mean" for unknown keys.
"""

from __future__ import annotations

import difflib
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chronos.redact import SECRET_NAME_RE, hide_password

ENV_PREFIX = "CHRONOS__"
DEFAULT_CONFIG = Path("config/chronos.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the HTTP server.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest accepted request body; larger ones get 413."
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="Largest accepted total header size; larger get 431.")
    public_docs: bool = Field(
        True, description="Serve /docs and /openapi.json without a key; false: they need `admin` or `metrics.read`."
    )
    public_metrics: Literal["loopback"] | bool = Field(
        "loopback",
        description="Serve /metrics without a key: true, false (needs `admin` or `metrics.read`), or loopback:"
        " only while the server binds a loopback address (127.0.0.1, ::1, localhost).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="HTTP worker processes of `chronos serve` on one port (--workers). With more than one,"
        " migrations run once before they start; each worker runs jobs unless --no-jobs, and only one of them"
        " (the leader) runs the schedules.",
    )
    shutdown_timeout_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        description="On SIGTERM: how long requests in flight may take to finish (no new connections are"
        " accepted meanwhile) before they are cut; the running syncs then get scheduler.shutdown_timeout_seconds.",
    )


class DatabaseSettings(_Section):
    url: str = Field(
        "sqlite+aiosqlite:///data/chronos.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db.",
    )
    schema_name: str | None = Field(
        None, alias="schema", description="PostgreSQL only: schema holding every table (default: public)."
    )
    migrate_on_start: bool = Field(True, description="Apply pending migrations when `chronos serve` starts.")
    pool_size: int = Field(5, ge=1, le=100, description="Reader connections (PostgreSQL: total pool size).")
    busy_timeout_ms: int = Field(
        10_000, ge=0, description="SQLite: how long a writer waits for another process's write lock."
    )
    sqlite_write_cache_mib: int = Field(
        64,
        ge=1,
        le=65_536,
        description="SQLite: page cache of the one writing connection, in MiB (taken as it fills). A sync writes"
        " into indexes all over a large file; SQLite's default of 2 MiB rereads their upper pages on every insert.",
    )
    sqlite_checkpoint_mib: int = Field(
        64,
        ge=1,
        le=65_536,
        description="SQLite: how much the write-ahead log may hold, in MiB, before the writer copies it into the"
        " database file (and trims the log back to this size). A page a sync changes again and again is copied"
        " once per checkpoint; SQLite's default of 4 MiB copied it after nearly every batch.",
    )
    connect_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="PostgreSQL: how long opening a connection may take before the request answers 503"
        " (a server that accepts and never answers would otherwise hold every request for a minute).",
    )
    echo: bool = Field(False, description="Log every SQL statement (debugging only).")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+asyncpg://")):
            raise ValueError("expected a URL starting with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v


class AuthSettings(_Section):
    accept_x_api_key: bool = Field(True, description="Also accept keys in the X-API-Key header.")
    key_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=300,
        description="How long a verified key is remembered in memory. This is the revocation delay across"
        " processes: a key revoked through one replica (or the CLI) is still accepted by the others for up to"
        " this long; the process that revokes it refuses it at once (0 disables the cache).",
    )
    max_key_lifetime_days: int | None = Field(
        None, ge=1, description="Upper bound for key expiry; keys without expiry are refused when set."
    )


class SchedulerSettings(_Section):
    enabled: bool = Field(True, description="Run scheduled jobs in this process (`serve --no-jobs` overrides).")
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often the job runner records it is alive.")
    heartbeat_stale_seconds: float = Field(
        60.0, gt=0, description="/health answers 503 when the last heartbeat is older than this."
    )
    leader_retry_seconds: float = Field(
        5.0, gt=0, description="PostgreSQL: how often a follower tries to take over leadership."
    )
    shutdown_timeout_seconds: float = Field(20.0, gt=0, description="Grace period for running jobs on shutdown.")


class SyncSettings(_Section):
    run_budget_seconds: float = Field(
        600.0,
        gt=0,
        description="A sync run still going after this long stops with an error naming the calendar. Batches it"
        " stored stay; nothing is deleted on the strength of its unfinished listing (the last good data is kept)."
        " Raise it for very large first syncs, or shorten the calendar's window (horizon_days).",
    )
    max_concurrent_runs: int = Field(
        8,
        ge=1,
        le=1000,
        description="Sync runs of this process that list and store at the same time; more wait their turn (shown"
        " as running with 0 batches), so that many calendars starting together do not queue for the database's"
        " connections and write lock all at once.",
    )
    expansion_threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Threads that parse and expand iCalendar data for every calendar together (ICS files and"
        " feeds, and any source using `ical.expansion()`; default: one per CPU core, 2 to 4). One calendar uses at"
        " most half of them, so a calendar whose series expand slowly never stops the others.",
    )


class PluginsSettings(_Section):
    enabled: list[str] | None = Field(
        None, description="Allowlist of plugin names; null enables every installed plugin."
    )
    disabled: list[str] = Field(default_factory=list, description="Plugins never loaded, even if installed.")
    strict: bool = Field(
        False, description="A plugin that fails to load stops startup (also CHRONOS_STRICT_PLUGINS=1)."
    )
    startup_timeout_seconds: float = Field(30.0, gt=0, description="Limit for each plugin's on_startup.")


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Minimum log level.")
    format: Literal["json", "console"] = Field("json", description="One JSON object per line, or human-readable.")
    access_log: bool = Field(
        True, description="One log line per HTTP request: method, path, status, duration, request id, key id."
    )


class AuditSettings(_Section):
    key_file: str | None = Field(
        None,
        description="File holding the audit log's HMAC key, created (mode 0600) at first start when"
        " CHRONOS_AUDIT_KEY is not set. Default: beside the SQLite database (`<database>.audit-key`), or"
        " data/audit.key under the working directory for PostgreSQL.",
    )
    checkpoint_seconds: float = Field(
        300.0,
        gt=0,
        description="How often the signed head checkpoint (which reveals deleted newest rows) is written;"
        " also written on shutdown.",
    )


class NetworkSettings(_Section):
    allow: list[str] = Field(
        default_factory=list,
        description="Destinations of outbound requests (webhooks, channels, ICS feeds, CalDAV) that are allowed although"
        " they are loopback, private, link-local or otherwise not public: CIDRs (127.0.0.1/32, 10.0.0.0/8, ::1/128)"
        " and host names (caldav.internal, or *.corp.example for its subdomains). Everything else non-public is"
        " refused, e.g. CHRONOS__NETWORK__ALLOW='[\"127.0.0.1/32\"]' for a CalDAV server on this machine.",
    )

    @field_validator("allow")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        from chronos.net import parse_allow_entry  # the one parser, used again when the policy is built

        for entry in value:
            parse_allow_entry(entry)
        return value


class KernelSettings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings, description="The HTTP server (`chronos serve`).")
    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings, description="Where everything is stored: SQLite (default) or PostgreSQL."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys.")
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description="The background job runner.")
    sync: SyncSettings = Field(default_factory=SyncSettings, description="Sync runs: time budget and parsing threads.")
    plugins: PluginsSettings = Field(default_factory=PluginsSettings, description="Which installed plugins are loaded.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Structured logs on stderr.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="The tamper-evident audit log.")
    network: NetworkSettings = Field(
        default_factory=NetworkSettings, description="Outbound HTTP: which non-public destinations are allowed."
    )


KERNEL_SECTIONS = tuple(KernelSettings.model_fields)


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one actionable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class RawConfig:
    """The merged file and environment values, with where each came from."""

    data: dict[str, Any]
    path: Path | None
    env_origin: dict[tuple[str, ...], str] = field(default_factory=dict)

    def origin(self, loc: tuple[Any, ...]) -> str:
        keys = tuple(str(p) for p in loc)
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.env_origin:
                return f"env {self.env_origin[keys[:n]]}"
        return str(self.path) if self.path else "defaults"


@dataclass
class Settings:
    """Validated configuration: the kernel's sections plus raw plugin sections.

    Plugin sections are validated by the plugin host once it knows which
    plugins are enabled; ``sections`` then holds their models.
    """

    kernel: KernelSettings
    raw: RawConfig
    sections: dict[str, BaseModel] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # settings.server, settings.database …
        kernel = self.__dict__.get("kernel")
        if kernel is not None and name in KERNEL_SECTIONS:
            return getattr(kernel, name)
        raise AttributeError(name)

    def plugin_names_in_config(self) -> list[str]:
        return [k for k in self.raw.data if k not in KERNEL_SECTIONS]


def resolve_config_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("CHRONOS_CONFIG"):
        return Path(env["CHRONOS_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    if text.lower() in ("null", "none", "~"):
        return None
    return raw


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    cur = data
    for key in keys[:-1]:
        nxt = cur.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[key] = nxt
        cur = nxt
    last = keys[-1]
    if isinstance(value, dict) and isinstance(cur.get(last), dict):
        cur[last] = _deep_merge(cur[last], value)
    else:
        cur[last] = value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_raw_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> RawConfig:
    env = os.environ if env is None else env
    cfg_path = resolve_config_path(path, env)
    data: dict[str, Any] = {}
    if cfg_path is not None:
        if not cfg_path.exists():
            raise ConfigError([f"{cfg_path}: config file not found (set --config or CHRONOS_CONFIG)"])
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{cfg_path}:{mark.line + 1}:{mark.column + 1}" if mark else str(cfg_path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError([f"{where}: malformed YAML: {problem}"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{cfg_path}: cannot read config file: {exc}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                [f"{cfg_path}: expected a mapping of sections at the top level, got {type(loaded).__name__}"]
            )
        bad = [k for k in loaded if not isinstance(k, str)]
        if bad:
            raise ConfigError([f"{cfg_path}: section names must be strings, got {bad[0]!r}"])
        data = loaded
    origin: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            continue
        _set_path(data, keys, _env_value(env[name]))
        origin[tuple(keys)] = name
    return RawConfig(data=data, path=cfg_path, env_origin=origin)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys at ``loc`` inside ``model`` (for did-you-mean)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) else None
        if current is None:
            return []
    fields = getattr(current, "model_fields", {}) or {}
    names = []
    for fname, finfo in fields.items():
        names.append(finfo.alias or fname)
    return names


def format_validation_error(
    exc: ValidationError, raw: RawConfig, prefix: tuple[str, ...] = (), model: type[BaseModel] | None = None
) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "<root>"
        origin = raw.origin(loc)
        if err["type"] == "extra_forbidden":
            choices = _model_fields(model, tuple(str(p) for p in err["loc"][:-1])) if model else []
            lines.append(f"{key}: unknown key{_suggest(loc[-1], choices)} [{origin}]")
            continue
        got_text = _shown_input(loc, err.get("input"))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {msg[:1].lower()}{msg[1:]}{got_text} [{origin}]")
    return lines


def _shown_input(loc: tuple[str, ...], got: Any) -> str:
    """``, got <value>`` for an error line; a secret is never echoed (a key named like one, a URL's password)."""
    if isinstance(got, (dict, list)) or got is None:
        return ""
    if any(SECRET_NAME_RE.search(part) for part in loc):
        return " (value not shown: a secret)"
    if isinstance(got, str):
        got = hide_password(got)
    return f", got {got!r}"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    collect: list[str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read, merge and validate the kernel's sections.

    ``overrides`` are applied last (``database={"url": ...}``); they make tests
    and embedding explicit without touching the environment. With ``collect``,
    a problem in a kernel section is appended there and the section falls back
    to its defaults, so a check can go on to the plugins' sections (a file that
    cannot be read still raises).
    """
    raw = read_raw_config(path, env)
    for section, value in overrides.items():
        _set_path(raw.data, [section], value)
    kernel_data = {k: v for k, v in raw.data.items() if k in KERNEL_SECTIONS}
    problems = []
    for k, v in kernel_data.items():
        if v is not None and not isinstance(v, dict):
            problems.append(f"{k}: expected a mapping of keys, got {type(v).__name__} [{raw.origin((k,))}]")
    if problems:
        if collect is None:
            raise ConfigError(problems)
        collect.extend(problems)
    kernel_data = {k: (v or {}) for k, v in kernel_data.items() if v is None or isinstance(v, dict)}
    try:
        kernel = KernelSettings.model_validate(kernel_data)
    except ValidationError as exc:
        lines = format_validation_error(exc, raw, model=KernelSettings)
        if collect is None:
            raise ConfigError(lines) from None
        collect.extend(lines)
        broken = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        kernel = KernelSettings.model_validate({k: v for k, v in kernel_data.items() if k not in broken})
    return Settings(kernel=kernel, raw=raw)


def strict_plugins(settings: Settings, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    flag = env.get("CHRONOS_STRICT_PLUGINS", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return settings.kernel.plugins.strict


def no_plugins(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("CHRONOS_NO_PLUGINS", "").strip().lower() in ("1", "true", "yes", "on")


def validate_section(settings: Settings, name: str, model: type[BaseModel]) -> tuple[BaseModel | None, list[str]]:
    value = settings.raw.data.get(name)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return None, [
            f"{name}: expected a mapping of keys, got {type(value).__name__} [{settings.raw.origin((name,))}]"
        ]
    # pydantic ignores unknown keys by default; a typo in a plugin's section must
    # not pass silently, so they are errors unless the model chose an ``extra`` policy.
    ignored = _ignored_keys(model, value, (name,), settings.raw)
    try:
        validated = model.model_validate(value)
    except ValidationError as exc:
        return None, format_validation_error(exc, settings.raw, prefix=(name,), model=model) + ignored
    return (None, ignored) if ignored else (validated, [])


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _ignored_keys(model: type[BaseModel], value: Any, loc: tuple[str, ...], raw: RawConfig) -> list[str]:
    """Keys of ``value`` that ``model`` (with no explicit ``extra`` policy) would drop silently."""
    if not isinstance(value, dict):
        return []
    by_key: dict[str, Any] = {}
    for fname, info in model.model_fields.items():
        by_key[fname] = info
        if info.alias:
            by_key[info.alias] = info
    names = [f.alias or n for n, f in model.model_fields.items()]
    out: list[str] = []
    for key, sub in value.items():
        finfo = by_key.get(key)
        if finfo is None:
            if model.model_config.get("extra") is None:
                out.append(
                    f"{'.'.join((*loc, str(key)))}: unknown key{_suggest(str(key), names)} [{raw.origin((*loc, key))}]"
                )
            continue
        nested = _nested_model(finfo.annotation)
        if nested is not None:
            out.extend(_ignored_keys(nested, sub, (*loc, str(key)), raw))
    return out


def suggest(word: str, choices: list[str]) -> str:
    return _suggest(word, choices)

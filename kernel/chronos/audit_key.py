"""The audit log's HMAC key: a secret kept outside the database.

``CHRONOS_AUDIT_KEY`` in the environment wins; otherwise the key lives in a
file the service creates at first use (mode 0600): ``audit.key_file``, by
default beside the SQLite database (``<database>.audit-key``) or
``data/audit.key`` under the working directory for PostgreSQL. The file's path
is logged, never its content. Someone who can write to the database but cannot
read this key can neither extend the audit chain nor sign a checkpoint.
"""

from __future__ import annotations

import os
import secrets
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from chronos.settings import ConfigError, Settings

log = structlog.get_logger("chronos.audit")

ENV_VAR = "CHRONOS_AUDIT_KEY"
MIN_ENV_KEY_CHARS = 32


def key_file_path(settings: Settings) -> Path:
    """Where the key file is (or will be created)."""
    configured = settings.kernel.audit.key_file
    if configured:
        return Path(configured).expanduser()
    url = settings.kernel.database.url
    if url.startswith("sqlite"):
        _, _, path = url.partition(":///")
        path = path.split("?", 1)[0]
        if path and path != ":memory:" and not path.startswith("file::memory:"):
            return Path(path).expanduser().with_name(Path(path).name + ".audit-key")
    return Path("data") / "audit.key"


def load_audit_key(settings: Settings, environ: Any = None) -> bytes:
    """The key: from ``CHRONOS_AUDIT_KEY``, else the key file (created with a fresh random key if absent)."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR, "")
    if value:
        if len(value.strip()) < MIN_ENV_KEY_CHARS:
            raise ConfigError(
                [
                    f"{ENV_VAR}: the audit key must be at least {MIN_ENV_KEY_CHARS} characters (e.g. openssl rand -hex 32)"
                ]
            )
        log.info("audit_key", source=f"env {ENV_VAR}")
        return value.strip().encode("utf-8")
    path = key_file_path(settings)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not path.is_file():
            raise ConfigError([f"audit.key_file: {path} is not a file"]) from None
    except OSError as exc:
        raise ConfigError(
            [
                f"audit.key_file: cannot create the audit key file {path}: {exc.strerror or exc} (set audit.key_file"
                f" or {ENV_VAR})"
            ]
        ) from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32) + "\n")
        log.warning("audit_key_created", path=str(path), detail="back this file up with the database; it is not in it")
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"audit.key_file: cannot read the audit key file {path}: {exc}"]) from None
    if len(text) < MIN_ENV_KEY_CHARS:
        raise ConfigError([f"audit.key_file: {path} holds no usable key (at least {MIN_ENV_KEY_CHARS} characters)"])
    log.info("audit_key", path=str(path))
    return text.encode("utf-8")


class _Loader:
    """Loads the key once, on first use."""

    def __init__(self, load: Callable[[], bytes]) -> None:
        self._load = load
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._load()
        return self._key


_LOADERS: weakref.WeakKeyDictionary[Any, _Loader] = weakref.WeakKeyDictionary()


def bind_audit_key(engines: list[Any], load: Callable[[], bytes]) -> None:
    """Audit rows written or verified through these (sync) engines use the key ``load`` returns."""
    loader = _Loader(load)
    for engine in engines:
        _LOADERS[engine] = loader


def audit_key_for(bind: Any) -> bytes:
    """The key for a session's bind (an Engine or a Connection)."""
    engine = getattr(bind, "engine", bind)
    loader = _LOADERS.get(engine)
    if loader is None:
        raise RuntimeError("no audit key is bound to this database (open it through the kernel's context)")
    return loader()

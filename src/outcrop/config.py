"""Where outcrop keeps its data, and the project settings in ``outcrop.toml``.

Home: ``OUTCROP_HOME`` if set, else the platform's user data directory
(``~/.local/share/outcrop`` on Linux). It holds ``outcrop.db`` (traces, the
usage ledger), ``models/`` (assembled model files) and, later, keys and
knowledge bases.

Project settings: the first ``outcrop.toml`` found in the current folder or
one of its parents, e.g.::

    default_model = "local:smollm2-135m"
    fallbacks = ["local:qwen2.5-coder-0.5b"]

    [aliases]
    fast = "local:smollm2-135m"

    [retry]
    max_attempts = 3
    timeout_s = 120
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, InvalidRequestError
from .observe.otel import TelemetrySettings

__all__ = [
    "CONFIG_FILENAME",
    "DEFAULT_MODEL",
    "RetrySettings",
    "Settings",
    "StorageSettings",
    "find_config",
    "home",
    "load_settings",
    "load_toml",
    "toml_line",
]

DEFAULT_MODEL = "local:smollm2-135m"
CONFIG_FILENAME = "outcrop.toml"


def home() -> Path:
    """outcrop's data directory, created on first use."""
    env = os.environ.get("OUTCROP_HOME")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("outcrop"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"outcrop's home {path} is not a folder; point OUTCROP_HOME at a folder"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"cannot create outcrop's home {path} (permission denied); set OUTCROP_HOME to a "
            "folder you can write"
        ) from None
    return path


class RetrySettings(BaseModel):
    """How the gateway retries a failing provider before moving to the next fallback."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=10, description="Tries per model.")
    initial_delay_s: float = Field(default=0.5, ge=0, le=60)
    max_delay_s: float = Field(default=8.0, ge=0, le=300)
    timeout_s: float = Field(default=300.0, gt=0, le=3600, description="Per-call timeout.")


class EndpointSettings(BaseModel):
    """A named remote endpoint: ``[endpoints.NAME]`` in outcrop.toml; models are ``NAME:model``.

    ``api = "openai"`` serves any OpenAI-compatible server (vLLM, TGI, Ollama,
    llama.cpp's server, OpenAI); ``api = "bedrock"`` serves Amazon Bedrock.
    """

    model_config = ConfigDict(extra="forbid")

    api: Literal["openai", "bedrock"] = "openai"
    base_url: str | None = Field(
        default=None, description="Server URL ending in /v1 (openai api); default: OpenAI's."
    )
    key_env: str | None = Field(
        default=None, description="Environment variable that holds the key (default NAME_API_KEY)."
    )
    key_required: bool | None = Field(
        default=None,
        description="Refuse to call without a key (default: only for OpenAI's own service).",
    )
    region: str | None = Field(default=None, description="AWS region (bedrock api).")
    profile: str | None = Field(default=None, description="AWS profile (bedrock api).")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    json_schema_mode: Literal["json_schema", "json_object"] = Field(
        default="json_schema",
        description=(
            "How to ask for JSON-schema output: OpenAI's json_schema (vLLM, Ollama, OpenAI), "
            "or json_object with a schema field (llama-cpp-python's server)."
        ),
    )


BUILTIN_ENDPOINTS: dict[str, EndpointSettings] = {
    "openai": EndpointSettings(api="openai", key_env="OPENAI_API_KEY", key_required=True),
    "bedrock": EndpointSettings(api="bedrock"),
}

_ENDPOINT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class StorageSettings(BaseModel):
    """Where outcrop keeps traces, the ledger, prompt versions, eval runs and API keys:
    ``[storage]`` in outcrop.toml; ``OUTCROP_DATABASE_URL``/``OUTCROP_REDIS_URL`` override it."""

    model_config = ConfigDict(extra="forbid")

    database_url: str | None = Field(
        default=None,
        description=(
            "postgresql://USER@HOST:5432/DATABASE, sqlite:///PATH or a file path "
            "(default: outcrop.db in outcrop's home)."
        ),
    )
    redis_url: str | None = Field(
        default=None, description="redis://HOST:6379/0: rate limits shared by server replicas."
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        from .observe.engines import check_database_url

        return None if value is None else check_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and value.partition("://")[0].lower() not in _REDIS_SCHEMES:
            raise ValueError(
                f"{value.partition('://')[0] + '://'!r} is not a Redis URL (accepted: "
                "redis://, rediss://, unix://), e.g. redis://127.0.0.1:6379/0"
            )
        return value


_REDIS_SCHEMES = ("redis", "rediss", "unix")


class _SettingsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_model: str = DEFAULT_MODEL
    fallbacks: list[str] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    endpoints: dict[str, EndpointSettings] = Field(default_factory=dict)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)  # OTLP export
    # Read by `outcrop serve` (outcrop.serve.config), which checks each table.
    agents: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Checked here against outcrop.guardrails.guard.GuardPolicy.
    guardrails: dict[str, Any] = Field(default_factory=dict)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    # Online evaluation and alerts; checked here by outcrop.observe.online.parse_monitor.
    monitor: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Settings:
    """Resolved settings: the file's values, then the environment's overrides."""

    default_model: str = DEFAULT_MODEL
    fallbacks: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    retry: RetrySettings = field(default_factory=RetrySettings)
    endpoints: dict[str, EndpointSettings] = field(default_factory=lambda: dict(BUILTIN_ENDPOINTS))
    path: Path | None = None
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)  # [telemetry]
    guardrails: dict[str, Any] = field(default_factory=dict)  # [guardrails], checked
    storage: StorageSettings = field(default_factory=StorageSettings)  # [storage], environment
    monitor: dict[str, Any] = field(default_factory=dict)  # [monitor], checked


def find_config(start: Path | None = None) -> Path | None:
    """The nearest ``outcrop.toml`` in ``start`` (default: the current folder) or a parent."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_FILENAME
        if path.is_file():
            return path
    return None


def toml_line(text: str, loc: list[str]) -> int | None:
    """The line of a field in TOML source: the last key of the location, inside its table.

    For a key that is missing, the line of the table that should hold it.
    """
    lines = text.splitlines()
    start, end = 0, len(lines)
    for i, part in enumerate(loc):
        if part.isdigit() and i > 0:
            header = re.compile(rf"^\s*\[\[\s*{re.escape(loc[i - 1])}\s*\]\]")
            hits = [n for n, line in enumerate(lines) if header.match(line)]
            if int(part) < len(hits):
                start = hits[int(part)]
                end = next(
                    (n for n in range(start + 1, len(lines)) if lines[n].lstrip().startswith("[")),
                    len(lines),
                )
    keys = [p for p in loc if not p.isdigit()]
    if not keys:
        return start + 1 if start else None
    key = keys[-1]
    pattern = re.compile(rf"^\s*(\[+\s*[\w.]*{re.escape(key)}\s*\]+|\"?{re.escape(key)}\"?\s*=)")
    for n in range(start, end):
        if pattern.match(lines[n]):
            return n + 1
    if start:
        return start + 1  # the key is missing from this table: point at the table
    for n, line in enumerate(lines):
        if pattern.match(line):
            return n + 1
    return None


def load_toml(text: str, path: Path) -> dict[str, Any]:
    """Parse TOML; a syntax error names the file and the line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError keeps the position only in its message.
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(match.group(1)) if match else max(1, len(text.splitlines()))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            f"not valid TOML: {reason}; fix that line (see https://toml.io for the syntax)",
            path=path,
            line=line,
        ) from None


def load_settings(path: Path | None = None, *, search: bool = True) -> Settings:
    """Read ``outcrop.toml`` (the given one, or the nearest) and apply environment overrides.

    ``OUTCROP_MODEL`` overrides the default model.
    """
    if path is None and search:
        path = find_config()
    settings = Settings()
    if path is not None:
        settings = _read(path)
    env_model = os.environ.get("OUTCROP_MODEL")
    if env_model:
        settings.default_model = env_model
    settings.storage = _storage_from_env(settings.storage)
    return settings


def _storage_in(storage: StorageSettings, folder: Path) -> StorageSettings:
    """A SQLite path in outcrop.toml is relative to the file's folder."""
    if storage.database_url is None:
        return storage
    from .observe.engines import relative_to

    return storage.model_copy(update={"database_url": relative_to(storage.database_url, folder)})


def _storage_from_env(storage: StorageSettings) -> StorageSettings:
    """``OUTCROP_DATABASE_URL`` and ``OUTCROP_REDIS_URL`` over ``[storage]``, checked alike."""
    update: dict[str, str] = {}
    for name, var in (("database_url", "OUTCROP_DATABASE_URL"), ("redis_url", "OUTCROP_REDIS_URL")):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                StorageSettings.model_validate({name: value})
            except ValidationError as exc:
                reason = exc.errors()[0].get("ctx", {}).get("error", exc.errors()[0]["msg"])
                raise ConfigError(f"{var}: {reason}") from None
            update[name] = value
    return storage.model_copy(update=update) if update else storage


def _read(path: Path) -> Settings:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the file ({exc.__class__.__name__}: {exc}); check its permissions "
            "and that it is UTF-8 text",
            path=path,
        ) from None
    raw = load_toml(text, path)
    try:
        parsed = _SettingsFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        line = toml_line(text, loc) if loc else None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(_SettingsFile.model_fields))
            if loc[0] == "storage":
                known = ", ".join(sorted(StorageSettings.model_fields))
            if loc[0] == "telemetry":
                known = ", ".join(sorted(TelemetrySettings.model_fields))
            msg = f"unknown setting (known settings: {known})"
        elif err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", msg))
        raise ConfigError(f"{'.'.join(loc)}: {msg}", path=path, line=line) from None
    for name in parsed.endpoints:
        if name == "local" or not _ENDPOINT_NAME.match(name):
            raise ConfigError(
                f"endpoints.{name}: an endpoint name is lowercase letters, digits, '-' or '_' "
                "(and not 'local'), e.g. [endpoints.vllm]",
                path=path,
                line=toml_line(text, ["endpoints", name]),
            )
    if parsed.guardrails:
        from .guardrails.guard import GuardPolicy

        try:
            GuardPolicy.from_mapping(parsed.guardrails)
        except InvalidRequestError as exc:
            loc = ["guardrails", *(exc.field or "").split(".")]
            raise ConfigError(str(exc), path=path, line=toml_line(text, loc)) from None
    if parsed.monitor:
        from .observe.online import parse_monitor

        parse_monitor(parsed.monitor, path=path, text=text)
    return Settings(
        default_model=parsed.default_model,
        fallbacks=list(parsed.fallbacks),
        aliases=dict(parsed.aliases),
        retry=parsed.retry,
        endpoints=_merge_endpoints(parsed),
        path=path,
        telemetry=parsed.telemetry,
        guardrails=dict(parsed.guardrails),
        storage=_storage_in(parsed.storage, path.parent),
        monitor=dict(parsed.monitor),
    )


def _merge_endpoints(parsed: _SettingsFile) -> dict[str, EndpointSettings]:
    """Built-in endpoints, with the file's settings laid over them key by key."""
    merged = dict(BUILTIN_ENDPOINTS)
    for name, endpoint in parsed.endpoints.items():
        base = merged.get(name)
        if base is not None:
            merged[name] = base.model_copy(update=endpoint.model_dump(exclude_unset=True))
        else:
            merged[name] = endpoint
    return merged


def render_default_config() -> str:
    """The outcrop.toml that ``outcrop init`` writes."""
    return f'''# outcrop project settings. Every key is optional.

# The model used when a call names none: a provider:model id or an alias below.
default_model = "{DEFAULT_MODEL}"

# Models tried in order when the default one fails (after its retries).
fallbacks = []

[aliases]
# Short names for model ids, e.g. `outcrop -m fast "question"`.
fast = "{DEFAULT_MODEL}"

# Remote models: any OpenAI-compatible server, or Amazon Bedrock. Models are NAME:model,
# e.g. `outcrop -m vllm:meta-llama/Llama-3.1-8B-Instruct "question"`.
# [endpoints.vllm]
# base_url = "http://127.0.0.1:8000/v1"
# key_env = "VLLM_API_KEY"        # optional; or `outcrop keys set vllm`
#
# [endpoints.bedrock]
# api = "bedrock"
# region = "us-east-1"

[retry]
max_attempts = 3       # tries per model on rate limits, server errors and timeouts
initial_delay_s = 0.5  # first back-off; doubles each try, with jitter
max_delay_s = 8.0
timeout_s = 300        # per call
'''

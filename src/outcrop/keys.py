"""Provider keys: where outcrop finds the key for an endpoint, and where it stores yours.

Order, first found wins:

1. explicit — ``api_key=`` passed in Python;
2. stored — ``outcrop keys set NAME`` writes ``keys.json`` in outcrop's home (mode 0600);
3. environment — the endpoint's ``key_env`` (``OPENAI_API_KEY`` for ``openai``),
   else ``NAME_API_KEY`` (``VLLM_API_KEY`` for ``[endpoints.vllm]``).

Key values are never logged or printed; ``outcrop keys list`` shows names only.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

from .config import EndpointSettings, home
from .errors import ConfigError, InvalidRequestError

__all__ = ["env_var_for", "keys_path", "list_keys", "remove_key", "resolve_key", "set_key"]

_lock = threading.Lock()
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def keys_path() -> Path:
    return home() / "keys.json"


def _read() -> dict[str, str]:
    path = keys_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read stored keys ({exc}); fix or delete the file and set the keys again "
            "with `outcrop keys set NAME`",
            path=path,
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(
            "stored keys must be a JSON object of name → key; fix or delete the file", path=path
        )
    return data


def _write(data: dict[str, str]) -> None:
    path = keys_path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)
    tmp.replace(path)  # atomic: the old file stays whole until the new one is complete


def set_key(name: str, value: str) -> None:
    """Store a key for an endpoint name."""
    if not _NAME.match(name):
        raise InvalidRequestError(
            f"Key name {name!r} is not valid: use the endpoint's name, e.g. openai or vllm",
            field="name",
        )
    value = value.strip()
    if not value:
        raise InvalidRequestError("The key is empty; paste the key when asked.", field="key")
    with _lock:
        data = _read()
        data[name] = value
        _write(data)


def remove_key(name: str) -> bool:
    with _lock:
        data = _read()
        if name not in data:
            return False
        del data[name]
        _write(data)
        return True


def list_keys() -> list[str]:
    return sorted(_read())


def env_var_for(name: str, endpoint: EndpointSettings | None = None) -> str:
    if endpoint is not None and endpoint.key_env:
        return endpoint.key_env
    return re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_API_KEY"


def resolve_key(
    name: str, endpoint: EndpointSettings | None = None, explicit: str | None = None
) -> str | None:
    """The key for endpoint ``name``, or None when none is set anywhere."""
    if explicit:
        return explicit
    stored = _read().get(name)
    if stored:
        return stored
    return os.environ.get(env_var_for(name, endpoint)) or None

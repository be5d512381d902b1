"""Every exception outcrop raises, in three families and one outage.

::

    OutcropError
    ├── UserError                  the caller's mistake; the message says how to fix it
    │   ├── ConfigError            outcrop.toml unreadable or malformed (file and line)
    │   ├── InvalidRequestError    a request or option out of bounds (names the field)
    │   ├── UnknownModelError      a model id outcrop cannot resolve ("Did you mean …?")
    │   ├── ModelFileError         a model file missing, unreadable or not a GGUF
    │   ├── ChecksumError          a model file whose sha256 is not the expected one
    │   ├── MissingKeyError        a remote endpoint needs a key and none is set
    │   ├── MissingExtraError      an optional part whose extra is not installed
    │   └── StoreError             the store's database cannot be opened (URL, no password)
    ├── ProviderError              the model provider failed; carries status, body, headers
    │   ├── ProviderTimeoutError   no answer within the per-call timeout
    │   └── AllModelsFailedError   every model of a fallback chain failed
    ├── StoreUnavailableError      the database stopped answering mid-call (retried once)
    └── ControlFlow                not a failure: a signal between outcrop's parts
        ├── ModelRetry             a tool or validator asks the model to try again
        └── StreamCancelled        the caller stopped a stream (Ctrl-C, disconnect)

Exceptions carry data and have no side effects: they are turned into
messages for people only at the CLI and HTTP boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "AllModelsFailedError",
    "ChecksumError",
    "ConfigError",
    "ControlFlow",
    "InvalidRequestError",
    "MissingExtraError",
    "MissingKeyError",
    "ModelFileError",
    "ModelRetry",
    "OutcropError",
    "ProviderError",
    "ProviderTimeoutError",
    "StoreError",
    "StoreUnavailableError",
    "StreamCancelled",
    "UnknownModelError",
    "UserError",
]


class OutcropError(Exception):
    """The root of every exception outcrop raises."""

    @property
    def message(self) -> str:
        return str(self)


class UserError(OutcropError):
    """The caller's mistake: bad input, configuration or environment."""


class ConfigError(UserError):
    """outcrop.toml (or another settings file) cannot be read or is malformed."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class InvalidRequestError(UserError):
    """A request or option failed validation. ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class UnknownModelError(UserError):
    """A model id that no provider, alias or installed model answers to."""

    def __init__(self, model_id: str, suggestions: Sequence[str] = (), *, hint: str = ""):
        self.model_id = model_id
        self.suggestions = list(suggestions)
        text = f"Unknown model {model_id!r}."
        if self.suggestions:
            text += " Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        text += hint or " Run `outcrop models list` to see the models you can use."
        super().__init__(text)


class ModelFileError(UserError):
    """A model file that is missing, unreadable, or not in the expected format."""

    def __init__(self, message: str, *, path: Path):
        self.path = path
        super().__init__(message)


class ChecksumError(UserError):
    """A model file whose content is not the one outcrop expects."""

    def __init__(self, path: Path, expected: str, actual: str):
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            "The file is damaged or not the model outcrop expects; delete it and run the "
            "command again to rebuild it, or reinstall the package that ships it."
        )


class MissingKeyError(UserError):
    """A remote endpoint needs a key and none was found."""

    def __init__(self, endpoint: str, env_var: str):
        self.endpoint = endpoint
        self.env_var = env_var
        super().__init__(
            f"No key for {endpoint}: set {env_var} or run `outcrop keys set {endpoint}`."
        )


class MissingExtraError(UserError):
    """An optional part of outcrop whose dependencies are not installed."""

    def __init__(self, what: str, extra: str):
        self.extra = extra
        super().__init__(f"{what} needs an optional extra: pip install 'outcrop[{extra}]'")


class ProviderError(OutcropError):
    """The model provider failed to answer.

    ``status_code`` is the HTTP status where there is one; ``retryable`` says
    whether the gateway may try the same model again (decided from the status
    code and exception type, never from message text).
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
        body: object | None = None,
        headers: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ):
        self.model = model
        self.status_code = status_code
        self.body = body
        self.headers = dict(headers or {})
        if retryable is None:
            retryable = status_code is not None and (status_code == 429 or status_code >= 500)
        self.retryable = retryable
        super().__init__(message)


class ProviderTimeoutError(ProviderError):
    """The provider did not answer within the per-call timeout."""

    def __init__(self, message: str, *, model: str | None = None):
        super().__init__(message, model=model, retryable=True)


class AllModelsFailedError(ProviderError):
    """Every model in a fallback chain failed; ``errors`` maps model id to its error."""

    def __init__(self, errors: Mapping[str, BaseException]):
        self.errors = dict(errors)
        lines = "; ".join(f"{model}: {err}" for model, err in self.errors.items())
        super().__init__(f"Every model in the fallback chain failed — {lines}", retryable=False)


class ControlFlow(OutcropError):
    """Signals between outcrop's parts; not failures."""


class ModelRetry(ControlFlow):
    """Raised by a tool or output validator to ask the model to try again."""


class StreamCancelled(ControlFlow):
    """The consumer of a stream stopped it before the model finished."""


class StoreError(UserError):
    """The store's database cannot be opened: unreachable, refused, or not outcrop's."""


class StoreUnavailableError(OutcropError):
    """The database stopped answering during a call, and a retry on a fresh connection
    failed too. Only that call fails; the next one tries again."""

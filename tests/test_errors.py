import inspect

import outcrop.errors as errors
from outcrop.errors import (
    ControlFlow,
    OutcropError,
    ProviderError,
    ProviderTimeoutError,
    UnknownModelError,
    UserError,
)


def test_every_exception_is_drawn_in_the_docstring():
    doc = errors.__doc__ or ""
    classes = [
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, OutcropError)
    ]
    assert len(classes) >= 14
    for name in classes:
        assert name in doc, f"{name} is missing from the tree in errors.py's docstring"


def test_three_families():
    assert issubclass(UnknownModelError, UserError)
    assert issubclass(ProviderTimeoutError, ProviderError)
    assert issubclass(errors.StreamCancelled, ControlFlow)
    assert not issubclass(ProviderError, UserError)


def test_retryable_is_decided_by_status_code():
    assert ProviderError("slow down", status_code=429).retryable
    assert ProviderError("boom", status_code=503).retryable
    assert not ProviderError("bad request", status_code=400).retryable
    # Message text never decides: a 400 that mentions 429 is still not retryable.
    assert not ProviderError("429 Too Many Requests", status_code=400).retryable
    assert ProviderTimeoutError("late").retryable


def test_provider_error_carries_status_body_and_headers():
    err = ProviderError("x", status_code=429, body={"error": "rate"}, headers={"Retry-After": "2"})
    assert err.status_code == 429
    assert err.body == {"error": "rate"}
    assert err.headers["Retry-After"] == "2"


def test_unknown_model_suggests():
    err = UnknownModelError("local:smolm2", ["local:smollm2-135m"])
    assert "Did you mean 'local:smollm2-135m'?" in str(err)

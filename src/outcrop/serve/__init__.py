"""Deploy: outcrop's models, knowledge bases and agents over an OpenAI-compatible HTTP API."""

from .keys import ApiKey, KeyLimits, create_key, list_api_keys

__all__ = ["ApiKey", "KeyLimits", "create_key", "list_api_keys"]

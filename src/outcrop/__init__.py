"""outcrop: build a generative-AI application through its whole lifecycle on one laptop.

The public surface is re-exported here; everything else is private.

    >>> import outcrop
    >>> gw = outcrop.Gateway()                      # doctest: +SKIP
    >>> gw.chat("What is a token?").text            # doctest: +SKIP
"""

from .catalog.sizing import SizeReport, size
from .config import DEFAULT_MODEL, Settings, home, load_settings
from .errors import (
    AllModelsFailedError,
    ChecksumError,
    ConfigError,
    ControlFlow,
    InvalidRequestError,
    MissingExtraError,
    MissingKeyError,
    ModelFileError,
    ModelRetry,
    OutcropError,
    ProviderError,
    ProviderTimeoutError,
    StreamCancelled,
    UnknownModelError,
    UserError,
)
from .gateway import ChatStream, Gateway
from .observe.store import Store, TraceRow
from .providers.base import ModelInfo, Provider
from .types import (
    ChatOptions,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    ImageResponse,
    Message,
    ResponseFormat,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "AllModelsFailedError",
    "ChatOptions",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "ChecksumError",
    "ConfigError",
    "ControlFlow",
    "EmbeddingResponse",
    "Gateway",
    "ImageResponse",
    "InvalidRequestError",
    "Message",
    "MissingExtraError",
    "MissingKeyError",
    "ModelFileError",
    "ModelInfo",
    "ModelRetry",
    "OutcropError",
    "Provider",
    "ProviderError",
    "ProviderTimeoutError",
    "ResponseFormat",
    "Settings",
    "SizeReport",
    "Store",
    "StreamCancelled",
    "StreamEvent",
    "TextPart",
    "ToolCall",
    "ToolSpec",
    "TraceRow",
    "UnknownModelError",
    "Usage",
    "UserError",
    "__version__",
    "home",
    "load_settings",
    "size",
]

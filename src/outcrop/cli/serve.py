"""``outcrop serve``: the OpenAI-compatible server (and, later, the playground)."""

from __future__ import annotations

import click

from ._common import Ctx, pass_ctx


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-queue",
    default=32,
    show_default=True,
    type=click.IntRange(0),
    help="Requests that may wait for a local model; more get 429.",
)
@click.option(
    "--queue-timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a request may wait for a local model; longer gets 503.",
)
@click.option(
    "--max-body-mb",
    default=4.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Body limit.",
)
@click.option(
    "--batch-slots",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Calls a local model serves at once (continuous batching when above 1).",
)
@click.option(
    "--require-keys", is_flag=True, help="Refuse requests without a key, even before one exists."
)
@pass_ctx
def serve(
    obj: Ctx,
    host: str,
    port: int,
    max_queue: int,
    queue_timeout: float,
    max_body_mb: float,
    batch_slots: int,
    require_keys: bool,
) -> None:
    """Serve outcrop's models over an OpenAI-compatible API (/v1), with keys and limits.

    \b
    Examples:
      outcrop serve                                   http://127.0.0.1:8000/v1
      outcrop keys create app --rpm 60 --tokens-per-day 200000
      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=oc-… python your_app.py
    """
    try:
        import uvicorn

        from ..serve.app import ServeConfig, create_app, tune_gc
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("outcrop serve", "serve") from None
    from ..serve.config import agents_from_settings

    gateway = obj.gateway
    if batch_slots > 1:
        enable = getattr(gateway.providers.get("local"), "enable_batching", None)
        if enable is not None:
            enable(batch_slots)
    config = ServeConfig(
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        queue_max=max_queue,
        queue_timeout=queue_timeout,
        local_slots=batch_slots,
        require_keys=require_keys,
        agents=agents_from_settings(gateway.settings),
    )
    app = create_app(gateway, config)
    keys = len(gateway.store.api_keys())
    click.echo(
        f"outcrop serving on http://{host}:{port}/v1  (API docs: /docs; "
        + (f"{keys} API key(s) active)" if keys else "no API keys yet: open to this machine)"),
        err=True,
    )
    tune_gc()
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=15)

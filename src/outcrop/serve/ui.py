"""The web UI of ``outcrop serve``: the playground, the monitor and the trace page.

Plain HTML, CSS and JavaScript modules shipped as package data under
``serve/static/`` — no build step, nothing fetched from elsewhere. The pages
are static; they read everything through the same ``/v1`` API as any client,
sending the API key the user pastes (kept in the browser's localStorage). The
pages themselves hold no data, so they are served without a key.

Every page is sent with a Content-Security-Policy that allows scripts, styles
and requests from this server only: text a model wrote is put in the page as
text, and even a mistake there could not run a script from elsewhere.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _static_files() -> dict[str, Traversable]:
    """The files under serve/static, by their path there ("monitor.js")."""
    found: dict[str, Traversable] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif not entry.name.startswith("."):
                found[prefix + entry.name] = entry

    folder = resources.files("outcrop.serve") / "static"
    if folder.is_dir():
        walk(folder, "")
    return found


# Looked up by name in this index, so a request cannot reach outside the folder.
_FILES = _static_files()


def _file(name: str, status: int = 200) -> Response:
    entry = _FILES.get(name)
    if entry is None:  # a build that left out the package data
        return Response(
            f"The web UI's files are missing from this installation of outcrop ({name} under "
            "outcrop/serve/static). Reinstall outcrop; the API under /v1 works without them.",
            500,
            media_type="text/plain; charset=utf-8",
        )
    media = (
        _TYPES.get(PurePosixPath(name).suffix)
        or mimetypes.guess_type(name)[0]
        or "application/octet-stream"
    )
    return Response(entry.read_bytes(), status, headers=_SECURITY_HEADERS, media_type=media)


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/playground", status_code=307)


@router.get("/ui")
@router.get("/ui/")
async def ui_home() -> RedirectResponse:
    return RedirectResponse("/ui/playground", status_code=307)


@router.get("/ui/playground")
async def playground() -> Response:
    """Chat with streaming, the prompt builder, side-by-side comparison, feedback."""
    return _file("playground.html")


@router.get("/ui/monitor")
async def monitor() -> Response:
    """Requests, latency, tokens, cost and errors over time, and the latest traces."""
    return _file("monitor.html")


@router.get("/ui/evals")
async def evals() -> Response:
    """Eval runs, a run's matrix and cases, two runs compared, the HTML report."""
    return _file("evals.html")


@router.get("/ui/knowledge")
async def knowledge() -> Response:
    """Knowledge bases: upload documents, ask with cited sources, search."""
    return _file("knowledge.html")


@router.get("/ui/models")
async def models() -> Response:
    """The model catalog, the recommender and the sizing calculator."""
    return _file("models.html")


@router.get("/ui/trace/{trace_id}")
async def trace(trace_id: str) -> Response:
    """One call; the page reads its id from the address and asks /v1/traces/{id}."""
    return _file("trace.html")


@router.get("/ui/static/{name:path}")
async def static(name: str) -> Response:
    if name not in _FILES:
        return Response(
            f"No such file: {name}",
            404,
            headers=_SECURITY_HEADERS,
            media_type="text/plain; charset=utf-8",
        )
    return _file(name)


@router.get("/ui/{rest:path}")
async def unknown(rest: str) -> Response:
    """Any other address under /ui: a page that says so and links to the real ones."""
    return _file("404.html", status=404)

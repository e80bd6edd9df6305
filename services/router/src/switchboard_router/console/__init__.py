"""The reference agent console: three static files served at ``GET /console``.

The page holds no customer data: it is the same for everyone and public. Every data call
it makes carries the agent token pasted into it (``Authorization: Bearer``), against the
router's own read and write API and the agent's event stream. See
``services/router/README.md`` ("Agent console").

The script and style sheet are addressed with a version taken from their content
(``?v=<hash>``), so they may be cached for a day while the page itself is revalidated on
every load (an unchanged file answers ``304`` to its ``ETag``): a new release is picked up
at once, never half old and half new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request, Response, status

#: Self only: no inline script or style, no other origin, not framed by anyone.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_CACHE = "no-cache"
#: The assets' URLs change with their content (``?v=``).
ASSET_CACHE = "public, max-age=86400"

_MEDIA_TYPES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def _read(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def _static(text: str, media_type: str, cache: str) -> Callable[[Request], Response]:
    """Answers with the file, or ``304`` when the browser already holds this version."""
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:16] + '"'
    headers = {
        "Cache-Control": cache,
        "ETag": etag,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    def answer(request: Request) -> Response:
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(text, media_type=media_type, headers=headers)

    return answer


def console_router() -> APIRouter:
    """``GET /console`` and its two assets (not part of the API document)."""
    router = APIRouter(include_in_schema=False)
    assets = {name: _read(name) for name in _MEDIA_TYPES}
    version = hashlib.sha256("".join(assets.values()).encode()).hexdigest()[:12]
    page = _static(
        _read("index.html").replace("{version}", version), "text/html; charset=utf-8", PAGE_CACHE
    )
    served = {name: _static(text, _MEDIA_TYPES[name], ASSET_CACHE) for name, text in assets.items()}

    @router.api_route("/console", methods=["GET", "HEAD"])
    async def console_page(request: Request) -> Response:
        return page(request)

    @router.api_route("/console/{name}", methods=["GET", "HEAD"])
    async def console_asset(name: str, request: Request) -> Response:
        if name not in served:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return served[name](request)

    return router

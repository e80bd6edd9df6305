"""webchat's HTTP routes: the widget's script, the demo page and the socket."""

from __future__ import annotations

import html
from importlib.resources import files

from fastapi import APIRouter, Response, WebSocket

from switchboard_webchat.chat import ChatSockets

#: The widget changes with releases; a short cache keeps shops' pages fast yet current.
WIDGET_CACHE = "public, max-age=300"


def _static(name: str) -> str:
    return files("switchboard_webchat").joinpath("static", name).read_text(encoding="utf-8")


def chat_router(sockets: ChatSockets) -> APIRouter:
    """``GET /chat/widget.js``, ``GET /chat/demo`` and the WebSocket ``/chat/socket``."""
    router = APIRouter()
    widget = _static("widget.js")
    demo = _static("demo.html").replace("{site}", html.escape(sockets.policy.site))

    @router.get("/chat/widget.js", summary="The chat widget a shop embeds")
    async def widget_js() -> Response:
        return Response(
            widget,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": WIDGET_CACHE, "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/chat/demo", summary="A page that embeds the widget, for trying it")
    async def demo_page() -> Response:
        return Response(demo, media_type="text/html; charset=utf-8")

    @router.websocket("/chat/socket")
    async def chat_socket(socket: WebSocket) -> None:
        await sockets.serve(socket)

    return router

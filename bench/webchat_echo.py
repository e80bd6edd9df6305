"""The web chat benchmark's bare baseline: a WebSocket server on the web chat's framework.

FastAPI on uvicorn through ``switchboard_common.http`` (the services' server
configuration, one process), serving the widget's socket path and protocol with nothing
behind it: ``hello`` is answered ``welcome`` and each ``send`` is acknowledged at once —
no Kafka, no database, no origin check, no rate limit. Started as the service is, with
its port in ``WEBCHAT_HTTP_PORT`` (``python -m bench.webchat_echo``).
"""

from __future__ import annotations

import asyncio
import json
import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from switchboard_common.http import http_server


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/chat/socket")
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        seq = 0
        try:
            while True:
                frame = json.loads(await websocket.receive_text())
                if frame.get("type") == "hello":
                    welcome = {"type": "welcome", "token": None, "visitor": "echo"}
                    await websocket.send_text(json.dumps(welcome))
                elif frame.get("type") == "send":
                    seq += 1
                    ack = {
                        "type": "ack",
                        "client_id": frame["client_id"],
                        "message_id": frame["client_id"],
                        "seq": seq,
                    }
                    await websocket.send_text(json.dumps(ack))
        except WebSocketDisconnect:
            return

    @app.get("/readyz")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return app


def main() -> None:
    server = http_server(echo_app(), host="127.0.0.1", port=int(os.environ["WEBCHAT_HTTP_PORT"]))
    asyncio.run(server.serve())


if __name__ == "__main__":
    main()

"""The workspace benchmark's bare baseline: the floor of "answer once Kafka has it".

FastAPI on uvicorn through ``switchboard_common.http`` (the services' server
configuration, one process), serving the two routes the benchmark drives with nothing
else behind them:

- ``POST /conversations/{conversation_id}/notes`` parses the same body as the router
  (``request_id``, ``text``), publishes a JSON value of the same fields and size as the
  router's ``support.note.added`` (with the same CloudEvents header names) to
  ``WORKSPACE_BASELINE_TOPIC`` with aiokafka, ``acks=all`` and the idempotent producer
  as the services configure it, and answers 202 once Kafka acknowledged it — no token
  check, no request claim, no conversation lookup;
- ``GET /agents/{agent_id}/conversations`` answers a static JSON body read at start from
  the file ``WORKSPACE_BASELINE_INBOX`` (the router's own answer, captured by the
  benchmark), so the same bytes travel — no token check, no database.

Started as a service is, with its port in ``WORKSPACE_BASELINE_HTTP_PORT``
(``python -m bench.workspace_baseline``).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from switchboard_common.http import http_server

#: The services' producer settings (``switchboard_common.kafka.make_broker``'s defaults).
PRODUCER = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "compression_type": "lz4",
    "max_batch_size": 256 * 1024,
}


class Note(BaseModel):
    request_id: str
    text: str


def baseline_app(producer: AIOKafkaProducer, topic: str, inbox: bytes) -> FastAPI:
    app = FastAPI()

    @app.post("/conversations/{conversation_id}/notes", status_code=status.HTTP_202_ACCEPTED)
    async def note(conversation_id: str, body: Note) -> dict[str, str]:
        at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        value = {
            "note_id": body.request_id,
            "conversation_id": conversation_id,
            "agent_id": "agent-00",
            "text": body.text,
            "at": at,
        }
        event_id = f"workspace:{body.request_id}"
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id.encode()),
            ("ce_type", b"support.note.added"),
            ("ce_source", b"/router"),
            ("ce_time", at.encode()),
            ("content-type", b"application/json"),
        ]
        await producer.send_and_wait(
            topic,
            json.dumps(value, separators=(",", ":")).encode(),
            key=conversation_id.encode(),
            headers=headers,
        )
        return {
            "request_id": body.request_id,
            "event_type": "support.note.added",
            "event_id": event_id,
            "conversation_id": conversation_id,
        }

    @app.get("/agents/{agent_id}/conversations")
    async def conversations() -> Response:
        return Response(inbox, media_type="application/json")

    @app.get("/readyz")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return app


async def serve(inbox: bytes) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        **PRODUCER,
    )
    await producer.start()
    try:
        app = baseline_app(producer, os.environ["WORKSPACE_BASELINE_TOPIC"], inbox)
        port = int(os.environ["WORKSPACE_BASELINE_HTTP_PORT"])
        await http_server(app, host="127.0.0.1", port=port).serve()
    finally:
        await producer.stop()


def main() -> None:
    asyncio.run(serve(Path(os.environ["WORKSPACE_BASELINE_INBOX"]).read_bytes()))


if __name__ == "__main__":
    main()

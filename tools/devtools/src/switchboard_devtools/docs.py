"""Generated integrator documents (``make docs``; ``make docs-check`` in ``make test``).

- ``docs/asyncapi.yaml`` — AsyncAPI 3.0 of every Kafka topic: address, key, partitions,
  retention, the CloudEvents headers and the JSON Schema of every payload (the
  contract's pydantic models, so payloads are real even where a subscriber takes raw
  batches), plus one ``receive`` operation per consumer of each service, taken from the
  services' FastStream brokers (consumer group, title, description), and the ``send``
  operations of each producer as CONTRACT.md fixes them (publishers are not declared
  on the brokers: ``EventPublisher`` sends through ``broker.publish``).
- ``docs/openapi/ingest-social.json`` (webhooks) and ``docs/openapi/router.json`` (read
  API) — the OpenAPI documents of the FastAPI apps.

Each service is assembled with its own ``build`` function from settings that need no
server (clients connect lazily), so the documents follow the code. ``--check`` compares
instead of writing and exits 1 when a document is out of date.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from faststream.kafka import KafkaBroker
from pydantic.json_schema import models_json_schema

from switchboard_common.contract.events import ContractModel
from switchboard_common.contract.topics import (
    AGENT_EVENTS,
    ALL_TOPICS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    CUSTOMER_MESSAGES,
    DEADLETTER,
    INBOUND,
    INTERNAL_TOPICS,
    SLA_EVENTS,
)
from switchboard_common.schemas import sync_generated

#: Who publishes on each topic (CONTRACT.md; "helpdesk-frontend" is the integrator).
PRODUCERS: dict[str, tuple[str, ...]] = {
    INBOUND: ("ingest-email", "ingest-social"),
    ASSIGNMENTS: ("router",),
    AGENT_EVENTS: ("helpdesk-frontend",),
    CONVERSATION_EVENTS: ("helpdesk-frontend",),
    SLA_EVENTS: ("sla-monitor",),
    DEADLETTER: ("router", "sla-monitor"),  # the services that consume (and dead-letter)
    CUSTOMER_MESSAGES: ("router",),
    CONVERSATION_ACTIVITY: ("router",),
}
#: Who else consumes a public topic (besides the services, whose consumers are read
#: from their brokers).
FRONTEND_CONSUMES = (ASSIGNMENTS, SLA_EVENTS)

CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 binary-mode attributes, as Kafka record headers (UTF-8).",
    "required": ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type"],
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {
            "type": "string",
            "description": "Unique per event; a re-published event keeps its id "
            "(deduplicate on it).",
        },
        "ce_type": {"type": "string", "description": "The event type; selects the payload schema."},
        "ce_source": {"type": "string", "description": "The producer, e.g. /switchboard/router."},
        "ce_time": {"type": "string", "format": "date-time", "description": "RFC 3339."},
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def service_brokers() -> dict[str, KafkaBroker]:
    """Each service's FastStream broker, assembled as the service assembles it."""
    from switchboard_ingest_email.app import build as build_email
    from switchboard_ingest_email.settings import IngestEmailSettings
    from switchboard_ingest_social.app import build as build_social
    from switchboard_ingest_social.settings import IngestSocialSettings
    from switchboard_router.app import build as build_router
    from switchboard_router.settings import RouterSettings
    from switchboard_sla_monitor.app import build as build_sla
    from switchboard_sla_monitor.settings import SlaMonitorSettings

    brokers: dict[str, KafkaBroker] = {}
    email = build_email(IngestEmailSettings.load(support_email_domains="support.example.com"))
    social, _ = build_social(IngestSocialSettings.load(environment="dev"))
    router, _, _ = build_router(RouterSettings.load(replica_id="<replica>"))
    sla, _ = build_sla(SlaMonitorSettings.load())
    for name, runtime in (
        ("ingest-email", email.runtime),
        ("ingest-social", social),
        ("router", router),
        ("sla-monitor", sla),
    ):
        assert runtime.broker is not None
        brokers[name] = runtime.broker
    return brokers


def consumers(brokers: dict[str, KafkaBroker]) -> list[dict[str, Any]]:
    """Every subscriber of every service: topics, consumer group, title, description."""
    found = []
    for service, broker in brokers.items():
        for subscriber in broker.subscribers:
            # Kafka subscribers carry these; the generic type FastStream declares does not.
            group: str = getattr(subscriber, "group_id", None) or ""
            topics = getattr(subscriber, "topics", ())
            config = subscriber.specification.config
            found.append(
                {
                    "service": service,
                    "title": getattr(config, "title_", None) or group,
                    "description": getattr(config, "description_", None) or "",
                    "group": group,
                    "topics": [topic.name for topic in topics],
                }
            )
    return found


def payload_schemas() -> dict[str, Any]:
    models: list[type[ContractModel]] = []
    for spec in ALL_TOPICS:
        models += [m for m in spec.events if m not in models]
    _, definitions = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = definitions.get("$defs", {})
    return dict(sorted(schemas.items()))


def channel_id(topic: str) -> str:
    return topic.replace(".", "-")


def asyncapi(brokers: dict[str, KafkaBroker]) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in ALL_TOPICS:
        internal = spec in INTERNAL_TOPICS
        for ce_type, model in sorted(spec.types.items()):
            messages[ce_type] = {
                "name": ce_type,
                "title": model.__name__,
                "summary": (model.__doc__ or "").strip().splitlines()[0],
                "contentType": "application/json",
                "headers": {
                    **CLOUDEVENTS_HEADERS,
                    "properties": {
                        **CLOUDEVENTS_HEADERS["properties"],
                        "ce_type": {"type": "string", "const": ce_type},
                    },
                },
                "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
                "bindings": {
                    "kafka": {
                        "key": {"type": "string", "description": spec.key},
                        "bindingVersion": "0.5.0",
                    }
                },
            }
        channels[channel_id(spec.name)] = {
            "address": spec.name,
            "title": spec.name,
            "description": (
                f"{spec.description} Key: {spec.key}."
                + (
                    " Internal to Switchboard's services: integrators must not use it."
                    if internal
                    else ""
                )
                + " Deployed as SWITCHBOARD_TOPIC_PREFIX + this name."
            ),
            "messages": {
                ce_type: {"$ref": f"#/components/messages/{ce_type}"}
                for ce_type in sorted(spec.types)
            },
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "topicConfiguration": {"retention.ms": spec.retention_ms},
                    "bindingVersion": "0.5.0",
                }
            },
        }
    operations: dict[str, Any] = {}
    for topic, producers in PRODUCERS.items():
        for producer in producers:
            operations[f"{producer}.send.{channel_id(topic)}"] = {
                "action": "send",
                "title": f"{producer} publishes on {topic}",
                "channel": {"$ref": f"#/channels/{channel_id(topic)}"},
            }
    for consumer in consumers(brokers):
        for topic in consumer["topics"]:
            name = f"{consumer['service']}.{consumer['title']}.{channel_id(topic)}"
            operations[name] = {
                "action": "receive",
                "title": f"{consumer['service']}: {consumer['title']}",
                "description": consumer["description"],
                "channel": {"$ref": f"#/channels/{channel_id(topic)}"},
                "bindings": {
                    "kafka": {
                        "groupId": {"type": "string", "const": consumer["group"]},
                        "bindingVersion": "0.5.0",
                    }
                },
            }
    for topic in FRONTEND_CONSUMES:
        operations[f"helpdesk-frontend.receive.{channel_id(topic)}"] = {
            "action": "receive",
            "title": f"helpdesk frontends read {topic}",
            "description": "Your own consumer group; see docs/integration.md.",
            "channel": {"$ref": f"#/channels/{channel_id(topic)}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchboard events",
            "version": "1.0.0",
            "description": (
                "Every Kafka topic of Switchboard (CONTRACT.md v1): keys, CloudEvents headers "
                "and payload schemas, who publishes and who consumes. Generated by "
                "`make docs` from the contract models and the services' FastStream brokers; "
                "do not edit. Integrators start with docs/integration.md."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": (
                    "Your Kafka cluster (KAFKA_BOOTSTRAP_SERVERS); PLAINTEXT, SSL, SASL_PLAINTEXT "
                    "or SASL_SSL with PLAIN or SCRAM, see docs/operations.md."
                ),
            }
        },
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {"messages": dict(sorted(messages.items())), "schemas": payload_schemas()},
    }


def openapi_documents() -> dict[str, dict[str, Any]]:
    from switchboard_ingest_social.app import build as build_social
    from switchboard_ingest_social.settings import IngestSocialSettings
    from switchboard_router.app import build as build_router
    from switchboard_router.settings import RouterSettings

    social, _ = build_social(IngestSocialSettings.load(environment="dev"))
    router, _, _ = build_router(RouterSettings.load(replica_id="<replica>"))
    return {"ingest-social": social.http_app.openapi(), "router": router.http_app.openapi()}


def render() -> dict[str, str]:
    """Relative path -> content of every generated document."""
    files = {
        "asyncapi.yaml": "# Generated by `make docs` (switchboard_devtools.docs): do not edit.\n"
        + yaml.safe_dump(
            asyncapi(service_brokers()), sort_keys=False, allow_unicode=True, width=100
        )
    }
    for name, document in openapi_documents().items():
        files[f"openapi/{name}.json"] = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard-docs", description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs"))
    parser.add_argument("--check", action="store_true", help="fail if documents are out of date")
    args = parser.parse_args(argv)
    return sync_generated(
        render(), args.out, check=args.check, what="generated docs", regenerate="make docs"
    )


if __name__ == "__main__":
    raise SystemExit(main())

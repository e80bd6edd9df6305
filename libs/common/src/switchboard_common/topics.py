"""Create the contract topics on a cluster (``switchboard-topics create``).

Used by local provisioning, the docker-compose init job and tests (with a prefix).
Creating a topic that exists is not an error; partitions are never reduced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from switchboard_common.contract.topics import ALL_TOPICS, TopicNames, TopicSpec


async def create_topics(
    bootstrap_servers: str,
    *,
    prefix: str = "",
    partitions: int | None = None,
    replication_factor: int = 1,
    specs: Sequence[TopicSpec] = ALL_TOPICS,
    timeout_ms: int = 30000,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    ``client_options`` go to the admin client (security: see
    ``kafka.aiokafka_security_options``).
    """
    names = TopicNames(prefix)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        **dict(client_options or {}),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                names(spec.name),
                num_partitions=partitions or spec.partitions,
                replication_factor=replication_factor,
                topic_configs={"retention.ms": str(spec.retention_ms)},
            )
            for spec in specs
            if names(spec.name) not in existing
        ]
        if not wanted:
            return []
        # A concurrent creator may win the race: the topic then exists, as wanted.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(wanted, timeout_ms=timeout_ms)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def delete_topics(
    bootstrap_servers: str, *, prefix: str, client_options: Mapping[str, Any] | None = None
) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a test's, a benchmark's or a
    stack's); return the names deleted. An empty prefix is refused: it names every topic.
    """
    if not prefix:
        raise ValueError("an empty prefix would delete every topic on the cluster")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **dict(client_options or {}))
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create the contract topics")
    create.add_argument(
        "--bootstrap-servers",
        default=None,
        help="default: KAFKA_BOOTSTRAP_SERVERS (security from KAFKA_SECURITY_PROTOCOL & co.)",
    )
    create.add_argument("--prefix", default=None, help="default: SWITCHBOARD_TOPIC_PREFIX")
    create.add_argument("--partitions", type=int, default=None)
    create.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args(argv)
    # The same environment as the services: bootstrap servers, SASL/TLS, topic prefix.
    from switchboard_common.kafka import aiokafka_security_options
    from switchboard_common.settings import ServiceSettings, SettingsError

    try:
        settings = ServiceSettings.load()
        options = aiokafka_security_options(settings)
    except (SettingsError, ValueError, OSError) as error:
        parser.error(str(error))
    created = asyncio.run(
        create_topics(
            args.bootstrap_servers or settings.kafka_bootstrap_servers,
            prefix=settings.topic_prefix if args.prefix is None else args.prefix,
            partitions=args.partitions,
            replication_factor=args.replication_factor,
            client_options=options,
        )
    )
    print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

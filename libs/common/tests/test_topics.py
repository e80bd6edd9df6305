"""Creating and deleting the contract topics on a real broker."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.kafka_probe import unique
from switchboard_devtools.frontend import eventually


async def _listed(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.integration
async def test_deleting_by_prefix_removes_those_topics_and_no_other(infra: Infra) -> None:
    doomed, kept = f"{unique('d')}.", f"{unique('k')}."
    created = await create_topics(infra.kafka_bootstrap, prefix=doomed, partitions=1)
    await create_topics(infra.kafka_bootstrap, prefix=kept, partitions=1)
    try:
        deleted = await delete_topics(infra.kafka_bootstrap, prefix=doomed)
        assert sorted(deleted) == sorted(created)

        async def gone() -> set[str] | None:  # deletion reaches the metadata shortly after
            listed = await _listed(infra.kafka_bootstrap)
            return None if any(t.startswith(doomed) for t in listed) else listed

        listed = await eventually(gone, timeout=30, what="the prefixed topics to be gone")
        assert any(t.startswith(kept) for t in listed)
    finally:
        await delete_topics(infra.kafka_bootstrap, prefix=kept)


@pytest.mark.unit
async def test_an_empty_prefix_is_refused_rather_than_deleting_every_topic() -> None:
    with pytest.raises(ValueError, match="every topic"):
        await delete_topics("127.0.0.1:1", prefix="")

"""The bare essential pipeline: the least work any router must do, as a baseline.

One process consumes ``support.inbound.v1``, writes each batch's messages to the
database with one ``insert_many`` and produces one record per message to
``support.assignments.v1``, committing after the acks: the passthrough loop
(``passthrough.py``) with that one write per batch added. The pipeline benchmarks run
it beside the router in the same run; the router's targets are ratios against it.

    # from the repository root (``bench.passthrough`` is imported as a module)
    uv run python -m bench.essential --bootstrap 127.0.0.1:9092 --prefix p1. \
        --mongodb-url mongodb://127.0.0.1:27017 --database bench_essential

``--writes N`` stores each batch N times, one bulk write after another, each in a
collection of its own: the same pipeline with the further round trips a router keeping
its guarantees makes per batch (``floor.py`` measures what each one costs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bench.passthrough import arguments, serve
from pymongo import AsyncMongoClient

from switchboard_common.mongo import Document
from switchboard_devkit.running.baselines import insert_records


async def main(
    bootstrap: str, prefix: str, mongodb_url: str, database: str, writes: int = 1
) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url, tz_aware=True)
    names = ["messages", *(f"messages_{n}" for n in range(2, writes + 1))]
    collections = [client[database][name] for name in names]

    async def store(records: Sequence[Any]) -> None:
        # One after another, as a router's dependent writes are (FerretDB runs a
        # database's writes one at a time anyway).
        for collection in collections:
            await insert_records(collection, records)

    try:
        await serve("essential", bootstrap, prefix, store=store)
    finally:
        await client.close()


if __name__ == "__main__":
    parser = arguments("the bare essential pipeline as its own process")
    parser.add_argument("--mongodb-url", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--writes", type=int, default=1, help="bulk writes per batch")
    options = parser.parse_args()
    asyncio.run(
        main(
            options.bootstrap,
            options.prefix,
            options.mongodb_url,
            options.database,
            options.writes,
        )
    )

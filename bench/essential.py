"""The bare essential pipeline: the least work any router must do, as a baseline.

One process consumes ``support.inbound.v1``, writes each batch's messages to the
database with one ``insert_many`` and produces one record per message to
``support.assignments.v1``, committing after the acks: the passthrough loop
(``passthrough.py``) with that one write per batch added. The pipeline benchmarks run
it beside the router in the same run; the router's targets are ratios against it.

    # from the repository root (``bench.passthrough`` is imported as a module)
    uv run python -m bench.essential --bootstrap 127.0.0.1:9092 --prefix p1. \
        --mongodb-url mongodb://127.0.0.1:27017 --database bench_essential
"""

from __future__ import annotations

import asyncio
import functools

from bench.passthrough import Store, arguments, serve
from pymongo import AsyncMongoClient

from switchboard_common.mongo import Document
from switchboard_devkit.running.baselines import insert_records


async def main(bootstrap: str, prefix: str, mongodb_url: str, database: str) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        store: Store = functools.partial(insert_records, client[database]["messages"])
        await serve("essential", bootstrap, prefix, store=store)
    finally:
        await client.close()


if __name__ == "__main__":
    parser = arguments("the bare essential pipeline as its own process")
    parser.add_argument("--mongodb-url", required=True)
    parser.add_argument("--database", required=True)
    options = parser.parse_args()
    asyncio.run(main(options.bootstrap, options.prefix, options.mongodb_url, options.database))

"""The real eventsource-py PostgreSQL event store appending and reading for one tenant through
evshift for as long as a migration of that tenant runs.

Usage:
    eventsource_during_migration.py PROXY_URL TENANT STOP_FILE OUT_FILE

PROXY_URL is evshift (`postgresql+asyncpg://app@127.0.0.1:PORT/postgres`). Until STOP_FILE
exists, it appends to a few streams of TENANT with exact expected versions, reads each stream
back after every append (every event it appended must be there, in version order) and pages
through read_all filtered by the tenant and its category. Any exception is an error. It then writes
`{"appended": [event ids...], "rounds": N}` to OUT_FILE, prints "ok" and exits 0; on an error
it prints it and exits 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
import uuid

from sqlalchemy.ext.asyncio import create_async_engine

from eventsource import (
    EventRegistry,
    ExpectedVersion,
    FeedReadOptions,
    PostgreSQLEventStore,
    StreamId,
    TenantDomainEvent,
)

# Past this the run fails rather than hang the test.
OVERALL_TIMEOUT_S = 240
STREAMS = 3
# Its own category: the tenant's other history is not deserialised by this script.
ORDER = "Invoice"


class ItemAdded(TenantDomainEvent):
    sku: str
    quantity: int


REGISTRY = EventRegistry([ItemAdded])


class CheckFailed(Exception):
    """A result differs from what the library must return."""


async def collect(it) -> list:
    return [x async for x in it]


async def run(proxy_url: str, tenant: uuid.UUID, stop_file: str, out_file: str) -> None:
    engine = create_async_engine(proxy_url)
    store = PostgreSQLEventStore(engine, REGISTRY, create_schema=False)
    streams = {StreamId(uuid.uuid4(), ORDER): [] for _ in range(STREAMS)}
    appended: list[str] = []
    rounds = 0
    try:
        while not os.path.exists(stop_file):
            rounds += 1
            for stream, ids in streams.items():
                event = ItemAdded(
                    sku=f"sku-{rounds}",
                    quantity=rounds,
                    aggregate_id=stream.aggregate_id,
                    aggregate_type=ORDER,
                    tenant_id=tenant,
                    actor_id="migration-test",
                )
                expected = ExpectedVersion.exact(len(ids)) if ids else ExpectedVersion.no_stream()
                await store.append(stream, [event], expected)
                ids.append(event.event_id)
                appended.append(str(event.event_id))
                got = [e.event.event_id for e in await collect(store.read_stream(stream))]
                if got != ids:
                    raise CheckFailed(f"read_stream {stream.render()}: {got} != {ids}")
            page = await collect(
                store.read_all(
                    None, FeedReadOptions(tenant_id=tenant, aggregate_type=ORDER, limit=100)
                )
            )
            if any(e.event.tenant_id != tenant for e in page):
                raise CheckFailed("read_all(tenant) returned another tenant's event")
    finally:
        await engine.dispose()
    with open(out_file, "w") as out:
        json.dump({"appended": appended, "rounds": rounds}, out)


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    proxy_url, tenant, stop_file, out_file = argv[1:]
    try:
        asyncio.run(
            asyncio.wait_for(
                run(proxy_url, uuid.UUID(tenant), stop_file, out_file), OVERALL_TIMEOUT_S
            )
        )
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

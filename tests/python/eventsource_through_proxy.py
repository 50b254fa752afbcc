"""The real eventsource-py PostgreSQL event store (SQLAlchemy async + asyncpg) through evshift,
for two tenants that live on two different stores.

Usage:
    eventsource_through_proxy.py PROXY_URL SHARED_URL DEDICATED_URL SHARED_TENANT DEDICATED_TENANT

PROXY_URL is evshift (`postgresql+asyncpg://app@127.0.0.1:PORT/postgres`; a plain
`postgres://` URL is accepted too). SHARED_URL and DEDICATED_URL reach the two stores directly.
The eventsource schema must already be applied on both stores (the store runs with
create_schema=False).

For each tenant, through the proxy with the library's API: appends to new and existing
aggregates with expected versions, optimistic-concurrency conflicts (detected by the version
check, and by the store's unique constraint when a competing writer, a plain asyncpg connection
through the proxy, takes the version first), a duplicate event id, stream reads,
get_stream_version, event_exists, read_all filtered by tenant (whole and paged the way a
catch-up subscription pages) and read_category. Then, directly on each store: every event of a
tenant is on its own store and none is on the other. Each tenant is first served by an engine of
its own (so asyncpg prepares every statement for that tenant), then one engine reads both.

With SHARED_URL equal to DEDICATED_URL (one plain server, no proxy in between) only the library
round trip and the presence of the events are checked.

Prints "ok" and exits 0 on success; exits 1 with a message naming the failed check otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from eventsource import (
    CategoryReadOptions,
    DuplicateEventError,
    EventRegistry,
    ExpectedVersion,
    FeedReadOptions,
    OptimisticLockError,
    PostgreSQLEventStore,
    StreamId,
    TenantDomainEvent,
)
from eventsource.ports import ReadDirection, StreamReadOptions

# The whole run, proxy and stores included. A routing bug that leaves a statement waiting must
# end as a failure, not as a hung test.
OVERALL_TIMEOUT_S = 120
# How long the concurrent-append check waits for the library's INSERT to block on the
# competitor's uncommitted row.
BLOCK_WAIT_S = 15

ORDER = "Order"
CUSTOMER = "Customer"


class CheckFailed(Exception):
    """A result differs from what the library or the stores must return."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# ---------------------------------------------------------------------------------------------
# The application's events
# ---------------------------------------------------------------------------------------------


class OrderPlaced(TenantDomainEvent):
    amount: int


class ItemAdded(TenantDomainEvent):
    sku: str
    quantity: int


class OrderShipped(TenantDomainEvent):
    carrier: str


class CustomerRegistered(TenantDomainEvent):
    email: str


REGISTRY = EventRegistry([OrderPlaced, ItemAdded, OrderShipped, CustomerRegistered])


# ---------------------------------------------------------------------------------------------
# What one tenant appended
# ---------------------------------------------------------------------------------------------


@dataclass
class TenantLog:
    """Every event a tenant's appends stored, per stream, in version order."""

    name: str
    tenant: uuid.UUID
    home: str
    # Store name -> direct URL, the tenant's own store included.
    stores: dict[str, str]
    streams: dict[StreamId, list[uuid.UUID]] = field(default_factory=dict)
    rejected: list[uuid.UUID] = field(default_factory=list)

    def record(self, stream: StreamId, events: list[TenantDomainEvent]) -> None:
        self.streams.setdefault(stream, []).extend(e.event_id for e in events)

    def all_ids(self) -> set[uuid.UUID]:
        return {i for ids in self.streams.values() for i in ids}

    @property
    def home_url(self) -> str:
        return self.stores[self.home]

    def one_server(self) -> bool:
        return len(set(self.stores.values())) == 1


def order_event(kind: type, tenant: uuid.UUID, aggregate: uuid.UUID, n: int) -> TenantDomainEvent:
    common = {"aggregate_id": aggregate, "aggregate_type": ORDER, "tenant_id": tenant}
    common["actor_id"] = "eventsource-test"
    if kind is OrderPlaced:
        return OrderPlaced(amount=100 * n, **common)
    if kind is ItemAdded:
        return ItemAdded(sku=f"sku-{n}", quantity=n, **common)
    return OrderShipped(carrier=f"carrier-{n}", **common)


def customer_event(tenant: uuid.UUID, aggregate: uuid.UUID, n: int) -> CustomerRegistered:
    return CustomerRegistered(
        email=f"c{n}@example.test",
        aggregate_id=aggregate,
        aggregate_type=CUSTOMER,
        tenant_id=tenant,
        actor_id="eventsource-test",
    )


# ---------------------------------------------------------------------------------------------
# Appends and conflicts
# ---------------------------------------------------------------------------------------------


async def append_ok(store, log: TenantLog, stream, events, expected, want_version: int) -> None:
    what = f"{log.name}: append {len(events)} event(s) to {stream.render()} expecting {expected}"
    try:
        result = await store.append(stream, events, expected)
    except Exception as e:
        raise CheckFailed(f"{what}: {type(e).__name__}: {e}") from e
    check(
        result.new_version == want_version,
        f"{what}: new_version {result.new_version}, expected {want_version}",
    )
    check(result.position is not None, f"{what}: no position returned")
    log.record(stream, events)


async def append_conflict(store, log: TenantLog, stream, event, expected, actual: int) -> None:
    """An append the library must refuse with OptimisticLockError, seeing version `actual`."""
    what = f"{log.name}: append to {stream.render()} expecting {expected} (stream at {actual})"
    try:
        await store.append(stream, [event], expected)
    except OptimisticLockError as e:
        check(
            e.actual_version == actual,
            f"{what}: OptimisticLockError reports version {e.actual_version}, expected {actual}"
            " (the version read did not see the tenant's store)",
        )
        log.rejected.append(event.event_id)
        return
    except Exception as e:
        raise CheckFailed(
            f"{what}: expected OptimisticLockError, got {type(e).__name__}: {e}"
        ) from e
    raise CheckFailed(f"{what}: the append succeeded; expected OptimisticLockError")


async def concurrent_append_conflict(
    store, proxy_dsn: str, log: TenantLog, stream: StreamId, current: int
) -> None:
    """Two writers race for version current+1 of `stream`: another client's transaction inserts
    it first and stays open; the library (ExpectedVersion.any) reads `current`, so its INSERT
    waits on the unique index. When the competitor commits, the store raises a unique violation
    on uq_events_aggregate_version, which the library must report as OptimisticLockError."""
    what = f"{log.name}: concurrent append to {stream.render()}"
    competitor_event = order_event(ItemAdded, log.tenant, stream.aggregate_id, 90)
    library_event = order_event(ItemAdded, log.tenant, stream.aggregate_id, 91)

    competitor = await asyncpg.connect(proxy_dsn)
    direct = {name: await asyncpg.connect(url) for name, url in log.stores.items()}
    try:
        tx = competitor.transaction()
        await tx.start()
        await competitor.execute(
            "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id,"
            " actor_id, version, timestamp, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
            " $9::jsonb)",
            competitor_event.event_id,
            competitor_event.event_type,
            ORDER,
            stream.aggregate_id,
            log.tenant,
            "competitor",
            current + 1,
            competitor_event.occurred_at,
            competitor_event.model_dump_json(),
        )
        if not competitor.is_in_transaction():
            visible = [
                name
                for name, conn in direct.items()
                if await conn.fetchval(
                    "SELECT count(*) FROM events WHERE event_id = $1", competitor_event.event_id
                )
            ]
            raise CheckFailed(
                f"{what}: after BEGIN and a prepared INSERT, the competitor's connection is no"
                " longer in a transaction (ReadyForQuery reported idle): its INSERT ran outside"
                f" the transaction and is already committed on: {', '.join(visible) or 'none'}"
            )
        append = asyncio.create_task(
            store.append(stream, [library_event], ExpectedVersion.any_())
        )
        # The library's INSERT waits for the competitor's row lock on the tenant's store.
        deadline = asyncio.get_running_loop().time() + BLOCK_WAIT_S
        while True:
            if append.done():
                await tx.rollback()
                exc = append.exception()
                raise CheckFailed(
                    f"{what}: the library's append finished before the competitor committed"
                    f" ({'succeeded' if exc is None else f'{type(exc).__name__}: {exc}'}); its"
                    " INSERT must wait for the competitor's row on the tenant's store"
                )
            waiting = [
                name
                for name, conn in direct.items()
                if await conn.fetchval(
                    "SELECT count(*) FROM pg_locks"
                    " WHERE NOT granted AND locktype = 'transactionid'"
                )
            ]
            if any(log.stores[name] == log.home_url for name in waiting):
                break
            if waiting:
                await tx.rollback()
                append.cancel()
                raise CheckFailed(
                    f"{what}: the library's INSERT waits on the {', '.join(waiting)} store, not"
                    f" on the tenant's ({log.home})"
                )
            if asyncio.get_running_loop().time() > deadline:
                await tx.rollback()
                append.cancel()
                raise CheckFailed(
                    f"{what}: the library's append did not wait on the tenant's store within"
                    f" {BLOCK_WAIT_S}s"
                )
            await asyncio.sleep(0.05)
        await tx.commit()
        try:
            await asyncio.wait_for(append, BLOCK_WAIT_S)
        except OptimisticLockError as e:
            check(
                isinstance(e.__cause__, IntegrityError),
                f"{what}: OptimisticLockError not caused by the store's unique violation"
                f" (cause: {e.__cause__!r})",
            )
            check(
                e.actual_version == current + 1,
                f"{what}: OptimisticLockError reports version {e.actual_version},"
                f" expected {current + 1}",
            )
        except Exception as e:
            raise CheckFailed(
                f"{what}: expected OptimisticLockError, got {type(e).__name__}: {e}"
            ) from e
        else:
            raise CheckFailed(f"{what}: the losing append succeeded")
    finally:
        await competitor.close()
        for conn in direct.values():
            await conn.close()
    log.record(stream, [competitor_event])
    log.rejected.append(library_event.event_id)


async def duplicate_event(store, log: TenantLog, existing: uuid.UUID) -> None:
    """An event whose id is already stored, appended to a new stream: DuplicateEventError."""
    stream = StreamId(uuid.uuid4(), ORDER)
    event = order_event(OrderPlaced, log.tenant, stream.aggregate_id, 7).model_copy(
        update={"event_id": existing}
    )
    what = f"{log.name}: append of the already stored event {existing}"
    try:
        await store.append(stream, [event], ExpectedVersion.no_stream())
    except DuplicateEventError:
        return
    except Exception as e:
        raise CheckFailed(
            f"{what}: expected DuplicateEventError, got {type(e).__name__}: {e}"
        ) from e
    raise CheckFailed(f"{what}: the append succeeded; expected DuplicateEventError")


async def write_tenant(store, proxy_dsn: str, log: TenantLog) -> None:
    t = log.tenant
    first, second, customer = (
        StreamId(uuid.uuid4(), ORDER),
        StreamId(uuid.uuid4(), ORDER),
        StreamId(uuid.uuid4(), CUSTOMER),
    )
    a, b, c = first.aggregate_id, second.aggregate_id, customer.aggregate_id

    # New streams: a batch of two with no_stream, one with exact(0), one with any.
    await append_ok(
        store,
        log,
        first,
        [order_event(OrderPlaced, t, a, 1), order_event(ItemAdded, t, a, 2)],
        ExpectedVersion.no_stream(),
        2,
    )
    await append_ok(
        store, log, second, [order_event(OrderPlaced, t, b, 1)], ExpectedVersion.exact(0), 1
    )
    await append_ok(store, log, customer, [customer_event(t, c, 1)], ExpectedVersion.any_(), 1)

    # Existing streams: exact, stream_exists, any.
    await append_ok(
        store, log, first, [order_event(ItemAdded, t, a, 3)], ExpectedVersion.exact(2), 3
    )
    await append_ok(
        store,
        log,
        second,
        [order_event(ItemAdded, t, b, 2), order_event(OrderShipped, t, b, 3)],
        ExpectedVersion.stream_exists(),
        3,
    )
    await append_ok(store, log, customer, [customer_event(t, c, 2)], ExpectedVersion.any_(), 2)
    # Where the appends landed, before anything depends on it.
    await check_placement(log)

    # Conflicts the version check catches: a stale exact version, no_stream on a stream that
    # exists, stream_exists on one that does not.
    await append_conflict(
        store, log, first, order_event(ItemAdded, t, a, 9), ExpectedVersion.exact(1), 3
    )
    await append_conflict(
        store, log, second, order_event(ItemAdded, t, b, 9), ExpectedVersion.no_stream(), 3
    )
    missing = StreamId(uuid.uuid4(), ORDER)
    await append_conflict(
        store,
        log,
        missing,
        order_event(OrderPlaced, t, missing.aggregate_id, 9),
        ExpectedVersion.stream_exists(),
        0,
    )

    # The conflict the store catches (two writers, one version).
    await concurrent_append_conflict(store, proxy_dsn, log, first, 3)
    # The stream carries on after it.
    await append_ok(
        store, log, first, [order_event(OrderShipped, t, a, 5)], ExpectedVersion.exact(4), 5
    )

    await duplicate_event(store, log, log.streams[second][0])


# ---------------------------------------------------------------------------------------------
# Reads through the library
# ---------------------------------------------------------------------------------------------


async def collect(it) -> list:
    return [x async for x in it]


async def read_tenant(store, log: TenantLog) -> None:
    for stream, ids in log.streams.items():
        what = f"{log.name}: read_stream {stream.render()}"
        envelopes = await collect(store.read_stream(stream))
        got = [e.event.event_id for e in envelopes]
        check(got == ids, f"{what}: event ids {got}, expected {ids}")
        versions = [e.stream_version for e in envelopes]
        check(
            versions == list(range(1, len(ids) + 1)),
            f"{what}: versions {versions}, expected 1..{len(ids)}",
        )
        for env in envelopes:
            check(env.stream_id == stream, f"{what}: envelope of {env.stream_id}")
            check(
                env.event.tenant_id == log.tenant,
                f"{what}: event {env.event.event_id} has tenant {env.event.tenant_id}",
            )

        backward = await collect(
            store.read_stream(
                stream, StreamReadOptions(direction=ReadDirection.BACKWARD, limit=2)
            )
        )
        got = [e.event.event_id for e in backward]
        want = list(reversed(ids))[:2]
        check(got == want, f"{what} backward limit 2: {got}, expected {want}")
        if len(ids) >= 3:
            middle = await collect(
                store.read_stream(stream, StreamReadOptions(from_version=2, to_version=3))
            )
            got = [e.event.event_id for e in middle]
            check(got == ids[1:3], f"{what} versions 2..3: {got}, expected {ids[1:3]}")

        version = await store.get_stream_version(stream)
        check(
            version == len(ids),
            f"{log.name}: get_stream_version {stream.render()} = {version}, expected {len(ids)}",
        )

    for event_id in sorted(log.all_ids()):
        check(
            await store.event_exists(event_id),
            f"{log.name}: event_exists({event_id}) is False for a stored event",
        )
    for event_id in log.rejected:
        check(
            not await store.event_exists(event_id),
            f"{log.name}: event_exists({event_id}) is True for a rejected event",
        )

    # The global feed filtered by tenant, in one read and paged like a catch-up subscription.
    everything = await collect(store.read_all(None, FeedReadOptions(tenant_id=log.tenant)))
    got = [e.event.event_id for e in everything]
    check(
        set(got) == log.all_ids() and len(got) == len(log.all_ids()),
        f"{log.name}: read_all(tenant) returned {len(got)} events; expected exactly the"
        f" {len(log.all_ids())} appended ({sorted(set(got) ^ log.all_ids())} differ)",
    )
    positions = [e.position for e in everything]
    check(positions == sorted(positions), f"{log.name}: read_all not in position order")
    per_stream: dict[StreamId, list[uuid.UUID]] = {}
    for env in everything:
        check(
            env.event.tenant_id == log.tenant,
            f"{log.name}: read_all(tenant) returned an event of tenant {env.event.tenant_id}",
        )
        per_stream.setdefault(env.stream_id, []).append(env.event.event_id)
    check(
        per_stream == log.streams,
        f"{log.name}: read_all(tenant) does not give each stream's events in version order",
    )

    paged: list[uuid.UUID] = []
    position = None
    for _ in range(100):
        page = await collect(
            store.read_all(position, FeedReadOptions(tenant_id=log.tenant, limit=3))
        )
        if not page:
            break
        paged.extend(e.event.event_id for e in page)
        position = page[-1].position
    check(paged == got, f"{log.name}: paged read_all(tenant) {paged} differs from {got}")

    orders = await collect(
        store.read_category(ORDER, CategoryReadOptions(tenant_id=log.tenant))
    )
    want = {i for s, ids in log.streams.items() if s.category == ORDER for i in ids}
    got_orders = {e.event.event_id for e in orders}
    check(
        got_orders == want and len(orders) == len(want),
        f"{log.name}: read_category(Order, tenant) returned {len(orders)} events, expected"
        f" {len(want)}",
    )
    recent = await collect(
        store.read_category(
            CUSTOMER,
            CategoryReadOptions(
                tenant_id=log.tenant, from_timestamp=datetime.now(UTC) - timedelta(hours=1)
            ),
        )
    )
    want = {i for s, ids in log.streams.items() if s.category == CUSTOMER for i in ids}
    check(
        {e.event.event_id for e in recent} == want,
        f"{log.name}: read_category(Customer, tenant, last hour) differs",
    )


# ---------------------------------------------------------------------------------------------
# The stores, read directly
# ---------------------------------------------------------------------------------------------


async def stored_events(url: str, tenant: uuid.UUID) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(
            "SELECT event_id, aggregate_id, aggregate_type, version FROM events"
            " WHERE tenant_id = $1 ORDER BY aggregate_id, version",
            tenant,
        )
    finally:
        await conn.close()


async def check_placement(log: TenantLog) -> None:
    """Every event the tenant's appends stored is on its own store, exactly once, at its
    version; none is on another store; no rejected event is stored anywhere."""
    for store_name, url in log.stores.items():
        rows = await stored_events(url, log.tenant)
        ids = [r["event_id"] for r in rows]
        if store_name == log.home:
            check(
                len(ids) == len(log.all_ids()) and set(ids) == log.all_ids(),
                f"{log.name}: the {store_name} store (its own) holds {len(ids)} events of"
                f" the tenant, expected the {len(log.all_ids())} appended"
                f" ({sorted(set(ids) ^ log.all_ids())} differ)",
            )
            for stream, want in log.streams.items():
                got = [
                    (r["event_id"], r["version"])
                    for r in rows
                    if r["aggregate_id"] == stream.aggregate_id
                    and r["aggregate_type"] == stream.category
                ]
                check(
                    got == [(i, v) for v, i in enumerate(want, start=1)],
                    f"{log.name}: stream {stream.render()} on the {store_name} store is"
                    f" {got}, expected {want} at versions 1..",
                )
            rejected = set(log.rejected) & set(ids)
            check(not rejected, f"{log.name}: rejected events stored: {sorted(rejected)}")
        elif url != log.home_url:
            check(
                not ids,
                f"{log.name}: the {store_name} store (not the tenant's, {log.home}) holds"
                f" {len(ids)} events of the tenant",
            )


# ---------------------------------------------------------------------------------------------


def engine_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise CheckFailed(f"not a PostgreSQL URL: {url}")


def driver_url(url: str) -> str:
    return engine_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def run(proxy_url: str, shared_url: str, dedicated_url: str, shared_t, dedicated_t):
    stores = {"shared": driver_url(shared_url), "dedicated": driver_url(dedicated_url)}
    logs = [
        TenantLog("shared tenant", uuid.UUID(shared_t), "shared", stores),
        TenantLog("dedicated tenant", uuid.UUID(dedicated_t), "dedicated", stores),
    ]
    if logs[0].one_server():
        print(
            "note: one server for both stores: checking the library round trip only",
            file=sys.stderr,
        )
    # One application per tenant first: a new engine, so every statement is prepared (asyncpg
    # prepares each statement once per connection) and first executed for that tenant. Then one
    # application for both, its prepared statements executed for either tenant in turn.
    for log in logs:
        async with event_store(proxy_url) as store:
            await write_tenant(store, driver_url(proxy_url), log)
            await read_tenant(store, log)
    async with event_store(proxy_url) as store:
        for log in logs + logs:
            await read_tenant(store, log)
    for log in logs:
        await check_placement(log)


@contextlib.asynccontextmanager
async def event_store(proxy_url: str):
    engine = create_async_engine(engine_url(proxy_url))
    try:
        yield PostgreSQLEventStore(engine, REGISTRY, create_schema=False)
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(asyncio.wait_for(run(*argv[1:]), OVERALL_TIMEOUT_S))
    except CheckFailed as e:
        traceback.print_exc(file=sys.stderr)
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"FAILED: the run did not finish within {OVERALL_TIMEOUT_S}s", file=sys.stderr)
        return 1
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

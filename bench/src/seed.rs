//! Seeding through the URL under test: each tenant's streams and snapshots are written with
//! `SET evshift.tenant_id` and COPY, so that evshift puts them on the tenant's store (directly
//! on PostgreSQL or through PgBouncer the setting is an inert placeholder).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::ids::{seeded_aggregate, AGGREGATE_TYPE};
use crate::workload::redact_url;

/// Bytes of COPY data sent at once.
const CHUNK_BYTES: usize = 512 * 1024;

/// What to seed for every tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedSpec {
    /// Streams per tenant (the aggregates reads pick from).
    pub aggregates: usize,
    /// Events per stream.
    pub events: usize,
    /// Whether every stream gets a snapshot.
    pub snapshots: bool,
}

/// Seeds `spec` for each of `tenants` through `url`.
pub async fn seed(url: &str, tenants: &[Uuid], spec: SeedSpec) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {} to seed", redact_url(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    for tenant in tenants {
        client
            .batch_execute(&format!("SET evshift.tenant_id = '{tenant}'"))
            .await?;
        copy_events(&client, *tenant, spec)
            .await
            .with_context(|| format!("seed the events of tenant {tenant}"))?;
        if spec.snapshots {
            copy_snapshots(&client, *tenant, spec)
                .await
                .with_context(|| format!("seed the snapshots of tenant {tenant}"))?;
        }
    }
    client.batch_execute("RESET evshift.tenant_id").await?;
    Ok(())
}

async fn copy_events(client: &Client, tenant: Uuid, spec: SeedSpec) -> Result<()> {
    let rows = (0..spec.aggregates).flat_map(|a| {
        let aggregate = seeded_aggregate(tenant, a);
        (1..=spec.events).map(move |v| {
            format!(
                "{}\t{}\t{AGGREGATE_TYPE}\t{aggregate}\t{tenant}\tseed\t{v}\t2026-01-01 00:00:00+00\t{{\"qty\": {v}}}\n",
                Uuid::new_v4(),
                if v == 1 { "OrderCreated" } else { "OrderItemAdded" },
            )
        })
    });
    copy_in(
        client,
        "COPY events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload) FROM STDIN",
        rows,
    )
    .await
}

async fn copy_snapshots(client: &Client, tenant: Uuid, spec: SeedSpec) -> Result<()> {
    let rows = (0..spec.aggregates).map(|a| {
        let mut line = String::new();
        let _ = writeln!(
            line,
            "{}\t{AGGREGATE_TYPE}\t{}\t{{\"items\": {}}}",
            seeded_aggregate(tenant, a),
            spec.events,
            spec.events
        );
        line
    });
    copy_in(
        client,
        "COPY snapshots (aggregate_id, aggregate_type, version, state) FROM STDIN",
        rows,
    )
    .await
}

async fn copy_in(
    client: &Client,
    statement: &str,
    rows: impl Iterator<Item = String>,
) -> Result<()> {
    let sink = client.copy_in(statement).await?;
    futures::pin_mut!(sink);
    let mut chunk = String::with_capacity(CHUNK_BYTES + 1024);
    for row in rows {
        chunk.push_str(&row);
        if chunk.len() >= CHUNK_BYTES {
            sink.send(Bytes::from(std::mem::take(&mut chunk))).await?;
        }
    }
    if !chunk.is_empty() {
        sink.send(Bytes::from(chunk)).await?;
    }
    sink.finish().await?;
    Ok(())
}

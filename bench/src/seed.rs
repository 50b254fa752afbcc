//! Seeding through the URL under test: each tenant's rows are written with
//! `SET evshift.tenant_id` and COPY, so that evshift puts them on the tenant's store (directly
//! on PostgreSQL the setting is an inert placeholder).

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::NoTls;

use crate::workload::{seeded_aggregate, tenant_id, AGGREGATE_TYPE};

/// Seeds `aggregates` aggregates of `events` events for each of `tenants` tenants.
pub async fn seed(
    url: &str,
    tenants: usize,
    aggregates: usize,
    events: usize,
) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    for t in 0..tenants {
        let tenant = tenant_id(t);
        client
            .batch_execute(&format!("SET evshift.tenant_id = '{tenant}'"))
            .await?;
        let sink = client
            .copy_in("COPY events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload) FROM STDIN")
            .await?;
        futures::pin_mut!(sink);
        let mut chunk = String::with_capacity(1 << 20);
        for a in 0..aggregates {
            let aggregate = seeded_aggregate(t, a);
            for v in 1..=events {
                chunk.push_str(&format!(
                    "{}\tOrderItemAdded\t{AGGREGATE_TYPE}\t{aggregate}\t{tenant}\tseed\t{v}\t2026-01-01 00:00:00+00\t{{\"qty\": {v}}}\n",
                    uuid::Uuid::new_v4()
                ));
            }
            if chunk.len() > 512 * 1024 {
                sink.send(Bytes::from(std::mem::take(&mut chunk))).await?;
            }
        }
        sink.send(Bytes::from(chunk)).await?;
        sink.finish().await?;
    }
    client.batch_execute("RESET evshift.tenant_id").await?;
    Ok(())
}

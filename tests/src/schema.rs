//! The eventsource-py event-store schema, applied to a test database.

use anyhow::{Context, Result};
use tokio_postgres::Client;

/// `migrations/0001_eventsource_schema.sql`: tables `events`, `snapshots`,
/// `projection_checkpoints`, `event_outbox` and the function `eventsource_feed_horizon()`.
pub const EVENT_STORE_SCHEMA: &str = include_str!("../../migrations/0001_eventsource_schema.sql");

/// Applies [`EVENT_STORE_SCHEMA`] to the database `client` is connected to. Idempotent: applying
/// it again changes nothing.
pub async fn apply_event_store_schema(client: &Client) -> Result<()> {
    client
        .batch_execute(EVENT_STORE_SCHEMA)
        .await
        .context("apply migrations/0001_eventsource_schema.sql")
}

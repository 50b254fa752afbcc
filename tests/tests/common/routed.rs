//! Two event stores (shared = default, dedicated) and a control store behind a real evshift,
//! with one tenant on each store, and the eventsource statements as the library sends them.

use std::path::PathBuf;
use std::process::Command;

use evshift_tests::{
    apply_event_store_schema, evshift_binary, free_port, EvshiftConfig, EvshiftProcess, PgCluster,
};
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

pub const VERSION_READ: &str =
    "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = $1 AND aggregate_type = $2";
pub const INSERT_EVENT: &str = "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NOW()) RETURNING global_position";
pub const INSERT_OUTBOX: &str = "INSERT INTO event_outbox (event_id, event_type, aggregate_id, aggregate_type, tenant_id, event_data, created_at, status) VALUES ($1, $2, $3, $4, $5, $6, NOW(), 'pending')";
pub const READ_STREAM: &str = "SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at FROM events WHERE aggregate_id = $1 AND aggregate_type = $2 AND version >= $3 ORDER BY version ASC";
pub const HORIZON: &str = "SELECT eventsource_feed_horizon()";
pub const READ_ALL: &str = "SELECT global_position, event_id, event_type, aggregate_type, aggregate_id, tenant_id, actor_id, version, timestamp, payload, created_at FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND global_position > $2 AND tenant_id = $3 ORDER BY global_position ASC LIMIT $4";
pub const CURRENT_POSITION: &str = "SELECT MAX(global_position) FROM events WHERE (txid IS NULL OR txid < CAST($1 AS text)::xid8) AND tenant_id = $2";
pub const READ_CATEGORY: &str = "SELECT global_position, event_id FROM events WHERE aggregate_type = $1 AND tenant_id = $2 AND created_at >= $3 ORDER BY created_at, global_position";
pub const EVENT_EXISTS: &str = "SELECT 1 FROM events WHERE event_id = $1 LIMIT 1";
pub const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, state, created_at) VALUES ($1, $2, $3, 1, $4, NOW()) ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state, created_at = EXCLUDED.created_at";
pub const LOAD_SNAPSHOT: &str =
    "SELECT version, state FROM snapshots WHERE aggregate_id = $1 AND aggregate_type = $2";
pub const SAVE_CHECKPOINT: &str = "INSERT INTO projection_checkpoints (projection_name, last_event_id, last_event_type, last_processed_at, global_position, events_processed, position_token, updated_at) VALUES ($1, $2, $3, NOW(), $4, 1, $5, NOW()) ON CONFLICT (projection_name) DO UPDATE SET last_event_id = EXCLUDED.last_event_id, global_position = EXCLUDED.global_position, events_processed = projection_checkpoints.events_processed + 1, position_token = EXCLUDED.position_token, updated_at = NOW()";

pub const AGGREGATE_TYPE: &str = "Order";

/// The clusters, the proxy, and a tenant on each store.
pub struct Routed {
    pub proxy: EvshiftProcess,
    pub config: EvshiftConfig,
    pub shared: PgCluster,
    pub dedicated: PgCluster,
    pub control: PgCluster,
    /// A tenant without a route: it lives on the default store.
    pub shared_tenant: Uuid,
    /// A tenant assigned to the dedicated store.
    pub dedicated_tenant: Uuid,
}

impl Routed {
    pub async fn start() -> Routed {
        let (shared, dedicated, control) = tokio::try_join!(
            PgCluster::start("shared"),
            PgCluster::start("dedicated"),
            PgCluster::start("control"),
        )
        .expect("start three clusters");
        for store in [&shared, &dedicated] {
            let client = store.connect("postgres").await.unwrap();
            apply_event_store_schema(&client).await.unwrap();
        }
        let config = EvshiftConfig::new(free_port())
            .with_store("shared", &shared.url("postgres"), true)
            .with_store("dedicated", &dedicated.url("postgres"), false)
            .with_control(&control.url("postgres"));
        let proxy = EvshiftProcess::start(&config.to_toml())
            .await
            .expect("start evshift");
        let routed = Routed {
            proxy,
            config,
            shared,
            dedicated,
            control,
            shared_tenant: Uuid::new_v4(),
            dedicated_tenant: Uuid::new_v4(),
        };
        let tenant = routed.dedicated_tenant.to_string();
        let output = routed.ctl(&["assign", &tenant, "dedicated"]);
        assert!(
            output.status.success(),
            "ctl assign: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        routed
    }

    /// Runs `evshift ctl --socket <this proxy's socket> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        let socket: PathBuf = self.config.control_socket.clone();
        Command::new(evshift_binary().unwrap())
            .arg("ctl")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .expect("run evshift ctl")
    }

    pub async fn connect(&self) -> Client {
        super::connect_url(&self.proxy.url("app", "postgres"))
            .await
            .expect("connect through evshift")
    }

    pub async fn direct_shared(&self) -> Client {
        self.shared.connect("postgres").await.unwrap()
    }

    pub async fn direct_dedicated(&self) -> Client {
        self.dedicated.connect("postgres").await.unwrap()
    }
}

/// One event as the append statement binds it.
pub struct NewEvent {
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub tenant_id: Uuid,
    pub version: i32,
}

/// The eventsource append transaction: version read, INSERT ... RETURNING, COMMIT.
pub async fn append(
    client: &mut Client,
    tenant: Uuid,
    aggregate: Uuid,
) -> Result<(Uuid, i64), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let current: i32 = tx
        .query_one(VERSION_READ, &[&aggregate, &AGGREGATE_TYPE])
        .await?
        .get(0);
    let event = NewEvent {
        event_id: Uuid::new_v4(),
        aggregate_id: aggregate,
        tenant_id: tenant,
        version: current + 1,
    };
    let position = insert_event(&tx, &event).await?;
    tx.commit().await?;
    Ok((event.event_id, position))
}

pub async fn insert_event(
    client: &impl GenericClient,
    event: &NewEvent,
) -> Result<i64, tokio_postgres::Error> {
    let payload = serde_json::json!({"amount": event.version, "note": "routed"});
    let now = std::time::SystemTime::now();
    let row = client
        .query_one(
            INSERT_EVENT,
            &[
                &event.event_id,
                &"OrderPlaced",
                &AGGREGATE_TYPE,
                &event.aggregate_id,
                &event.tenant_id,
                &"actor-1",
                &event.version,
                &now,
                &payload,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Events of `tenant` on a store, read directly.
pub async fn count_on(client: &Client, tenant: Uuid) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0)
}

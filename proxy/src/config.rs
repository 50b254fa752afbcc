//! The `evshift.toml` configuration file: its shape, its defaults and its validation.
//!
//! Every key is documented in `docs/configuration.md`; unknown keys are rejected so that a typo
//! never silently falls back to a default.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration file was refused. Printed as one line by `evshift serve`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration of one evshift process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the Postgres-protocol listener binds.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Path of the admin control socket.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Address of the Prometheus `/metrics` endpoint; absent means no endpoint.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub auth: AuthConfig,
    /// The control store (routing table, migrations, audit log).
    #[serde(default)]
    pub control: Option<ControlConfig>,
    /// The event stores evshift routes to; exactly one is the default.
    pub stores: Vec<StoreConfig>,
    #[serde(default)]
    pub tenancy: TenancyConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
    #[serde(default)]
    pub migration: MigrationConfig,
}

/// `[migration]`: defaults of new migrations and how the copier retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationConfig {
    pub batch_size: u32,
    pub cutover_timeout_ms: u64,
    pub max_lag_events: u64,
    pub verify: evshift_control::VerifyMode,
    pub rate_limit_events_per_sec: u64,
    pub retry_limit: u32,
    pub retry_initial_backoff_ms: u64,
    pub retry_max_backoff_ms: u64,
    pub tail_interval_ms: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        let d = evshift_control::MigrationSettings::default();
        MigrationConfig {
            batch_size: d.batch_size,
            cutover_timeout_ms: d.cutover_timeout.as_millis() as u64,
            max_lag_events: d.max_lag_events,
            verify: d.verify,
            rate_limit_events_per_sec: d.rate_limit_events_per_sec,
            retry_limit: d.retry_limit,
            retry_initial_backoff_ms: d.retry_initial_backoff.as_millis() as u64,
            retry_max_backoff_ms: d.retry_max_backoff.as_millis() as u64,
            tail_interval_ms: d.tail_interval.as_millis() as u64,
        }
    }
}

impl MigrationConfig {
    /// The section as the migration plane takes it.
    pub fn settings(&self) -> evshift_control::MigrationSettings {
        evshift_control::MigrationSettings {
            batch_size: self.batch_size,
            rate_limit_events_per_sec: self.rate_limit_events_per_sec,
            cutover_timeout: Duration::from_millis(self.cutover_timeout_ms),
            max_lag_events: self.max_lag_events,
            verify: self.verify,
            retry_limit: self.retry_limit,
            retry_initial_backoff: Duration::from_millis(self.retry_initial_backoff_ms),
            retry_max_backoff: Duration::from_millis(self.retry_max_backoff_ms),
            tail_interval: Duration::from_millis(self.tail_interval_ms),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let max = evshift_control::settings::MAX_BATCH_SIZE;
        if self.batch_size == 0 || self.batch_size > max {
            return Err(format!("[migration] batch_size must be within 1..={max}"));
        }
        if self.retry_initial_backoff_ms > self.retry_max_backoff_ms {
            return Err("[migration] retry_initial_backoff_ms exceeds retry_max_backoff_ms".into());
        }
        if self.tail_interval_ms == 0 || self.cutover_timeout_ms == 0 {
            return Err(
                "[migration] tail_interval_ms and cutover_timeout_ms must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// Which tables are tenant-scoped, and by which columns a statement on them names its tenant,
/// its aggregate or its event.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenancyConfig {
    #[serde(default = "default_tenant_tables")]
    pub tables: Vec<TenantTable>,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        TenancyConfig {
            tables: default_tenant_tables(),
        }
    }
}

/// One tenant-scoped table. A column left out means the table has no such key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantTable {
    pub name: String,
    #[serde(default)]
    pub tenant_column: Option<String>,
    #[serde(default)]
    pub aggregate_column: Option<String>,
    #[serde(default)]
    pub event_column: Option<String>,
}

fn default_tenant_tables() -> Vec<TenantTable> {
    let table = |name: &str, tenant: Option<&str>, aggregate: Option<&str>, event: Option<&str>| {
        TenantTable {
            name: name.to_string(),
            tenant_column: tenant.map(str::to_string),
            aggregate_column: aggregate.map(str::to_string),
            event_column: event.map(str::to_string),
        }
    };
    vec![
        table(
            "events",
            Some("tenant_id"),
            Some("aggregate_id"),
            Some("event_id"),
        ),
        table("event_outbox", Some("tenant_id"), None, None),
        table("snapshots", None, Some("aggregate_id"), None),
    ]
}

/// How clients authenticate to evshift.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub method: AuthMethod,
    /// Users allowed to connect. With `trust` an empty list admits any user name.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

/// Client authentication methods, named as in `pg_hba.conf`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "trust")]
    Trust,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

/// One user that may connect to evshift, with its password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
}

/// Where the control store lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    pub url: String,
    /// Periodic reload of the routing table, a safety net behind the control store's change
    /// notifications.
    #[serde(default = "default_routing_refresh_ms")]
    pub routing_refresh_ms: u64,
}

impl ControlConfig {
    pub fn routing_refresh_interval(&self) -> Duration {
        Duration::from_millis(self.routing_refresh_ms)
    }
}

/// One event store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Stable name of the store; used in routes, metrics, errors and position tokens.
    pub id: String,
    /// libpq-style URL: host, port, database, user and password used for backend sessions.
    pub url: String,
    /// The store for tenant-less statements and tenants without a route.
    #[serde(default)]
    pub default: bool,
}

/// Resource bounds that protect evshift and the stores from a misbehaving client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client connections accepted at once; further ones get SQLSTATE 53300.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// Largest protocol message a client may send, in bytes; larger ones end the session (08P01).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long to wait for a store's TCP connect and authentication.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long a client may take from connect to the end of authentication.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// Threads of the async runtime; 0 means one per CPU.
    #[serde(default)]
    pub worker_threads: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_client_connections: default_max_client_connections(),
            max_message_bytes: default_max_message_bytes(),
            connect_timeout_ms: default_connect_timeout_ms(),
            startup_timeout_ms: default_startup_timeout_ms(),
            worker_threads: 0,
        }
    }
}

impl LimitsConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
}

/// Logging output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `evshift_proxy=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

/// `[tracing]`: export of the tracing spans to an OpenTelemetry collector (OTLP over HTTP).
/// Needs an evshift built with the `otel` cargo feature; off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// The `service.name` resource attribute of every exported span.
    pub service_name: String,
    /// A `tracing` filter directive for the exported spans (the log level is separate).
    pub level: String,
    /// How often queued spans are sent.
    pub export_interval_ms: u64,
    /// How long one export request may take before it is given up (its spans are dropped).
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            service_name: "evshift".to_string(),
            level: default_log_level(),
            export_interval_ms: 5_000,
            export_timeout_ms: 10_000,
        }
    }
}

impl TracingConfig {
    /// Whether this build of evshift can export spans at all.
    pub const EXPORT_BUILT: bool = cfg!(feature = "otel");

    fn validate(&self) -> Result<(), String> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(());
        };
        if !Self::EXPORT_BUILT {
            return Err(
                "[tracing] otlp_endpoint is set, but this evshift was built without \
                 span export: build it with `cargo build --release --features otel`, or remove \
                 the key"
                    .into(),
            );
        }
        if endpoint.starts_with("https://") {
            return Err(
                "[tracing] otlp_endpoint: https is not supported; send the spans to a \
                 collector on this host or network over http:// (it can forward them over TLS)"
                    .into(),
            );
        }
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return Err(format!(
                "[tracing] otlp_endpoint {endpoint:?} is not an http:// URL"
            ));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!(
                "[tracing] otlp_endpoint {endpoint:?} names no host"
            ));
        }
        if self.service_name.is_empty() {
            return Err("[tracing] service_name must not be empty".into());
        }
        if self.export_interval_ms == 0 || self.export_timeout_ms == 0 {
            return Err(
                "[tracing] export_interval_ms and export_timeout_ms must be at least 1".into(),
            );
        }
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| format!("[tracing] level {:?}: {e}", self.level))?;
        Ok(())
    }
}

/// The OTLP/HTTP encoding of exported spans.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `application/x-protobuf`, what collectors expect by default.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// `application/json`.
    #[serde(rename = "http/json")]
    HttpJson,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:6432".parse().expect("literal address")
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/tmp/evshift.sock")
}
fn default_routing_refresh_ms() -> u64 {
    5_000
}
fn default_max_client_connections() -> usize {
    10_000
}
fn default_max_message_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_startup_timeout_ms() -> u64 {
    60_000
}
fn default_log_level() -> String {
    "info".to_string()
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text (errors carry an empty path).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            // toml's messages span several lines; keep the error to one line.
            message: e.message().replace('\n', " "),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.stores.is_empty() {
            return Err("no [[stores]] configured".into());
        }
        let mut ids = HashSet::new();
        for store in &self.stores {
            if store.id.is_empty() {
                return Err("a store has an empty id".into());
            }
            if !ids.insert(store.id.as_str()) {
                return Err(format!("store id {:?} is configured twice", store.id));
            }
            StoreEndpoint::parse(&store.url)
                .map_err(|e| format!("store {:?}: invalid url: {e}", store.id))?;
        }
        match self.stores.iter().filter(|s| s.default).count() {
            1 => {}
            0 => return Err("no store is marked `default = true`".into()),
            _ => return Err("more than one store is marked `default = true`".into()),
        }
        if self.auth.method != AuthMethod::Trust && self.auth.users.is_empty() {
            return Err(format!(
                "[auth] method {:?} needs at least one entry in [auth] users",
                self.auth.method
            ));
        }
        let mut names = HashSet::new();
        for user in &self.auth.users {
            if !names.insert(user.name.as_str()) {
                return Err(format!("[auth] user {:?} is configured twice", user.name));
            }
        }
        if let Some(control) = &self.control {
            tokio_postgres::Config::from_str(&control.url)
                .map_err(|e| format!("[control] invalid url: {e}"))?;
            if control.routing_refresh_ms == 0 {
                return Err("[control] routing_refresh_ms must be at least 1".into());
            }
        }
        for table in &self.tenancy.tables {
            if table.tenant_column.is_none()
                && table.aggregate_column.is_none()
                && table.event_column.is_none()
            {
                return Err(format!(
                    "[[tenancy.tables]] {:?} names none of tenant_column, aggregate_column, event_column",
                    table.name
                ));
            }
        }
        if self.limits.max_client_connections == 0 {
            return Err("[limits] max_client_connections must be at least 1".into());
        }
        if self.limits.max_message_bytes < 1024 {
            return Err("[limits] max_message_bytes must be at least 1024".into());
        }
        self.migration.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| format!("[log] level {:?}: {e}", self.log.level))?;
        self.tracing.validate()?;
        Ok(())
    }

    /// The store marked `default = true` (validation guarantees exactly one).
    pub fn default_store(&self) -> &StoreConfig {
        self.stores
            .iter()
            .find(|s| s.default)
            .expect("validated config has a default store")
    }
}

/// Where and as whom evshift connects to one store: the parts of a store URL it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    /// Extra startup parameters from the URL (`options`, `application_name`).
    pub options: Option<String>,
    pub application_name: Option<String>,
}

impl StoreEndpoint {
    /// Parses a libpq-style URL or key=value string with tokio-postgres's parser.
    pub fn parse(url: &str) -> Result<StoreEndpoint, String> {
        use tokio_postgres::config::Host;
        let config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
        let host = match config.get_hosts() {
            [] => "127.0.0.1".to_string(),
            [Host::Tcp(h)] => h.clone(),
            [Host::Unix(p)] => {
                return Err(format!(
                    "unix socket host {} is not supported, use a TCP address",
                    p.display()
                ))
            }
            _ => return Err("several hosts in one store url are not supported".into()),
        };
        let port = match config.get_ports() {
            [] => 5432,
            [p] => *p,
            _ => return Err("several ports in one store url are not supported".into()),
        };
        let user = config
            .get_user()
            .ok_or_else(|| "the url names no user".to_string())?
            .to_string();
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let database = config.get_dbname().unwrap_or(&user).to_string();
        Ok(StoreEndpoint {
            host,
            port,
            user,
            password,
            database,
            options: config.get_options().map(str::to_string),
            application_name: config.get_application_name().map(str::to_string),
        })
    }

    /// `host:port`, for connecting and for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A tokio-postgres configuration for evshift's own side connections to this store
    /// (lookups, the control socket's checks), named `application_name` on the store.
    pub fn client_config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name(application_name);
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:6432"
control_socket = "/tmp/evshift.sock"
metrics_listen = "127.0.0.1:9187"

[auth]
method = "trust"

[control]
url = "postgres://postgres@127.0.0.1:5432/evshift"

[[stores]]
id = "shared"
url = "postgres://postgres@127.0.0.1:5432/app"
default = true

[[stores]]
id = "dedicated-1"
url = "postgres://postgres@127.0.0.1:5433/app"
"#;

    #[test]
    fn minimal_design_config_parses_with_defaults() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.default_store().id, "shared");
        assert_eq!(config.limits.max_client_connections, 10_000);
        assert_eq!(config.limits.worker_threads, 0);
        let one = Config::from_toml(&format!("{MINIMAL}\n[limits]\nworker_threads = 1\n")).unwrap();
        assert_eq!(one.limits.worker_threads, 1);
        assert_eq!(config.auth.method, AuthMethod::Trust);
        let endpoint = StoreEndpoint::parse(&config.stores[1].url).unwrap();
        assert_eq!(endpoint.port, 5433);
        assert_eq!(endpoint.database, "app");
        assert_eq!(endpoint.user, "postgres");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_store_sets() {
        let typo = MINIMAL.replace("metrics_listen", "metric_listen");
        assert!(Config::from_toml(&typo)
            .unwrap_err()
            .to_string()
            .contains("metric_listen"));
        let no_default = MINIMAL.replace("default = true", "");
        assert!(Config::from_toml(&no_default)
            .unwrap_err()
            .to_string()
            .contains("default"));
        let duplicate = MINIMAL.replace("dedicated-1", "shared");
        assert!(Config::from_toml(&duplicate)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let scram_without_users = MINIMAL.replace("\"trust\"", "\"scram-sha-256\"");
        assert!(Config::from_toml(&scram_without_users).is_err());
    }

    #[test]
    fn tracing_section_is_off_by_default_and_checked_when_set() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.tracing.otlp_endpoint, None);
        assert_eq!(config.tracing.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(config.tracing.service_name, "evshift");
        let with = |body: &str| Config::from_toml(&format!("{MINIMAL}\n[tracing]\n{body}\n"));
        let error = |body: &str| with(body).unwrap_err().to_string();
        let endpoint = "otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"";
        if TracingConfig::EXPORT_BUILT {
            let json = with(&format!("{endpoint}\notlp_protocol = \"http/json\"")).unwrap();
            assert_eq!(json.tracing.otlp_protocol, OtlpProtocol::HttpJson);
            assert!(error("otlp_endpoint = \"https://collector:4318\"").contains("https"));
            assert!(error("otlp_endpoint = \"collector:4318\"").contains("not an http://"));
            assert!(error(&format!("{endpoint}\nexport_interval_ms = 0")).contains("at least 1"));
            assert!(error(&format!("{endpoint}\nlevel = \"[\"")).contains("[tracing] level"));
        } else {
            assert!(error(endpoint).contains("--features otel"));
        }
        assert!(error("otlp_protocol = \"grpc\"").contains("grpc"));
        assert!(error("otlp_endpiont = \"http://x\"").contains("otlp_endpiont"));
    }

    #[test]
    fn control_refresh_defaults_and_must_be_positive() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.control.unwrap().routing_refresh_ms, 5_000);
        let zero = MINIMAL.replace("[control]\n", "[control]\nrouting_refresh_ms = 0\n");
        assert!(Config::from_toml(&zero)
            .unwrap_err()
            .to_string()
            .contains("routing_refresh_ms"));
    }

    #[test]
    fn migration_section_defaults_and_refusals() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.migration.batch_size, 1000);
        assert_eq!(config.migration.cutover_timeout_ms, 5000);
        assert_eq!(config.migration.verify, evshift_control::VerifyMode::Hash);
        let custom = format!("{MINIMAL}\n[migration]\nbatch_size = 50\nverify = \"full\"\n");
        let settings = Config::from_toml(&custom).unwrap().migration.settings();
        assert_eq!(settings.batch_size, 50);
        for bad in ["batch_size = 0", "verfiy = \"hash\"", "verify = \"md5\""] {
            let text = format!("{MINIMAL}\n[migration]\n{bad}\n");
            assert!(Config::from_toml(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_one_line() {
        let broken = "listen = [";
        let message = Config::from_toml(broken).unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
    }
}

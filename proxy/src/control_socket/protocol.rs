//! The control socket's wire format: one JSON request per line, one JSON reply per line.
//!
//! A request is an object naming its `command`: `{"command":"routes","tenant":"..."}`. A reply
//! is `{"ok": RESULT}` or `{"error":{"kind":"...","message":"..."}}`. The result types here are
//! shared by the server and by `evshift ctl`, which decodes them to print tables.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use evshift_control::{
    AuditEntry, ControlError, MigrationRef, MigrationState, MigrationStatus, OptionOverrides,
    Route, SubscriptionPlan, VerificationReport, VerifyMode,
};

/// One command, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `{"command":"stores"}`: the configured stores and whether each is reachable now.
    Stores,
    /// `{"command":"routes"}` or `{"command":"routes","tenant":UUID}`: this process's routes.
    Routes { tenant: Option<Uuid> },
    /// `{"command":"assign","tenant":UUID,"store":ID}`: place a tenant that has no events.
    Assign { tenant: Uuid, store: String },
    /// `{"command":"migrate","tenant":UUID,"to":ID, ...options}`: start a migration.
    Migrate {
        tenant: Uuid,
        to: String,
        overrides: OptionOverrides,
        operator: Option<String>,
    },
    /// `{"command":"status"}` or `{"command":"status","migration":ID|TENANT}`.
    Status { migration: Option<MigrationRef> },
    /// `{"command":"pause"|"resume"|"abort"|"cutover","migration":ID|TENANT}`.
    Control {
        action: ControlAction,
        migration: MigrationRef,
        operator: Option<String>,
    },
    /// `{"command":"audit","migration":ID|TENANT}`: the migration's audit log.
    Audit { migration: MigrationRef },
    /// `{"command":"verify","migration":ID|TENANT,"level":"count"|"hash"|"full"}`: compare
    /// the target with the source; without `level`, the migration's own `verify` option.
    Verify {
        migration: MigrationRef,
        level: Option<VerifyMode>,
        operator: Option<String>,
    },
    /// `{"command":"subscriptions","migration":ID|TENANT,"names":[...],"dry_run":true}`:
    /// rewrite (or plan the rewrite of) subscription checkpoints to target positions.
    Subscriptions {
        migration: MigrationRef,
        /// Empty: every checkpoint on the source.
        names: Vec<String>,
        dry_run: bool,
        operator: Option<String>,
    },
}

/// The operator commands that change a running migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    Pause,
    Resume,
    Abort,
    Cutover,
}

/// The JSON shape of a request, before its arguments are checked.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
enum RawRequest {
    // Braces, not a unit variant: serde ignores unknown fields of unit variants.
    Stores {},
    Routes {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    },
    Assign {
        tenant: String,
        store: String,
    },
    Migrate {
        tenant: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_size: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        manual_cutover: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verify: Option<VerifyMode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_limit_events_per_sec: Option<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        subscriptions: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        migration: Option<Value>,
    },
    Pause {
        migration: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
    Resume {
        migration: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
    Abort {
        migration: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
    Audit {
        migration: Value,
    },
    Cutover {
        migration: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
    Verify {
        migration: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<VerifyMode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
    Subscriptions {
        migration: Value,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        names: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dry_run: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<String>,
    },
}

impl Request {
    /// Parses one request line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, ControlError> {
        let text = std::str::from_utf8(line).map_err(|_| invalid("the line is not UTF-8"))?;
        let value: Value = serde_json::from_str(text.trim())
            .map_err(|e| invalid(format!("the line is not JSON: {e}")))?;
        if !value.is_object() {
            return Err(invalid(
                "a request is a JSON object such as {\"command\":\"stores\"}",
            ));
        }
        if !value.get("command").is_some_and(Value::is_string) {
            return Err(invalid("the request has no \"command\" string"));
        }
        let raw: RawRequest = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        Ok(match raw {
            RawRequest::Stores {} => Request::Stores,
            RawRequest::Routes { tenant } => Request::Routes {
                tenant: tenant.as_deref().map(parse_tenant).transpose()?,
            },
            RawRequest::Assign { tenant, store } => Request::Assign {
                tenant: parse_tenant(&tenant)?,
                store,
            },
            RawRequest::Migrate {
                tenant,
                to,
                batch_size,
                manual_cutover,
                verify,
                rate_limit_events_per_sec,
                subscriptions,
                operator,
            } => Request::Migrate {
                tenant: parse_tenant(&tenant)?,
                to,
                overrides: OptionOverrides {
                    batch_size,
                    rate_limit_events_per_sec,
                    manual_cutover,
                    verify,
                    subscriptions,
                },
                operator,
            },
            RawRequest::Status { migration } => Request::Status {
                migration: migration.as_ref().map(parse_migration).transpose()?,
            },
            RawRequest::Pause {
                migration,
                operator,
            } => control(ControlAction::Pause, &migration, operator)?,
            RawRequest::Resume {
                migration,
                operator,
            } => control(ControlAction::Resume, &migration, operator)?,
            RawRequest::Abort {
                migration,
                operator,
            } => control(ControlAction::Abort, &migration, operator)?,
            RawRequest::Audit { migration } => Request::Audit {
                migration: parse_migration(&migration)?,
            },
            RawRequest::Cutover {
                migration,
                operator,
            } => control(ControlAction::Cutover, &migration, operator)?,
            RawRequest::Verify {
                migration,
                level,
                operator,
            } => Request::Verify {
                migration: parse_migration(&migration)?,
                level,
                operator,
            },
            RawRequest::Subscriptions {
                migration,
                names,
                dry_run,
                operator,
            } => Request::Subscriptions {
                migration: parse_migration(&migration)?,
                names: check_names(names)?,
                dry_run,
                operator,
            },
        })
    }

    /// The request as one JSON line (without the newline), as `evshift ctl` sends it.
    pub fn to_line(&self) -> String {
        let raw = match self {
            Request::Stores => RawRequest::Stores {},
            Request::Routes { tenant } => RawRequest::Routes {
                tenant: tenant.map(|t| t.to_string()),
            },
            Request::Assign { tenant, store } => RawRequest::Assign {
                tenant: tenant.to_string(),
                store: store.clone(),
            },
            Request::Migrate {
                tenant,
                to,
                overrides,
                operator,
            } => RawRequest::Migrate {
                tenant: tenant.to_string(),
                to: to.clone(),
                batch_size: overrides.batch_size,
                manual_cutover: overrides.manual_cutover,
                verify: overrides.verify,
                rate_limit_events_per_sec: overrides.rate_limit_events_per_sec,
                subscriptions: overrides.subscriptions.clone(),
                operator: operator.clone(),
            },
            Request::Status { migration } => RawRequest::Status {
                migration: migration.map(migration_value),
            },
            Request::Control {
                action,
                migration,
                operator,
            } => {
                let (migration, operator) = (migration_value(*migration), operator.clone());
                match action {
                    ControlAction::Pause => RawRequest::Pause {
                        migration,
                        operator,
                    },
                    ControlAction::Resume => RawRequest::Resume {
                        migration,
                        operator,
                    },
                    ControlAction::Abort => RawRequest::Abort {
                        migration,
                        operator,
                    },
                    ControlAction::Cutover => RawRequest::Cutover {
                        migration,
                        operator,
                    },
                }
            }
            Request::Audit { migration } => RawRequest::Audit {
                migration: migration_value(*migration),
            },
            Request::Verify {
                migration,
                level,
                operator,
            } => RawRequest::Verify {
                migration: migration_value(*migration),
                level: *level,
                operator: operator.clone(),
            },
            Request::Subscriptions {
                migration,
                names,
                dry_run,
                operator,
            } => RawRequest::Subscriptions {
                migration: migration_value(*migration),
                names: names.clone(),
                dry_run: *dry_run,
                operator: operator.clone(),
            },
        };
        // Strings only: encoding cannot fail. Were it to, the server would answer the empty
        // line with InvalidRequestError.
        serde_json::to_string(&raw).unwrap_or_default()
    }
}

/// Subscription names: non-empty, each once.
fn check_names(names: Vec<String>) -> Result<Vec<String>, ControlError> {
    let mut seen = std::collections::HashSet::new();
    for name in &names {
        if name.trim().is_empty() {
            return Err(invalid("a subscription name is empty"));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid(format!("subscription {name:?} is named twice")));
        }
    }
    Ok(names)
}

fn parse_tenant(text: &str) -> Result<Uuid, ControlError> {
    Uuid::parse_str(text).map_err(|_| invalid(format!("invalid tenant id {text:?}: not a UUID")))
}

/// A migration named by id (a number or a numeric string) or by tenant (a UUID string).
fn parse_migration(value: &Value) -> Result<MigrationRef, ControlError> {
    match value {
        Value::String(text) => text.parse(),
        Value::Number(number) => number
            .as_i64()
            .filter(|id| *id > 0)
            .map(MigrationRef::Id)
            .ok_or_else(|| invalid(format!("invalid migration id {number}"))),
        other => Err(invalid(format!(
            "\"migration\" must be a migration id or a tenant id, not {other}"
        ))),
    }
}

fn migration_value(migration: MigrationRef) -> Value {
    match migration {
        MigrationRef::Id(id) => Value::from(id),
        MigrationRef::Tenant(tenant) => Value::from(tenant.to_string()),
    }
}

fn control(
    action: ControlAction,
    migration: &Value,
    operator: Option<String>,
) -> Result<Request, ControlError> {
    Ok(Request::Control {
        action,
        migration: parse_migration(migration)?,
        operator,
    })
}

fn invalid(message: impl Into<String>) -> ControlError {
    ControlError::InvalidRequest(message.into())
}

/// A successful command's result: the value of `"ok"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Stores(Vec<StoreStatus>),
    Routes(Vec<RouteView>),
    Route(RouteView),
    Migration(Box<MigrationStatus>),
    Migrations(Vec<MigrationStatus>),
    Audit(Vec<AuditEntry>),
    Verification(Box<VerificationReport>),
    Subscriptions(Box<SubscriptionPlan>),
}

/// One configured store, as `stores` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub id: String,
    /// `host:port`.
    pub address: String,
    pub database: String,
    pub default: bool,
    /// Whether a connection (TCP and authentication) succeeded just now.
    pub reachable: bool,
    /// Why it did not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One tenant's route, as `routes` and `assign` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub tenant_id: Uuid,
    /// The store holding the tenant (the source while a migration runs).
    pub store: String,
    /// False when the tenant has no route and lives on the default store.
    pub assigned: bool,
    pub migration_id: Option<i64>,
    pub migration_state: Option<MigrationState>,
    pub target_store: Option<String>,
}

impl RouteView {
    /// The view of a route in the table.
    pub fn assigned(route: &Route) -> RouteView {
        let migration = route.migration.as_ref();
        RouteView {
            tenant_id: route.tenant_id,
            store: route.store.clone(),
            assigned: true,
            migration_id: migration.map(|m| m.migration_id),
            migration_state: migration.map(|m| m.state),
            target_store: migration.map(|m| m.target_store.clone()),
        }
    }

    /// A tenant without a route: it lives on `default_store`.
    pub fn unassigned(tenant_id: Uuid, default_store: &str) -> RouteView {
        RouteView {
            tenant_id,
            store: default_store.to_string(),
            assigned: false,
            migration_id: None,
            migration_state: None,
            target_store: None,
        }
    }
}

/// The `"error"` object of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A public error-kind name such as `TenantHasEventsError`.
    pub kind: String,
    pub message: String,
}

/// A reply as `evshift ctl` decodes it; the result stays JSON until the caller knows which
/// command it answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum Reply {
    #[serde(rename = "ok")]
    Ok(Value),
    #[serde(rename = "error")]
    Error(ErrorBody),
}

/// The reply line (without the newline) for a command's result.
pub fn reply_line(result: &Result<Outcome, ControlError>) -> String {
    let envelope = match result {
        Ok(outcome) => Envelope::Ok(outcome),
        Err(error) => Envelope::Error(ErrorBody::from(error)),
    };
    serde_json::to_string(&envelope).unwrap_or_else(|e| {
        let fallback = ControlError::Internal(format!("cannot encode the reply: {e}"));
        serde_json::to_string(&Envelope::Error(ErrorBody::from(&fallback))).unwrap_or_default()
    })
}

/// The reply as the server writes it.
#[derive(Serialize)]
enum Envelope<'a> {
    #[serde(rename = "ok")]
    Ok(&'a Outcome),
    #[serde(rename = "error")]
    Error(ErrorBody),
}

impl From<&ControlError> for ErrorBody {
    fn from(error: &ControlError) -> ErrorBody {
        ErrorBody {
            kind: error.kind().to_string(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(line: &str) -> &'static str {
        Request::parse(line.as_bytes()).unwrap_err().kind()
    }

    #[test]
    fn parses_every_command() {
        let tenant = Uuid::new_v4();
        let requests = [
            Request::Stores,
            Request::Routes { tenant: None },
            Request::Routes {
                tenant: Some(tenant),
            },
            Request::Assign {
                tenant,
                store: "dedicated-1".into(),
            },
            Request::Migrate {
                tenant,
                to: "dedicated-1".into(),
                overrides: OptionOverrides {
                    batch_size: Some(10),
                    rate_limit_events_per_sec: Some(5),
                    manual_cutover: true,
                    verify: Some(VerifyMode::Count),
                    subscriptions: vec!["orders".into(), "invoices".into()],
                },
                operator: Some("alice".into()),
            },
            Request::Migrate {
                tenant,
                to: "x".into(),
                overrides: OptionOverrides::default(),
                operator: None,
            },
            Request::Status { migration: None },
            Request::Status {
                migration: Some(MigrationRef::Id(4)),
            },
            Request::Control {
                action: ControlAction::Pause,
                migration: MigrationRef::Tenant(tenant),
                operator: None,
            },
            Request::Control {
                action: ControlAction::Resume,
                migration: MigrationRef::Id(2),
                operator: Some("bob".into()),
            },
            Request::Control {
                action: ControlAction::Abort,
                migration: MigrationRef::Id(2),
                operator: None,
            },
            Request::Audit {
                migration: MigrationRef::Id(9),
            },
            Request::Control {
                action: ControlAction::Cutover,
                migration: MigrationRef::Id(3),
                operator: None,
            },
            Request::Verify {
                migration: MigrationRef::Tenant(tenant),
                level: Some(VerifyMode::Full),
                operator: Some("carol".into()),
            },
            Request::Verify {
                migration: MigrationRef::Id(1),
                level: None,
                operator: None,
            },
            Request::Subscriptions {
                migration: MigrationRef::Id(1),
                names: vec!["orders".into(), "invoices".into()],
                dry_run: true,
                operator: None,
            },
            Request::Subscriptions {
                migration: MigrationRef::Tenant(tenant),
                names: Vec::new(),
                dry_run: false,
                operator: Some("dave".into()),
            },
        ];
        for request in requests {
            assert_eq!(
                Request::parse(request.to_line().as_bytes()).unwrap(),
                request
            );
        }
        let spaced = Request::parse(b"  {\"command\": \"routes\", \"tenant\": null}\r").unwrap();
        assert_eq!(spaced, Request::Routes { tenant: None });
    }

    #[test]
    fn refuses_malformed_requests() {
        for line in [
            "",
            "nope",
            "[1]",
            "{}",
            r#"{"command":5}"#,
            r#"{"command":"frobnicate"}"#,
            r#"{"command":"stores","extra":1}"#,
            r#"{"command":"routes","tenant":"not-a-uuid"}"#,
            r#"{"command":"assign","tenant":"7f8e2c4a-1111-4222-8333-444455556666"}"#,
            r#"{"command":"stores"} trailing"#,
            r#"{"command":"migrate","tenant":"7f8e2c4a-1111-4222-8333-444455556666"}"#,
            r#"{"command":"migrate","tenant":"7f8e2c4a-1111-4222-8333-444455556666","to":"x","batch_size":-1}"#,
            r#"{"command":"migrate","tenant":"7f8e2c4a-1111-4222-8333-444455556666","to":"x","verify":"md5"}"#,
            r#"{"command":"status","migration":"abc"}"#,
            r#"{"command":"status","migration":0}"#,
            r#"{"command":"pause"}"#,
            r#"{"command":"abort","migration":[1]}"#,
            r#"{"command":"audit","migration":"1","extra":true}"#,
            r#"{"command":"cutover"}"#,
            r#"{"command":"verify","migration":1,"level":"md5"}"#,
            r#"{"command":"verify","migration":1,"levels":"count"}"#,
            r#"{"command":"subscriptions","migration":1,"names":"a,b"}"#,
            r#"{"command":"subscriptions","migration":1,"names":[""]}"#,
            r#"{"command":"subscriptions","migration":1,"names":["a","a"]}"#,
            r#"{"command":"subscriptions","migration":1,"dry_run":"yes"}"#,
        ] {
            assert_eq!(kind_of(line), "InvalidRequestError", "{line}");
        }
        assert_eq!(
            Request::parse(b"\xff\xfe").unwrap_err().kind(),
            "InvalidRequestError"
        );
    }

    #[test]
    fn replies_are_ok_or_error_objects() {
        let view = RouteView::unassigned(Uuid::nil(), "shared");
        let line = reply_line(&Ok(Outcome::Route(view.clone())));
        let Reply::Ok(value) = serde_json::from_str(&line).unwrap() else {
            panic!("not ok: {line}");
        };
        assert_eq!(serde_json::from_value::<RouteView>(value).unwrap(), view);
        let line = reply_line(&Err(ControlError::NoControlStore));
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert!(matches!(reply, Reply::Error(body) if body.kind == "NoControlStoreError"));
    }
}

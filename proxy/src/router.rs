//! The routing state of one client session and the decisions it takes for each unit of client
//! messages: a simple Query, an extended-protocol batch up to Sync (or Flush), a FunctionCall.
//!
//! DESIGN §3-§4: the tenant of a unit comes from the statement, its aggregate or event, the
//! pinned transaction, the session tenant, or else the default store. BEGIN is answered by
//! evshift and reaches a store with the first statement that pins the transaction; SETs and
//! prepared statements are replayed on a store the first time it is needed there.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::backends::Backends;
use crate::cancel::{CancelHandle, CancelTarget};
use crate::classify::{Classified, KeyValue, StatementInfo, StatementKind};
use crate::directory::{Key, Owner};
use crate::gate::{Admission, TenantPass};
use crate::pending::{BackendEntry, Delivered, Effect, Pending, PendingQueue, Swallow};
use crate::server::Shared;
use crate::wire::frontend::{self, BindMessage};
use crate::wire::messages::{self, sqlstate, ErrorFields};
use crate::wire::Frame;
use evshift_control::dual_write::DualWriteRoute;
use evshift_control::MigrationState;

/// Transaction state as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxState {
    Idle,
    /// BEGIN was answered by evshift; it reaches a store with the first pinning statement.
    Deferred {
        begin_sql: String,
        /// SET / SET LOCAL issued before the transaction reached a store.
        deferred_sets: Vec<String>,
    },
    /// A deferred transaction that failed before reaching a store: only COMMIT/ROLLBACK help.
    DeferredFailed,
    /// The transaction runs on this store.
    Pinned(usize),
}

/// A prepared statement as the client defined it.
#[derive(Debug, Clone)]
struct PreparedStatement {
    /// The Parse message to replay on another store (already rewritten if needed).
    parse: Bytes,
    classified: Arc<Classified>,
    generation: u64,
    /// `COPY ... FROM STDIN`: the store ignores Sync and Flush until the copy ends.
    copy_from_stdin: bool,
}

/// Where a unit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Store(usize),
    /// Runs on this store without beginning a deferred transaction there: a unit that only
    /// prepares or describes statements, or that names only new aggregates (no rows anywhere).
    Unpinned(usize),
}

/// After the client asked to end the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Terminate,
}

/// A failed extended batch leaves the client's messages to be discarded up to its Sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    /// Answer the Sync with evshift's own ReadyForQuery.
    Synthetic,
    /// Forward the Sync to this store, which is skipping to it too.
    ToStore(usize),
}

/// Why the router cannot go on with this client session.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("{0}")]
    Malformed(#[from] frontend::Malformed),
    #[error("{0}")]
    Desync(#[from] crate::pending::Desync),
}

/// The routing state of one client session.
pub struct Router {
    shared: Arc<Shared>,
    client_parameters: Vec<(String, String)>,
    pub backends: Backends,
    pub pending: PendingQueue,
    cancel: CancelHandle,
    default_store: usize,
    tx: TxState,
    /// The transaction status last reported to the client.
    status: u8,
    session_tenant: Option<Uuid>,
    /// Session-level SETs, replayed in order on each store that has not run them.
    sets: Vec<String>,
    statements: HashMap<String, PreparedStatement>,
    next_generation: u64,
    /// Extended-protocol messages since the last Sync or Flush.
    batch: Vec<Frame>,
    /// The store of the last routed unit: COPY data follow it.
    last_store: usize,
    discard: Option<Discard>,
    /// The store running the client's COPY FROM STDIN, from its Execute to CopyDone/CopyFail.
    copy_in: Option<usize>,
    /// The tenants this session has work in flight for (a unit or a transaction), each
    /// counted by the gate until the session is idle again.
    passes: HashMap<Uuid, TenantPass>,
    /// Events of migrating tenants the open transaction inserted: dual-written once it ends.
    uncommitted: Vec<(DualWriteRoute, Vec<Uuid>)>,
}

impl Router {
    pub fn new(
        shared: Arc<Shared>,
        client_parameters: Vec<(String, String)>,
        backends: Backends,
        cancel: CancelHandle,
        default_store: usize,
        session_tenant: Option<Uuid>,
    ) -> Router {
        Router {
            shared,
            client_parameters,
            backends,
            pending: PendingQueue::default(),
            cancel,
            default_store,
            tx: TxState::Idle,
            status: b'I',
            session_tenant,
            sets: Vec::new(),
            statements: HashMap::new(),
            next_generation: 1,
            batch: Vec::new(),
            last_store: default_store,
            discard: None,
            copy_in: None,
            passes: HashMap::new(),
            uncommitted: Vec::new(),
        }
    }

    /// Handles complete client messages. `drained` tells that no further complete message is
    /// buffered, so a batch holding a Bind may be sent before its Sync arrives.
    pub async fn on_client_frames(
        &mut self,
        frames: Vec<Frame>,
        drained: bool,
    ) -> Result<Flow, RouterError> {
        for frame in frames {
            if let Some(store) = self.copy_in {
                // PostgreSQL ignores Sync and Flush during COPY FROM STDIN (libpq-style clients
                // send them along with the Execute); they owe the client nothing.
                match frame.tag {
                    b'd' | b'S' | b'H' => {
                        self.forward(store, &frame);
                        continue;
                    }
                    b'c' | b'f' => {
                        self.forward(store, &frame);
                        self.copy_in = None;
                        continue;
                    }
                    _ => self.copy_in = None,
                }
            }
            match frame.tag {
                b'X' => return Ok(Flow::Terminate),
                b'Q' => {
                    self.flush_batch(false).await?;
                    self.on_query(frame).await?;
                }
                b'S' => match self.discard.take() {
                    Some(Discard::Synthetic) => self.push_synthetic(|out, status| {
                        messages::ready_for_query(status, out);
                    }),
                    Some(Discard::ToStore(store)) => {
                        if let Some(tail) = self.pending.open_tail() {
                            tail.readies_expected += 1;
                            tail.open = false;
                        }
                        if let Some(out) = self.backends.output(store) {
                            out.extend_from_slice(&frame.bytes);
                        }
                    }
                    None => {
                        self.batch.push(frame);
                        self.flush_batch(true).await?;
                    }
                },
                _ if self.discard.is_some() => {}
                b'H' => {
                    self.batch.push(frame);
                    self.flush_batch(false).await?;
                }
                b'P' | b'B' | b'D' | b'E' | b'C' => self.batch.push(frame),
                b'd' | b'c' | b'f' => self.forward(self.last_store, &frame),
                // FunctionCall and anything else valid: a unit of its own, keyless.
                _ => self.dispatch_keyless(&frame).await,
            }
        }
        if drained && self.batch.iter().any(|f| f.tag == b'E') {
            self.flush_batch(false).await?;
        }
        Ok(Flow::Continue)
    }

    fn forward(&mut self, store: usize, frame: &Frame) {
        if let Some(out) = self.backends.output(store) {
            out.extend_from_slice(&frame.bytes);
        }
    }

    /// A unit of `store` completed with transaction status `status`.
    pub fn on_completed(&mut self, store: usize, status: u8, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::RecordSet(sql) => {
                    let up_to_date = self.backends.states[store].sets_applied == self.sets.len();
                    self.sets.push(sql);
                    if up_to_date {
                        self.backends.states[store].sets_applied = self.sets.len();
                    }
                }
                Effect::Inserted(route, ids) => self.uncommitted.push((route, ids)),
            }
        }
        if status == b'I' && !self.uncommitted.is_empty() {
            // The transaction ended: what it committed is on the source now (ids of a
            // rolled-back one find no rows).
            self.dual_write();
        }
        if !self.pending.is_empty() {
            return;
        }
        // Nothing else in flight: the store's word on the transaction is final.
        match (&self.tx, status) {
            (TxState::Deferred { .. } | TxState::DeferredFailed, _) => {}
            (_, b'I') => self.tx = TxState::Idle,
            _ => self.tx = TxState::Pinned(store),
        }
        if !matches!(self.tx, TxState::Deferred { .. } | TxState::DeferredFailed) {
            self.status = status;
        }
    }

    fn dual_write(&mut self) {
        let uncommitted = std::mem::take(&mut self.uncommitted);
        let Some(writer) = &self.shared.dual_writer else {
            return;
        };
        for (route, ids) in uncommitted {
            writer.submit(&route, ids);
        }
    }

    /// Gives back the gate passes once the session has nothing in flight.
    pub fn release_if_idle(&mut self) {
        if !self.passes.is_empty() && self.tx == TxState::Idle && self.pending.is_empty() {
            self.passes.clear();
        }
    }

    /// The session with `store` is gone: answer everything owed by it with an error.
    pub fn on_store_lost(&mut self, store: usize, reason: &str) {
        let id = self.backends.stores[store].id.to_string();
        tracing::warn!(store = %id, %reason, "lost a backend session");
        metrics::counter!("evshift_backend_errors_total", "store" => id.clone()).increment(1);
        self.backends.drop_backend(store);
        let owed = self.pending.fail_store(store);
        if self.tx == TxState::Pinned(store) {
            // The store rolled the transaction back; the client must end it.
            self.tx = TxState::DeferredFailed;
            self.uncommitted.clear();
        }
        let error = ErrorFields::error(
            sqlstate::CONNECTION_FAILURE,
            format!("lost the connection to store \"{id}\": {reason}"),
        );
        for readies in owed {
            let mut out = BytesMut::new();
            error.encode(&mut out);
            for _ in 0..readies {
                messages::ready_for_query(self.client_status(), &mut out);
            }
            // Failed entries are answered in place of the store, at the queue's end: the
            // client's earlier answers have all been delivered or failed the same way.
            self.pending.push(Pending::Synthetic(out));
        }
        if self.discard == Some(Discard::ToStore(store)) {
            self.discard = Some(Discard::Synthetic);
        }
    }

    fn client_status(&self) -> u8 {
        match self.tx {
            TxState::Idle => b'I',
            TxState::Deferred { .. } => b'T',
            TxState::DeferredFailed => b'E',
            TxState::Pinned(_) => {
                if self.status == b'E' {
                    b'E'
                } else {
                    b'T'
                }
            }
        }
    }

    fn push_synthetic(&mut self, build: impl FnOnce(&mut BytesMut, u8)) {
        let mut out = BytesMut::new();
        let status = self.client_status();
        build(&mut out, status);
        self.pending.push(Pending::Synthetic(out));
    }

    /// Sends one message that names no key (a FunctionCall, a Query that is not UTF-8) as a
    /// unit of its own, owed one ReadyForQuery.
    async fn dispatch_keyless(&mut self, frame: &Frame) {
        let target = self.keyless_admitted().await;
        let payload = BytesMut::from(&frame.bytes[..]);
        self.dispatch(target, payload, 1, false, Vec::new(), &[])
            .await;
    }

    // ----- simple Query -------------------------------------------------------------------

    async fn on_query(&mut self, frame: Frame) -> Result<(), RouterError> {
        let Some(sql) = frontend::query_text(frame.body()) else {
            // Not UTF-8: the store answers with its own error.
            self.dispatch_keyless(&frame).await;
            return Ok(());
        };
        let classified = Arc::new(self.shared.classifier.classify(sql));
        if self.answer_transaction_control(sql, &classified) {
            return Ok(());
        }
        let statements: Vec<(&StatementInfo, Option<&BindMessage>)> =
            classified.statements.iter().map(|s| (s, None)).collect();
        let target = match self.resolve_admitted(&statements).await {
            Ok(target) => target,
            Err(error) => {
                self.fail_unit(error, 1, false);
                return Ok(());
            }
        };
        let inserted = self.inserted_events(&statements);
        let payload = match &classified.rewritten_sql {
            Some(rewritten) => {
                let mut out = BytesMut::new();
                frontend::query(rewritten, &mut out);
                out
            }
            None => BytesMut::from(&frame.bytes[..]),
        };
        let mut effects = inserted;
        let single = classified.statements.len() == 1;
        if single
            && self.tx == TxState::Idle
            && matches!(
                classified.statements[0].kind,
                StatementKind::Set { local: false }
            )
        {
            effects.push(Effect::RecordSet(sql.to_string()));
        }
        let kinds: Vec<StatementKind> = classified
            .statements
            .iter()
            .map(|s| s.kind.clone())
            .collect();
        self.dispatch(target, payload, 1, false, effects, &kinds)
            .await;
        Ok(())
    }

    /// Answers BEGIN, COMMIT/ROLLBACK of a deferred transaction, SET inside one, and
    /// `SET evshift.tenant_id` without a store. Returns true when the query was answered.
    fn answer_transaction_control(&mut self, sql: &str, classified: &Classified) -> bool {
        let [statement] = classified.statements.as_slice() else {
            return false;
        };
        match (&statement.kind, &mut self.tx) {
            (StatementKind::Begin, TxState::Idle) => {
                self.tx = TxState::Deferred {
                    begin_sql: sql.to_string(),
                    deferred_sets: Vec::new(),
                };
                self.push_synthetic(|out, status| {
                    messages::command_complete("BEGIN", out);
                    messages::ready_for_query(status, out);
                });
                true
            }
            (
                StatementKind::Commit | StatementKind::Rollback,
                TxState::Deferred { .. } | TxState::DeferredFailed,
            ) => {
                let tag = if statement.kind == StatementKind::Commit
                    && matches!(self.tx, TxState::Deferred { .. })
                {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                self.tx = TxState::Idle;
                self.push_synthetic(|out, status| {
                    messages::command_complete(tag, out);
                    messages::ready_for_query(status, out);
                });
                true
            }
            (StatementKind::Set { .. }, TxState::Deferred { deferred_sets, .. }) => {
                deferred_sets.push(sql.to_string());
                self.push_synthetic(|out, status| {
                    messages::command_complete("SET", out);
                    messages::ready_for_query(status, out);
                });
                true
            }
            (StatementKind::SetSessionTenant(value), _) => {
                match value.as_ref().map(|v| key_uuid(v, None)) {
                    Some(Some(tenant)) => self.session_tenant = Some(tenant),
                    None => self.session_tenant = None,
                    Some(None) => {
                        let error = ErrorFields::error(
                            "22P02",
                            "evshift.tenant_id must be a uuid".to_string(),
                        );
                        self.fail_unit(error, 1, false);
                        return true;
                    }
                }
                self.push_synthetic(|out, status| {
                    messages::command_complete("SET", out);
                    messages::ready_for_query(status, out);
                });
                true
            }
            (StatementKind::Commit | StatementKind::Rollback, _) => false,
            (_, TxState::DeferredFailed) => {
                let error = ErrorFields::error(
                    "25P02",
                    "current transaction is aborted, commands ignored until end of transaction block",
                );
                self.fail_unit(error, 1, false);
                true
            }
            _ => false,
        }
    }

    // ----- extended protocol --------------------------------------------------------------

    /// Routes the buffered batch; `sync` tells whether it ends with Sync.
    async fn flush_batch(&mut self, sync: bool) -> Result<(), RouterError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.batch);
        // Register Parses first: Binds in the same batch refer to them.
        let mut payload = BytesMut::new();
        let mut parsed_here: Vec<(String, u64)> = Vec::new();
        let mut closed_here: Vec<String> = Vec::new();
        for frame in &frames {
            match frame.tag {
                b'P' => {
                    let (name, bytes, generation) = self.register_parse(frame)?;
                    parsed_here.push((name, generation));
                    payload.extend_from_slice(&bytes);
                }
                b'C' => {
                    let (kind, name) = frontend::target_message(frame.body())?;
                    if kind == b'S' {
                        self.statements.remove(name);
                        closed_here.push(name.to_string());
                    }
                    payload.extend_from_slice(&frame.bytes);
                }
                _ => payload.extend_from_slice(&frame.bytes),
            }
        }
        // What the batch executes, with its parameters.
        let mut bound: Vec<(Arc<Classified>, BindMessage)> = Vec::new();
        for frame in frames.iter().filter(|f| f.tag == b'B') {
            let bind = frontend::bind_message(frame.body())?;
            if let Some(statement) = self.statements.get(bind.statement) {
                bound.push((Arc::clone(&statement.classified), bind));
            }
        }
        let kinds: Vec<StatementKind> = bound
            .iter()
            .flat_map(|(c, _)| c.statements.iter().map(|s| s.kind.clone()))
            .collect();
        if self.answer_transaction_batch(&frames, &kinds, sync) {
            return Ok(());
        }
        let mut statements: Vec<(&StatementInfo, Option<&BindMessage>)> = Vec::new();
        for (classified, bind) in &bound {
            for info in &classified.statements {
                statements.push((info, Some(bind)));
            }
        }
        let forced = self.settle_open_tail();
        let executes = frames.iter().any(|f| f.tag == b'E');
        let target = match forced {
            Some(target) => Ok(target),
            // Parse and Describe run nothing: they need no transaction (asyncpg and
            // tokio-postgres prepare before the first Bind).
            None if !executes => Ok(self.unpinned(self.keyless_target())),
            None if statements.is_empty() => Ok(self.keyless_admitted().await),
            None => self.resolve_admitted(&statements).await,
        };
        let target = match target {
            Ok(target) => target,
            Err(error) => {
                self.fail_unit(error, u32::from(sync), !sync);
                return Ok(());
            }
        };
        let inserted = self.inserted_events(&statements);
        let needed: Vec<String> = bound
            .iter()
            .map(|(_, bind)| bind.statement.to_string())
            .filter(|name| !parsed_here.iter().any(|(n, _)| n == name))
            .collect();
        let copies = bound.iter().any(|(_, bind)| {
            self.statements
                .get(bind.statement)
                .is_some_and(|statement| statement.copy_from_stdin)
        });
        // The store ignores a Sync sent with a COPY's Execute: the unit stays open until the
        // Sync after CopyDone.
        let sync = sync && !copies;
        let store = self
            .dispatch_batch(target, payload, sync, &needed, &kinds, inserted)
            .await;
        if copies {
            self.copy_in = store;
        }
        if let Some(store) = store {
            for (name, generation) in parsed_here {
                self.backends.states[store]
                    .prepared
                    .insert(name, generation);
            }
            for name in closed_here {
                for (index, state) in self.backends.states.iter_mut().enumerate() {
                    if state.prepared.remove(&name).is_some() && index != store {
                        state.to_close.push(name.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// The store an open batch (sent at Flush) binds the next batch to. A batch that only
    /// prepared or described statements (asyncpg sends Parse, Describe, Flush before its first
    /// Bind) binds nothing: evshift ends it with a Sync of its own, whose ReadyForQuery it
    /// swallows, so that the next batch may go to any store.
    fn settle_open_tail(&mut self) -> Option<Target> {
        let tail = self.pending.open_tail()?;
        let store = tail.store;
        if tail.executed {
            // The rest of the batch runs where its start ran, in or outside the transaction
            // as it did: a BEGIN cannot go in between.
            return Some(match tail.unpinned {
                true => Target::Unpinned(store),
                false => Target::Store(store),
            });
        }
        tail.open = false;
        tail.extra_readies += 1;
        if let Some(out) = self.backends.output(store) {
            frontend::sync(out);
        }
        None
    }

    /// Classifies a Parse, records the statement, and returns its name, the message to send
    /// (rewritten when the classifier rewrote the SQL) and its generation.
    fn register_parse(&mut self, frame: &Frame) -> Result<(String, Bytes, u64), RouterError> {
        let body = frame.body();
        let mut copy_from_stdin = false;
        let (name, classified, bytes) = match frontend::parse_message(body) {
            Ok(parse) => {
                copy_from_stdin = is_copy_from_stdin(parse.query);
                let classified = Arc::new(self.shared.classifier.classify(parse.query));
                let bytes = match &classified.rewritten_sql {
                    Some(rewritten) => rewrite_parse(body, parse.name, parse.query, rewritten),
                    None => frame.bytes.clone(),
                };
                (parse.name.to_string(), classified, bytes)
            }
            // Invalid UTF-8 in the SQL: keep it unclassified; the store rejects it.
            Err(_) => {
                let (name, _) =
                    crate::wire::frame::read_cstr(body).ok_or(frontend::Malformed("Parse"))?;
                (
                    String::from_utf8_lossy(name).into_owned(),
                    Arc::new(Classified {
                        statements: Vec::new(),
                        rewritten_sql: None,
                    }),
                    frame.bytes.clone(),
                )
            }
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        self.statements.insert(
            name.clone(),
            PreparedStatement {
                parse: bytes.clone(),
                classified,
                generation,
                copy_from_stdin,
            },
        );
        Ok((name, bytes, generation))
    }

    /// Answers a batch that only begins a transaction (or ends a deferred one) without a store.
    fn answer_transaction_batch(
        &mut self,
        frames: &[Frame],
        kinds: &[StatementKind],
        sync: bool,
    ) -> bool {
        if kinds.is_empty() || !frames.iter().any(|f| f.tag == b'E') {
            return false;
        }
        let tag = if kinds.iter().all(|k| *k == StatementKind::Begin) && self.tx == TxState::Idle {
            self.tx = TxState::Deferred {
                begin_sql: "BEGIN".to_string(),
                deferred_sets: Vec::new(),
            };
            "BEGIN"
        } else if kinds
            .iter()
            .all(|k| matches!(k, StatementKind::Commit | StatementKind::Rollback))
            && matches!(self.tx, TxState::Deferred { .. } | TxState::DeferredFailed)
        {
            let committed =
                matches!(self.tx, TxState::Deferred { .. }) && kinds[0] == StatementKind::Commit;
            self.tx = TxState::Idle;
            if committed {
                "COMMIT"
            } else {
                "ROLLBACK"
            }
        } else {
            return false;
        };
        let mut out = BytesMut::new();
        for frame in frames {
            match frame.tag {
                b'P' => messages::parse_complete(&mut out),
                b'B' => messages::bind_complete(&mut out),
                b'D' => {
                    if frame.body().first() == Some(&b'S') {
                        messages::no_parameters(&mut out);
                    }
                    messages::no_data(&mut out);
                }
                b'E' => messages::command_complete(tag, &mut out),
                b'C' => messages::close_complete(&mut out),
                _ => {}
            }
        }
        if sync {
            messages::ready_for_query(self.client_status(), &mut out);
        }
        self.pending.push(Pending::Synthetic(out));
        true
    }

    // ----- resolution ---------------------------------------------------------------------

    /// The target of a unit without keys.
    fn keyless_target(&self) -> Target {
        match &self.tx {
            TxState::Pinned(store) => Target::Store(*store),
            _ => match self.session_tenant {
                Some(tenant) => self
                    .store_of_tenant(tenant)
                    .map(Target::Store)
                    .unwrap_or(Target::Store(self.default_store)),
                None => Target::Store(self.default_store),
            },
        }
    }

    /// The store that serves `tenant` now.
    fn store_of_tenant(&self, tenant: Uuid) -> Result<usize, ErrorFields> {
        let table = self.shared.routing.load();
        let Some(route) = table.route(&tenant) else {
            return Ok(self.default_store);
        };
        let id = route.read_store();
        self.shared.store_index(id).ok_or_else(|| {
            ErrorFields::error(
                sqlstate::INTERNAL_ERROR,
                format!("tenant {tenant} is routed to store \"{id}\", which is not configured"),
            )
        })
    }

    /// DESIGN §3, in order: tenant in the statement; its aggregate or event; the pinned
    /// transaction; the session tenant; the default store.
    async fn resolve(
        &self,
        statements: &[(&StatementInfo, Option<&BindMessage<'_>>)],
        involved: &mut Vec<Uuid>,
    ) -> Result<Target, ErrorFields> {
        let mut chosen: Option<(usize, String)> = None;
        let mut new_aggregate = false;
        for (info, bind) in statements {
            let tenants: Vec<Uuid> = info
                .tenants
                .iter()
                .filter_map(|k| key_uuid(k, *bind))
                .collect();
            for tenant in &tenants {
                let store = self.store_of_tenant(*tenant)?;
                self.merge(&mut chosen, store, format!("tenant {tenant}"))?;
            }
            involved.extend(&tenants);
            if !tenants.is_empty() {
                continue;
            }
            let keys = info
                .aggregates
                .iter()
                .filter_map(|k| key_uuid(k, *bind).map(Key::Aggregate))
                .chain(
                    info.events
                        .iter()
                        .filter_map(|k| key_uuid(k, *bind).map(Key::Event)),
                );
            for key in keys {
                let owner = self
                    .shared
                    .directory
                    .owner(key, |store| self.serves(store))
                    .await
                    .map_err(|e| ErrorFields::error(sqlstate::CONNECTION_FAILURE, e.to_string()))?;
                match owner {
                    Owner::Tenant(Some(tenant)) => {
                        let store = self.store_of_tenant(tenant)?;
                        self.merge(&mut chosen, store, format!("tenant {tenant}"))?;
                        involved.push(tenant);
                    }
                    Owner::Tenant(None) => self.merge(
                        &mut chosen,
                        self.default_store,
                        "rows without tenant".into(),
                    )?,
                    Owner::Nowhere => new_aggregate = true,
                }
            }
        }
        if let Some((store, why)) = chosen {
            if let TxState::Pinned(pinned) = self.tx {
                if pinned != store {
                    return Err(self.cross_store(pinned, store, &why));
                }
            }
            return Ok(Target::Store(store));
        }
        let only_horizon = statements
            .iter()
            .all(|(info, _)| info.kind == StatementKind::HorizonRead);
        match (&self.tx, new_aggregate) {
            (TxState::Pinned(store), _) => Ok(Target::Store(*store)),
            (_, true) => Ok(Target::Unpinned(self.default_store)),
            // The horizon read changes nothing and its value is only ever compared by a
            // rewritten read that takes its own store's horizon: it must not pin a deferred
            // transaction to the store that answers it.
            _ if only_horizon && !statements.is_empty() => Ok(self.unpinned(self.keyless_target())),
            _ => {
                involved.extend(self.keyless_tenant());
                Ok(self.keyless_target())
            }
        }
    }

    /// Whether `store` holds some tenant now: the default store, or the read store of a route.
    fn serves(&self, store: &crate::store::Store) -> bool {
        if store.is_default {
            return true;
        }
        let table = self.shared.routing.load();
        table.routes().iter().any(|r| r.read_store() == &*store.id)
    }

    /// The tenant a keyless unit belongs to: the session tenant, outside a pinned transaction.
    fn keyless_tenant(&self) -> Option<Uuid> {
        match self.tx {
            TxState::Pinned(_) => None,
            _ => self.session_tenant,
        }
    }

    /// [`Router::resolve`], then a gate pass for every tenant involved. A unit is resolved
    /// again when it waited at a closed gate, or when the routing table changed while it was
    /// resolved and admitted: a whole cutover (gate closed, MIGRATED, gate open) can pass
    /// between the two, and the unit must not go to the store the tenant has left.
    async fn resolve_admitted(
        &mut self,
        statements: &[(&StatementInfo, Option<&BindMessage<'_>>)],
    ) -> Result<Target, ErrorFields> {
        loop {
            let table = self.shared.routing.load_full();
            let mut involved = Vec::new();
            let target = self.resolve(statements, &mut involved).await?;
            if self.admit(&involved).await && self.routing_unchanged_since(&table) {
                return Ok(target);
            }
        }
    }

    /// [`Router::keyless_target`] with a gate pass for the session tenant.
    async fn keyless_admitted(&mut self) -> Target {
        loop {
            let table = self.shared.routing.load_full();
            let tenant: Vec<Uuid> = self.keyless_tenant().into_iter().collect();
            let target = self.keyless_target();
            if self.admit(&tenant).await && self.routing_unchanged_since(&table) {
                return target;
            }
        }
    }

    /// Whether `table` is still the routing table (any swap after it was loaded, even one
    /// with the same routes, counts as a change: resolving again is cheap and rare).
    fn routing_unchanged_since(&self, table: &Arc<evshift_control::RoutingTable>) -> bool {
        Arc::ptr_eq(table, &self.shared.routing.load_full())
    }

    /// Takes a gate pass for each of `tenants` this session does not hold yet. False if one
    /// of them had to wait (the caller resolves again).
    async fn admit(&mut self, tenants: &[Uuid]) -> bool {
        let mut immediate = true;
        for tenant in tenants {
            if self.passes.contains_key(tenant) {
                continue;
            }
            let pass = match self.shared.gate.enter(*tenant).await {
                Admission::Immediate(pass) => pass,
                Admission::AfterHold(pass) => {
                    immediate = false;
                    pass
                }
            };
            self.passes.insert(*tenant, pass);
        }
        immediate
    }

    /// The events a unit inserts for tenants in DUAL_WRITE, as effects: they are dual-written
    /// once the transaction that wrote them ends.
    fn inserted_events(
        &self,
        statements: &[(&StatementInfo, Option<&BindMessage<'_>>)],
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.shared.dual_writer.is_none() {
            return effects;
        }
        let table = self.shared.routing.load();
        for (info, bind) in statements.iter().filter(|(i, _)| i.inserts_events) {
            let [tenant] = info.tenants.as_slice() else {
                // Several tenants (or none) in one INSERT: the tail copies those rows.
                continue;
            };
            let Some(tenant) = key_uuid(tenant, *bind) else {
                continue;
            };
            let Some(route) = table.route(&tenant) else {
                continue;
            };
            let Some(migration) = &route.migration else {
                continue;
            };
            if migration.state != MigrationState::DualWrite {
                continue;
            }
            let ids: Vec<Uuid> = info
                .events
                .iter()
                .filter_map(|k| key_uuid(k, *bind))
                .collect();
            if ids.is_empty() {
                continue;
            }
            let route = DualWriteRoute {
                migration_id: migration.migration_id,
                tenant,
                source_store: route.store.clone(),
                target_store: migration.target_store.clone(),
            };
            effects.push(Effect::Inserted(route, ids));
        }
        effects
    }

    /// `target` without beginning a deferred transaction (a pinned one stays pinned).
    fn unpinned(&self, target: Target) -> Target {
        match (target, &self.tx) {
            (_, TxState::Pinned(store)) => Target::Store(*store),
            (Target::Store(store), _) => Target::Unpinned(store),
            (unpinned, _) => unpinned,
        }
    }

    fn merge(
        &self,
        chosen: &mut Option<(usize, String)>,
        store: usize,
        why: String,
    ) -> Result<(), ErrorFields> {
        match chosen {
            None => *chosen = Some((store, why)),
            Some((existing, first)) if *existing != store => {
                return Err(ErrorFields::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "statement spans stores \"{}\" ({first}) and \"{}\" ({why})",
                        self.backends.stores[*existing].id, self.backends.stores[store].id
                    ),
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn cross_store(&self, pinned: usize, store: usize, why: &str) -> ErrorFields {
        ErrorFields::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "cross-store transaction: the transaction runs on store \"{}\" but this statement ({why}) belongs to store \"{}\"",
                self.backends.stores[pinned].id, self.backends.stores[store].id
            ),
        )
    }

    // ----- sending ------------------------------------------------------------------------

    /// Sends an extended batch, replaying the statements it binds that the store lacks.
    /// Returns the store it went to.
    async fn dispatch_batch(
        &mut self,
        target: Target,
        payload: BytesMut,
        sync: bool,
        needed: &[String],
        kinds: &[StatementKind],
        effects: Vec<Effect>,
    ) -> Option<usize> {
        let store = self.store_for(target);
        if let Err(error) = self.ensure_backend(store).await {
            self.fail_unit(error, u32::from(sync), !sync);
            return None;
        }
        let mut prefix = BytesMut::new();
        let mut swallow = Vec::new();
        for name in needed {
            let Some(statement) = self.statements.get(name) else {
                continue;
            };
            let state = &self.backends.states[store];
            match state.prepared.get(name) {
                Some(generation) if *generation == statement.generation => continue,
                Some(_) => {
                    frontend::close_statement(name, &mut prefix);
                    swallow.push(Swallow::CloseComplete);
                }
                None => {}
            }
            prefix.extend_from_slice(&statement.parse);
            swallow.push(Swallow::ParseComplete);
            let generation = statement.generation;
            self.backends.states[store]
                .prepared
                .insert(name.clone(), generation);
        }
        self.send(
            target,
            store,
            prefix,
            swallow,
            payload,
            u32::from(sync),
            !sync,
            effects,
            kinds,
        )
        .await;
        Some(store)
    }

    /// Sends a simple-protocol (or FunctionCall) unit.
    async fn dispatch(
        &mut self,
        target: Target,
        payload: BytesMut,
        readies: u32,
        open: bool,
        effects: Vec<Effect>,
        kinds: &[StatementKind],
    ) {
        let store = self.store_for(target);
        if let Err(error) = self.ensure_backend(store).await {
            self.fail_unit(error, readies, open);
            return;
        }
        self.send(
            target,
            store,
            BytesMut::new(),
            Vec::new(),
            payload,
            readies,
            open,
            effects,
            kinds,
        )
        .await;
    }

    fn store_for(&self, target: Target) -> usize {
        match target {
            Target::Store(store) | Target::Unpinned(store) => store,
        }
    }

    async fn ensure_backend(&mut self, store: usize) -> Result<(), ErrorFields> {
        if self.backends.is_open(store)
            && !self.pending.awaits(store)
            && self.backends.is_dead(store)
        {
            if self.tx == TxState::Pinned(store) {
                self.on_store_lost(store, "the store closed the connection");
                return Err(ErrorFields::error(
                    sqlstate::CONNECTION_FAILURE,
                    format!(
                        "lost the connection to store \"{}\" inside a transaction",
                        self.backends.stores[store].id
                    ),
                ));
            }
            tracing::info!(store = %self.backends.stores[store].id, "reconnecting a backend session the store closed");
            self.backends.drop_backend(store);
        }
        self.backends
            .ensure_open(
                store,
                &self.client_parameters,
                self.shared.config.limits.connect_timeout(),
            )
            .await
            .map_err(|e| {
                let id = self.backends.stores[store].id.to_string();
                metrics::counter!("evshift_backend_errors_total", "store" => id).increment(1);
                let mut error = e.to_client_error();
                error.severity = "ERROR".into();
                error
            })
    }

    /// Writes a unit to `store`: replayed SETs, a deferred BEGIN, pending Closes, `prefix`
    /// (replayed Parses), then the client's messages; and queues the answers owed.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        target: Target,
        store: usize,
        prefix: BytesMut,
        prefix_swallow: Vec<Swallow>,
        payload: BytesMut,
        readies: u32,
        open: bool,
        effects: Vec<Effect>,
        kinds: &[StatementKind],
    ) {
        let mut out = BytesMut::new();
        let mut swallow = Vec::new();
        let continues_open_batch = self.pending.open_tail().is_some_and(|t| t.store == store);
        if continues_open_batch {
            // The store is inside an extended batch: a Query would end it, so a deferred BEGIN
            // goes in as extended-protocol statements of the same batch.
            self.begin_if_deferred(target, store, true, &mut out, &mut swallow);
        } else {
            self.replay_sets(store, &mut out, &mut swallow);
            self.begin_if_deferred(target, store, false, &mut out, &mut swallow);
            self.close_stale(store, &mut out, &mut swallow);
        }
        let began = matches!(self.tx, TxState::Pinned(s) if s == store) && !swallow.is_empty();
        out.extend_from_slice(&prefix);
        swallow.extend(prefix_swallow);
        out.extend_from_slice(&payload);
        tracing::debug!(
            store = %self.backends.stores[store].id,
            ?target,
            tx = ?self.tx,
            readies,
            open,
            injected = swallow.len(),
            bytes = out.len() + payload.len(),
            "routing a unit"
        );
        let status_override = match (target, &self.tx) {
            (Target::Unpinned(_), TxState::Deferred { .. } | TxState::DeferredFailed) => {
                Some(self.client_status())
            }
            _ => None,
        };
        self.predict_transaction(store, kinds);
        match self.pending.open_tail() {
            Some(tail) if tail.store == store => {
                tail.swallow.extend(swallow);
                tail.readies_expected += readies;
                tail.open = open;
                tail.effects.extend(effects);
                if began {
                    tail.status_override = None;
                }
                tail.executed |= !kinds.is_empty();
            }
            _ => {
                let mut entry = BackendEntry::new(store);
                entry.swallow = swallow.into();
                entry.readies_expected = readies;
                entry.open = open;
                entry.effects = effects;
                entry.status_override = status_override;
                entry.executed = !kinds.is_empty();
                entry.unpinned = matches!(target, Target::Unpinned(_));
                self.pending.push(Pending::Backend(entry));
            }
        }
        if let Some(output) = self.backends.output(store) {
            output.extend_from_slice(&out);
        }
        self.last_store = store;
        let state = &self.backends.states[store];
        self.cancel
            .set_target(state.cancel_key.map(|(pid, secret)| CancelTarget {
                store: Arc::clone(&self.backends.stores[store]),
                pid,
                secret,
            }));
        self.backends.routed[store].increment(1);
    }

    fn replay_sets(&mut self, store: usize, out: &mut BytesMut, swallow: &mut Vec<Swallow>) {
        let applied = self.backends.states[store].sets_applied;
        if applied < self.sets.len() {
            frontend::query(&self.sets[applied..].join(";\n"), out);
            swallow.push(Swallow::UntilReady);
            self.backends.states[store].sets_applied = self.sets.len();
        }
    }

    fn begin_if_deferred(
        &mut self,
        target: Target,
        store: usize,
        extended: bool,
        out: &mut BytesMut,
        swallow: &mut Vec<Swallow>,
    ) {
        if let Target::Unpinned(_) = target {
            return;
        }
        let TxState::Deferred {
            begin_sql,
            deferred_sets,
        } = &self.tx
        else {
            return;
        };
        let statements: Vec<&str> = std::iter::once(begin_sql.as_str())
            .chain(deferred_sets.iter().map(String::as_str))
            .map(|sql| sql.trim_end().trim_end_matches(';'))
            .collect();
        if extended {
            for sql in statements {
                frontend::parse_bind_execute(sql, out);
                swallow.extend([
                    Swallow::ParseComplete,
                    Swallow::BindComplete,
                    Swallow::CommandComplete,
                ]);
            }
            // The injected Parse replaced the unnamed statement on this store.
            self.backends.states[store].prepared.remove("");
        } else {
            frontend::query(&statements.join(";\n"), out);
            swallow.push(Swallow::UntilReady);
        }
        self.tx = TxState::Pinned(store);
        self.status = b'T';
    }

    fn close_stale(&mut self, store: usize, out: &mut BytesMut, swallow: &mut Vec<Swallow>) {
        let names = std::mem::take(&mut self.backends.states[store].to_close);
        if names.is_empty() {
            return;
        }
        for name in &names {
            frontend::close_statement(name, out);
        }
        frontend::sync(out);
        swallow.push(Swallow::UntilReady);
    }

    /// Updates the transaction state from the statements a unit runs; the store's
    /// ReadyForQuery corrects it once nothing else is in flight.
    fn predict_transaction(&mut self, store: usize, kinds: &[StatementKind]) {
        for kind in kinds {
            match kind {
                StatementKind::Begin if self.tx == TxState::Idle => {
                    self.tx = TxState::Pinned(store)
                }
                StatementKind::Commit | StatementKind::Rollback => {
                    if let TxState::Pinned(_) = self.tx {
                        self.tx = TxState::Idle;
                    }
                }
                _ => {}
            }
        }
    }

    /// Answers a unit with `error`. Inside a transaction pinned to a reachable store the store
    /// itself raises the error, so that its transaction is aborted as the client expects.
    fn fail_unit(&mut self, error: ErrorFields, readies: u32, open: bool) {
        metrics::counter!("evshift_routing_errors_total", "sqlstate" => error.code.clone())
            .increment(1);
        if let TxState::Pinned(store) = self.tx {
            if self.backends.is_open(store) {
                self.raise_on_store(store, &error, readies, open);
                return;
            }
        }
        if let TxState::Deferred { .. } = self.tx {
            self.tx = TxState::DeferredFailed;
        }
        let mut out = BytesMut::new();
        error.encode(&mut out);
        for _ in 0..readies {
            messages::ready_for_query(self.client_status(), &mut out);
        }
        self.pending.push(Pending::Synthetic(out));
        if open {
            self.discard = Some(Discard::Synthetic);
        }
    }

    fn raise_on_store(&mut self, store: usize, error: &ErrorFields, readies: u32, open: bool) {
        let sql = raise_sql(error);
        let mut out = BytesMut::new();
        let mut entry = BackendEntry::new(store);
        if readies > 0 && !open && self.pending.open_tail().is_none() {
            frontend::query(&sql, &mut out);
        } else {
            frontend::parse_bind_execute(&sql, &mut out);
            entry
                .swallow
                .extend([Swallow::ParseComplete, Swallow::BindComplete]);
            if readies > 0 {
                frontend::sync(&mut out);
            } else {
                self.discard = Some(Discard::ToStore(store));
            }
        }
        entry.readies_expected = readies;
        entry.open = open;
        match self.pending.open_tail() {
            Some(tail) if tail.store == store => {
                tail.swallow.extend(entry.swallow);
                tail.readies_expected += readies;
                tail.open = open;
            }
            _ => self.pending.push(Pending::Backend(entry)),
        }
        if let Some(output) = self.backends.output(store) {
            output.extend_from_slice(&out);
        }
        self.status = b'E';
    }

    /// Applies a message delivered from a store to the client-visible state.
    pub fn on_delivered(&mut self, delivered: Delivered) {
        if let Delivered::Completed {
            store,
            status,
            effects,
        } = delivered
        {
            self.on_completed(store, status, effects);
        }
    }
}

/// A statement that makes a store raise `error` with its SQLSTATE, inside whatever transaction
/// the store runs.
fn raise_sql(error: &ErrorFields) -> String {
    let message = error.message.replace('\'', "''").replace('$', "");
    let code: String = error
        .code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!(
        "DO $evshift$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{message}'; END $evshift$"
    )
}

/// `COPY ... FROM STDIN` (the form whose data follow from the client).
fn is_copy_from_stdin(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    words.first().is_some_and(|w| w == "COPY")
        && words.windows(2).any(|w| w[0] == "FROM" && w[1] == "STDIN")
}

/// A key's value as a uuid: a literal, or a Bind parameter in text or binary format.
fn key_uuid(key: &KeyValue, bind: Option<&BindMessage>) -> Option<Uuid> {
    match key {
        KeyValue::Literal(text) => Uuid::parse_str(text).ok(),
        KeyValue::Param(n) => {
            let (value, format) = bind?.param(*n)?;
            if format == 1 {
                Uuid::from_slice(value).ok()
            } else {
                Uuid::parse_str(std::str::from_utf8(value).ok()?).ok()
            }
        }
    }
}

/// A Parse message for `name` with `rewritten` SQL and the original parameter types.
fn rewrite_parse(body: &[u8], name: &str, original: &str, rewritten: &str) -> Bytes {
    let types = &body[name.len() + 1 + original.len() + 1..];
    let mut out = BytesMut::with_capacity(body.len() + rewritten.len());
    out.put_u8(b'P');
    out.put_i32((4 + name.len() + 1 + rewritten.len() + 1 + types.len()) as i32);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(rewritten.as_bytes());
    out.put_u8(0);
    out.put_slice(types);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_from_stdin_is_recognised() {
        assert!(is_copy_from_stdin("COPY events (event_id) FROM STDIN"));
        assert!(is_copy_from_stdin(
            "  copy t from   stdin with (format binary)"
        ));
        assert!(!is_copy_from_stdin("COPY t TO STDOUT"));
        assert!(!is_copy_from_stdin("SELECT 'COPY x FROM STDIN'"));
    }

    #[test]
    fn raise_sql_cannot_be_escaped_from() {
        let error = ErrorFields::error("0A000", "store \"a\" isn't $evshift$ b");
        let sql = raise_sql(&error);
        assert!(sql.contains("isn''t"));
        assert_eq!(sql.matches("$evshift$").count(), 2);
    }

    #[test]
    fn rewritten_parse_keeps_name_and_types() {
        let mut original = BytesMut::new();
        let _ =
            postgres_protocol::message::frontend::parse("s1", "SELECT $1", [25u32], &mut original);
        let body = &original[5..];
        let rewritten = rewrite_parse(body, "s1", "SELECT $1", "SELECT $1 + 0");
        let parsed = frontend::parse_message(&rewritten[5..]).unwrap();
        assert_eq!(parsed.name, "s1");
        assert_eq!(parsed.query, "SELECT $1 + 0");
        assert_eq!(
            &rewritten[rewritten.len() - 6..],
            &original[original.len() - 6..]
        );
    }

    #[test]
    fn uuid_keys_from_text_and_binary_parameters() {
        let id = Uuid::new_v4();
        assert_eq!(key_uuid(&KeyValue::Literal(id.to_string()), None), Some(id));
        assert_eq!(key_uuid(&KeyValue::Literal("nope".into()), None), None);
        assert_eq!(key_uuid(&KeyValue::Param(1), None), None);
    }
}

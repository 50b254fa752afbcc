//! The backend sessions of one client session: at most one per store, opened lazily, each with
//! what it has already been told (replayed SETs, prepared statements).
//!
//! Read and write halves live in separate vectors so that the relay can read from one store
//! while writing to another (or the same) without aliasing borrows.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::backend::{self, BackendError, BackendSession};
use crate::store::Store;

/// Read side of one backend session.
pub struct BackendReader {
    pub stream: OwnedReadHalf,
    pub input: BytesMut,
}

/// Write side of one backend session. It lives exactly as long as the session is open, so it
/// carries the session's place in `evshift_backend_connections_open`.
pub struct BackendWriter {
    pub stream: OwnedWriteHalf,
    pub output: BytesMut,
    _open: OpenGauge,
}

/// One open backend session in `evshift_backend_connections_open{store}`, from creation to drop
/// (however the session ends: closed, lost, or the client session gone).
struct OpenGauge(metrics::Gauge);

impl OpenGauge {
    fn new(store: &Store) -> OpenGauge {
        let gauge =
            metrics::gauge!("evshift_backend_connections_open", "store" => store.id.to_string());
        gauge.increment(1.0);
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What a backend session has been told, beyond the client's own messages to it.
#[derive(Debug, Default)]
pub struct BackendState {
    /// How many of the session's recorded SETs this backend has run.
    pub sets_applied: usize,
    /// Prepared statements present on this backend, with the generation of their text.
    pub prepared: HashMap<String, u64>,
    /// Statements the client closed elsewhere: close them here before anything else.
    pub to_close: Vec<String>,
    /// The store's key for CancelRequest.
    pub cancel_key: Option<(i32, i32)>,
}

/// All backend sessions of one client session, indexed like `Shared::stores`.
pub struct Backends {
    pub stores: Vec<Arc<Store>>,
    pub readers: Vec<Option<BackendReader>>,
    pub writers: Vec<Option<BackendWriter>>,
    pub states: Vec<BackendState>,
    /// `evshift_statements_routed_total{store}`, resolved once per session, not per statement.
    pub routed: Vec<metrics::Counter>,
}

impl Backends {
    pub fn new(stores: Vec<Arc<Store>>) -> Backends {
        let n = stores.len();
        let routed = stores
            .iter()
            .map(|s| metrics::counter!("evshift_statements_routed_total", "store" => s.id.to_string()))
            .collect();
        Backends {
            routed,
            stores,
            readers: (0..n).map(|_| None).collect(),
            writers: (0..n).map(|_| None).collect(),
            states: (0..n).map(|_| BackendState::default()).collect(),
        }
    }

    pub fn is_open(&self, index: usize) -> bool {
        self.writers[index].is_some()
    }

    /// Installs an authenticated backend session for store `index`.
    pub fn install(&mut self, index: usize, session: BackendSession) {
        // Counted here, where every session passes (the default store's first one too).
        metrics::counter!("evshift_backend_connections_total", "store" => self.stores[index].id.to_string())
            .increment(1);
        let (stream, input) = session.connection.into_parts();
        let (reader, writer) = stream.into_split();
        self.readers[index] = Some(BackendReader {
            stream: reader,
            input,
        });
        self.writers[index] = Some(BackendWriter {
            stream: writer,
            output: BytesMut::with_capacity(8 * 1024),
            _open: OpenGauge::new(&self.stores[index]),
        });
        self.states[index] = BackendState {
            cancel_key: session.cancel_key,
            ..BackendState::default()
        };
    }

    /// Opens the backend session for store `index` if there is none.
    pub async fn ensure_open(
        &mut self,
        index: usize,
        client_parameters: &[(String, String)],
        timeout: std::time::Duration,
    ) -> Result<(), BackendError> {
        if self.is_open(index) {
            return Ok(());
        }
        let session = backend::connect(&self.stores[index], client_parameters, timeout).await?;
        self.install(index, session);
        Ok(())
    }

    /// True when an idle backend session was closed by its store (a restart, an idle timeout,
    /// an administrator's `pg_terminate_backend`): EOF or an ErrorResponse waiting unasked.
    /// Only meaningful while nothing is in flight on it.
    pub fn is_dead(&mut self, index: usize) -> bool {
        let Some(reader) = self.readers[index].as_mut() else {
            return false;
        };
        // A dying server may send a notice (PostgreSQL's immediate shutdown sends a WARNING)
        // before it closes: read until there is nothing more to read now.
        loop {
            match reader.stream.try_read_buf(&mut reader.input) {
                Ok(0) => return true,
                Ok(_) if reader.input.len() > 64 * 1024 => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
        let mut offset = 0;
        while let Ok(Some(len)) =
            crate::wire::Frame::check(&reader.input[offset..], backend::BACKEND_MESSAGE_LIMIT)
        {
            if reader.input[offset] == b'E' {
                return true;
            }
            offset += len;
        }
        false
    }

    /// Forgets the backend session of store `index` (lost or closed).
    pub fn drop_backend(&mut self, index: usize) {
        self.readers[index] = None;
        self.writers[index] = None;
        self.states[index] = BackendState::default();
    }

    /// Output for store `index`; the session must be open.
    pub fn output(&mut self, index: usize) -> Option<&mut BytesMut> {
        self.writers[index].as_mut().map(|w| &mut w.output)
    }

    /// Total bytes waiting to be written to stores.
    pub fn queued_output(&self) -> usize {
        self.writers.iter().flatten().map(|w| w.output.len()).sum()
    }

    /// The store to write to next: `preferred` if it has output, else any store that has.
    pub fn next_writer(&self, preferred: Option<usize>) -> Option<usize> {
        if let Some(p) = preferred {
            if self.writers[p]
                .as_ref()
                .is_some_and(|w| !w.output.is_empty())
            {
                return Some(p);
            }
        }
        self.writers
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| !w.output.is_empty()))
    }

    /// Sends Terminate to every open backend session and closes them.
    pub async fn close_all(&mut self) {
        for index in 0..self.stores.len() {
            if let Some(mut writer) = self.writers[index].take() {
                let mut out = BytesMut::new();
                backend::terminate(&mut out);
                let _ = writer.stream.write_all(&out).await;
                let _ = writer.stream.shutdown().await;
            }
            self.readers[index] = None;
        }
    }
}

/// Reads from `reader`, or waits forever when there is none (a disabled `select!` branch).
pub async fn read_some(reader: Option<&mut BackendReader>) -> io::Result<usize> {
    match reader {
        Some(r) => r.stream.read_buf(&mut r.input).await,
        None => std::future::pending().await,
    }
}

/// Writes some of `writer`'s output, or waits forever when there is none.
pub async fn write_some(writer: Option<&mut BackendWriter>) -> io::Result<usize> {
    match writer {
        Some(w) if !w.output.is_empty() => w.stream.write_buf(&mut w.output).await,
        _ => std::future::pending().await,
    }
}

//! One client session: startup, authentication, the backend session, and the relay of
//! messages between them until either side ends.
//!
//! An invalid message ends this session only; nothing here touches another session.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::{self, BackendSession};
use crate::cancel::{CancelHandle, CancelTarget};
use crate::connection::{Connection, ReadError};
use crate::server::Shared;
use crate::wire::frame::{is_frontend_tag, Frame};
use crate::wire::messages::{self, sqlstate, ErrorFields};
use crate::wire::scanner::{MessageScanner, ScanEvent};
use crate::wire::startup::{self, StartupPacket};
use crate::wire::FrameError;

/// Output buffered towards one peer beyond which evshift stops reading from the other peer:
/// backpressure instead of unbounded memory.
const HIGH_WATER: usize = 1024 * 1024;

/// What the client asked for in its startup packet, once negotiation is over.
struct StartupRequest {
    parameters: Vec<(String, String)>,
}

impl StartupRequest {
    fn get(&self, key: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// How the handshake ended.
enum Handshake {
    Startup(StartupRequest),
    Cancel { pid: i32, secret: Vec<u8> },
}

/// Serves one client connection to its end.
pub async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let mut client = Connection::new(stream);
    let timeout = shared.config.limits.startup_timeout();
    let established = match tokio::time::timeout(timeout, establish(&shared, &mut client)).await {
        Ok(Ok(Some(established))) => established,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "client session refused");
            send_fatal(&mut client, &error).await;
            return;
        }
        Err(_) => {
            let error = ErrorFields::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("startup did not complete within {timeout:?}"),
            );
            send_fatal(&mut client, &error).await;
            return;
        }
    };
    let Established {
        backend,
        cancel,
        user,
    } = established;
    tracing::debug!(%peer, %user, pid = cancel.pid, "client session established");
    let relay = Relay::new(client, backend, shared.config.limits.max_message_bytes);
    match relay.run(&shared).await {
        Ok(()) => tracing::debug!(%peer, %user, "client session ended"),
        Err(e) => tracing::info!(%peer, %user, error = %e, "client session ended with an error"),
    }
    drop(cancel);
}

/// A client session that passed startup and authentication, with its backend session.
struct Established {
    backend: BackendSession,
    cancel: CancelHandle,
    user: String,
}

/// Startup, authentication and the backend connection. `Ok(None)` means the connection was a
/// cancel request or the client left; an error is the FATAL to send.
async fn establish(
    shared: &Arc<Shared>,
    client: &mut Connection,
) -> Result<Option<Established>, ErrorFields> {
    let request = match handshake(client).await? {
        Some(Handshake::Startup(request)) => request,
        Some(Handshake::Cancel { pid, secret }) => {
            shared.cancels.cancel(pid, &secret).await;
            return Ok(None);
        }
        None => return Ok(None),
    };
    let user = request
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            ErrorFields::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?
        .to_string();
    let mut out = BytesMut::new();
    shared
        .authenticator
        .authenticate(client, &user, &mut out)
        .await?;

    let store = Arc::clone(&shared.default_store);
    let backend = backend::connect(
        &store,
        &request.parameters,
        shared.config.limits.connect_timeout(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(store = %store.id, error = %e, "backend connection failed");
        e.to_client_error()
    })?;

    let cancel = shared.cancels.register();
    if let Some((pid, secret)) = backend.cancel_key {
        cancel.set_target(Some(CancelTarget {
            store: Arc::clone(&store),
            pid,
            secret,
        }));
    }
    for (name, value) in &backend.parameters {
        messages::parameter_status(name, value, &mut out);
    }
    messages::backend_key_data(cancel.pid, cancel.secret, &mut out);
    messages::ready_for_query(b'I', &mut out);
    client.send(&mut out).await.map_err(|e| {
        ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("client went away: {e}"),
        )
    })?;
    Ok(Some(Established {
        backend,
        cancel,
        user,
    }))
}

/// Reads startup packets until a StartupMessage or CancelRequest, refusing encryption
/// requests with 'N' (TLS is not offered yet). `Ok(None)`: the client left.
async fn handshake(client: &mut Connection) -> Result<Option<Handshake>, ErrorFields> {
    let mut out = BytesMut::new();
    // SSLRequest and GSSENCRequest may each come once before the StartupMessage.
    for _ in 0..3 {
        let packet = match client.read_startup_packet().await {
            Ok(p) => p,
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => return Ok(None),
            Err(ReadError::Frame(e)) => return Err(startup_violation(&e)),
        };
        match startup::parse(&packet).map_err(|e| startup_violation(&e))? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                if client.has_buffered_input() {
                    // Bytes after an SSLRequest before our answer: a man-in-the-middle trick
                    // (CVE-2021-23222 class). Refuse.
                    return Err(ErrorFields::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        "unexpected data after an encryption request",
                    ));
                }
                messages::refuse_encryption(&mut out);
                if client.send(&mut out).await.is_err() {
                    return Ok(None);
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                return Ok(Some(Handshake::Cancel { pid, secret }))
            }
            StartupPacket::UnsupportedProtocol { major, minor } => {
                return Err(ErrorFields::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("unsupported frontend protocol {major}.{minor}: evshift supports 3.0"),
                ))
            }
            StartupPacket::Startup { minor, parameters } => {
                let (protocol_options, parameters): (Vec<_>, Vec<_>) = parameters
                    .into_iter()
                    .partition(|(k, _)| k.starts_with("_pq_."));
                if minor > 0 || !protocol_options.is_empty() {
                    let names = protocol_options.into_iter().map(|(k, _)| k).collect();
                    messages::negotiate_protocol_version(names, &mut out);
                }
                return Ok(Some(Handshake::Startup(StartupRequest { parameters })));
            }
        }
    }
    Err(ErrorFields::fatal(
        sqlstate::PROTOCOL_VIOLATION,
        "too many encryption requests",
    ))
}

fn startup_violation(error: &FrameError) -> ErrorFields {
    ErrorFields::fatal(
        sqlstate::PROTOCOL_VIOLATION,
        format!("invalid startup packet: {error}"),
    )
}

async fn send_fatal(client: &mut Connection, error: &ErrorFields) {
    let mut out = BytesMut::new();
    error.encode(&mut out);
    let _ = client.send(&mut out).await;
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("client protocol violation: {0}")]
    Client(FrameError),
    #[error("lost the connection to store \"{store}\": {reason}")]
    Backend { store: String, reason: String },
    #[error("client connection error: {0}")]
    ClientIo(std::io::Error),
}

/// The established session: client and backend streams with their buffers, moving messages
/// both ways concurrently. Every read and write is a branch of one `select!`, so neither
/// direction can block the other, and each output buffer is bounded by `HIGH_WATER`.
struct Relay {
    client: TcpStream,
    backend: TcpStream,
    client_in: BytesMut,
    backend_in: BytesMut,
    to_client: BytesMut,
    to_backend: BytesMut,
    scanner: MessageScanner,
    message_limit: usize,
    /// The transaction status of the last ReadyForQuery: b'I', b'T' or b'E'.
    transaction_status: u8,
}

impl Relay {
    fn new(client: Connection, backend: BackendSession, message_limit: usize) -> Relay {
        let (client, client_in) = client.into_parts();
        let (backend, backend_in) = backend.connection.into_parts();
        Relay {
            client,
            backend,
            client_in,
            backend_in,
            to_client: BytesMut::with_capacity(16 * 1024),
            to_backend: BytesMut::with_capacity(16 * 1024),
            scanner: MessageScanner::default(),
            message_limit,
            transaction_status: b'I',
        }
    }

    async fn run(mut self, shared: &Shared) -> Result<(), RelayError> {
        let store = shared.default_store.id.to_string();
        let result = self.pump(&store).await;
        match &result {
            Err(RelayError::Client(e)) => {
                let error = ErrorFields::fatal(sqlstate::PROTOCOL_VIOLATION, e.to_string());
                self.finish_with_error(&error).await;
            }
            Err(RelayError::Backend { .. }) => {
                let error = ErrorFields::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    result.as_ref().unwrap_err().to_string(),
                );
                self.finish_with_error(&error).await;
            }
            _ => {}
        }
        self.close_backend().await;
        if self.transaction_status != b'I' {
            tracing::debug!("client left inside a transaction; the store rolls it back");
        }
        result
    }

    /// Moves bytes until the client terminates (Ok) or something fails.
    async fn pump(&mut self, store: &str) -> Result<(), RelayError> {
        let backend_lost = |reason: String| RelayError::Backend {
            store: store.to_string(),
            reason,
        };
        // Frames already received with the startup packet.
        if self.take_client_frames().map_err(RelayError::Client)? {
            return Ok(());
        }
        loop {
            let (mut client_rd, mut client_wr) = self.client.split();
            let (mut backend_rd, mut backend_wr) = self.backend.split();
            tokio::select! {
                read = client_rd.read_buf(&mut self.client_in), if self.to_backend.len() < HIGH_WATER => {
                    match read {
                        Ok(0) => return Ok(()),
                        Ok(_) => {
                            if self.take_client_frames().map_err(RelayError::Client)? {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(RelayError::ClientIo(e)),
                    }
                }
                read = backend_rd.read_buf(&mut self.backend_in), if self.to_client.len() < HIGH_WATER => {
                    match read {
                        Ok(0) => return Err(backend_lost("the store closed the connection".into())),
                        Ok(_) => self.take_backend_bytes().map_err(|e| backend_lost(e.to_string()))?,
                        Err(e) => return Err(backend_lost(e.to_string())),
                    }
                }
                written = backend_wr.write_buf(&mut self.to_backend), if !self.to_backend.is_empty() => {
                    if let Err(e) = written {
                        return Err(backend_lost(e.to_string()));
                    }
                }
                written = client_wr.write_buf(&mut self.to_client), if !self.to_client.is_empty() => {
                    if let Err(e) = written {
                        return Err(RelayError::ClientIo(e));
                    }
                }
            }
        }
    }

    /// Moves every complete client message to the backend buffer. Returns true when the
    /// client sent Terminate.
    fn take_client_frames(&mut self) -> Result<bool, FrameError> {
        let mut offset = 0;
        let mut terminated = false;
        while let Some(len) = Frame::check(&self.client_in[offset..], self.message_limit)? {
            let tag = self.client_in[offset];
            if !is_frontend_tag(tag) {
                return Err(FrameError::UnknownFrontendTag(tag as char));
            }
            if tag == b'X' {
                terminated = true;
                break;
            }
            offset += len;
        }
        let ready = self.client_in.split_to(offset);
        append(&mut self.to_backend, ready);
        Ok(terminated)
    }

    /// Forwards everything the store sent, noting transaction status on the way.
    fn take_backend_bytes(&mut self) -> Result<(), FrameError> {
        let status = &mut self.transaction_status;
        self.scanner.scan(&self.backend_in, |event| match event {
            ScanEvent::ReadyForQuery(s) => *status = s,
        })?;
        let bytes = self.backend_in.split();
        append(&mut self.to_client, bytes);
        Ok(())
    }

    /// Sends what is pending for the client, then the error, best effort.
    async fn finish_with_error(&mut self, error: &ErrorFields) {
        error.encode(&mut self.to_client);
        let _ = self.client.write_all(&self.to_client).await;
        self.to_client.clear();
    }

    /// Ends the backend session; an open transaction is rolled back by the store.
    async fn close_backend(&mut self) {
        let mut out = BytesMut::new();
        backend::terminate(&mut out);
        let _ = self.backend.write_all(&out).await;
        let _ = self.backend.shutdown().await;
    }
}

/// Appends `bytes` to `out` without copying when `out` is empty.
fn append(out: &mut BytesMut, bytes: BytesMut) {
    if out.is_empty() {
        *out = bytes;
    } else {
        out.extend_from_slice(&bytes);
    }
}

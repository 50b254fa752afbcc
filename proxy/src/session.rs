//! One client session: startup, authentication, the backend session, and the relay of
//! messages between them until either side ends.
//!
//! An invalid message ends this session only; nothing here touches another session.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::backend;
use crate::backends::Backends;
use crate::cancel::CancelTarget;
use crate::connection::{Connection, ReadError};
use crate::relay::Relay;
use crate::router::Router;
use crate::server::Shared;
use crate::wire::messages::{self, sqlstate, ErrorFields};
use crate::wire::startup::{self, StartupPacket};
use crate::wire::FrameError;

/// The startup option that names the session's tenant: `-c evshift.tenant_id=<uuid>`.
const TENANT_OPTION: &str = "evshift.tenant_id";

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
    let Established { router, user } = established;
    tracing::debug!(%peer, %user, "client session established");
    let (stream, unread) = client.into_parts();
    let relay = Relay::new(
        stream,
        unread,
        router,
        shared.config.limits.max_message_bytes,
    );
    match relay.run().await {
        Ok(()) => tracing::debug!(%peer, %user, "client session ended"),
        Err(e) => tracing::info!(%peer, %user, error = %e, "client session ended with an error"),
    }
}

/// A client session that passed startup and authentication, with its router.
struct Established {
    router: Router,
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

    let session_tenant = session_tenant_option(&request)?;
    // The default store answers first: its ParameterStatus values describe the session.
    let default_index = shared.default_store_index();
    let store = Arc::clone(&shared.stores[default_index]);
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
    let mut backends = Backends::new(shared.stores.clone());
    backends.install(default_index, backend);
    let router = Router::new(
        Arc::clone(shared),
        request.parameters,
        backends,
        cancel,
        default_index,
        session_tenant,
    );
    Ok(Some(Established { router, user }))
}

/// The session tenant named by `-c evshift.tenant_id=<uuid>` in the startup `options`.
fn session_tenant_option(request: &StartupRequest) -> Result<Option<Uuid>, ErrorFields> {
    let Some(options) = request.get("options") else {
        return Ok(None);
    };
    let mut tokens = options.split_whitespace();
    while let Some(token) = tokens.next() {
        let setting = match token {
            "-c" => tokens.next().unwrap_or_default(),
            t if t.starts_with("-c") => &t[2..],
            t if t.starts_with("--") => &t[2..],
            _ => continue,
        };
        if let Some(value) = setting
            .strip_prefix(TENANT_OPTION)
            .and_then(|v| v.strip_prefix('='))
        {
            return Uuid::parse_str(value).map(Some).map_err(|_| {
                ErrorFields::fatal(
                    "22P02",
                    format!("invalid {TENANT_OPTION} {value:?}: not a uuid"),
                )
            });
        }
    }
    Ok(None)
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

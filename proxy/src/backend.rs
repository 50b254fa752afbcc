//! Backend sessions: evshift's own connections to a store, opened and authenticated with the
//! store's configured credentials (trust, cleartext, md5 or SCRAM on the store side).

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{DecodeContext, Message};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use crate::connection::{Connection, ReadError};
use crate::store::Store;
use crate::wire::frame::read_cstr;
use crate::wire::messages::{sqlstate, ErrorFields};
use crate::wire::Frame;

/// Store messages can be large (a DataRow of a big JSONB); the limit only guards against a
/// corrupt stream.
pub const BACKEND_MESSAGE_LIMIT: usize = 1 << 30;

/// Why a backend session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to store \"{store}\" at {address}: {reason}")]
    Unreachable {
        store: String,
        address: String,
        reason: String,
    },
    #[error("store \"{store}\" refused the connection: {error}")]
    Refused { store: String, error: ErrorFields },
    #[error(
        "store \"{store}\" asked for an authentication method evshift does not support: {method}"
    )]
    UnsupportedAuth { store: String, method: String },
}

impl BackendError {
    /// The error to show a client whose statement needed this store.
    pub fn to_client_error(&self) -> ErrorFields {
        match self {
            BackendError::Refused { error, .. } => {
                let mut e = error.clone();
                e.message = self.to_string();
                e
            }
            _ => ErrorFields::fatal(sqlstate::CONNECTION_FAILURE, self.to_string()),
        }
    }
}

/// An authenticated, idle backend session and what the store told about itself.
pub struct BackendSession {
    pub connection: Connection,
    /// ParameterStatus values the store reported at startup, in order.
    pub parameters: Vec<(String, String)>,
    /// The store's BackendKeyData: what a CancelRequest for this session must carry.
    pub cancel_key: Option<(i32, i32)>,
}

/// Opens a backend session to `store`, passing on the client's session parameters.
pub async fn connect(
    store: &Store,
    client_parameters: &[(String, String)],
    timeout: Duration,
) -> Result<BackendSession, BackendError> {
    let address = store.endpoint.address();
    let unreachable = |reason: String| BackendError::Unreachable {
        store: store.id.to_string(),
        address: address.clone(),
        reason,
    };
    match tokio::time::timeout(timeout, open(store, client_parameters)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(OpenError::Backend(e))) => Err(e),
        Ok(Err(OpenError::Io(reason))) => Err(unreachable(reason)),
        Err(_) => Err(unreachable(format!("timed out after {timeout:?}"))),
    }
}

enum OpenError {
    Backend(BackendError),
    Io(String),
}

impl From<ReadError> for OpenError {
    fn from(e: ReadError) -> Self {
        OpenError::Io(e.to_string())
    }
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> Self {
        OpenError::Io(e.to_string())
    }
}

async fn open(
    store: &Store,
    client_parameters: &[(String, String)],
) -> Result<BackendSession, OpenError> {
    let stream = TcpStream::connect(store.endpoint.address()).await?;
    let mut connection = Connection::new(stream);
    let mut out = BytesMut::new();
    let parameters = startup_parameters(store, client_parameters);
    frontend::startup_message(
        parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &mut out,
    )?;
    connection.send(&mut out).await?;
    authenticate(store, &mut connection).await?;
    read_until_ready(store, connection).await
}

/// The startup parameters for the store: its own user and database, the client's other
/// parameters (application_name, DateStyle, client_encoding, ...).
fn startup_parameters(store: &Store, client: &[(String, String)]) -> Vec<(String, String)> {
    let endpoint = &store.endpoint;
    let mut params = vec![
        ("user".to_string(), endpoint.user.clone()),
        ("database".to_string(), endpoint.database.clone()),
    ];
    for (k, v) in client {
        if !matches!(k.as_str(), "user" | "database" | "replication") {
            params.push((k.clone(), v.clone()));
        }
    }
    for (key, value) in [
        ("options", &endpoint.options),
        ("application_name", &endpoint.application_name),
    ] {
        if let Some(value) = value {
            if !params.iter().any(|(k, _)| k == key) {
                params.push((key.to_string(), value.clone()));
            }
        }
    }
    params
}

async fn authenticate(store: &Store, connection: &mut Connection) -> Result<(), OpenError> {
    let password = store.endpoint.password.clone().unwrap_or_default();
    let mut scram: Option<ScramSha256> = None;
    let mut out = BytesMut::new();
    loop {
        let frame = connection.read_frame(BACKEND_MESSAGE_LIMIT).await?;
        match frame.tag {
            b'R' => {}
            b'E' => return Err(refused(store, &frame)),
            other => {
                return Err(OpenError::Io(format!(
                    "unexpected message {:?} during authentication",
                    other as char
                )))
            }
        }
        let mut buf = BytesMut::from(&frame.bytes[..]);
        let auth = Authentication::decode(&mut buf, &DecodeContext::default())
            .map_err(|e| OpenError::Io(format!("malformed authentication message: {e}")))?
            .ok_or_else(|| OpenError::Io("truncated authentication message".into()))?;
        match auth {
            Authentication::Ok => return Ok(()),
            Authentication::CleartextPassword => {
                frontend::password_message(password.as_bytes(), &mut out)?;
            }
            Authentication::MD5Password(salt) => {
                let salt: [u8; 4] = salt
                    .try_into()
                    .map_err(|_| OpenError::Io("bad md5 salt".into()))?;
                let hash = postgres_protocol::authentication::md5_hash(
                    store.endpoint.user.as_bytes(),
                    password.as_bytes(),
                    salt,
                );
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            Authentication::SASL(mechanisms) => {
                if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(OpenError::Backend(BackendError::UnsupportedAuth {
                        store: store.id.to_string(),
                        method: mechanisms.join(", "),
                    }));
                }
                let client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response("SCRAM-SHA-256", client.message(), &mut out)?;
                scram = Some(client);
            }
            Authentication::SASLContinue(data) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| OpenError::Io("SASLContinue before SASL".into()))?;
                client.update(&data)?;
                frontend::sasl_response(client.message(), &mut out)?;
            }
            Authentication::SASLFinal(data) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| OpenError::Io("SASLFinal before SASL".into()))?;
                client.finish(&data)?;
                continue;
            }
            other => {
                return Err(OpenError::Backend(BackendError::UnsupportedAuth {
                    store: store.id.to_string(),
                    method: format!("{other:?}"),
                }))
            }
        }
        connection.send(&mut out).await?;
    }
}

/// After AuthenticationOk: collects ParameterStatus and BackendKeyData until ReadyForQuery.
async fn read_until_ready(
    store: &Store,
    mut connection: Connection,
) -> Result<BackendSession, OpenError> {
    let mut parameters = Vec::new();
    let mut cancel_key = None;
    loop {
        let frame = connection.read_frame(BACKEND_MESSAGE_LIMIT).await?;
        match frame.tag {
            b'S' => {
                if let Some((name, rest)) = read_cstr(frame.body()) {
                    if let Some((value, _)) = read_cstr(rest) {
                        parameters.push((
                            String::from_utf8_lossy(name).into_owned(),
                            String::from_utf8_lossy(value).into_owned(),
                        ));
                    }
                }
            }
            b'K' => {
                let body = frame.body();
                if body.len() >= 8 {
                    let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    cancel_key = Some((pid, secret));
                }
            }
            b'Z' => {
                return Ok(BackendSession {
                    connection,
                    parameters,
                    cancel_key,
                })
            }
            b'E' => return Err(refused(store, &frame)),
            // NoticeResponse and NegotiateProtocolVersion carry nothing a client needs here.
            _ => {}
        }
    }
}

fn refused(store: &Store, frame: &Frame) -> OpenError {
    OpenError::Backend(BackendError::Refused {
        store: store.id.to_string(),
        error: ErrorFields::parse(frame.body()),
    })
}

/// Sends a CancelRequest for the backend session `(pid, secret)` of `store`.
pub async fn send_cancel(store: &Store, pid: i32, secret: i32) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(store.endpoint.address()).await?;
    let mut out = BytesMut::new();
    frontend::cancel_request(pid, secret, &mut out);
    stream.write_all(&out).await?;
    // The server closes the connection after reading the request; wait for that so the cancel
    // is delivered before we report it sent.
    let mut sink = [0u8; 1];
    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
    Ok(())
}

/// Writes a Terminate message: the polite end of a backend session.
pub fn terminate(out: &mut BytesMut) {
    out.put_u8(b'X');
    out.put_i32(4);
}

//! The admin control socket (DESIGN §11): a Unix socket on which `evshift ctl` and scripts send
//! one JSON request per line and read one JSON reply per line.
//!
//! This module is the socket I/O: binding (stale-socket handling, mode 0600), accepting, and
//! the line loop of each connection. What the commands do is in [`api`], their wire format in
//! [`protocol`]. See `docs/control-socket.md` for the commands.

pub mod api;
pub mod lines;
pub mod protocol;

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use self::api::ControlApi;
use self::lines::{Line, LineReader};
use self::protocol::{reply_line, Request};
use evshift_control::ControlError;

/// Longest request line accepted; a longer one is answered with `InvalidRequestError` and the
/// connection is closed (the rest of the line cannot be told from the next request).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Control connections served at once; more wait to be accepted. Operators and scripts need a
/// handful; the bound keeps a runaway script from eating the proxy's memory.
const MAX_CONNECTIONS: usize = 64;

/// A bound control socket. Dropping it removes the socket file.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The uid that owns the socket file (this process's effective uid): peers must be it or
    /// root.
    owner_uid: u32,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A socket file nobody answers on (left by an evshift that
    /// died) is replaced; a live one, or any other kind of file, is an error.
    pub async fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
        remove_stale_socket(path).await?;
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot bind the control socket {}", path.display()))?;
        // From here on, dropping `socket` removes the file again if a later step fails.
        let mut socket = ControlSocket {
            listener,
            path: path.to_path_buf(),
            owner_uid: 0,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        // bind() created the file, so its owner is our effective uid.
        socket.owner_uid = std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .uid();
        Ok(socket)
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until the future is dropped.
    pub async fn serve(self, api: Arc<ControlApi>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !self.peer_allowed(&stream) {
                continue;
            }
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                serve_connection(stream, api).await;
                drop(permit);
            });
        }
    }

    /// Mode 0600 already keeps other users out; this also covers a connection that slipped
    /// in between bind() and chmod().
    fn peer_allowed(&self, stream: &UnixStream) -> bool {
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == self.owner_uid || cred.uid() == 0 => true,
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "control socket: connection from another user refused"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket: cannot identify the peer");
                false
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes `path` if it is a socket that nobody answers on.
async fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect {}", path.display()));
        }
    };
    if !metadata.file_type().is_socket() {
        bail!(
            "the control socket path {} exists and is not a socket",
            path.display()
        );
    }
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "another process serves the control socket {} (is another evshift running?)",
            path.display()
        );
    }
    tracing::info!(path = %path.display(), "removing a stale control socket");
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove the stale control socket {}", path.display()))
}

/// One client: requests in order, one reply each, until it hangs up.
async fn serve_connection(stream: UnixStream, api: Arc<ControlApi>) {
    let (read, mut write) = stream.into_split();
    let mut lines = LineReader::new(read, MAX_LINE_BYTES);
    loop {
        let (result, close) = match lines.next_line().await {
            Ok(Some(Line::Complete(line))) => (answer(&api, &line).await, false),
            Ok(Some(Line::TooLong)) => (
                Err(ControlError::InvalidRequest(format!(
                    "request line longer than {MAX_LINE_BYTES} bytes"
                ))),
                true,
            ),
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "control socket read failed");
                return;
            }
        };
        let mut reply = reply_line(&result);
        reply.push('\n');
        if let Err(e) = write.write_all(reply.as_bytes()).await {
            tracing::debug!(error = %e, "control socket write failed");
            return;
        }
        if close {
            return;
        }
    }
}

/// The result of one request line.
async fn answer(api: &ControlApi, line: &[u8]) -> Result<protocol::Outcome, ControlError> {
    let request = Request::parse(line)?;
    tracing::debug!(?request, "control request");
    api.handle(request).await
}

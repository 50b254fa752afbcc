//! The I/O loop of an established client session: reads client messages into the router,
//! writes what the router queued to the stores, and delivers the stores' answers in order.
//!
//! Every read and write is a branch of one `select!`, so no direction blocks another. Only the
//! store at the head of the pending queue is read (answers must reach the client in request
//! order); writes go to the head store first, so it always gets the input it waits for.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::BACKEND_MESSAGE_LIMIT;
use crate::backends::{read_some, write_some};
use crate::pending::Run;
use crate::router::{Flow, Router, RouterError};
use crate::wire::frame::{is_frontend_tag, Frame};
use crate::wire::messages::{sqlstate, ErrorFields};
use crate::wire::FrameError;

/// Output buffered towards one peer beyond which evshift stops reading from the other side.
const HIGH_WATER: usize = 1024 * 1024;
/// Units in flight beyond which evshift stops reading the client (a runaway pipeline).
const MAX_PENDING: usize = 10_000;

/// Why the session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client protocol violation: {0}")]
    Client(#[from] FrameError),
    #[error("client protocol violation: {0}")]
    Router(#[from] RouterError),
    #[error("client connection error: {0}")]
    ClientIo(std::io::Error),
}

/// The client side of an established session plus its router.
pub struct Relay {
    client: TcpStream,
    client_in: BytesMut,
    to_client: BytesMut,
    message_limit: usize,
    router: Router,
}

impl Relay {
    pub fn new(
        client: TcpStream,
        client_in: BytesMut,
        router: Router,
        message_limit: usize,
    ) -> Relay {
        Relay {
            client,
            client_in,
            to_client: BytesMut::with_capacity(16 * 1024),
            message_limit,
            router,
        }
    }

    /// Runs the session to its end and closes every backend session.
    pub async fn run(mut self) -> Result<(), RelayError> {
        let result = self.pump().await;
        if let Err(e) = &result {
            let error = match e {
                RelayError::Client(_) | RelayError::Router(_) => Some(ErrorFields::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    e.to_string(),
                )),
                RelayError::ClientIo(_) => None,
            };
            if let Some(error) = error {
                error.encode(&mut self.to_client);
                let _ = self.client.write_all(&self.to_client).await;
            }
        }
        self.router.backends.close_all().await;
        result
    }

    async fn pump(&mut self) -> Result<(), RelayError> {
        if self.take_client_frames().await? == Flow::Terminate {
            return Ok(());
        }
        loop {
            self.process_head_input()?;
            self.router.pending.drain_synthetic(&mut self.to_client);
            self.write_eagerly()?;
            let head = self.router.pending.head_store();
            let writer = self.router.backends.next_writer(head);
            let read_client = self.router.backends.queued_output() < HIGH_WATER
                && self.router.pending.len() < MAX_PENDING;
            let read_store = head.is_some() && self.to_client.len() < HIGH_WATER;
            let backends = &mut self.router.backends;
            let (mut client_rd, mut client_wr) = self.client.split();
            tokio::select! {
                read = client_rd.read_buf(&mut self.client_in), if read_client => {
                    match read {
                        Ok(0) => return Ok(()),
                        Ok(_) => {
                            if self.take_client_frames().await? == Flow::Terminate {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(RelayError::ClientIo(e)),
                    }
                }
                read = read_some(head.and_then(|h| backends.readers[h].as_mut())), if read_store => {
                    let store = head.unwrap_or_default();
                    match read {
                        Ok(0) => self.router.on_store_lost(store, "the store closed the connection"),
                        Ok(_) => {}
                        Err(e) => self.router.on_store_lost(store, &e.to_string()),
                    }
                }
                written = write_some(writer.and_then(|w| backends.writers[w].as_mut())), if writer.is_some() => {
                    if let Err(e) = written {
                        self.router.on_store_lost(writer.unwrap_or_default(), &e.to_string());
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

    /// Writes what can be written without waiting, so that a request or an answer leaves in
    /// the same turn it became ready instead of one `select!` round later.
    fn write_eagerly(&mut self) -> Result<(), RelayError> {
        for index in 0..self.router.backends.writers.len() {
            let Some(writer) = self.router.backends.writers[index].as_mut() else {
                continue;
            };
            while !writer.output.is_empty() {
                match writer.stream.try_write(&writer.output) {
                    Ok(n) => {
                        writer.output.advance(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.router.on_store_lost(index, &e.to_string());
                        break;
                    }
                }
            }
        }
        while !self.to_client.is_empty() {
            match self.client.try_write(&self.to_client) {
                Ok(n) => {
                    self.to_client.advance(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(RelayError::ClientIo(e)),
            }
        }
        Ok(())
    }

    /// Hands every complete client message to the router.
    async fn take_client_frames(&mut self) -> Result<Flow, RelayError> {
        let mut frames = Vec::new();
        while let Some(frame) = Frame::split(&mut self.client_in, self.message_limit)? {
            if !is_frontend_tag(frame.tag) {
                return Err(FrameError::UnknownFrontendTag(frame.tag as char).into());
            }
            frames.push(frame);
        }
        if frames.is_empty() {
            return Ok(Flow::Continue);
        }
        // Nothing complete is left: a batch with an Execute may go before its Sync.
        Ok(self.router.on_client_frames(frames, true).await?)
    }

    /// Delivers the complete messages already read from the head store, until the head moves
    /// to another store or the buffer has no complete message.
    fn process_head_input(&mut self) -> Result<(), RelayError> {
        loop {
            self.router.pending.drain_synthetic(&mut self.to_client);
            self.router.release_if_idle();
            let Some(head) = self.router.pending.head_store() else {
                return Ok(());
            };
            let Some(reader) = self.router.backends.readers[head].as_mut() else {
                // The store was lost and its entries failed; nothing to read.
                return Ok(());
            };
            match self.router.pending.deliver_run(
                &mut reader.input,
                BACKEND_MESSAGE_LIMIT,
                &mut self.to_client,
            ) {
                Ok(Run::Moved(delivered)) => {
                    self.router.on_delivered(delivered);
                    continue;
                }
                Ok(Run::Empty) => return Ok(()),
                Ok(Run::NotApplicable) => {}
                Err(e) => {
                    self.router
                        .on_store_lost(head, &format!("corrupt message stream: {e}"));
                    continue;
                }
            }
            let Some(reader) = self.router.backends.readers[head].as_mut() else {
                return Ok(());
            };
            let frame = match Frame::split(&mut reader.input, BACKEND_MESSAGE_LIMIT) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.router
                        .on_store_lost(head, &format!("corrupt message stream: {e}"));
                    continue;
                }
            };
            match self.router.pending.deliver(frame, &mut self.to_client) {
                Ok(delivered) => self.router.on_delivered(delivered),
                Err(desync) => {
                    tracing::error!(%desync, "unexpected message from a store; dropping that backend session");
                    self.router.on_store_lost(head, &desync.to_string());
                }
            }
        }
    }
}

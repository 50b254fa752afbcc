//! A client or store TCP stream with its read buffer, for the message-at-a-time phases
//! (startup and authentication). The relay phase takes the parts back with `into_parts`.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{startup, Frame, FrameError};

/// What went wrong reading a message during startup.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the peer closed the connection")]
    Closed,
}

/// A TCP stream plus the bytes read from it and not yet consumed.
pub struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        // Small messages dominate; Nagle would add 40 ms to every ping-pong.
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            buffer: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Reads the untagged startup packet (SSLRequest, CancelRequest, StartupMessage, ...).
    pub async fn read_startup_packet(&mut self) -> Result<BytesMut, ReadError> {
        loop {
            if let Some(len) = startup::check(&self.buffer)? {
                return Ok(self.buffer.split_to(len));
            }
            self.fill().await?;
        }
    }

    /// Reads one tagged message of at most `limit` bytes.
    pub async fn read_frame(&mut self, limit: usize) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = Frame::split(&mut self.buffer, limit)? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Writes all of `bytes` and empties it.
    pub async fn send(&mut self, bytes: &mut BytesMut) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        bytes.clear();
        Ok(())
    }

    /// True when bytes beyond the last consumed message were already received.
    pub fn has_buffered_input(&self) -> bool {
        self.buffer.has_remaining()
    }

    /// The stream and any bytes already read past the last consumed message.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buffer)
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(ReadError::Closed);
        }
        Ok(())
    }
}

//! A raw protocol client for tests that must send what no driver would: garbage, hostile
//! lengths, unknown message types, invalid UTF-8.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One message received from the server.
#[derive(Debug, Clone)]
pub struct Received {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Received {
    /// The SQLSTATE of an ErrorResponse ('E'), if this is one.
    pub fn sqlstate(&self) -> Option<String> {
        self.error_field(b'C')
    }

    pub fn error_field(&self, kind: u8) -> Option<String> {
        if self.tag != b'E' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&k, after)) = rest.split_first() {
            if k == 0 {
                break;
            }
            let nul = after.iter().position(|&b| b == 0)?;
            if k == kind {
                return Some(String::from_utf8_lossy(&after[..nul]).into_owned());
            }
            rest = &after[nul + 1..];
        }
        None
    }
}

/// A TCP connection speaking bytes.
pub struct RawClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

pub fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", database)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A tagged message with a correct length word.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A simple Query message for arbitrary bytes (which need not be UTF-8).
pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut body = sql.to_vec();
    body.push(0);
    message(b'Q', &body)
}

impl RawClient {
    pub async fn connect(addr: &str) -> Result<RawClient> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        Ok(RawClient {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Connects and completes a trust-authenticated startup, up to the first ReadyForQuery.
    pub async fn connect_ready(addr: &str, user: &str) -> Result<(RawClient, Vec<Received>)> {
        let mut client = RawClient::connect(addr).await?;
        client.send(&startup_packet(user, "postgres")).await?;
        let messages = client.read_until_ready().await?;
        Ok((client, messages))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads one byte (the answer to SSLRequest / GSSENCRequest).
    pub async fn read_byte(&mut self) -> Result<u8> {
        if !self.buffer.is_empty() {
            return Ok(self.buffer.remove(0));
        }
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut b)).await??;
        Ok(b[0])
    }

    /// Reads the next message, or None when the server closed the connection.
    pub async fn read_message(&mut self) -> Result<Option<Received>> {
        loop {
            if self.buffer.len() >= 5 {
                let len = i32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize;
                if self.buffer.len() > len {
                    let body = self.buffer[5..len + 1].to_vec();
                    let tag = self.buffer[0];
                    self.buffer.drain(..len + 1);
                    return Ok(Some(Received { tag, body }));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .context("no answer from the server within 10 s")??;
            if n == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed inside a message");
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads messages up to and including ReadyForQuery.
    pub async fn read_until_ready(&mut self) -> Result<Vec<Received>> {
        let mut all = Vec::new();
        loop {
            match self.read_message().await? {
                Some(m) => {
                    let done = m.tag == b'Z';
                    all.push(m);
                    if done {
                        return Ok(all);
                    }
                }
                None => bail!("connection closed before ReadyForQuery: got {all:?}"),
            }
        }
    }

    /// Reads until the server closes the connection, returning what it sent.
    pub async fn read_until_closed(&mut self) -> Result<Vec<Received>> {
        let mut all = Vec::new();
        while let Some(m) = self.read_message().await? {
            all.push(m);
        }
        Ok(all)
    }
}

/// The first ErrorResponse among `messages`.
pub fn first_error(messages: &[Received]) -> Option<&Received> {
    messages.iter().find(|m| m.tag == b'E')
}

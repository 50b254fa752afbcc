//! Framing of regular (tagged) protocol messages.
//!
//! `Frame::check` finds out cheaply whether a buffer starts with a complete message, without
//! allocating; `Frame::split` then takes it off the buffer without copying.

use bytes::{Buf, Bytes, BytesMut};

/// One complete tagged protocol message: tag byte, length and body, as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    /// The whole message including tag and length, ready to forward unchanged.
    pub bytes: Bytes,
}

/// A byte stream that is not a valid sequence of protocol messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid message length {length} for message type {tag:?}")]
    BadLength { tag: char, length: i64 },
    #[error("message of type {tag:?} is {length} bytes, over the limit of {limit} bytes")]
    TooLong {
        tag: char,
        length: usize,
        limit: usize,
    },
    #[error("invalid frontend message type {0:?}")]
    UnknownFrontendTag(char),
}

/// Bytes of tag plus length word.
pub const HEADER_LEN: usize = 5;

impl Frame {
    /// Returns the total length of the message at the start of `buf` if it is complete,
    /// `None` if more bytes are needed, or an error if the header is invalid.
    ///
    /// `limit` bounds the declared length so that a hostile length cannot make the reader
    /// buffer without end.
    pub fn check(buf: &[u8], limit: usize) -> Result<Option<usize>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let tag = buf[0];
        let length = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if length < 4 {
            return Err(FrameError::BadLength {
                tag: tag as char,
                length: length as i64,
            });
        }
        let length = length as usize;
        if length > limit {
            return Err(FrameError::TooLong {
                tag: tag as char,
                length,
                limit,
            });
        }
        let total = length + 1;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Takes the complete message at the start of `buf` off it, if there is one.
    pub fn split(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, FrameError> {
        match Frame::check(buf, limit)? {
            None => Ok(None),
            Some(total) => {
                let bytes = buf.split_to(total).freeze();
                Ok(Some(Frame {
                    tag: bytes[0],
                    bytes,
                }))
            }
        }
    }

    /// The body: what follows the tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The body as an owned buffer, for pgwire's `decode_body`-style parsers.
    pub fn body_bytes(&self) -> Bytes {
        let mut b = self.bytes.clone();
        b.advance(HEADER_LEN);
        b
    }
}

/// Message types a client may send once the session is established.
pub fn is_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'D' | b'E' | b'S' | b'H' | b'C' | b'X' | b'd' | b'c' | b'f' | b'F'
    )
}

/// Reads a NUL-terminated string at the start of `buf`: the string and the bytes after it.
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn check_waits_for_complete_frames() {
        let m = message(b'Q', b"select 1\0");
        for cut in 0..m.len() {
            assert_eq!(Frame::check(&m[..cut], 1 << 20), Ok(None), "cut at {cut}");
        }
        assert_eq!(Frame::check(&m, 1 << 20), Ok(Some(m.len())));
    }

    #[test]
    fn split_takes_frames_one_by_one() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&message(b'P', b"\0select 1\0\0\0"));
        buf.extend_from_slice(&message(b'S', b""));
        buf.extend_from_slice(&message(b'Q', b"partial")[..8]);
        let a = Frame::split(&mut buf, 1024).unwrap().unwrap();
        let b = Frame::split(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((a.tag, b.tag), (b'P', b'S'));
        assert!(b.body().is_empty());
        assert_eq!(Frame::split(&mut buf, 1024).unwrap(), None);
        assert_eq!(buf.len(), 8);
    }

    #[test]
    fn hostile_lengths_are_errors() {
        assert!(matches!(
            Frame::check(&[b'Q', 0, 0, 0, 3], 1024),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            Frame::check(&[b'Q', 0xff, 0xff, 0xff, 0xff], 1024),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            Frame::check(&[b'Q', 0x7f, 0xff, 0xff, 0xff], 1024),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn check_never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix of pseudo-random byte strings.
        let mut state: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            for _ in 0..(state % 64) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = Frame::split(&mut buf, 4096) {
                assert_eq!(frame.bytes.len(), frame.body().len() + HEADER_LEN);
            }
        }
    }
}

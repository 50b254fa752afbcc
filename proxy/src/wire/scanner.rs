//! Follows message boundaries in a stream of store messages without buffering whole messages,
//! so that large result rows are forwarded as they arrive while evshift still sees every
//! ReadyForQuery (and with it the transaction status).

use super::FrameError;

/// What the scanner noticed in the bytes it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEvent {
    /// A ReadyForQuery with its transaction status: b'I', b'T' or b'E'.
    ReadyForQuery(u8),
}

/// Incremental scanner over backend (server-to-client) messages.
#[derive(Debug, Default)]
pub struct MessageScanner {
    /// Bytes of the current message body still to skip.
    skip: usize,
    /// A message header (tag, length and for 'Z' the status byte) split across reads.
    header: Vec<u8>,
}

impl MessageScanner {
    /// Scans `bytes`, the next bytes of the stream, calling `on_event` for each event.
    pub fn scan(
        &mut self,
        mut bytes: &[u8],
        mut on_event: impl FnMut(ScanEvent),
    ) -> Result<(), FrameError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
            }
            if bytes.is_empty() {
                return Ok(());
            }
            // Gather tag + length (5 bytes), plus the status byte of a ReadyForQuery.
            let want = if self.header.first().copied().or(bytes.first().copied()) == Some(b'Z') {
                6
            } else {
                5
            };
            let take = (want - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() < want {
                return Ok(());
            }
            let h = &self.header;
            let length = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
            if length < 4 {
                return Err(FrameError::BadLength {
                    tag: h[0] as char,
                    length: length as i64,
                });
            }
            let consumed_body = want - 5;
            if h[0] == b'Z' {
                on_event(ScanEvent::ReadyForQuery(h[5]));
            }
            self.skip = (length as usize - 4).saturating_sub(consumed_body);
            self.header.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn finds_ready_for_query_at_every_split_point() {
        let mut stream = msg(b'C', b"INSERT 0 1\0");
        stream.extend(msg(b'D', &[7u8; 300]));
        stream.extend(msg(b'Z', b"T"));
        stream.extend(msg(b'C', b"COMMIT\0"));
        stream.extend(msg(b'Z', b"I"));
        for cut in 0..stream.len() {
            let mut scanner = MessageScanner::default();
            let mut events = Vec::new();
            scanner.scan(&stream[..cut], |e| events.push(e)).unwrap();
            scanner.scan(&stream[cut..], |e| events.push(e)).unwrap();
            assert_eq!(
                events,
                vec![
                    ScanEvent::ReadyForQuery(b'T'),
                    ScanEvent::ReadyForQuery(b'I')
                ],
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let mut scanner = MessageScanner::default();
        let mut events = Vec::new();
        for b in &stream {
            scanner
                .scan(std::slice::from_ref(b), |e| events.push(e))
                .unwrap();
        }
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn corrupt_length_is_an_error() {
        let mut scanner = MessageScanner::default();
        assert!(scanner.scan(&[b'D', 0, 0, 0, 1], |_| {}).is_err());
    }
}

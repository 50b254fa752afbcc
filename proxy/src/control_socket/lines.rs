//! `LineReader`: newline-delimited requests with a bound on their length.
//!
//! A client that never sends a newline must not make evshift buffer without limit, so a line
//! longer than the bound is reported as such (its bytes are dropped as they arrive) instead of
//! being collected.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// What the next line turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its terminator (`\n`, and a `\r` before it). The last line of the input
    /// may lack the terminator.
    Complete(Vec<u8>),
    /// The line exceeded the bound; the reader stopped in the middle of it.
    TooLong,
}

/// Reads lines of at most `max_bytes` bytes (terminator excluded).
pub struct LineReader<R> {
    reader: BufReader<R>,
    max_bytes: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R, max_bytes: usize) -> LineReader<R> {
        LineReader {
            reader: BufReader::new(reader),
            max_bytes,
        }
    }

    /// The next line, or `None` at the end of the input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        // One byte of slack for the `\r` of a `\r\n` terminator.
        let limit = self.max_bytes + 1;
        let mut line = Vec::new();
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok((!line.is_empty()).then(|| self.finish(line)));
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.unwrap_or(available.len());
            if line.len() + take > limit {
                return Ok(Some(Line::TooLong));
            }
            line.extend_from_slice(&available[..take]);
            self.reader.consume(take + usize::from(newline.is_some()));
            if newline.is_some() {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(self.finish(line)));
            }
        }
    }

    fn finish(&self, line: Vec<u8>) -> Line {
        if line.len() > self.max_bytes {
            Line::TooLong
        } else {
            Line::Complete(line)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            let stop = line == Line::TooLong;
            out.push(line);
            if stop {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn splits_on_newlines_and_keeps_a_last_partial_line() {
        let got = lines(b"a\r\nbc\n\nd", 8).await;
        assert_eq!(
            got,
            vec![
                Line::Complete(b"a".to_vec()),
                Line::Complete(b"bc".to_vec()),
                Line::Complete(Vec::new()),
                Line::Complete(b"d".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn bounds_the_line_length() {
        assert_eq!(
            lines(b"12345678\n", 8).await,
            vec![Line::Complete(b"12345678".to_vec())]
        );
        assert_eq!(
            lines(b"12345678\r\n", 8).await,
            vec![Line::Complete(b"12345678".to_vec())]
        );
        assert_eq!(lines(b"123456789\n", 8).await, vec![Line::TooLong]);
        assert_eq!(lines(&[b'x'; 100], 8).await, vec![Line::TooLong]);
    }
}

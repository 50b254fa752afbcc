//! The binary COPY format, only as far as the copier needs it: cutting a `COPY ... TO STDOUT
//! (FORMAT BINARY)` stream into rows without decoding them, reading each row's first field
//! (the source position, an int8), and framing a batch of rows for `COPY ... FROM STDIN`.
//!
//! A stream is a header (11-byte signature, int32 flags, int32 extension length, extension),
//! tuples (int16 field count, then per field an int32 length, -1 for NULL, and the bytes), and a
//! trailer (int16 -1). All integers are big-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The signature that opens every binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Signature, flags and an empty extension.
const HEADER_LEN: usize = 19;

/// Why a stream could not be read as binary COPY data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed binary COPY data: {0}")]
pub struct CopyFormatError(String);

/// One tuple, exactly as it was on the wire, and its first field read as an int8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRow {
    pub bytes: Bytes,
    pub position: i64,
}

impl CopyRow {
    /// The second field, which must be a non-NULL uuid (the event id).
    pub fn event_id(&self) -> Result<uuid::Uuid, CopyFormatError> {
        let tuple = &self.bytes[..];
        // Field count, then the int8 position: 2 + 4 + 8 bytes.
        let at = 14;
        if tuple.len() < at + 20 || read_i32(&tuple[at..at + 4]) != 16 {
            return Err(CopyFormatError(
                "the second column is not a non-NULL uuid".into(),
            ));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&tuple[at + 4..at + 20]);
        Ok(uuid::Uuid::from_bytes(id))
    }
}

/// Cuts a binary COPY stream, fed in chunks of any size, into rows.
#[derive(Debug, Default)]
pub struct RowSplitter {
    buffer: BytesMut,
    header_read: bool,
    finished: bool,
}

impl RowSplitter {
    pub fn new() -> RowSplitter {
        RowSplitter::default()
    }

    /// Appends a chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// True once the trailer was read.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next complete row, `None` if more data is needed (or the trailer was read).
    pub fn next_row(&mut self) -> Result<Option<CopyRow>, CopyFormatError> {
        if self.finished {
            return Ok(None);
        }
        if !self.header_read && !self.read_header()? {
            return Ok(None);
        }
        let Some(length) = self.complete_tuple_length()? else {
            return Ok(None);
        };
        if length == 2 {
            // The trailer.
            self.buffer.advance(2);
            self.finished = true;
            return Ok(None);
        }
        let bytes = self.buffer.split_to(length).freeze();
        let position = first_int8(&bytes)?;
        Ok(Some(CopyRow { bytes, position }))
    }

    /// Consumes the header once it is complete; false while it is not.
    fn read_header(&mut self) -> Result<bool, CopyFormatError> {
        if self.buffer.len() < HEADER_LEN {
            return Ok(false);
        }
        if &self.buffer[..SIGNATURE.len()] != SIGNATURE {
            return Err(CopyFormatError("missing PGCOPY signature".into()));
        }
        let extension = read_i32(&self.buffer[15..19]);
        let extension = usize::try_from(extension)
            .map_err(|_| CopyFormatError(format!("negative header extension {extension}")))?;
        if self.buffer.len() < HEADER_LEN + extension {
            return Ok(false);
        }
        self.buffer.advance(HEADER_LEN + extension);
        self.header_read = true;
        Ok(true)
    }

    /// The byte length of the tuple (or trailer) at the start of the buffer, if all of it is
    /// there.
    fn complete_tuple_length(&self) -> Result<Option<usize>, CopyFormatError> {
        let data = &self.buffer[..];
        if data.len() < 2 {
            return Ok(None);
        }
        let fields = i16::from_be_bytes([data[0], data[1]]);
        if fields == -1 {
            return Ok(Some(2));
        }
        if fields < 0 {
            return Err(CopyFormatError(format!("field count {fields}")));
        }
        let mut at = 2;
        for _ in 0..fields {
            if data.len() < at + 4 {
                return Ok(None);
            }
            let length = read_i32(&data[at..at + 4]);
            at += 4;
            if length == -1 {
                continue;
            }
            let length = usize::try_from(length)
                .map_err(|_| CopyFormatError(format!("field length {length}")))?;
            at += length;
            if data.len() < at {
                return Ok(None);
            }
        }
        Ok(Some(at))
    }
}

fn read_i32(bytes: &[u8]) -> i32 {
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The first field of a complete tuple, which must be a non-NULL int8.
fn first_int8(tuple: &[u8]) -> Result<i64, CopyFormatError> {
    if tuple.len() < 14 || read_i32(&tuple[2..6]) != 8 {
        return Err(CopyFormatError(
            "the first column is not a non-NULL int8".into(),
        ));
    }
    let mut value = &tuple[6..14];
    Ok(value.get_i64())
}

/// A batch of rows framed as a complete binary COPY stream: header, rows, trailer.
pub fn frame_rows<'a>(rows: impl IntoIterator<Item = &'a Bytes>) -> Bytes {
    let rows: Vec<&Bytes> = rows.into_iter().collect();
    let size = HEADER_LEN + rows.iter().map(|r| r.len()).sum::<usize>() + 2;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(SIGNATURE);
    out.put_i32(0);
    out.put_i32(0);
    for row in rows {
        out.put_slice(row);
    }
    out.put_i16(-1);
    out.freeze()
}

/// A batch framed for `COPY events (global_position, <the other columns>, txid)`: each row's
/// first field (the source position) replaced by the matching `positions` entry, and a NULL
/// appended for `txid`. `rows` and `positions` have the same length.
pub fn frame_rows_repositioned(rows: &[Bytes], positions: &[i64]) -> Bytes {
    let size = HEADER_LEN + rows.iter().map(|r| r.len() + 4).sum::<usize>() + 2;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(SIGNATURE);
    out.put_i32(0);
    out.put_i32(0);
    for (row, position) in rows.iter().zip(positions) {
        let fields = i16::from_be_bytes([row[0], row[1]]);
        out.put_i16(fields + 1);
        out.put_i32(8);
        out.put_i64(*position);
        out.put_slice(&row[14..]);
        out.put_i32(-1);
    }
    out.put_i16(-1);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tuple of an int8 and a nullable text.
    fn tuple(position: i64, text: Option<&str>) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(2);
        out.put_i32(8);
        out.put_i64(position);
        match text {
            Some(t) => {
                out.put_i32(t.len() as i32);
                out.put_slice(t.as_bytes());
            }
            None => out.put_i32(-1),
        }
        out.freeze()
    }

    #[test]
    fn splits_rows_across_any_chunking() {
        let rows = [
            tuple(5, Some("a")),
            tuple(9, None),
            tuple(12, Some("longer text")),
        ];
        let stream = frame_rows(rows.iter());
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut splitter = RowSplitter::new();
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                splitter.push(piece);
                while let Some(row) = splitter.next_row().unwrap() {
                    seen.push(row);
                }
            }
            assert!(splitter.is_finished(), "chunk {chunk}");
            assert_eq!(
                seen.iter().map(|r| r.position).collect::<Vec<_>>(),
                [5, 9, 12]
            );
            assert_eq!(seen[2].bytes, rows[2]);
        }
    }

    #[test]
    fn repositions_rows_and_appends_a_null() {
        let rows = [tuple(5, Some("a")), tuple(9, None)];
        let framed = frame_rows_repositioned(&rows, &[100, 101]);
        let mut splitter = RowSplitter::new();
        splitter.push(&framed);
        let first = splitter.next_row().unwrap().unwrap();
        assert_eq!(first.position, 100);
        assert_eq!(&first.bytes[..2], &3i16.to_be_bytes());
        assert_eq!(
            &first.bytes[first.bytes.len() - 4..],
            &(-1i32).to_be_bytes()
        );
        assert_eq!(splitter.next_row().unwrap().unwrap().position, 101);
        assert!(splitter.next_row().unwrap().is_none() && splitter.is_finished());
    }

    #[test]
    fn reads_the_event_id_of_a_row() {
        let id = uuid::Uuid::new_v4();
        let mut out = BytesMut::new();
        out.put_i16(2);
        out.put_i32(8);
        out.put_i64(3);
        out.put_i32(16);
        out.put_slice(id.as_bytes());
        let row = CopyRow {
            bytes: out.freeze(),
            position: 3,
        };
        assert_eq!(row.event_id().unwrap(), id);
        let short = CopyRow {
            bytes: tuple(1, None),
            position: 1,
        };
        assert!(short.event_id().is_err());
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let mut splitter = RowSplitter::new();
        splitter.push(b"not a copy stream at all");
        assert!(splitter.next_row().is_err());
        let mut splitter = RowSplitter::new();
        let mut stream = BytesMut::from(&frame_rows([])[..19]);
        stream.put_i16(1);
        stream.put_i32(-7);
        splitter.push(&stream);
        assert!(splitter.next_row().is_err());
        let mut splitter = RowSplitter::new();
        let mut stream = BytesMut::from(&frame_rows([])[..19]);
        stream.put_i16(1);
        stream.put_i32(-1);
        splitter.push(&stream);
        assert!(splitter.next_row().is_err(), "NULL position");
    }
}

//! The client messages the router must look inside (Parse, Bind, Close, Describe), read with
//! total functions, and the messages evshift injects towards a store.

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

use super::frame::read_cstr;

/// Parse: a statement name, its SQL text and the raw parameter-type section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMessage<'a> {
    pub name: &'a str,
    pub query: &'a str,
}

/// Bind: which portal from which statement, and the parameter values with their formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMessage<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    /// Format code per parameter: 0 text, 1 binary (expanded from the message's short forms).
    pub formats: Vec<i16>,
    pub values: Vec<Option<&'a [u8]>>,
}

impl BindMessage<'_> {
    /// Parameter `$n` (1-based) with its format, if present and not NULL.
    pub fn param(&self, n: u16) -> Option<(&[u8], i16)> {
        let i = (n as usize).checked_sub(1)?;
        let value = (*self.values.get(i)?)?;
        Some((value, *self.formats.get(i).unwrap_or(&0)))
    }
}

/// Why a client message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0} message")]
pub struct Malformed(pub &'static str);

fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed(what))
}

fn take_i16(buf: &mut &[u8], what: &'static str) -> Result<i16, Malformed> {
    let (head, rest) = buf.split_first_chunk::<2>().ok_or(Malformed(what))?;
    *buf = rest;
    Ok(i16::from_be_bytes(*head))
}

fn take_i32(buf: &mut &[u8], what: &'static str) -> Result<i32, Malformed> {
    let (head, rest) = buf.split_first_chunk::<4>().ok_or(Malformed(what))?;
    *buf = rest;
    Ok(i32::from_be_bytes(*head))
}

fn take_cstr<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], Malformed> {
    let (s, rest) = read_cstr(buf).ok_or(Malformed(what))?;
    *buf = rest;
    Ok(s)
}

/// Reads the body of a Parse ('P') message. Invalid UTF-8 in the SQL is reported so that the
/// statement is routed unclassified and the store answers it with its own error.
pub fn parse_message(body: &[u8]) -> Result<ParseMessage<'_>, Malformed> {
    let mut buf = body;
    let name = utf8(take_cstr(&mut buf, "Parse")?, "Parse")?;
    let query = utf8(take_cstr(&mut buf, "Parse")?, "Parse")?;
    Ok(ParseMessage { name, query })
}

/// Reads the body of a Bind ('B') message.
pub fn bind_message(body: &[u8]) -> Result<BindMessage<'_>, Malformed> {
    const WHAT: &str = "Bind";
    let mut buf = body;
    let portal = utf8(take_cstr(&mut buf, WHAT)?, WHAT)?;
    let statement = utf8(take_cstr(&mut buf, WHAT)?, WHAT)?;
    let format_count = take_i16(&mut buf, WHAT)?;
    if format_count < 0 {
        return Err(Malformed(WHAT));
    }
    let mut declared = Vec::with_capacity(format_count as usize);
    for _ in 0..format_count {
        declared.push(take_i16(&mut buf, WHAT)?);
    }
    let value_count = take_i16(&mut buf, WHAT)?;
    if value_count < 0 {
        return Err(Malformed(WHAT));
    }
    let mut values = Vec::with_capacity(value_count as usize);
    for _ in 0..value_count {
        let len = take_i32(&mut buf, WHAT)?;
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = len as usize;
        if buf.len() < len {
            return Err(Malformed(WHAT));
        }
        let (value, rest) = buf.split_at(len);
        values.push(Some(value));
        buf = rest;
    }
    // No codes: all text; one code: applies to all; otherwise one per parameter.
    let formats = match declared.len() {
        0 => vec![0; values.len()],
        1 => vec![declared[0]; values.len()],
        _ => declared,
    };
    Ok(BindMessage {
        portal,
        statement,
        formats,
        values,
    })
}

/// Reads the body of a Close ('C') or Describe ('D') message: kind (b'S' or b'P') and name.
pub fn target_message(body: &[u8]) -> Result<(u8, &str), Malformed> {
    let (&kind, rest) = body.split_first().ok_or(Malformed("Close/Describe"))?;
    let mut buf = rest;
    let name = utf8(take_cstr(&mut buf, "Close/Describe")?, "Close/Describe")?;
    Ok((kind, name))
}

/// Reads the SQL of a simple Query ('Q') message, or None if it is not valid UTF-8.
pub fn query_text(body: &[u8]) -> Option<&str> {
    let (sql, _) = read_cstr(body)?;
    std::str::from_utf8(sql).ok()
}

/// Appends a simple Query message.
pub fn query(sql: &str, out: &mut BytesMut) {
    // Only fails for a NUL inside the text, which evshift never builds.
    let _ = frontend::query(sql, out);
}

/// Appends Parse, Bind (no parameters), Execute for an unnamed statement: a statement run
/// inside the extended protocol without a Sync of its own.
pub fn parse_bind_execute(sql: &str, out: &mut BytesMut) {
    let _ = frontend::parse("", sql, std::iter::empty(), out);
    out.put_u8(b'B');
    out.put_i32(4 + 1 + 1 + 2 + 2 + 2);
    out.put_u8(0);
    out.put_u8(0);
    out.put_i16(0);
    out.put_i16(0);
    out.put_i16(0);
    let _ = frontend::execute("", 0, out);
}

/// Appends a Close of a prepared statement.
pub fn close_statement(name: &str, out: &mut BytesMut) {
    let _ = frontend::close(b'S', name, out);
}

/// Appends a Sync.
pub fn sync(out: &mut BytesMut) {
    frontend::sync(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_round_trip_with_mixed_formats() {
        let mut out = BytesMut::new();
        frontend::bind(
            "p",
            "s1",
            [0i16, 1],
            [Some(&b"abc"[..]), None, Some(&[1u8, 2][..])],
            |v, buf| match v {
                Some(v) => {
                    buf.put_slice(v);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            [1i16],
            &mut out,
        )
        .unwrap_or_else(|_| panic!("bind"));
        let bind = bind_message(&out[5..]).unwrap();
        assert_eq!(bind.portal, "p");
        assert_eq!(bind.statement, "s1");
        assert_eq!(bind.param(1), Some((&b"abc"[..], 0)));
        assert_eq!(bind.param(2), None);
        assert_eq!(bind.param(3), Some((&[1u8, 2][..], 0)));
        // Truncations never panic.
        for cut in 0..out.len() - 5 {
            let _ = bind_message(&out[5..5 + cut]);
        }
    }

    #[test]
    fn injected_extended_statement_is_well_formed() {
        let mut out = BytesMut::new();
        parse_bind_execute("SELECT 1", &mut out);
        let mut buf = out.clone();
        let mut tags = Vec::new();
        while let Some(frame) = crate::wire::Frame::split(&mut buf, 1 << 20).unwrap() {
            tags.push(frame.tag);
        }
        assert_eq!(tags, b"PBE");
        assert!(buf.is_empty());
    }
}

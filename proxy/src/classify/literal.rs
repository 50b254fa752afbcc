//! The value of a literal token as PostgreSQL reads it: quotes removed, escapes resolved.
//!
//! A cache hit never runs sqlparser, so the key values it reports come from here. The result
//! must equal what PostgreSQL (and sqlparser) would see, or a tenant id written as `E'...'` on
//! one call and `'...'` on the next would resolve differently.

use super::lexer::LiteralKind;

/// The value of the literal token `raw`, lexed as `kind`.
pub(crate) fn decode(raw: &str, kind: LiteralKind) -> String {
    match kind {
        LiteralKind::Number => raw.to_string(),
        LiteralKind::Dollar => dollar_body(raw).to_string(),
        LiteralKind::Standard | LiteralKind::Bits => quoted_body(raw).replace("''", "'"),
        LiteralKind::Escape => unescape_backslashes(quoted_body(raw)),
        LiteralKind::Unicode => unescape_unicode(quoted_body(raw)),
    }
}

/// The text between the first quote and the final quote (prefixes such as `E`, `N`, `U&`
/// come before the first quote).
fn quoted_body(raw: &str) -> &str {
    let Some(open) = raw.find('\'') else {
        return raw;
    };
    let inner = &raw[open + 1..];
    inner.strip_suffix('\'').unwrap_or(inner)
}

/// The body of `$tag$...$tag$`.
fn dollar_body(raw: &str) -> &str {
    let Some(tag_len) = raw
        .strip_prefix('$')
        .and_then(|rest| rest.find('$'))
        .map(|i| i + 2)
    else {
        return raw;
    };
    raw.get(tag_len..raw.len().saturating_sub(tag_len))
        .unwrap_or("")
}

/// Resolves the escapes of an `E'...'` body: `\b \f \n \r \t`, octal `\ooo`, hex `\xhh`,
/// `\uXXXX`, `\UXXXXXXXX`, any other escaped character as itself, and `''`.
fn unescape_backslashes(body: &str) -> String {
    let bytes = body.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
            out.push(b'\'');
            i += 2;
            continue;
        }
        if b != b'\\' || i + 1 >= bytes.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = bytes[i + 1];
        i += 2;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let (value, used) = radix_prefix(&bytes[i - 1..], 8, 3);
                out.push((value & 0xff) as u8);
                i += used - 1;
            }
            b'x' if bytes.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let (value, used) = radix_prefix(&bytes[i..], 16, 2);
                out.push(value as u8);
                i += used;
            }
            b'u' | b'U' => {
                let width = if c == b'u' { 4 } else { 8 };
                match code_point(&bytes[i..], width) {
                    Some(ch) => {
                        push_char(&mut out, ch);
                        i += width;
                    }
                    None => out.push(c),
                }
            }
            // Any other character (`\\`, `\'`, a multi-byte character's first byte: its
            // continuation bytes follow unchanged) stands for itself.
            _ => out.push(c),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves the escapes of a `U&'...'` body with the default escape character: `\XXXX`,
/// `\+XXXXXX`, `\\`, and `''`.
fn unescape_unicode(body: &str) -> String {
    let bytes = body.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
            out.push(b'\'');
            i += 2;
            continue;
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        if rest.first() == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if let Some(ch) = code_point(rest, 4) {
            push_char(&mut out, ch);
            i += 5;
        } else if let Some(ch) = rest.strip_prefix(b"+").and_then(|r| code_point(r, 6)) {
            push_char(&mut out, ch);
            i += 8;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Up to `max` leading digits of `radix` in `digits`: their value and how many were used
/// (at least one digit is assumed present).
fn radix_prefix(digits: &[u8], radix: u32, max: usize) -> (u32, usize) {
    let mut value = 0u32;
    let mut used = 0;
    for &d in digits.iter().take(max) {
        match (d as char).to_digit(radix) {
            Some(v) => {
                value = value * radix + v;
                used += 1;
            }
            None => break,
        }
    }
    (value, used.max(1))
}

/// Exactly `width` hex digits at the start of `digits`, as a character.
fn code_point(digits: &[u8], width: usize) -> Option<char> {
    let hex = digits.get(..width)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(hex).ok()?;
    char::from_u32(u32::from_str_radix(text, 16).ok()?)
}

fn push_char(out: &mut Vec<u8>, ch: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_form() {
        use LiteralKind::*;
        assert_eq!(decode("'it''s'", Standard), "it's");
        assert_eq!(decode("N'x'", Standard), "x");
        assert_eq!(
            decode("E'a\\'b\\n\\x41\\101\\u00e9\\\\'", Escape),
            "a'b\nAAé\\"
        );
        assert_eq!(decode("e'it''s'", Escape), "it's");
        assert_eq!(decode("U&'d\\0061t\\+000061'", Unicode), "data");
        assert_eq!(decode("B'0101'", Bits), "0101");
        assert_eq!(decode("$$a'b$$", Dollar), "a'b");
        assert_eq!(decode("$tag$x$y$tag$", Dollar), "x$y");
        assert_eq!(decode("1.5e3", Number), "1.5e3");
    }

    #[test]
    fn malformed_escapes_do_not_panic() {
        use LiteralKind::*;
        for raw in [
            "E'\\'",
            "E'\\x'",
            "E'\\u12'",
            "E'\\U0011FFFF'",
            "U&'\\+12'",
            "'",
            "$",
            "$a$",
        ] {
            let _ = decode(raw, Escape);
            let _ = decode(raw, Unicode);
            let _ = decode(raw, Dollar);
            let _ = decode(raw, Standard);
        }
    }
}

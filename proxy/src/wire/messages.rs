//! The messages evshift writes itself, encoded with pgwire, and the fields of errors it reads.

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{BindComplete, CloseComplete, ParseComplete};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};
use pgwire::messages::Message;

use super::frame::read_cstr;

/// SQLSTATE codes evshift raises on its own behalf.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// An error evshift reports to a client: severity, SQLSTATE and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

impl ErrorFields {
    /// An error that ends the session.
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            severity: "FATAL".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
        }
    }

    /// An error that ends the current statement only.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
        }
    }

    /// Appends this error as an ErrorResponse message.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut fields = vec![
            (b'S', self.severity.clone()),
            (b'V', self.severity.clone()),
            (b'C', self.code.clone()),
            (b'M', self.message.clone()),
        ];
        if let Some(detail) = &self.detail {
            fields.push((b'D', detail.clone()));
        }
        encode_into(&ErrorResponse::new(fields), out);
    }

    /// Reads the fields of an ErrorResponse body; unknown fields are ignored, missing ones empty.
    pub fn parse(body: &[u8]) -> ErrorFields {
        let mut fields = ErrorFields {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
        };
        let mut rest = body;
        while let Some((&kind, after)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let Some((value, after)) = read_cstr(after) else {
                break;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'S' => fields.severity = value,
                b'C' => fields.code = value,
                b'M' => fields.message = value,
                b'D' => fields.detail = Some(value),
                _ => {}
            }
            rest = after;
        }
        fields
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

fn encode_into<M: Message>(message: &M, out: &mut BytesMut) {
    // Encoding only fails for messages over pgwire's size limits, which evshift's own
    // small messages never reach.
    if let Err(e) = message.encode(out) {
        tracing::error!(error = %e, "could not encode a protocol message");
    }
}

pub fn authentication(auth: Authentication, out: &mut BytesMut) {
    encode_into(&auth, out);
}

pub fn parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    encode_into(&ParameterStatus::new(name.into(), value.into()), out);
}

pub fn backend_key_data(pid: i32, secret: i32, out: &mut BytesMut) {
    encode_into(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

pub fn ready_for_query(status: u8, out: &mut BytesMut) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode_into(&ReadyForQuery::new(status), out);
}

pub fn command_complete(tag: &str, out: &mut BytesMut) {
    encode_into(&CommandComplete::new(tag.into()), out);
}

pub fn parse_complete(out: &mut BytesMut) {
    encode_into(&ParseComplete::new(), out);
}

pub fn bind_complete(out: &mut BytesMut) {
    encode_into(&BindComplete::new(), out);
}

pub fn close_complete(out: &mut BytesMut) {
    encode_into(&CloseComplete::new(), out);
}

pub fn no_data(out: &mut BytesMut) {
    encode_into(&NoData::new(), out);
}

/// A ParameterDescription of a statement without parameters.
pub fn no_parameters(out: &mut BytesMut) {
    encode_into(&ParameterDescription::new(Vec::new()), out);
}

/// Tells a client asking for protocol 3.`minor` that evshift speaks 3.0, listing the
/// protocol options (`_pq_.*`) it does not know.
pub fn negotiate_protocol_version(unsupported_options: Vec<String>, out: &mut BytesMut) {
    encode_into(&NegotiateProtocolVersion::new(0, unsupported_options), out);
}

/// The single-byte answer to SSLRequest and GSSENCRequest: not supported.
pub fn refuse_encryption(out: &mut BytesMut) {
    out.put_u8(b'N');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trip() {
        let mut out = BytesMut::new();
        let mut e = ErrorFields::fatal(sqlstate::CONNECTION_FAILURE, "store \"x\" unreachable");
        e.detail = Some("connection refused".into());
        e.encode(&mut out);
        assert_eq!(out[0], b'E');
        let parsed = ErrorFields::parse(&out[5..]);
        assert_eq!(parsed, e);
    }

    #[test]
    fn parse_tolerates_truncation() {
        let parsed = ErrorFields::parse(b"SERROR\0C42");
        assert_eq!(parsed.severity, "ERROR");
        assert_eq!(parsed.code, "");
    }
}

//! The untagged first packet of a connection: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage.

use bytes::BytesMut;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::{GssEncRequest, SecretKey, SslRequest, Startup};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

use super::FrameError;

/// Largest startup packet accepted; the same bound PostgreSQL applies.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// What a client asked for in its first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: Vec<u8>,
    },
    /// Protocol 3.x with the client's parameters (user, database, options, ...).
    Startup {
        minor: u16,
        parameters: Vec<(String, String)>,
    },
    /// A protocol version evshift does not speak (2.0, 4.x, garbage).
    UnsupportedProtocol {
        major: u16,
        minor: u16,
    },
}

/// Returns the length of the complete startup packet at the start of `buf`, if any.
pub fn check(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if length < 8 {
        return Err(FrameError::BadLength {
            tag: '\0',
            length: length as i64,
        });
    }
    let length = length as usize;
    if length > MAX_STARTUP_PACKET {
        return Err(FrameError::TooLong {
            tag: '\0',
            length,
            limit: MAX_STARTUP_PACKET,
        });
    }
    Ok((buf.len() >= length).then_some(length))
}

/// Decodes one complete startup packet (as found by [`check`]).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, FrameError> {
    let bad = || FrameError::BadLength {
        tag: '\0',
        length: packet.len() as i64,
    };
    if SslRequest::is_ssl_request_packet(packet) {
        return Ok(StartupPacket::SslRequest);
    }
    if GssEncRequest::is_gss_enc_request_packet(packet) {
        return Ok(StartupPacket::GssEncRequest);
    }
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    if CancelRequest::is_cancel_request_packet(packet) {
        let mut buf = BytesMut::from(packet);
        let cancel = CancelRequest::decode(&mut buf, &ctx)
            .map_err(|_| bad())?
            .ok_or_else(bad)?;
        let secret = match cancel.secret_key {
            SecretKey::I32(v) => v.to_be_bytes().to_vec(),
            SecretKey::Bytes(b) => b.to_vec(),
        };
        return Ok(StartupPacket::Cancel {
            pid: cancel.pid,
            secret,
        });
    }
    let major = u16::from_be_bytes([packet[4], packet[5]]);
    let minor = u16::from_be_bytes([packet[6], packet[7]]);
    if major != 3 {
        return Ok(StartupPacket::UnsupportedProtocol { major, minor });
    }
    // Parameters must end with an empty name; pgwire is lenient about that, PostgreSQL is not.
    if packet.last() != Some(&0) {
        return Err(bad());
    }
    let mut buf = BytesMut::from(packet);
    let startup = Startup::decode(&mut buf, &ctx)
        .map_err(|_| bad())?
        .ok_or_else(bad)?;
    Ok(StartupPacket::Startup {
        minor,
        parameters: startup.parameters.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)], major: u16, minor: u16) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&major.to_be_bytes());
        body.extend_from_slice(&minor.to_be_bytes());
        for (k, v) in params {
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

    #[test]
    fn parses_the_four_kinds() {
        let p = startup(&[("user", "app"), ("database", "db")], 3, 0);
        assert_eq!(check(&p), Ok(Some(p.len())));
        match parse(&p).unwrap() {
            StartupPacket::Startup { minor, parameters } => {
                assert_eq!(minor, 0);
                assert!(parameters.contains(&("user".into(), "app".into())));
            }
            other => panic!("{other:?}"),
        }
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(parse(&ssl).unwrap(), StartupPacket::SslRequest);
        let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(parse(&gss).unwrap(), StartupPacket::GssEncRequest);
        let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            parse(&cancel).unwrap(),
            StartupPacket::Cancel {
                pid: 7,
                secret: vec![1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn other_protocols_are_reported_not_parsed() {
        let p = startup(&[("user", "app")], 2, 0);
        assert_eq!(
            parse(&p).unwrap(),
            StartupPacket::UnsupportedProtocol { major: 2, minor: 0 }
        );
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(check(&[0, 0, 0, 2]).is_err());
        assert!(check(&[0x7f, 0, 0, 0]).is_err());
        assert_eq!(check(&[0, 0, 0]), Ok(None));
    }
}

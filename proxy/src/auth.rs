//! Client authentication against `[auth]`: trust, md5 and scram-sha-256.
//!
//! SCRAM's server side is pgwire's sans-I/O `ScramServerAuth`; evshift only moves its messages.
//! The SASL messages are parsed here rather than with pgwire's decoders because those assume
//! well-formed input, and a client's bytes are not to be trusted.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use pgwire::api::auth::sasl::scram::{
    gen_salted_password, ScramSecret, ScramServerAuth, SCRAM_ITERATIONS,
};
use pgwire::messages::startup::Authentication;
use rand::RngCore;

use crate::config::{AuthConfig, AuthMethod};
use crate::connection::Connection;
use crate::wire::frame::read_cstr;
use crate::wire::messages::{self, sqlstate, ErrorFields};

const SCRAM_MECHANISM: &str = "SCRAM-SHA-256";
/// Authentication messages are small; a larger one is an attack or a bug.
const AUTH_MESSAGE_LIMIT: usize = 8 * 1024;

/// The secrets of one configured user, precomputed once so that a SCRAM login does not pay
/// for 4096 PBKDF2 rounds.
struct UserSecret {
    password: String,
    scram_salt: Vec<u8>,
    scram_salted_password: Vec<u8>,
}

/// Checks client credentials according to the configured method.
pub struct Authenticator {
    method: AuthMethod,
    users: HashMap<String, UserSecret>,
    scram: ScramServerAuth,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                let mut salt = vec![0u8; 16];
                rand::thread_rng().fill_bytes(&mut salt);
                let salted = gen_salted_password(&u.password, &salt, SCRAM_ITERATIONS);
                let secret = UserSecret {
                    password: u.password.clone(),
                    scram_salt: salt,
                    scram_salted_password: salted,
                };
                (u.name.clone(), secret)
            })
            .collect();
        Authenticator {
            method: config.method,
            users,
            scram: ScramServerAuth::new(),
        }
    }

    /// Runs the authentication exchange for `user` and, on success, writes AuthenticationOk
    /// into `out` (not yet sent). On failure the returned error is the FATAL to send.
    pub async fn authenticate(
        &self,
        client: &mut Connection,
        user: &str,
        out: &mut BytesMut,
    ) -> Result<(), ErrorFields> {
        match self.method {
            AuthMethod::Trust => self.check_trust(user)?,
            AuthMethod::Md5 => self.run_md5(client, user, out).await?,
            AuthMethod::ScramSha256 => self.run_scram(client, user, out).await?,
        }
        messages::authentication(Authentication::Ok, out);
        Ok(())
    }

    fn check_trust(&self, user: &str) -> Result<(), ErrorFields> {
        if self.users.is_empty() || self.users.contains_key(user) {
            Ok(())
        } else {
            Err(ErrorFields::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                format!("user \"{user}\" is not allowed to connect to evshift"),
            ))
        }
    }

    async fn run_md5(
        &self,
        client: &mut Connection,
        user: &str,
        out: &mut BytesMut,
    ) -> Result<(), ErrorFields> {
        let mut salt = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut salt);
        messages::authentication(Authentication::MD5Password(salt.to_vec()), out);
        send(client, out).await?;
        let answer = read_password_message(client).await?;
        let answer = read_cstr(&answer).map(|(s, _)| s).unwrap_or(&answer);
        // Compare against a hash even for an unknown user so both fail alike.
        let expected = match self.users.get(user) {
            Some(secret) => postgres_protocol::authentication::md5_hash(
                user.as_bytes(),
                secret.password.as_bytes(),
                salt,
            ),
            None => String::new(),
        };
        if !expected.is_empty() && constant_time_eq(answer, expected.as_bytes()) {
            Ok(())
        } else {
            Err(password_failed(user))
        }
    }

    async fn run_scram(
        &self,
        client: &mut Connection,
        user: &str,
        out: &mut BytesMut,
    ) -> Result<(), ErrorFields> {
        messages::authentication(Authentication::SASL(vec![SCRAM_MECHANISM.into()]), out);
        send(client, out).await?;

        let initial = read_password_message(client).await?;
        let (mechanism, client_first) = parse_sasl_initial_response(&initial).ok_or_else(|| {
            ErrorFields::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed SASLInitialResponse message",
            )
        })?;
        if mechanism != SCRAM_MECHANISM.as_bytes() {
            return Err(ErrorFields::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
            ));
        }
        // An unknown user still runs the exchange, against a random secret, so that the reply
        // does not reveal which user names exist.
        let secret = match self.users.get(user) {
            Some(s) => ScramSecret::SaltedPassword {
                salt: s.scram_salt.clone(),
                salted_password: s.scram_salted_password.clone(),
            },
            None => {
                let mut random = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut random);
                ScramSecret::SaltedPassword {
                    salt: random[..16].to_vec(),
                    salted_password: random,
                }
            }
        };
        let (server_first, waiting) = self
            .scram
            .on_client_first_message_with_secret(&client_first, secret)
            .map_err(|e| ErrorFields::fatal(sqlstate::PROTOCOL_VIOLATION, format!("SCRAM: {e}")))?;
        messages::authentication(Authentication::SASLContinue(Bytes::from(server_first)), out);
        send(client, out).await?;

        let client_final = read_password_message(client).await?;
        let server_final = waiting
            .on_client_final_message(&client_final)
            .map_err(|_| password_failed(user))?;
        if !self.users.contains_key(user) {
            return Err(password_failed(user));
        }
        messages::authentication(Authentication::SASLFinal(Bytes::from(server_final)), out);
        Ok(())
    }
}

fn password_failed(user: &str) -> ErrorFields {
    ErrorFields::fatal(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

async fn send(client: &mut Connection, out: &mut BytesMut) -> Result<(), ErrorFields> {
    client.send(out).await.map_err(|e| {
        ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("client went away: {e}"),
        )
    })
}

/// Reads the next message, which must be a PasswordMessage ('p'), and returns its body.
async fn read_password_message(client: &mut Connection) -> Result<Bytes, ErrorFields> {
    let frame = client.read_frame(AUTH_MESSAGE_LIMIT).await.map_err(|e| {
        ErrorFields::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("during authentication: {e}"),
        )
    })?;
    if frame.tag != b'p' {
        return Err(ErrorFields::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "expected a password response, got message type {:?}",
                frame.tag as char
            ),
        ));
    }
    Ok(frame.body_bytes())
}

/// SASLInitialResponse: mechanism name, then an Int32 length and that many bytes (-1: none).
fn parse_sasl_initial_response(body: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let (mechanism, rest) = read_cstr(body)?;
    let len_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let len = i32::from_be_bytes(len_bytes);
    let data = if len < 0 {
        Vec::new()
    } else {
        rest.get(4..4 + len as usize)?.to_vec()
    };
    Some((mechanism, data))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_initial_response_parsing_is_total() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(b"n,,n=");
        let (mech, data) = parse_sasl_initial_response(&body).unwrap();
        assert_eq!(mech, b"SCRAM-SHA-256");
        assert_eq!(data, b"n,,n=");
        // Truncated or lying lengths are rejected, not panicked on.
        for cut in 0..body.len() {
            let _ = parse_sasl_initial_response(&body[..cut]);
        }
        let mut lying = b"SCRAM-SHA-256\0".to_vec();
        lying.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_sasl_initial_response(&lying).is_none());
    }
}

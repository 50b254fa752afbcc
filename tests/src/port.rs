//! Picking free loopback ports.

use std::net::{Ipv4Addr, TcpListener};

/// The loopback address every harness server listens on.
pub const LOOPBACK: &str = "127.0.0.1";

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and releasing it, so another process may take it before
/// the caller binds it: servers started on such a port must retry with a new one when the bind
/// fails (`PgCluster` does).
///
/// # Panics
///
/// If the OS cannot bind a loopback socket at all; no test that needs a port could run then.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind a TCP socket on 127.0.0.1")
}

//! Building evshift configuration files (the TOML keys of DESIGN.md §13) for tests.

use std::path::PathBuf;

use serde::Serialize;

use crate::port::{free_port, LOOPBACK};

/// An evshift configuration file. Field names are the public TOML keys; optional parts are left
/// out of the file when unset, so the proxy's defaults apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvshiftConfig {
    /// `listen`: where clients connect, `host:port`.
    pub listen: String,
    /// `control_socket`: path of the control socket.
    pub control_socket: PathBuf,
    /// `metrics_listen`: where the Prometheus endpoint listens, `host:port`.
    pub metrics_listen: String,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[control]`: the control store; `None` leaves the section out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlConfig>,
    /// `[[stores]]`.
    pub stores: Vec<StoreConfig>,
}

/// The `[auth]` section: how clients authenticate to evshift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthConfig {
    /// `trust`, `md5` or `scram-sha-256`.
    pub method: String,
    /// Users and passwords evshift accepts (unused with `trust`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
}

/// One entry of `[auth] users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserConfig {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
}

/// The `[control]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlConfig {
    /// Connection URL of the control store.
    pub url: String,
}

/// One `[[stores]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    /// Store id, e.g. `shared`.
    pub id: String,
    /// Connection URL of the store.
    pub url: String,
    /// Whether tenants without a route live here (exactly one store should be the default).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

impl EvshiftConfig {
    /// A configuration listening on `127.0.0.1:listen_port`, metrics on another free port, the
    /// control socket in the system temporary directory (named after the process and port, so
    /// parallel tests do not collide), `trust` authentication, no control store and no stores.
    ///
    /// # Panics
    ///
    /// If no free port can be found (see [`free_port`]).
    pub fn new(listen_port: u16) -> EvshiftConfig {
        let control_socket = std::env::temp_dir().join(format!(
            "evshift-test-{}-{listen_port}.sock",
            std::process::id()
        ));
        EvshiftConfig {
            listen: format!("{LOOPBACK}:{listen_port}"),
            control_socket,
            metrics_listen: format!("{LOOPBACK}:{}", free_port()),
            auth: AuthConfig {
                method: "trust".to_owned(),
                users: Vec::new(),
            },
            control: None,
            stores: Vec::new(),
        }
    }

    /// Adds a `[[stores]]` entry.
    pub fn with_store(mut self, id: &str, url: &str, default: bool) -> EvshiftConfig {
        self.stores.push(StoreConfig {
            id: id.to_owned(),
            url: url.to_owned(),
            default,
        });
        self
    }

    /// Sets `[control] url`.
    pub fn with_control(mut self, url: &str) -> EvshiftConfig {
        self.control = Some(ControlConfig {
            url: url.to_owned(),
        });
        self
    }

    /// Sets the client authentication method and its users.
    pub fn with_auth(mut self, method: &str, users: &[(&str, &str)]) -> EvshiftConfig {
        self.auth = AuthConfig {
            method: method.to_owned(),
            users: users
                .iter()
                .map(|(name, password)| UserConfig {
                    name: (*name).to_owned(),
                    password: (*password).to_owned(),
                })
                .collect(),
        };
        self
    }

    /// The TOML text.
    ///
    /// # Panics
    ///
    /// Never in practice: every field is a plain string, bool or list, which TOML can express.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an EvshiftConfig is always expressible in TOML")
    }
}

/// A minimal valid configuration: listen on `127.0.0.1:listen_port`, `trust` authentication, one
/// store `shared` at `store_url` that is the default (see [`EvshiftConfig::new`] for the rest).
pub fn single_store_config(listen_port: u16, store_url: &str) -> String {
    EvshiftConfig::new(listen_port)
        .with_store("shared", store_url, true)
        .to_toml()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_store_config_has_the_public_keys() {
        let text = single_store_config(6432, "postgres://postgres@127.0.0.1:5432/app");
        let value: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(value["listen"].as_str(), Some("127.0.0.1:6432"));
        assert!(value["control_socket"].as_str().is_some());
        assert!(value["metrics_listen"].as_str().is_some());
        assert_eq!(value["auth"]["method"].as_str(), Some("trust"));
        assert!(value.get("control").is_none());
        let store = &value["stores"][0];
        assert_eq!(store["id"].as_str(), Some("shared"));
        assert_eq!(
            store["url"].as_str(),
            Some("postgres://postgres@127.0.0.1:5432/app")
        );
        assert_eq!(store["default"].as_bool(), Some(true));
    }

    #[test]
    fn auth_users_and_control_are_written_when_set() {
        let text = EvshiftConfig::new(1)
            .with_control("postgres://postgres@127.0.0.1:1/evshift")
            .with_auth("scram-sha-256", &[("app", "secret")])
            .with_store("a", "postgres://x@127.0.0.1:2/app", true)
            .with_store("b", "postgres://x@127.0.0.1:3/app", false)
            .to_toml();
        let value: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(value["auth"]["users"][0]["name"].as_str(), Some("app"));
        assert_eq!(
            value["auth"]["users"][0]["password"].as_str(),
            Some("secret")
        );
        assert!(value["control"]["url"].as_str().is_some());
        assert!(value["stores"][1].get("default").is_none());
    }
}

//! Central's settings: compiled defaults, then a TOML file, then `AERO_*` environment variables.

use aero_shared::pipeline::LimitSettings;
use aero_shared::server::ServerSettings;
use aero_shared::settings::{Layered, LogFormat};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where the SQLite database and generated secrets live; the platform data dir by default.
    pub data_dir: Option<PathBuf>,
    /// An ADO.NET connection string selects SQL Server; otherwise a SQLite path.
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    /// The URL edges and admins reach this service at, printed at start-up.
    pub public_url: Option<String>,
    pub cors_origins: Vec<String>,
    /// Where chain-wide staff may perform sensitive operations from.
    pub hq_networks: Vec<IpNet>,
    /// Reverse proxies and load balancers (CIDR) whose `X-Forwarded-For` / `Forwarded` name the
    /// client; empty: the TCP peer is always the client.
    pub trusted_proxies: Vec<IpNet>,
    /// The staff-token signing secret; generated and kept in the data dir when unset.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    pub jwt_ttl_minutes: i64,
    /// Lifetime of one-time edge enrollment tokens.
    pub enrollment_token_ttl_minutes: i64,
    pub limits: LimitSettings,
    /// Connection limit, header read timeout and the drain deadline on SIGTERM (sync batches
    /// included; well inside the unit's `TimeoutStopSec=30`).
    pub server: ServerSettings,
    /// `human` lines or one `json` object per line on stderr.
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: None,
            database_url: None,
            public_url: None,
            cors_origins: Vec::new(),
            hq_networks: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
            trusted_proxies: Vec::new(),
            jwt_secret: None,
            jwt_ttl_minutes: 15,
            enrollment_token_ttl_minutes: 60 * 24,
            limits: LimitSettings::default(),
            server: ServerSettings::with_max_connections(4096),
            log_format: LogFormat::default(),
        }
    }
}

impl Layered for Settings {
    const SECRET_KEYS: &'static [&'static str] = &["database_url", "jwt_secret"];

    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = self.limits.problems();
        problems.extend(self.server.problems());
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().len() < 32)
        {
            problems.push((
                "jwt_secret",
                "must be at least 32 characters (or unset, to generate one)".into(),
            ));
        }
        if !(1..=24 * 60).contains(&self.jwt_ttl_minutes) {
            problems.push(("jwt_ttl_minutes", "must be between 1 and 1440".into()));
        }
        if self.enrollment_token_ttl_minutes < 1 {
            problems.push(("enrollment_token_ttl_minutes", "must be at least 1".into()));
        }
        problems
    }
}

impl Settings {
    /// Defaults <- `config` (if given) <- `AERO_*` variables (`__` separates nested keys).
    pub fn load(config: Option<&Path>) -> anyhow::Result<Self> {
        aero_shared::settings::load_layered(config)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| aero_shared::settings::default_data_dir("aero-central"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aero_shared::settings::load_from;
    use std::ffi::OsString;

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn debug_output_hides_secrets() {
        let settings = Settings {
            database_url: Some("server=tcp:db,1433;user=u;password=hunter2-secret".into()),
            jwt_secret: Some("jwt-signing-secret-value-of-32-characters".into()),
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!debug.contains("jwt-signing-secret-value"), "{debug}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_a_refusal_never_shows_them() {
        let settings = load_from::<Settings>(
            None,
            env(&[
                (
                    "AERO_DATABASE_URL",
                    "server=tcp:db,1433;user=u;password=hunter2-secret",
                ),
                (
                    "AERO_JWT_SECRET",
                    "jwt-signing-secret-value-of-32-characters",
                ),
            ]),
        )
        .expect("load");
        assert_eq!(
            settings.database_url.as_ref().map(|u| u.expose_secret()),
            Some("server=tcp:db,1433;user=u;password=hunter2-secret")
        );
        let message = load_from::<Settings>(None, env(&[("AERO_JWT_SECRET", "98765432123")]))
            .expect_err("a number is not a secret string")
            .to_string();
        assert!(
            message.starts_with(
                "invalid setting `jwt_secret` in environment variable AERO_JWT_SECRET:"
            ),
            "{message}"
        );
        assert!(!message.contains("98765432123"), "{message}");
        let message = load_from::<Settings>(None, env(&[("AERO_JWT_SECRET", "short-secret")]))
            .expect_err("too short")
            .to_string();
        assert_eq!(
            message,
            "invalid setting `jwt_secret` in environment variable AERO_JWT_SECRET: \
             must be at least 32 characters (or unset, to generate one)"
        );
    }

    #[test]
    fn the_server_section_has_central_defaults_and_is_checked() {
        assert_eq!(Settings::default().server.max_connections, 4096);
        let message = load_from::<Settings>(None, env(&[("AERO_SERVER__MAX_CONNECTIONS", "0")]))
            .expect_err("refused")
            .to_string();
        assert_eq!(
            message,
            "invalid setting `server.max_connections` in environment variable \
             AERO_SERVER__MAX_CONNECTIONS: must be between 1 and 1000000"
        );
    }

    #[test]
    fn the_printed_defaults_load_back_unchanged() {
        let text = aero_shared::settings::default_toml::<Settings>().expect("defaults as TOML");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("central.toml");
        std::fs::write(&path, &text).expect("write");
        let loaded = load_from::<Settings>(Some(&path), env(&[])).expect("load");
        assert_eq!(
            aero_shared::settings::default_toml::<Settings>().expect("toml"),
            aero_shared::settings::as_toml(&loaded).expect("toml")
        );
        assert!(
            text.contains("hq_networks = [\"127.0.0.0/8\", \"::1/128\"]"),
            "{text}"
        );
    }
}

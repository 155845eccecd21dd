//! Central's settings: compiled defaults, then a TOML file, then `AERO_*` environment variables.

use aero_shared::pipeline::LimitSettings;
use ipnet::IpNet;
use secrecy::SecretString;
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
    /// The staff-token signing secret; generated and kept in the data dir when unset.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    pub jwt_ttl_minutes: i64,
    /// Lifetime of one-time edge enrollment tokens.
    pub enrollment_token_ttl_minutes: i64,
    pub limits: LimitSettings,
    /// On SIGTERM, how long requests already running (sync batches included) get to finish
    /// before they are abandoned; well inside the unit's `TimeoutStopSec=30`.
    pub shutdown_grace_secs: u64,
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
            jwt_secret: None,
            jwt_ttl_minutes: 15,
            enrollment_token_ttl_minutes: 60 * 24,
            limits: LimitSettings::default(),
            shutdown_grace_secs: 10,
        }
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
    use secrecy::ExposeSecret;

    #[test]
    fn debug_output_hides_secrets() {
        let settings = Settings {
            database_url: Some("server=tcp:db,1433;user=u;password=hunter2-secret".into()),
            jwt_secret: Some("jwt-signing-secret-value".into()),
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!debug.contains("jwt-signing-secret-value"), "{debug}");
        assert_eq!(
            settings
                .jwt_secret
                .as_ref()
                .map(|s| s.expose_secret().len()),
            Some(24)
        );
    }
}

//! The edge's settings: compiled defaults, then a TOML file, then `AERO_*` environment variables.

use aero_shared::pipeline::LimitSettings;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where the credential, the replica database and generated secrets live.
    pub data_dir: Option<PathBuf>,
    pub cors_origins: Vec<String>,
    pub limits: LimitSettings,
    pub sync: SyncSettings,
    pub jwt_ttl_minutes: i64,
    /// On SIGTERM, how long requests already running get to finish before they are abandoned.
    /// With the final push it stays well inside the unit's `TimeoutStopSec=30`.
    pub shutdown_grace_secs: u64,
    pub live: crate::live::LiveSettings,
    pub plugs: crate::plugs::reconcile::PlugSettings,
}

/// How the edge talks to central: batch sizes and retry pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncSettings {
    /// Most outbox ops one push carries.
    pub push_batch_ops: usize,
    /// Roughly the most op data (JSON bytes) one push carries; one op is always sent.
    pub push_batch_bytes: usize,
    /// Rows asked for per pull page.
    pub pull_page_rows: u32,
    /// Fallback pull period when no change hint arrives.
    pub pull_interval_secs: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_secs: u64,
    /// How long ops central acknowledged are kept, to be sent again if central is restored from
    /// a backup older than them.
    pub retention_days: u32,
    /// The most acknowledged ops kept (the oldest go first).
    pub retention_max_ops: u64,
    /// At shutdown, how long the last push attempt may take: a dead link must not hold a
    /// stopping venue box; what it does not send stays in the outbox for the next start.
    pub final_push_secs: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            push_batch_ops: 500,
            push_batch_bytes: 1024 * 1024,
            pull_page_rows: 1000,
            pull_interval_secs: 30,
            backoff_min_ms: 200,
            backoff_max_secs: 60,
            retention_days: 7,
            retention_max_ops: 200_000,
            final_push_secs: 5,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            data_dir: None,
            cors_origins: Vec::new(),
            limits: LimitSettings::default(),
            sync: SyncSettings::default(),
            jwt_ttl_minutes: 60,
            shutdown_grace_secs: 10,
            live: crate::live::LiveSettings::default(),
            plugs: crate::plugs::reconcile::PlugSettings::default(),
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
            .unwrap_or_else(|| aero_shared::settings::default_data_dir("aero-edge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[sync]\npush_batch_ops = 7\n",
        )
        .expect("write config");
        let settings = Settings::load(Some(&path)).expect("load");
        assert_eq!(settings.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(settings.sync.push_batch_ops, 7);
        assert_eq!(settings.sync.pull_page_rows, 1000);
        assert_eq!(settings.limits, LimitSettings::default());
    }

    #[test]
    fn missing_config_file_is_an_error() {
        assert!(Settings::load(Some(Path::new("/nonexistent/edge.toml"))).is_err());
    }
}

//! The edge's settings: compiled defaults, then a TOML file, then `AERO_*` environment variables.

use aero_shared::pipeline::LimitSettings;
use aero_shared::server::ServerSettings;
use aero_shared::server::tls::TlsSettings;
use aero_shared::settings::{Layered, LogFormat};
use ipnet::IpNet;
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
    /// Reverse proxies (CIDR) whose `X-Forwarded-For` / `Forwarded` name the client; empty:
    /// the TCP peer is always the client.
    pub trusted_proxies: Vec<IpNet>,
    pub limits: LimitSettings,
    pub sync: SyncSettings,
    pub jwt_ttl_minutes: i64,
    /// Connection limit, header read timeout and the drain deadline on SIGTERM (with the final
    /// push it stays well inside the unit's `TimeoutStopSec=30`).
    pub server: ServerSettings,
    /// HTTPS for the venue API: without it device keys cross the venue LAN in clear.
    pub tls: TlsSettings,
    pub live: crate::live::LiveSettings,
    pub plugs: crate::plugs::reconcile::PlugSettings,
    /// `human` lines or one `json` object per line on stderr.
    pub log_format: LogFormat,
}

/// Rows asked for per page by the initial pull of `aero-edge enroll` (at least): it fills an
/// empty replica with no terminal served yet, where fewer round trips to central count most.
pub const ENROLL_PULL_PAGE_ROWS: u32 = 1000;

/// How the edge talks to central: batch sizes and retry pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncSettings {
    /// Most outbox ops one push carries.
    pub push_batch_ops: usize,
    /// Roughly the most op data (JSON bytes) one push carries; one op is always sent.
    pub push_batch_bytes: usize,
    /// Rows asked for per pull page while serving. Each page is applied in one transaction of
    /// the single writer, so terminals' writes wait behind it: most of a busy venue's pulls are
    /// central sending its own registrations back, and a page of 1,000 held the writer long
    /// enough to double the p99 of a registration. `aero-edge enroll`'s initial pull, which no
    /// terminal waits behind, asks for at least [`ENROLL_PULL_PAGE_ROWS`].
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
            pull_page_rows: 200,
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
            trusted_proxies: Vec::new(),
            limits: LimitSettings::default(),
            sync: SyncSettings::default(),
            jwt_ttl_minutes: 60,
            server: ServerSettings::with_max_connections(1024),
            tls: TlsSettings::default(),
            live: crate::live::LiveSettings::default(),
            plugs: crate::plugs::reconcile::PlugSettings::default(),
            log_format: LogFormat::default(),
        }
    }
}

impl Layered for Settings {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = self.limits.problems();
        problems.extend(self.server.problems());
        problems.extend(self.tls.problems());
        problems.extend(self.live.problems());
        let sync = &self.sync;
        if sync.push_batch_ops == 0 {
            problems.push(("sync.push_batch_ops", "must be at least 1".into()));
        }
        if sync.push_batch_bytes < 1024 {
            problems.push(("sync.push_batch_bytes", "must be at least 1024".into()));
        }
        if sync.pull_page_rows == 0 {
            problems.push(("sync.pull_page_rows", "must be at least 1".into()));
        }
        if sync.backoff_min_ms > sync.backoff_max_secs.saturating_mul(1000) {
            problems.push((
                "sync.backoff_min_ms",
                format!(
                    "must not exceed sync.backoff_max_secs ({} s)",
                    sync.backoff_max_secs
                ),
            ));
        }
        if !(1..=24 * 60).contains(&self.jwt_ttl_minutes) {
            problems.push(("jwt_ttl_minutes", "must be between 1 and 1440".into()));
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
            .unwrap_or_else(|| aero_shared::settings::default_data_dir("aero-edge"))
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

    fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    fn refusal(config: Option<&Path>, vars: &[(&str, &str)]) -> String {
        load_from::<Settings>(config, env(vars))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn defaults_apply_when_neither_file_nor_environment_sets_a_key() {
        let (_dir, path) = config_file("[sync]\npush_batch_ops = 7\n");
        let settings = load_from::<Settings>(Some(&path), env(&[("PATH", "/bin")])).expect("load");
        assert_eq!(settings.listen, Settings::default().listen);
        assert_eq!(settings.sync.pull_page_rows, 200);
        assert_eq!(settings.limits, LimitSettings::default());
        assert_eq!(settings.log_format, LogFormat::Human);
        assert_eq!(
            load_from::<Settings>(None, env(&[])).expect("load"),
            Settings::default()
        );
    }

    #[test]
    fn the_file_overrides_defaults() {
        let (_dir, path) = config_file(
            "listen = \"0.0.0.0:9000\"\nlog_format = \"json\"\n[sync]\npush_batch_ops = 7\n",
        );
        let settings = load_from::<Settings>(Some(&path), env(&[])).expect("load");
        assert_eq!(settings.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(settings.sync.push_batch_ops, 7);
        assert_eq!(settings.log_format, LogFormat::Json);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let (_dir, path) = config_file("listen = \"0.0.0.0:9000\"\n[sync]\npush_batch_ops = 7\n");
        let settings = load_from::<Settings>(
            Some(&path),
            env(&[
                ("AERO_SYNC__PUSH_BATCH_OPS", "9"),
                ("AERO_LOG_FORMAT", "json"),
                ("AERO_CORS_ORIGINS", "[\"http://kiosk.lan\"]"),
            ]),
        )
        .expect("load");
        assert_eq!(settings.sync.push_batch_ops, 9);
        assert_eq!(settings.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.cors_origins, ["http://kiosk.lan"]);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_naming_the_key_and_the_file() {
        let (_dir, path) = config_file("listen_typo = 3\n[sync]\npush_batch_opz = 1\n");
        let message = refusal(Some(&path), &[]);
        let file = path.display().to_string();
        assert!(
            message.contains(&format!("unknown setting `listen_typo` in {file}")),
            "{message}"
        );
        assert!(
            message.contains(&format!("unknown setting `sync.push_batch_opz` in {file}")),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_variable_is_refused_naming_the_variable() {
        let message = refusal(None, &[("AERO_SYNC__PUSH_BATCH_OPZ", "3")]);
        assert_eq!(
            message,
            "unknown setting `sync.push_batch_opz` in environment variable AERO_SYNC__PUSH_BATCH_OPZ"
        );
    }

    #[test]
    fn variables_the_command_line_and_tests_read_are_not_refused() {
        let settings = load_from::<Settings>(
            None,
            env(&[
                ("AERO_DATA_DIR", "/var/lib/aero-edge"),
                ("AERO_CONFIG", "/etc/aero/edge.toml"),
                ("AERO_LISTEN", "127.0.0.1:9100"),
                ("AERO_DATABASE_URL", "edge.db"),
                ("AERO_ENROLL_TOKEN", "token"),
                ("AERO_TEST_MSSQL_URL", "server=tcp:db,1433"),
            ]),
        )
        .expect("load");
        assert_eq!(settings.data_dir(), PathBuf::from("/var/lib/aero-edge"));
        assert_eq!(settings.listen, "127.0.0.1:9100".parse().expect("addr"));
    }

    #[test]
    fn a_bad_value_in_the_file_is_refused_naming_the_key_and_the_file() {
        let (_dir, path) = config_file("listen = \"not-an-address\"\n");
        let message = refusal(Some(&path), &[]);
        assert_eq!(
            message,
            format!(
                "invalid setting `listen` in {}: invalid socket address syntax",
                path.display()
            )
        );
        let (_dir, path) = config_file("[sync]\npush_batch_ops = 0\n");
        let message = refusal(Some(&path), &[]);
        assert_eq!(
            message,
            format!(
                "invalid setting `sync.push_batch_ops` in {}: must be at least 1",
                path.display()
            )
        );
    }

    #[test]
    fn a_bad_value_in_the_environment_is_refused_naming_the_variable() {
        let message = refusal(None, &[("AERO_SYNC__PUSH_BATCH_OPS", "lots")]);
        assert_eq!(
            message,
            "invalid setting `sync.push_batch_ops` in environment variable \
             AERO_SYNC__PUSH_BATCH_OPS: invalid type: found string \"lots\", expected usize"
        );
        let message = refusal(None, &[("AERO_LIMITS__BURST", "-1")]);
        assert!(
            message.starts_with(
                "invalid setting `limits.burst` in environment variable AERO_LIMITS__BURST:"
            ),
            "{message}"
        );
        let message = refusal(None, &[("AERO_LOG_FORMAT", "xml")]);
        assert!(
            message.starts_with(
                "invalid setting `log_format` in environment variable AERO_LOG_FORMAT:"
            ),
            "{message}"
        );
    }

    #[test]
    fn server_tls_and_live_limits_are_checked_naming_the_key() {
        let (_dir, path) = config_file(
            "[server]\nmax_connections = 0\nheader_read_timeout_secs = 0\n\
             [tls]\ncert_path = \"/etc/aero/tls/edge.crt\"\n\
             [live]\nmax_message_bytes = 10\ninbound_messages_per_sec = 0\n",
        );
        let message = refusal(Some(&path), &[]);
        let file = path.display();
        for expected in [
            format!("invalid setting `server.max_connections` in {file}: must be between 1"),
            format!("invalid setting `server.header_read_timeout_secs` in {file}: must be"),
            format!("invalid setting `tls.cert_path` in {file}: needs tls.key_path too"),
            format!("invalid setting `live.max_message_bytes` in {file}: must be between 125"),
            format!("invalid setting `live.inbound_messages_per_sec` in {file}: must be"),
        ] {
            assert!(message.contains(&expected), "{expected}\nnot in\n{message}");
        }
        let settings = load_from::<Settings>(
            None,
            env(&[
                ("AERO_SERVER__MAX_CONNECTIONS", "64"),
                ("AERO_TLS__CERT_PATH", "/etc/aero/tls/edge.crt"),
                ("AERO_TLS__KEY_PATH", "/etc/aero/tls/edge.key"),
            ]),
        )
        .expect("load");
        assert_eq!(settings.server.max_connections, 64);
        assert_eq!(settings.server.drain_deadline_secs, 10);
        assert!(settings.tls.enabled());
        assert_eq!(Settings::default().server.max_connections, 1024);
        assert!(!Settings::default().tls.enabled());
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused_naming_the_file() {
        let (_dir, path) = config_file("listen = \n");
        let message = refusal(Some(&path), &[]);
        assert!(message.contains("TOML parse error"), "{message}");
        assert!(message.contains("edge.toml"), "{message}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let message = refusal(Some(Path::new("/nonexistent/edge.toml")), &[]);
        assert_eq!(message, "config file /nonexistent/edge.toml does not exist");
    }

    #[test]
    fn the_printed_defaults_load_back_unchanged() {
        let text = aero_shared::settings::default_toml::<Settings>().expect("defaults as TOML");
        let (_dir, path) = config_file(&text);
        assert_eq!(
            load_from::<Settings>(Some(&path), env(&[])).expect("load"),
            Settings::default()
        );
    }
}

//! Layered configuration shared by both services: compiled defaults <- TOML file <- `AERO_*`
//! environment variables (nested keys joined with `__`), and logging set-up.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Loads `T` from its defaults, then `config` (which must exist if given), then the environment.
pub fn load_layered<T>(config: Option<&Path>) -> anyhow::Result<T>
where
    T: Default + Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = config {
        anyhow::ensure!(
            path.exists(),
            "config file {} does not exist",
            path.display()
        );
        figment = figment.merge(Toml::file(path));
    }
    Ok(figment
        .merge(Env::prefixed("AERO_").split("__"))
        .extract()?)
}

/// The platform data directory of `program` (e.g. `~/.local/share/aero-edge`).
pub fn default_data_dir(program: &str) -> PathBuf {
    directories::ProjectDirs::from("dev", "AeroSports", program)
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(format!("{program}-data")))
}

/// Logs to stderr (journald under systemd), filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

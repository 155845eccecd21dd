//! Layered configuration shared by both services: compiled defaults <- TOML file <- `AERO_*`
//! environment variables (nested keys joined with `__`). A key the service does not know, or a
//! value it cannot take, is refused with the key and the file or variable it came from.

pub mod environment;
pub mod logging;
mod plain_fields;

pub use logging::{LogFormat, init_tracing};

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Metadata, Source};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A service's settings as the layered loader sees them.
pub trait Layered: Default + Serialize + DeserializeOwned {
    /// Keys (dotted) holding secrets: a message about one never shows its value.
    const SECRET_KEYS: &'static [&'static str] = &[];

    /// Range and consistency rules types alone do not express, as `(dotted key, problem)`.
    fn problems(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Loads `T` from its defaults, then `config` (which must exist if given), then the process
/// environment.
pub fn load_layered<T: Layered>(config: Option<&Path>) -> anyhow::Result<T> {
    load_from(config, std::env::vars_os())
}

/// [`load_layered`] with the environment given as `vars`.
pub fn load_from<T: Layered>(
    config: Option<&Path>,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<T> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = config {
        anyhow::ensure!(
            path.is_file(),
            "config file {} does not exist",
            path.display()
        );
        figment = figment.merge(Toml::file_exact(path));
    }
    for var in environment::settings_variables(vars)? {
        figment = figment.merge(var);
    }
    refuse_unknown_keys::<T>(&figment)?;
    let settings: T = figment
        .extract()
        .map_err(|err| anyhow::anyhow!(describe_errors::<T>(err)))?;
    let problems: Vec<String> = settings
        .problems()
        .into_iter()
        .map(|(key, problem)| {
            let source = figment
                .find_metadata(key)
                .map_or_else(|| "compiled defaults".to_string(), source_label);
            format!("invalid setting `{key}` in {source}: {problem}")
        })
        .collect();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(settings)
}

/// Every key the layers set that `T` has no place for, each with where it came from.
fn refuse_unknown_keys<T: Layered>(figment: &Figment) -> anyhow::Result<()> {
    let merged: Value = figment
        .extract()
        .map_err(|err| anyhow::anyhow!(describe_errors::<T>(err)))?;
    let mut unknown = Vec::new();
    // A value error here is reported by the typed extraction that follows, with its source.
    let _ = serde_ignored::deserialize::<_, _, T>(&merged, |path| {
        unknown.push(dotted(&path));
    });
    let refused: Vec<String> = unknown
        .into_iter()
        .filter_map(|key| {
            let metadata = figment.find_metadata(&key);
            if let Some(Source::Custom(name)) = metadata.and_then(|m| m.source.as_ref())
                && environment::is_cli_variable(name)
            {
                return None;
            }
            let source = metadata.map_or_else(|| "an unknown source".to_string(), source_label);
            Some(format!("unknown setting `{key}` in {source}"))
        })
        .collect();
    anyhow::ensure!(refused.is_empty(), "{}", refused.join("\n"));
    Ok(())
}

fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    let mut segments = Vec::new();
    let mut at = path;
    loop {
        match at {
            Path::Root => break,
            Path::Seq { parent, index } => {
                segments.push(index.to_string());
                at = parent;
            }
            Path::Map { parent, key } => {
                segments.push(key.clone());
                at = parent;
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => at = parent,
        }
    }
    segments.reverse();
    segments.join(".")
}

/// Where a layer's values came from, as an operator would look for it.
fn source_label(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(Source::File(path)) => path.display().to_string(),
        Some(Source::Custom(name)) if metadata.name == environment::METADATA_NAME => {
            format!("environment variable {name}")
        }
        Some(Source::Code(_)) => "compiled defaults".to_string(),
        _ => metadata.name.to_string(),
    }
}

/// One line per error, each naming the key and its source; a secret's value is never shown.
fn describe_errors<T: Layered>(errors: figment::Error) -> String {
    errors
        .into_iter()
        .map(|err| {
            let source = err.metadata.as_ref().map(source_label);
            if err.path.is_empty() {
                // A file that is not valid TOML: figment's message names the file and line.
                return err.to_string();
            }
            let key = err.path.join(".");
            let secret = T::SECRET_KEYS
                .iter()
                .any(|s| key == *s || key.starts_with(&format!("{s}.")));
            let problem = match (&err.kind, secret) {
                (_, false) => err.kind.to_string(),
                (figment::error::Kind::InvalidType(_, expected), true) => {
                    format!("expected {expected} (value hidden)")
                }
                (_, true) => "not a valid value (value hidden)".to_string(),
            };
            match source {
                Some(source) => format!("invalid setting `{key}` in {source}: {problem}"),
                None => format!("invalid setting `{key}`: {problem}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The compiled defaults of `T` as TOML the same loader reads back unchanged. Keys without a
/// default (an unset optional path, URL or secret) are left out.
pub fn default_toml<T: Layered>() -> anyhow::Result<String> {
    as_toml(&T::default())
}

/// `settings` as TOML the loader reads back (secrets are never written).
pub fn as_toml<T: Serialize>(settings: &T) -> anyhow::Result<String> {
    Ok(toml::to_string(settings)?)
}

/// The platform data directory of `program` (e.g. `~/.local/share/aero-edge`).
pub fn default_data_dir(program: &str) -> PathBuf {
    directories::ProjectDirs::from("dev", "AeroSports", program)
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(format!("{program}-data")))
}

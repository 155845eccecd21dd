//! The `AERO_*` environment layer of the settings: each variable becomes one figment provider
//! named after it, so a refused key or value names the variable it came from.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider, Source};
use std::ffi::OsString;

/// The prefix of every settings variable; nested keys are joined with `__`
/// (`AERO_SYNC__PUSH_BATCH_OPS` is `[sync] push_batch_ops`).
pub const PREFIX: &str = "AERO_";

/// Variables the command lines read themselves (clap `env = ...`), and the ones the test suite
/// sets for its own use. They are not refused as unknown settings; where one matches a setting of
/// the service (`AERO_DATA_DIR`, `AERO_LISTEN`, `AERO_DATABASE_URL` on central) it still sets it.
pub const CLI_VARIABLES: &[&str] = &[
    "AERO_DATA_DIR",
    "AERO_CONFIG",
    "AERO_LISTEN",
    "AERO_DATABASE_URL",
    "AERO_ENROLL_TOKEN",
];

/// Prefixes of variables that belong to the test suite (`AERO_TEST_MSSQL_URL`, ...).
pub const CLI_PREFIXES: &[&str] = &["AERO_TEST_"];

/// Whether `name` is read by a command line or the test suite rather than being a setting.
pub fn is_cli_variable(name: &str) -> bool {
    CLI_VARIABLES.contains(&name) || CLI_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One `AERO_*` variable as a settings layer.
#[derive(Clone)]
pub struct EnvVar {
    /// The variable's name, e.g. `AERO_SYNC__PUSH_BATCH_OPS`.
    pub name: String,
    /// The dotted settings key it sets, e.g. `sync.push_batch_ops`.
    pub key: String,
    value: String,
}

impl std::fmt::Debug for EnvVar {
    // The value is left out: it may be a secret (`AERO_JWT_SECRET`, `AERO_DATABASE_URL`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The settings variables among `vars`, in name order so layering does not depend on the
/// environment's order. A variable whose name or value is not UTF-8 is refused by name.
pub fn settings_variables(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<Vec<EnvVar>> {
    let mut found = Vec::new();
    for (name, value) in vars {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(PREFIX) {
            continue;
        }
        let Ok(value) = value.into_string() else {
            anyhow::bail!("environment variable {name} is not valid UTF-8");
        };
        let rest = &name[PREFIX.len()..];
        if rest.is_empty() || rest.split("__").any(str::is_empty) {
            anyhow::ensure!(
                is_cli_variable(name),
                "environment variable {name} does not name a setting \
                 (use {PREFIX}KEY, with __ between nested keys)"
            );
            continue;
        }
        let key = rest
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        found.push(EnvVar {
            name: name.to_string(),
            key,
            value,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// The name figment's metadata carries for every environment layer.
pub const METADATA_NAME: &str = "environment variable";

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::from(METADATA_NAME, Source::Custom(self.name.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        // The value is read as TOML would read it (numbers, booleans, `["a", "b"]` lists),
        // falling back to a string: the same rule as figment's own `Env` provider.
        let value: Value = self.value.parse().expect("parsing a value is infallible");
        let dict = figment::util::nest(&self.key, value)
            .into_dict()
            .expect("a non-empty key nests into a dictionary");
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn nested_keys_split_on_double_underscore_and_other_variables_are_skipped() {
        let found = settings_variables(vars(&[
            ("PATH", "/bin"),
            ("AERO_SYNC__PUSH_BATCH_OPS", "7"),
            ("AERO_LISTEN", "127.0.0.1:1"),
        ]))
        .expect("variables");
        let keys: Vec<_> = found
            .iter()
            .map(|v| (v.name.as_str(), v.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("AERO_LISTEN", "listen"),
                ("AERO_SYNC__PUSH_BATCH_OPS", "sync.push_batch_ops")
            ]
        );
    }

    #[test]
    fn a_variable_with_an_empty_key_segment_is_refused_by_name() {
        let err = settings_variables(vars(&[("AERO_SYNC____X", "1")])).expect_err("refused");
        assert!(err.to_string().contains("AERO_SYNC____X"), "{err}");
    }

    #[test]
    fn debug_output_leaves_the_value_out() {
        let found =
            settings_variables(vars(&[("AERO_JWT_SECRET", "hunter2-secret")])).expect("variables");
        let debug = format!("{found:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("AERO_JWT_SECRET"), "{debug}");
    }
}

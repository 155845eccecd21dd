//! Configuration as an operator meets it: the shipped examples load under the strict rules,
//! `print-default-config` prints what the binary loads back, a mistake stops the binary at start
//! with the key and its source, and `log_format = "json"` writes one JSON object per line.

use aero_shared::settings::{Layered, as_toml, default_toml, load_from};
use aero_tests::process::{central_binary, edge_binary};
use serde_json::Value;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

const EDGE_TOML: &str = include_str!("../../deploy/config/edge.toml.example");
const CENTRAL_TOML: &str = include_str!("../../deploy/config/central.toml.example");
const EDGE_ENV: &str = include_str!("../../deploy/config/edge.env.example");
const CENTRAL_ENV: &str = include_str!("../../deploy/config/central.env.example");

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn no_env() -> Vec<(OsString, OsString)> {
    Vec::new()
}

/// The example with every commented-out `key = value` line switched on.
fn uncommented(example: &str) -> String {
    example
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `AERO_*=value` lines of an environment file, commented out or not, with systemd's single
/// quotes removed; an empty value is a placeholder and skipped.
fn example_variables(text: &str) -> Vec<(OsString, OsString)> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.trim_start_matches(['#', ' ']).split_once('=')?;
            let value = value.trim_matches('\'');
            (name.starts_with("AERO_") && !name.contains(' ') && !value.is_empty())
                .then(|| (name.into(), value.into()))
        })
        .collect()
}

fn loads<T: Layered>(name: &str, toml: &str, env: Vec<(OsString, OsString)>) -> T {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), name, toml);
    load_from::<T>(Some(&path), env).unwrap_or_else(|err| panic!("{name}: {err}"))
}

#[test]
fn the_shipped_examples_load_under_the_strict_rules() {
    let edge: aero_edge::config::Settings = loads("edge.toml", EDGE_TOML, no_env());
    assert_eq!(edge.listen.to_string(), "0.0.0.0:8090");
    let _: aero_edge::config::Settings = loads("edge.toml", &uncommented(EDGE_TOML), no_env());
    let central: aero_central::config::Settings = loads("central.toml", CENTRAL_TOML, no_env());
    assert_eq!(central.listen.to_string(), "127.0.0.1:8080");
    let central: aero_central::config::Settings =
        loads("central.toml", &uncommented(CENTRAL_TOML), no_env());
    assert_eq!(
        central.data_dir.as_deref(),
        Some(Path::new("/var/lib/aero-central"))
    );
}

#[test]
fn every_variable_the_env_examples_show_is_a_setting() {
    let edge = example_variables(EDGE_ENV);
    for var in &edge {
        let _: aero_edge::config::Settings = loads("edge.toml", "", vec![var.clone()]);
    }
    let central = example_variables(CENTRAL_ENV);
    assert!(
        central.iter().any(|(name, _)| name == "AERO_DATABASE_URL"),
        "the central example shows the database URL"
    );
    for var in &central {
        let _: aero_central::config::Settings = loads("central.toml", "", vec![var.clone()]);
    }
}

fn run(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary);
    command.args(args).env("RUST_LOG", "info");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AERO_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run the binary")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[test]
fn print_default_config_is_what_each_binary_loads_back_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");

    let printed = stdout(&run(&edge_binary(), &["print-default-config"], &[]));
    assert_eq!(
        printed,
        default_toml::<aero_edge::config::Settings>().expect("toml")
    );
    let path = write(dir.path(), "edge.toml", &printed);
    let loaded: aero_edge::config::Settings = load_from(Some(&path), no_env()).expect("load");
    assert_eq!(loaded, aero_edge::config::Settings::default());

    let printed = stdout(&run(&central_binary(), &["print-default-config"], &[]));
    let path = write(dir.path(), "central.toml", &printed);
    let loaded: aero_central::config::Settings = load_from(Some(&path), no_env()).expect("load");
    assert_eq!(as_toml(&loaded).expect("toml"), printed);
    // The binary itself starts on it.
    let data = dir.path().join("central-data");
    let config = path.to_str().expect("utf-8 path");
    let data = data.to_str().expect("utf-8 path");
    stdout(&run(
        &central_binary(),
        &["--config", config, "--data-dir", data, "migrate"],
        &[],
    ));
}

#[test]
fn a_mistake_stops_the_binary_at_start_naming_the_key_and_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "edge.toml", "listen_typo = 3\n");
    let config = path.to_str().expect("utf-8 path");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");

    let output = run(
        &edge_binary(),
        &["--config", config, "--data-dir", data, "serve"],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("unknown setting `listen_typo` in {config}")),
        "{stderr}"
    );

    let output = run(
        &central_binary(),
        &["--data-dir", data, "migrate"],
        &[("AERO_LIMITS__BODY_BYTES", "big")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "invalid setting `limits.body_bytes` in environment variable AERO_LIMITS__BODY_BYTES"
        ),
        "{stderr}"
    );
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let output = run(
        &central_binary(),
        &["--data-dir", data, "migrate"],
        &[("AERO_LOG_FORMAT", "json")],
    );
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!lines.is_empty(), "migrate logged nothing");
    for line in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(line[field].is_string(), "no {field} in {line}");
        }
        assert!(
            line["fields"]["message"].is_string(),
            "no message in {line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "database is up to date"
                && l["level"] == "INFO"
                && l["target"] == "aero_central"),
        "{stderr}"
    );
}

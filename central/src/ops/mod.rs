//! Quick listings for HQ ops, read straight from the store: `aero-central sites` and
//! `aero-central devices --site SITE_ID`. A table by default, `--json` for machines; never a
//! key hash or any other secret.

pub mod devices;
pub mod sites;

use chrono::{DateTime, SecondsFormat, Utc};

/// A time in a table cell: to the second, or "-" when there is none.
fn cell_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Networks in a table cell, comma-separated, or "-" when there are none.
fn cell_networks(networks: &[ipnet::IpNet]) -> String {
    if networks.is_empty() {
        return "-".into();
    }
    networks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

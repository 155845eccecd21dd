//! Values in and out: times as fixed-width RFC 3339 text (so they compare as they sort), JSON
//! and enum text, and the row mappers more than one module reads records with.

use crate::store::{StoreError, StoreResult, TimeKey};
use aero_shared::wire::{CustomerRecord, DeviceRecord, SiteRecord};
use chrono::{DateTime, Utc};
use rusqlite::Row;
use serde::Serialize;
use uuid::Uuid;

pub(super) fn ts(at: DateTime<Utc>) -> String {
    aero_shared::timestamp::millis(at)
}

pub(super) fn parse_ts(text: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
}

/// A time key as the text the columns hold, so the cursor compares as the rows sort.
pub(super) fn time_key(key: Option<&TimeKey>) -> Option<(String, Uuid)> {
    key.map(|(at, id)| (ts(*at), *id))
}

pub(super) fn parse_opt_ts(text: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_ts).transpose()
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

pub(super) fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    parse_json(&format!("\"{text}\""))
}

pub(super) fn enum_text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) fn json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(e.into()))
}

pub(super) fn site_from_row(row: &Row<'_>) -> rusqlite::Result<SiteRecord> {
    Ok(SiteRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        timezone: row.get(2)?,
        allowed_networks: parse_json(&row.get::<_, String>(3)?)?,
        created_at: parse_ts(&row.get::<_, String>(4)?)?,
    })
}

pub(super) const DEVICE_COLUMNS: &str =
    "id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at";

pub(super) fn device_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: row.get(0)?,
        site_id: row.get(1)?,
        name: row.get(2)?,
        kind: parse_enum(&row.get::<_, String>(3)?)?,
        allowed_networks: parse_json(&row.get::<_, String>(4)?)?,
        key_hash: row.get(5)?,
        created_at: parse_ts(&row.get::<_, String>(6)?)?,
        revoked_at: parse_opt_ts(row.get(7)?)?,
    })
}

pub(super) const CUSTOMER_COLUMNS: &str =
    "id, first_name, last_name, birth_date, phone, email, guardian_id, home_site_id, created_at";

pub(super) fn customer_from_row(row: &Row<'_>) -> rusqlite::Result<CustomerRecord> {
    Ok(CustomerRecord {
        id: row.get(0)?,
        first_name: row.get(1)?,
        last_name: row.get(2)?,
        birth_date: row.get(3)?,
        phone: row.get(4)?,
        email: row.get(5)?,
        guardian_id: row.get(6)?,
        home_site_id: row.get(7)?,
        created_at: parse_ts(&row.get::<_, String>(8)?)?,
    })
}

//! Values in and out: times bound as `DATETIME2(3)`, typed column readers, JSON and enum text,
//! each table's column list, and the row mappers that turn rows into records.

use crate::store::{AuditEntry, RejectedOpRecord, ResolutionRecord, StoreError, StoreResult};
use aero_shared::wire::{
    Account, Change, ChangeEntity, ChangeOp, CustomerRecord, DeadLetterRequest, DeviceRecord,
    GameRecord, Grant, Period, PlugRecord, ProductRecord, ScheduleRecord, SiteRecord, UserRecord,
    WaiverRecord,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike as _, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tiberius::{ColumnData, FromSql, Row};
use uuid::Uuid;

/// The UTC wall time bound for a `DATETIME2(3)` column, truncated (not rounded) to milliseconds.
pub(super) fn ts(at: DateTime<Utc>) -> NaiveDateTime {
    let naive = at.naive_utc();
    naive
        .with_nanosecond(naive.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(naive)
}

pub(super) fn decode_error(idx: usize, err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(anyhow::anyhow!("reading column {idx}: {err}"))
}

pub(super) fn get<'r, T: FromSql<'r>>(row: &'r Row, idx: usize) -> StoreResult<Option<T>> {
    row.try_get::<T, usize>(idx)
        .map_err(|e| decode_error(idx, e))
}

pub(super) fn req<'r, T: FromSql<'r>>(row: &'r Row, idx: usize) -> StoreResult<T> {
    get(row, idx)?.ok_or_else(|| decode_error(idx, "unexpected NULL"))
}

pub(super) fn text(row: &Row, idx: usize) -> StoreResult<String> {
    req::<&str>(row, idx).map(str::to_owned)
}

pub(super) fn opt_text(row: &Row, idx: usize) -> StoreResult<Option<String>> {
    Ok(get::<&str>(row, idx)?.map(str::to_owned))
}

pub(super) fn uuid(row: &Row, idx: usize) -> StoreResult<Uuid> {
    req(row, idx)
}

fn opt_uuid(row: &Row, idx: usize) -> StoreResult<Option<Uuid>> {
    get(row, idx)
}

pub(super) fn time(row: &Row, idx: usize) -> StoreResult<DateTime<Utc>> {
    Ok(req::<NaiveDateTime>(row, idx)?.and_utc())
}

pub(super) fn opt_time(row: &Row, idx: usize) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(get::<NaiveDateTime>(row, idx)?.map(|t| t.and_utc()))
}

/// Any integer column (or an integral NUMERIC, which some engines return for aggregates).
pub(super) fn opt_int(row: &Row, idx: usize) -> StoreResult<Option<i64>> {
    let data = row.get_column_data(idx).map_err(|e| decode_error(idx, e))?;
    Ok(match data {
        ColumnData::U8(v) => v.map(i64::from),
        ColumnData::I16(v) => v.map(i64::from),
        ColumnData::I32(v) => v.map(i64::from),
        ColumnData::I64(v) => *v,
        ColumnData::Numeric(Some(n)) if n.scale() == 0 => {
            Some(i64::try_from(n.value()).map_err(|e| decode_error(idx, e))?)
        }
        ColumnData::Numeric(None) => None,
        other => {
            return Err(decode_error(
                idx,
                format!("expected an integer, got {other:?}"),
            ));
        }
    })
}

pub(super) fn int(row: &Row, idx: usize) -> StoreResult<i64> {
    opt_int(row, idx)?.ok_or_else(|| decode_error(idx, "unexpected NULL"))
}

/// A record stored as JSON text.
pub(super) fn json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> StoreResult<T> {
    serde_json::from_str(&text(row, idx)?).map_err(|e| decode_error(idx, e))
}

/// An enum stored as its serde name (`highest_wins`, `on`, `kiosk`, ...).
fn enum_col<T: DeserializeOwned>(row: &Row, idx: usize) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text(row, idx)?))
        .map_err(|e| decode_error(idx, e))
}

pub(super) fn enum_text<T: Serialize>(value: &T) -> StoreResult<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        Ok(other) => Err(StoreError::Other(anyhow::anyhow!(
            "{other} is not a unit variant"
        ))),
        Err(e) => Err(StoreError::Other(e.into())),
    }
}

pub(super) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(e.into()))
}

// Column lists, as macros so that `concat!` can build whole statements at compile time.
macro_rules! site_columns {
    () => {
        "id, name, timezone, allowed_networks, created_at"
    };
}
macro_rules! device_columns {
    () => {
        "id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at"
    };
}
macro_rules! user_columns {
    () => {
        "id, username, password_hash, role, created_at, disabled_at, token_version"
    };
}
macro_rules! product_columns {
    () => {
        "id, sku, name, kind, price_cents, duration_minutes, active, created_at, grant_account, grant_amount, grant_period"
    };
}
macro_rules! plug_columns {
    () => {
        "id, site_id, name, host, port, child_id, created_at"
    };
}
macro_rules! schedule_columns {
    () => {
        "id, plug_id, site_id, cron, state, created_at"
    };
}
macro_rules! customer_columns {
    () => {
        "id, first_name, last_name, birth_date, phone, email, guardian_id, home_site_id, created_at"
    };
}
macro_rules! waiver_columns {
    () => {
        "id, customer_id, site_id, signer_name, signed_at, expires_at, text_version"
    };
}
macro_rules! audit_columns {
    () => {
        "id, [at], actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id"
    };
}

pub(super) use {
    audit_columns, customer_columns, device_columns, plug_columns, product_columns,
    schedule_columns, site_columns, user_columns, waiver_columns,
};

// Ties are broken by `CONVERT(CHAR(36), id)`: SQL Server sorts UNIQUEIDENTIFIER by its last
// bytes first, while the text form sorts like the SQLite store's ids (UUIDv7: creation order).

pub(super) fn site_from(row: &Row) -> StoreResult<SiteRecord> {
    Ok(SiteRecord {
        id: uuid(row, 0)?,
        name: text(row, 1)?,
        timezone: text(row, 2)?,
        allowed_networks: json_col(row, 3)?,
        created_at: time(row, 4)?,
    })
}

pub(super) fn device_from(row: &Row) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        id: uuid(row, 0)?,
        site_id: uuid(row, 1)?,
        name: text(row, 2)?,
        kind: enum_col(row, 3)?,
        allowed_networks: json_col(row, 4)?,
        key_hash: text(row, 5)?,
        created_at: time(row, 6)?,
        revoked_at: opt_time(row, 7)?,
    })
}

/// A user row; `site_ids` are filled in by the caller from `user_sites`.
pub(super) fn user_from(row: &Row) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        id: uuid(row, 0)?,
        username: text(row, 1)?,
        password_hash: text(row, 2)?,
        role: enum_col(row, 3)?,
        site_ids: Vec::new(),
        created_at: time(row, 4)?,
        disabled_at: opt_time(row, 5)?,
        token_version: int(row, 6)?,
    })
}

pub(super) fn product_from(row: &Row) -> StoreResult<ProductRecord> {
    product_from_offset(row, 0)
}

/// A product whose `product_columns!()` start at column `at` of the row.
pub(super) fn product_from_offset(row: &Row, at: usize) -> StoreResult<ProductRecord> {
    let duration = opt_int(row, at + 5)?
        .map(|m| i32::try_from(m).map_err(|e| decode_error(at + 5, e)))
        .transpose()?;
    Ok(ProductRecord {
        id: uuid(row, at)?,
        sku: text(row, at + 1)?,
        name: text(row, at + 2)?,
        kind: enum_col(row, at + 3)?,
        price_cents: int(row, at + 4)?,
        duration_minutes: duration,
        grant: match (opt_text(row, at + 8)?, opt_int(row, at + 9)?) {
            (Some(account), Some(amount)) => Some(Grant {
                account: Account::parse(&account)
                    .ok_or_else(|| decode_error(at + 8, format!("unknown account {account}")))?,
                amount,
                per: opt_text(row, at + 10)?
                    .map(|per| {
                        Period::parse(&per)
                            .ok_or_else(|| decode_error(at + 10, format!("unknown period {per}")))
                    })
                    .transpose()?,
            }),
            _ => None,
        },
        active: req(row, at + 6)?,
        created_at: time(row, at + 7)?,
    })
}

pub(super) fn game_from(row: &Row) -> StoreResult<GameRecord> {
    Ok(GameRecord {
        id: uuid(row, 0)?,
        name: text(row, 1)?,
        score_order: enum_col(row, 2)?,
        created_at: time(row, 3)?,
    })
}

pub(super) fn plug_from(row: &Row) -> StoreResult<PlugRecord> {
    Ok(PlugRecord {
        id: uuid(row, 0)?,
        site_id: uuid(row, 1)?,
        name: text(row, 2)?,
        host: text(row, 3)?,
        port: u16::try_from(int(row, 4)?).map_err(|e| decode_error(4, e))?,
        child_id: opt_text(row, 5)?,
        created_at: time(row, 6)?,
    })
}

pub(super) fn schedule_from(row: &Row) -> StoreResult<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: uuid(row, 0)?,
        plug_id: uuid(row, 1)?,
        site_id: uuid(row, 2)?,
        cron: text(row, 3)?,
        state: enum_col(row, 4)?,
        created_at: time(row, 5)?,
    })
}

pub(super) fn customer_from(row: &Row) -> StoreResult<CustomerRecord> {
    Ok(CustomerRecord {
        id: uuid(row, 0)?,
        first_name: text(row, 1)?,
        last_name: text(row, 2)?,
        birth_date: req::<NaiveDate>(row, 3)?,
        phone: opt_text(row, 4)?,
        email: opt_text(row, 5)?,
        guardian_id: opt_uuid(row, 6)?,
        home_site_id: uuid(row, 7)?,
        created_at: time(row, 8)?,
    })
}

pub(super) fn waiver_from(row: &Row) -> StoreResult<WaiverRecord> {
    Ok(WaiverRecord {
        id: uuid(row, 0)?,
        customer_id: uuid(row, 1)?,
        site_id: uuid(row, 2)?,
        signer_name: text(row, 3)?,
        signed_at: time(row, 4)?,
        expires_at: time(row, 5)?,
        text_version: opt_int(row, 6)?,
    })
}

pub(super) fn audit_from(row: &Row) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: uuid(row, 0)?,
        at: time(row, 1)?,
        actor_kind: text(row, 2)?,
        actor_id: opt_uuid(row, 3)?,
        actor_name: text(row, 4)?,
        ip: opt_text(row, 5)?,
        request_id: opt_text(row, 6)?,
        action: text(row, 7)?,
        target: opt_text(row, 8)?,
        site_id: opt_uuid(row, 9)?,
    })
}

pub(super) fn change_from(row: &Row) -> StoreResult<Change> {
    let entity = text(row, 1)?;
    let op = text(row, 3)?;
    Ok(Change {
        seq: int(row, 0)?,
        entity: ChangeEntity::parse(&entity),
        entity_id: uuid(row, 2)?,
        op: ChangeOp::parse(&op).ok_or_else(|| decode_error(3, format!("unknown op {op}")))?,
        site_id: opt_uuid(row, 4)?,
        data: json_col(row, 5)?,
        changed_at: time(row, 6)?,
    })
}

/// A refused op with the venue's resolution and HQ's request, if any: `seq, op_id, rejected,
/// applied_at`, then the resolution's `resolution, retried_as, resolved_by, resolved_at,
/// resolution_op_id, recorded_at` (all NULL while the op is open), then the request's `action,
/// requested_by, requested_at` (all NULL if HQ asked nothing).
pub(super) fn rejected_op_from(row: &Row, site_id: Uuid) -> StoreResult<RejectedOpRecord> {
    let op_id = uuid(row, 1)?;
    let resolution = match opt_text(row, 4)? {
        None => None,
        Some(_) => Some(ResolutionRecord {
            how: enum_col(row, 4)?,
            retried_as: opt_uuid(row, 5)?,
            by: text(row, 6)?,
            at: time(row, 7)?,
            resolution_op_id: uuid(row, 8)?,
            recorded_at: time(row, 9)?,
        }),
    };
    let request = match opt_text(row, 10)? {
        None => None,
        Some(_) => Some(DeadLetterRequest {
            op_id,
            site_id,
            action: enum_col(row, 10)?,
            requested_by: text(row, 11)?,
            requested_at: time(row, 12)?,
        }),
    };
    Ok(RejectedOpRecord {
        seq: int(row, 0)?,
        op_id,
        reason: text(row, 2)?,
        rejected_at: time(row, 3)?,
        resolution,
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_truncated_to_milliseconds() {
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123999999Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            ts(at).and_utc().to_rfc3339(),
            "2024-05-06T07:08:09.123+00:00"
        );
    }
}

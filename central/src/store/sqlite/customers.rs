//! Chain-wide customers as HQ reads them: by id or phone, their count and their waivers (the
//! rows themselves arrive through `sync::push`; the HQ lookup with balances is
//! `reports::search_customers`).

use super::SqliteStore;
use super::codec::{CUSTOMER_COLUMNS, customer_from_row, parse_ts};
use crate::store::StoreResult;
use aero_shared::wire::{CustomerRecord, WaiverRecord};
use rusqlite::OptionalExtension;
use uuid::Uuid;

pub(super) async fn get(store: &SqliteStore, id: Uuid) -> StoreResult<Option<CustomerRecord>> {
    store
        .read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?1"),
                [id],
                customer_from_row,
            )
            .optional()?)
        })
        .await
}

pub(super) async fn by_phone(store: &SqliteStore, phone: &str) -> StoreResult<Vec<CustomerRecord>> {
    let phone = phone.to_string();
    store.read(move |c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE phone = ?1 ORDER BY last_name, first_name, id LIMIT 50"
        ))?;
        Ok(stmt.query_map([phone], customer_from_row)?.collect::<rusqlite::Result<_>>()?)
    })
    .await
}

pub(super) async fn count(store: &SqliteStore) -> StoreResult<i64> {
    store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))?))
        .await
}

pub(super) async fn waivers_for(
    store: &SqliteStore,
    customer_id: Uuid,
) -> StoreResult<Vec<WaiverRecord>> {
    store.read(move |c| {
        let mut stmt = c.prepare_cached(
            "SELECT id, customer_id, site_id, signer_name, signed_at, expires_at, text_version FROM waivers WHERE customer_id = ?1 ORDER BY signed_at",
        )?;
        Ok(stmt
            .query_map([customer_id], |r| {
                Ok(WaiverRecord {
                    id: r.get(0)?,
                    customer_id: r.get(1)?,
                    site_id: r.get(2)?,
                    signer_name: r.get(3)?,
                    signed_at: parse_ts(&r.get::<_, String>(4)?)?,
                    expires_at: parse_ts(&r.get::<_, String>(5)?)?,
                    text_version: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    })
    .await
}

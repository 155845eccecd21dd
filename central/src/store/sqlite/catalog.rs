//! The catalog: products and games, chain-wide, each creation (and a product's retirement)
//! audited and replicated to every site.

use super::SqliteStore;
use super::changelog::{append_change, audit};
use super::codec::{enum_text, parse_enum, parse_ts, ts};
use super::conn::exec;
use super::pages::keyset_page;
use crate::store::{Actor, AuditEvent, NameKey, StoreError, StoreResult};
use aero_shared::wire::{Entity, GameRecord, Grant, ProductRecord};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};
use uuid::Uuid;

const PRODUCT_COLUMNS: &str = "id, sku, name, kind, price_cents, duration_minutes, active, created_at, grant_account, grant_amount, grant_period";

fn product_from_row(row: &Row<'_>) -> rusqlite::Result<ProductRecord> {
    Ok(ProductRecord {
        id: row.get(0)?,
        sku: row.get(1)?,
        name: row.get(2)?,
        kind: parse_enum(&row.get::<_, String>(3)?)?,
        price_cents: row.get(4)?,
        duration_minutes: row.get(5)?,
        grant: match (
            row.get::<_, Option<String>>(8)?,
            row.get::<_, Option<i64>>(9)?,
        ) {
            (Some(account), Some(amount)) => Some(Grant {
                account: parse_enum(&account)?,
                amount,
                per: row
                    .get::<_, Option<String>>(10)?
                    .map(|p| parse_enum(&p))
                    .transpose()?,
            }),
            _ => None,
        },
        active: row.get(6)?,
        created_at: parse_ts(&row.get::<_, String>(7)?)?,
    })
}

pub(super) async fn create_product(
    store: &SqliteStore,
    actor: &Actor,
    product: &ProductRecord,
) -> StoreResult<()> {
    let (actor, p) = (actor.clone(), product.clone());
    store.write(move |tx| {
        exec(
            tx,
            "INSERT INTO products (id, sku, name, kind, price_cents, duration_minutes, active, created_at, grant_account, grant_amount, grant_period)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![p.id, p.sku, p.name, p.kind.as_str(), p.price_cents, p.duration_minutes, p.active, ts(p.created_at),
                p.grant.map(|g| g.account.as_str()), p.grant.map(|g| g.amount), p.grant.and_then(|g| g.per).map(|per| per.as_str())],
        )?;
        audit(tx, &actor, AuditEvent { action: "product.create", target: Some(p.id.to_string()), site_id: None }, p.created_at)?;
        append_change(tx, Entity::Product, p.id, None, &p, p.created_at)
    })
    .await
}

pub(super) async fn list_products(
    store: &SqliteStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<ProductRecord>> {
    let after = after.cloned();
    store
        .read(move |c| {
            keyset_page(
                c,
                &format!("SELECT {PRODUCT_COLUMNS} FROM products"),
                None,
                &["sku", "id"],
                after,
                limit,
                product_from_row,
            )
        })
        .await
}

pub(super) async fn retire_product(
    store: &SqliteStore,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<ProductRecord> {
    let actor = actor.clone();
    store
        .write(move |tx| {
            let current = tx
                .query_row(
                    &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?1"),
                    [id],
                    product_from_row,
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if !current.active {
                return Ok(current);
            }
            exec(tx, "UPDATE products SET active = 0 WHERE id = ?1", [id])?;
            let retired = ProductRecord {
                active: false,
                ..current
            };
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "product.retire",
                    target: Some(id.to_string()),
                    site_id: None,
                },
                at,
            )?;
            append_change(tx, Entity::Product, id, None, &retired, at)?;
            Ok(retired)
        })
        .await
}

pub(super) async fn create_game(
    store: &SqliteStore,
    actor: &Actor,
    game: &GameRecord,
) -> StoreResult<()> {
    let (actor, g) = (actor.clone(), game.clone());
    store
        .write(move |tx| {
            exec(
                tx,
                "INSERT INTO games (id, name, score_order, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![g.id, g.name, enum_text(&g.score_order), ts(g.created_at)],
            )?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "game.create",
                    target: Some(g.id.to_string()),
                    site_id: None,
                },
                g.created_at,
            )?;
            append_change(tx, Entity::Game, g.id, None, &g, g.created_at)
        })
        .await
}

pub(super) async fn list_games(
    store: &SqliteStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<GameRecord>> {
    let after = after.cloned();
    store
        .read(move |c| {
            keyset_page(
                c,
                "SELECT id, name, score_order, created_at FROM games",
                None,
                &["name", "id"],
                after,
                limit,
                |r| {
                    Ok(GameRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        score_order: parse_enum(&r.get::<_, String>(2)?)?,
                        created_at: parse_ts(&r.get::<_, String>(3)?)?,
                    })
                },
            )
        })
        .await
}

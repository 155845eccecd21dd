//! The catalog: products and games, chain-wide, each creation (and a product's retirement)
//! audited and replicated to every site.

use super::MssqlStore;
use super::changelog::{NewChange, append_changes, audit};
use super::codec::{
    enum_text, game_from, int, product_columns, product_from, product_from_offset, ts,
};
use super::pages::keyset_sql;
use crate::store::{Actor, AuditEvent, NameKey, StoreError, StoreResult};
use aero_shared::wire::{Entity, GameRecord, ProductRecord};
use chrono::{DateTime, Utc};
use tiberius::Query;
use uuid::Uuid;

pub(super) async fn create_product(
    store: &MssqlStore,
    actor: &Actor,
    product: &ProductRecord,
) -> StoreResult<()> {
    let change = NewChange::upsert(
        Entity::Product,
        product.id,
        None,
        product,
        product.created_at,
    )?;
    let (p, change) = (product, &change);
    store
        .transaction(|conn| {
            Box::pin(async move {
                let mut q = Query::new(concat!(
                    "INSERT INTO products (",
                    product_columns!(),
                    ") ",
                    "VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11)"
                ));
                q.bind(p.id);
                q.bind(p.sku.as_str());
                q.bind(p.name.as_str());
                q.bind(p.kind.as_str());
                q.bind(p.price_cents);
                q.bind(p.duration_minutes);
                q.bind(p.active);
                q.bind(ts(p.created_at));
                q.bind(p.grant.map(|g| g.account.as_str()));
                q.bind(p.grant.map(|g| g.amount));
                q.bind(p.grant.and_then(|g| g.per).map(|per| per.as_str()));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "product.create",
                    target: Some(p.id.to_string()),
                    site_id: None,
                };
                audit(conn, actor, event, p.created_at).await?;
                append_changes(conn, std::slice::from_ref(change)).await
            })
        })
        .await
}

pub(super) async fn list_products(
    store: &MssqlStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<ProductRecord>> {
    let sql = keyset_sql(
        product_columns!(),
        "products",
        None,
        0,
        &["sku", "id"],
        false,
        after.is_some(),
    );
    let sql = sql.as_str();
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                if let Some((sku, id)) = after {
                    q.bind(sku.as_str());
                    q.bind(*id);
                }
                conn.rows(q).await?.iter().map(product_from).collect()
            })
        })
        .await
}

pub(super) async fn retire_product(
    store: &MssqlStore,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<ProductRecord> {
    store
        .transaction(|conn| {
            Box::pin(async move {
                // The stored row after the update, and whether this call retired it.
                let mut q = Query::new(concat!(
                    "DECLARE @retired INT; ",
                    "UPDATE products SET active = 0 WHERE id = @P1 AND active = 1; ",
                    "SET @retired = @@ROWCOUNT; ",
                    "SELECT @retired, ",
                    product_columns!(),
                    " FROM products WHERE id = @P1;"
                ));
                q.bind(id);
                let row = conn.row(q).await?.ok_or(StoreError::NotFound)?;
                let retired = int(&row, 0)? == 1;
                let product = product_from_offset(&row, 1)?;
                if retired {
                    let event = AuditEvent {
                        action: "product.retire",
                        target: Some(id.to_string()),
                        site_id: None,
                    };
                    audit(conn, actor, event, at).await?;
                    let change = NewChange::upsert(Entity::Product, id, None, &product, at)?;
                    append_changes(conn, std::slice::from_ref(&change)).await?;
                }
                Ok(product)
            })
        })
        .await
}

pub(super) async fn create_game(
    store: &MssqlStore,
    actor: &Actor,
    game: &GameRecord,
) -> StoreResult<()> {
    let score_order = enum_text(&game.score_order)?;
    let change = NewChange::upsert(Entity::Game, game.id, None, game, game.created_at)?;
    let (g, score_order, change) = (game, score_order.as_str(), &change);
    store
        .transaction(|conn| {
            Box::pin(async move {
                let mut q = Query::new(
                    "INSERT INTO games (id, name, score_order, created_at) VALUES (@P1, @P2, @P3, @P4)",
                );
                q.bind(g.id);
                q.bind(g.name.as_str());
                q.bind(score_order);
                q.bind(ts(g.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "game.create",
                    target: Some(g.id.to_string()),
                    site_id: None,
                };
                audit(conn, actor, event, g.created_at).await?;
                append_changes(conn, std::slice::from_ref(change)).await
            })
        })
        .await
}

pub(super) async fn list_games(
    store: &MssqlStore,
    after: Option<&NameKey>,
    limit: u32,
) -> StoreResult<Vec<GameRecord>> {
    let sql = keyset_sql(
        "id, name, score_order, created_at",
        "games",
        None,
        0,
        &["name", "id"],
        false,
        after.is_some(),
    );
    let sql = sql.as_str();
    store
        .with_connection(|conn| {
            Box::pin(async move {
                let mut q = Query::new(sql);
                q.bind(i64::from(limit));
                if let Some((name, id)) = after {
                    q.bind(name.as_str());
                    q.bind(*id);
                }
                conn.rows(q).await?.iter().map(game_from).collect()
            })
        })
        .await
}

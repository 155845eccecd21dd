//! Sales at the venue. An order is priced from the replica's catalog (a client never sends a
//! price), paid exactly by its tenders, and committed in one transaction with everything it
//! causes: stored value spent and balances granted become ledger entries, and every record gets
//! its own outbox op. Receipts and a day's orders are read back from the replica.

use super::reports::resolve_day;
use super::{AppState, refuse, write_error};
use crate::audit::actor;
use crate::live::LiveEvent;
use crate::outbox::write_and_queue;
use crate::replica::customer_exists;
use crate::replica::venue::{self, balance, order as stored_order, refunds_of};
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::json::{JsonText, ValidJson};
use aero_shared::openapi::guarded;
use aero_shared::page::{PageQuery, TimeKey};
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{
    Account, LedgerEntry, LedgerReason, MAX_AMOUNT_CENTS, MAX_LINE_QUANTITY, MAX_ORDER_LINES,
    OrderLine, OrderRecord, RefundRecord, Tender, TenderKind,
};
use aero_shared::{ApiError, FieldError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadOrders, routes!(list)))
        .routes(guarded(Permission::CreateOrders, routes!(create)))
        .routes(guarded(Permission::CreateOrders, routes!(receipt)))
}

/// Longest card terminal reference kept.
const MAX_REFERENCE: usize = 100;

/// `POST /v1/orders`. Unknown fields (a client's price or total) are refused, not ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    pub lines: Vec<NewLine>,
    pub tenders: Vec<NewTender>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    pub product_id: Uuid,
    pub quantity: i32,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTender {
    pub kind: TenderKind,
    pub amount_cents: i64,
    /// Cash handed over, when change is due.
    #[serde(default)]
    pub received_cents: Option<i64>,
    /// The card terminal's reference.
    #[serde(default)]
    pub reference: Option<String>,
}

impl Validate for NewOrder {
    fn validate(&self, v: &mut Validator) {
        v.check(
            (1..=MAX_ORDER_LINES).contains(&self.lines.len()),
            "lines",
            "an order has 1 to 50 lines",
        );
        // Field names are formatted only for an error.
        for (i, line) in self.lines.iter().enumerate() {
            if !(1..=MAX_LINE_QUANTITY).contains(&line.quantity) {
                v.error(&format!("lines[{i}].quantity"), "must be between 1 and 100");
            }
        }
        v.check(
            (1..=MAX_ORDER_LINES).contains(&self.tenders.len()),
            "tenders",
            "an order has 1 to 50 tenders",
        );
        for (i, tender) in self.tenders.iter().enumerate() {
            let field = |name: &str| format!("tenders[{i}].{name}");
            if !(1..=MAX_AMOUNT_CENTS).contains(&tender.amount_cents) {
                v.error(&field("amount_cents"), "must be between 1 and 100000000");
            }
            match (tender.kind, tender.received_cents) {
                (TenderKind::Cash, Some(received))
                    if !(tender.amount_cents..=MAX_AMOUNT_CENTS).contains(&received) =>
                {
                    v.error(
                        &field("received_cents"),
                        "must be at least amount_cents (and at most 100000000)",
                    );
                }
                (TenderKind::Cash, Some(_)) => {}
                (_, Some(_)) => v.error(&field("received_cents"), "only cash is received"),
                (_, None) => {}
            }
            match (tender.kind, &tender.reference) {
                (TenderKind::Card, Some(reference)) => {
                    v.text(&field("reference"), reference, MAX_REFERENCE);
                }
                (TenderKind::Card, None) => v.error(
                    &field("reference"),
                    "a card tender needs the card terminal's reference",
                ),
                (_, Some(_)) => v.error(&field("reference"), "only card tenders carry a reference"),
                (_, None) => {}
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = NewOrder, responses((status = 201, description = "Created", body = OrderRecord)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ValidJson(body): ValidJson<NewOrder>,
) -> Result<(StatusCode, JsonText<OrderRecord>), ApiError> {
    // Milliseconds, as central stores them, so the row central echoes back is identical.
    let now = state.clock.now().trunc_subsecs(3);
    let (site_id, sold_by) = (state.site_id, actor(&auth));
    // Priced, checked against the balances and written by the single writer: two terminals
    // spending one balance at once are checked one after the other.
    let (order, answer) = state
        .writer
        .mutate(move |c| {
            let (order, entries) = build(c, site_id, &body, sold_by.clone(), now)?;
            let answer = write_and_queue(c, &order, now)?;
            for entry in &entries {
                write_and_queue(c, entry, now)?;
            }
            Ok((order, answer))
        })
        .await
        .map_err(write_error)?;
    state.live.publish(
        LiveEvent::Order {
            order_id: order.id,
            customer_id: order.customer_id,
            total_cents: order.total_cents,
        },
        now,
    );
    Ok((StatusCode::CREATED, answer))
}

/// Prices the order from the catalog and decides its ledger entries; every refusal happens
/// here, before anything is written.
fn build(
    c: &Connection,
    site_id: Uuid,
    body: &NewOrder,
    sold_by: String,
    now: DateTime<Utc>,
) -> anyhow::Result<(OrderRecord, Vec<LedgerEntry>)> {
    let id = Uuid::now_v7();
    if let Some(customer_id) = body.customer_id
        && !customer_exists(c, customer_id)?
    {
        return refuse(ApiError::field("customer_id", "no such customer"));
    }
    let mut errors = Vec::new();
    let mut lines = Vec::with_capacity(body.lines.len());
    let mut entries = Vec::new();
    for (i, line) in body.lines.iter().enumerate() {
        let field = || format!("lines[{i}].product_id");
        let Some(product) = venue::product(c, line.product_id)? else {
            errors.push(FieldError::new(field(), "no such product"));
            continue;
        };
        if !product.active {
            errors.push(FieldError::new(
                field(),
                format!("{} ({}) is no longer sold", product.name, product.sku),
            ));
            continue;
        }
        if let Some(grant) = product.grant {
            let Some(customer_id) = body.customer_id else {
                errors.push(FieldError::new(
                    field(),
                    format!(
                        "{} adds to a customer's {} balance: name the customer",
                        product.sku,
                        grant.account.as_str()
                    ),
                ));
                continue;
            };
            let expires_at = match grant.per {
                Some(period) => {
                    let Some(tz) = venue::site_timezone(c, site_id)? else {
                        return refuse(ApiError::Unavailable(
                            "this venue's settings have not arrived from HQ yet, so its \
                             calendar is unknown: try again once the edge has synced"
                                .into(),
                        ));
                    };
                    Some(period.lapses_at(tz, now))
                }
                None => None,
            };
            let entry = LedgerEntry {
                id: Uuid::now_v7(),
                customer_id,
                account: grant.account,
                delta: grant.amount.saturating_mul(i64::from(line.quantity)),
                reason: LedgerReason::Purchase,
                ref_id: Some(id),
                site_id,
                created_at: now,
                expires_at,
            };
            if let Err(reason) = entry.check() {
                errors.push(FieldError::new(format!("lines[{i}].quantity"), reason));
                continue;
            }
            entries.push(entry);
        }
        lines.push(OrderLine {
            product_id: product.id,
            sku: product.sku,
            name: product.name,
            kind: product.kind,
            quantity: line.quantity,
            unit_price_cents: product.price_cents,
            total_cents: product.price_cents.saturating_mul(i64::from(line.quantity)),
        });
    }
    if !errors.is_empty() {
        return refuse(ApiError::Validation(errors));
    }
    let total_cents: i64 = lines.iter().map(|l| l.total_cents).sum();
    let paid: i64 = body.tenders.iter().map(|t| t.amount_cents).sum();
    if paid != total_cents {
        return refuse(ApiError::field(
            "tenders",
            format!(
                "the tenders pay {paid} cents of a {total_cents} cent total: they must pay it exactly"
            ),
        ));
    }
    let stored_value: i64 = body
        .tenders
        .iter()
        .filter(|t| t.kind == TenderKind::StoredValue)
        .map(|t| t.amount_cents)
        .sum();
    if stored_value > 0 {
        let Some(customer_id) = body.customer_id else {
            return refuse(ApiError::field(
                "tenders",
                "stored value is spent from a customer's balance: name the customer",
            ));
        };
        let held = balance(c, customer_id, Account::StoredValue, now)?;
        if held < stored_value {
            return refuse(ApiError::field(
                "tenders",
                format!(
                    "the customer holds {held} cents of stored value, less than the {stored_value} cents tendered"
                ),
            ));
        }
        entries.push(LedgerEntry {
            id: Uuid::now_v7(),
            customer_id,
            account: Account::StoredValue,
            delta: -stored_value,
            reason: LedgerReason::Tender,
            ref_id: Some(id),
            site_id,
            created_at: now,
            expires_at: None,
        });
    }
    let tenders: Vec<Tender> = body
        .tenders
        .iter()
        .map(|t| Tender {
            kind: t.kind,
            amount_cents: t.amount_cents,
            received_cents: t.received_cents,
            change_cents: t.received_cents.map_or(0, |r| r - t.amount_cents),
            reference: t.reference.as_deref().map(|r| r.trim().to_string()),
        })
        .collect();
    let order = OrderRecord {
        id,
        site_id,
        customer_id: body.customer_id,
        change_cents: tenders.iter().map(|t| t.change_cents).sum(),
        lines,
        tenders,
        total_cents,
        sold_by,
        created_at: now,
    };
    // What central will check; refused here rather than dead-lettered there.
    if let Err(reason) = order.check() {
        return refuse(ApiError::Unprocessable(reason));
    }
    Ok((order, entries))
}

/// A receipt: the order and what was refunded of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Receipt {
    #[serde(flatten)]
    order: OrderRecord,
    refunds: Vec<RefundRecord>,
    /// Paid less refunded.
    net_cents: i64,
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = Uuid, Path)), responses((status = 200, description = "OK", body = Receipt)))]
async fn receipt(
    State(state): State<AppState>,
    _auth: Auth,
    Path(id): Path<Uuid>,
) -> Result<Json<Receipt>, ApiError> {
    let site_id = state.site_id;
    let found = state
        .replica
        .read(move |c| {
            let Some(order) = stored_order(c, id)?.filter(|o| o.site_id == site_id) else {
                return Ok(None);
            };
            let refunds = refunds_of(c, id)?;
            Ok(Some((order, refunds)))
        })
        .await?;
    let (order, refunds) = found.ok_or(ApiError::NotFound("no such order"))?;
    let net_cents = order.total_cents - refunds.iter().map(|r| r.total_cents).sum::<i64>();
    Ok(Json(Receipt {
        order,
        refunds,
        net_cents,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DateQuery {
    /// `YYYY-MM-DD` in the site's timezone; today when absent.
    pub date: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DayOrders {
    site_id: Uuid,
    date: NaiveDate,
    orders: Vec<OrderRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders", summary = "A local day's orders (?date=, today when absent), oldest first", params(DateQuery, PageQuery), responses((status = 200, description = "OK", body = DayOrders)))]
async fn list(
    State(state): State<AppState>,
    _auth: Auth,
    Query(query): Query<DateQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<DayOrders>, ApiError> {
    let page = paging.page::<TimeKey>()?;
    let day = resolve_day(&state, query.date.as_deref()).await?;
    let site_id = state.site_id;
    let (after, fetch) = (page.after, page.fetch());
    let orders = state
        .replica
        .read(move |c| venue::orders_page(c, site_id, day.from, day.to, after.as_ref(), fetch))
        .await?;
    let paged = page.finish(orders, |o| (o.created_at, o.id));
    Ok(Json(DayOrders {
        site_id,
        date: day.date,
        orders: paged.rows,
        next_after: paged.next_after,
    }))
}

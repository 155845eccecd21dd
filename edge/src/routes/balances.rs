//! A customer's balances (stored value, arcade credits, membership visits): read as the sum of
//! their ledger, spent at game stations and the counter, corrected by managers. Every change is
//! a new signed ledger entry with its own outbox op; nothing is ever overwritten.

use super::{AppState, refuse, write_error};
use crate::audit::record;
use crate::outbox::write_and_queue;
use crate::replica::customer_exists;
use crate::replica::venue::{Balances, balance, balances};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::json::ValidJson;
use aero_shared::openapi::guarded;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{Account, LedgerEntry, LedgerReason, MAX_AMOUNT_CENTS};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::ReadBalances, routes!(read)))
        .routes(guarded(Permission::SpendBalances, routes!(spend)))
        .routes(guarded(Permission::AdjustBalances, routes!(adjust)))
}

#[utoipa::path(get, path = "/v1/customers/{id}/balances", tag = "balances", params(("id" = Uuid, Path)), responses((status = 200, description = "OK", body = Balances)))]
async fn read(
    State(state): State<AppState>,
    _auth: Auth,
    Path(customer_id): Path<Uuid>,
) -> Result<Json<Balances>, ApiError> {
    let now = state.clock.now();
    let found = state
        .replica
        .read(move |c| {
            if !customer_exists(c, customer_id)? {
                return Ok(None);
            }
            Ok(Some(balances(c, customer_id, now)?))
        })
        .await?;
    Ok(Json(found.ok_or(ApiError::NotFound("no such customer"))?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Spend {
    pub account: Account,
    pub amount: i64,
    /// What it was spent on (a game's name), for the venue's log.
    #[serde(default)]
    pub reason: Option<String>,
}

impl Validate for Spend {
    fn validate(&self, v: &mut Validator) {
        v.check(
            (1..=MAX_AMOUNT_CENTS).contains(&self.amount),
            "amount",
            "must be between 1 and 100000000",
        );
        if let Some(reason) = &self.reason {
            v.max_len("reason", reason, 200);
        }
    }
}

/// A balance change's answer: the entry written and the balances after it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Changed {
    entry: LedgerEntry,
    balances: Balances,
}

#[utoipa::path(post, path = "/v1/customers/{id}/balances/spend", tag = "balances", params(("id" = Uuid, Path)), request_body = Spend, responses((status = 201, description = "Created", body = Changed)))]
async fn spend(
    State(state): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<Uuid>,
    ValidJson(body): ValidJson<Spend>,
) -> Result<(StatusCode, Json<Changed>), ApiError> {
    let now = state.clock.now().trunc_subsecs(3);
    let site_id = state.site_id;
    // The ledger carries no text: what it was spent on goes to the venue's log.
    let spent_on = body.reason.clone().unwrap_or_default();
    let changed = state
        .writer
        .mutate(move |c| {
            if !customer_exists(c, customer_id)? {
                return refuse(ApiError::NotFound("no such customer"));
            }
            // What this venue knows of the balance: another venue's offline spend may still be
            // on its way, which is why the ledger, not this check, is the truth.
            let held = balance(c, customer_id, body.account, now)?;
            if held < body.amount {
                return refuse(ApiError::field(
                    "amount",
                    format!(
                        "the customer's {} balance is {held}, less than {}",
                        body.account.as_str(),
                        body.amount
                    ),
                ));
            }
            let entry = entry(
                customer_id,
                body.account,
                -body.amount,
                LedgerReason::Spend,
                site_id,
                now,
            );
            write_and_queue(c, &entry, now)?;
            Ok(Changed {
                balances: balances(c, customer_id, now)?,
                entry,
            })
        })
        .await
        .map_err(write_error)?;
    tracing::info!(
        customer = %customer_id,
        account = changed.entry.account.as_str(),
        amount = -changed.entry.delta,
        on = %spent_on,
        by = %auth.principal.display_name(),
        "balance spent"
    );
    Ok((StatusCode::CREATED, Json(changed)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    pub account: Account,
    /// Signed: positive credits, negative debits.
    pub delta: i64,
    pub reason: String,
}

impl Validate for Adjust {
    fn validate(&self, v: &mut Validator) {
        v.check(
            self.delta != 0 && self.delta.unsigned_abs() <= MAX_AMOUNT_CENTS.unsigned_abs(),
            "delta",
            "must be non-zero and at most 100000000 either way",
        );
        v.text("reason", &self.reason, 200);
    }
}

#[utoipa::path(post, path = "/v1/customers/{id}/balances/adjust", tag = "balances", params(("id" = Uuid, Path)), request_body = Adjust, responses((status = 201, description = "Created", body = Changed)))]
async fn adjust(
    State(state): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<Uuid>,
    ValidJson(body): ValidJson<Adjust>,
) -> Result<(StatusCode, Json<Changed>), ApiError> {
    let now = state.clock.now().trunc_subsecs(3);
    let site_id = state.site_id;
    let changed = state
        .writer
        .mutate(move |c| {
            if !customer_exists(c, customer_id)? {
                return refuse(ApiError::NotFound("no such customer"));
            }
            // A correction may lift a balance that went negative, never push one below zero.
            let held = balance(c, customer_id, body.account, now)?;
            if body.delta < 0 && held + body.delta < 0 {
                return refuse(ApiError::field(
                    "delta",
                    format!(
                        "the customer's {} balance is {held}: a correction cannot take it below zero",
                        body.account.as_str()
                    ),
                ));
            }
            let entry = entry(
                customer_id,
                body.account,
                body.delta,
                LedgerReason::Adjustment,
                site_id,
                now,
            );
            write_and_queue(c, &entry, now)?;
            record(
                c,
                &auth,
                "balance.adjust",
                &format!(
                    "customer {customer_id} {} {:+} (entry {}): {}",
                    body.account.as_str(),
                    body.delta,
                    entry.id,
                    body.reason.trim()
                ),
                now,
            )?;
            Ok(Changed {
                balances: balances(c, customer_id, now)?,
                entry,
            })
        })
        .await
        .map_err(write_error)?;
    Ok((StatusCode::CREATED, Json(changed)))
}

fn entry(
    customer_id: Uuid,
    account: Account,
    delta: i64,
    reason: LedgerReason,
    site_id: Uuid,
    now: DateTime<Utc>,
) -> LedgerEntry {
    LedgerEntry {
        id: Uuid::now_v7(),
        customer_id,
        account,
        delta,
        reason,
        ref_id: None,
        site_id,
        created_at: now,
        expires_at: None,
    }
}

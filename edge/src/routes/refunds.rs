//! Refunds: a manager gives back part or all of an order, never more per tender kind than it
//! paid less earlier refunds. Stored value goes back onto the customer's ledger. A refund is its
//! own record (the order is never edited), audited, with an outbox op per record.

use super::{AppState, refuse, write_error};
use crate::audit::{actor, record};
use crate::outbox::write_and_queue;
use crate::replica::venue::{order, refunds_of};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::json::{JsonText, ValidJson};
use aero_shared::openapi::guarded;
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{
    Account, LedgerEntry, LedgerReason, MAX_AMOUNT_CENTS, MAX_ORDER_LINES, RefundRecord,
    RefundTender, TenderKind,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::SubsecRound;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(guarded(Permission::RefundOrders, routes!(refund)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    pub tenders: Vec<NewRefundTender>,
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefundTender {
    pub kind: TenderKind,
    pub amount_cents: i64,
}

impl Validate for NewRefund {
    fn validate(&self, v: &mut Validator) {
        v.check(
            (1..=MAX_ORDER_LINES).contains(&self.tenders.len()),
            "tenders",
            "a refund gives back 1 to 50 tenders",
        );
        for (i, tender) in self.tenders.iter().enumerate() {
            v.check(
                (1..=MAX_AMOUNT_CENTS).contains(&tender.amount_cents),
                &format!("tenders[{i}].amount_cents"),
                "must be between 1 and 100000000",
            );
        }
        v.text("reason", &self.reason, 500);
    }
}

#[utoipa::path(post, path = "/v1/orders/{id}/refund", tag = "refunds", params(("id" = Uuid, Path)), request_body = NewRefund, responses((status = 201, description = "Created", body = RefundRecord)))]
async fn refund(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
    ValidJson(body): ValidJson<NewRefund>,
) -> Result<(StatusCode, JsonText<RefundRecord>), ApiError> {
    let now = state.clock.now().trunc_subsecs(3);
    let site_id = state.site_id;
    // Checked against the earlier refunds inside the write: two managers refunding the same
    // order at once are checked one after the other.
    let answer = state
        .writer
        .mutate(move |c| {
            let Some(order) = order(c, order_id)?.filter(|o| o.site_id == site_id) else {
                return refuse(ApiError::NotFound("no such order"));
            };
            let earlier = refunds_of(c, order_id)?;
            let refund = RefundRecord {
                id: Uuid::now_v7(),
                order_id,
                site_id,
                total_cents: body.tenders.iter().map(|t| t.amount_cents).sum(),
                tenders: body
                    .tenders
                    .iter()
                    .map(|t| RefundTender {
                        kind: t.kind,
                        amount_cents: t.amount_cents,
                    })
                    .collect(),
                reason: body.reason.trim().to_string(),
                refunded_by: actor(&auth),
                created_at: now,
            };
            if let Err(reason) = refund.check(&order, &earlier) {
                return refuse(ApiError::field("tenders", reason));
            }
            let answer = write_and_queue(c, &refund, now)?;
            let stored_value = refund.refunded(TenderKind::StoredValue);
            if stored_value > 0 {
                // A sale paid with stored value names its customer (it could not be made
                // without one), so this only guards against a record from elsewhere.
                let Some(customer_id) = order.customer_id else {
                    return refuse(ApiError::Unprocessable(
                        "the order names no customer to give stored value back to".into(),
                    ));
                };
                let entry = LedgerEntry {
                    id: Uuid::now_v7(),
                    customer_id,
                    account: Account::StoredValue,
                    delta: stored_value,
                    reason: LedgerReason::Refund,
                    ref_id: Some(refund.id),
                    site_id,
                    created_at: now,
                    expires_at: None,
                };
                write_and_queue(c, &entry, now)?;
            }
            record(
                c,
                &auth,
                "order.refund",
                &format!(
                    "order {order_id} refund {} of {} cents",
                    refund.id, refund.total_cents
                ),
                now,
            )?;
            Ok(answer)
        })
        .await
        .map_err(write_error)?;
    Ok((StatusCode::CREATED, answer))
}

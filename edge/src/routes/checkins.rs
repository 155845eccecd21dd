//! Check-ins at the gate: a wristband starts a jump session for a customer with a valid waiver
//! (a minor's guardian's waiver covers them), using a paid pass or a membership visit. The
//! session lasts the product's duration. Refusals say why; the check-in, and the visit it
//! spends, are written with their outbox ops in one transaction.

use super::{AppState, refuse, write_error};
use crate::live::LiveEvent;
use crate::outbox::write_and_queue;
use crate::replica::venue::{
    active_checkins, balance, has_valid_waiver, order_with_unused_pass, product,
    session_of_wristband,
};
use crate::replica::{jumper, ts};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::json::{JsonText, ValidJson};
use aero_shared::openapi::guarded;
use aero_shared::page::{PageQuery, TimeKey};
use aero_shared::validate::{Validate, Validator};
use aero_shared::wire::{Account, CheckinRecord, LedgerEntry, LedgerReason, ProductKind};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::CheckIn, routes!(check_in)))
        .routes(guarded(Permission::ReadSessions, routes!(active)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCheckin {
    pub customer_id: Uuid,
    pub wristband: String,
    pub product_id: Uuid,
}

impl Validate for NewCheckin {
    fn validate(&self, v: &mut Validator) {
        v.text("wristband", &self.wristband, 64);
    }
}

#[utoipa::path(post, path = "/v1/checkins", tag = "checkins", request_body = NewCheckin, responses((status = 201, description = "Created", body = CheckinRecord)))]
async fn check_in(
    State(state): State<AppState>,
    _auth: Auth,
    ValidJson(body): ValidJson<NewCheckin>,
) -> Result<(StatusCode, JsonText<CheckinRecord>), ApiError> {
    let now = state.clock.now().trunc_subsecs(3);
    let site_id = state.site_id;
    // Decided on the writer: the same pass, visit or wristband is never used twice at once.
    let (checkin, answer) = state
        .writer
        .mutate(move |c| {
            let (checkin, visit) = decide(c, site_id, &body, now)?;
            let answer = write_and_queue(c, &checkin, now)?;
            if let Some(entry) = &visit {
                write_and_queue(c, entry, now)?;
            }
            Ok((checkin, answer))
        })
        .await
        .map_err(write_error)?;
    state.live.publish(
        LiveEvent::Checkin {
            checkin_id: checkin.id,
            customer_id: checkin.customer_id,
            wristband: checkin.wristband.clone(),
            product_id: checkin.product_id,
            ends_at: checkin.ends_at,
        },
        now,
    );
    Ok((StatusCode::CREATED, answer))
}

/// Every rule of the gate, checked before anything is written: the check-in, and the visit it
/// spends for a membership.
fn decide(
    c: &Connection,
    site_id: Uuid,
    body: &NewCheckin,
    now: DateTime<Utc>,
) -> anyhow::Result<(CheckinRecord, Option<LedgerEntry>)> {
    let Some(person) = jumper(c, body.customer_id)? else {
        return refuse(ApiError::field("customer_id", "no such customer"));
    };
    // Named only in a refusal.
    let name = || format!("{} {}", person.first_name, person.last_name);
    let at = ts(now);
    let covered = has_valid_waiver(c, person.id, &at)?
        || match person.guardian_id {
            Some(guardian) => has_valid_waiver(c, guardian, &at)?,
            None => false,
        };
    if !covered {
        let whose = if person.guardian_id.is_some() {
            "neither they nor their guardian has"
        } else {
            "they have"
        };
        return refuse(ApiError::Unprocessable(format!(
            "{} cannot jump yet: {whose} no valid waiver; sign one first",
            name()
        )));
    }
    let wristband = body.wristband.trim().to_string();
    if session_of_wristband(c, &wristband, now)?.is_some() {
        return refuse(ApiError::Conflict(format!(
            "wristband {wristband} is already in a jump session"
        )));
    }
    let Some(product) = product(c, body.product_id)? else {
        return refuse(ApiError::field("product_id", "no such product"));
    };
    let Some(minutes) = product.duration_minutes.filter(|m| *m > 0) else {
        return refuse(ApiError::Unprocessable(format!(
            "{} has no session length: HQ must give it a duration",
            product.sku
        )));
    };
    let id = Uuid::now_v7();
    let (order_id, visit) = match product.kind {
        ProductKind::Pass => match order_with_unused_pass(c, person.id, product.id)? {
            Some(order) => (Some(order), None),
            None => {
                return refuse(ApiError::Unprocessable(format!(
                    "{} holds no paid, unused {} ({}) pass: sell one first",
                    name(),
                    product.name,
                    product.sku
                )));
            }
        },
        ProductKind::Membership => {
            let visits = balance(c, person.id, Account::Visits, now)?;
            if visits < 1 {
                return refuse(ApiError::Unprocessable(format!(
                    "{} has no membership visits left ({visits})",
                    name()
                )));
            }
            let entry = LedgerEntry {
                id: Uuid::now_v7(),
                customer_id: person.id,
                account: Account::Visits,
                delta: -1,
                reason: LedgerReason::Checkin,
                ref_id: Some(id),
                site_id,
                created_at: now,
                expires_at: None,
            };
            (None, Some(entry))
        }
        ProductKind::Addon | ProductKind::Credits => {
            return refuse(ApiError::field(
                "product_id",
                format!("{} is not a pass or a membership", product.sku),
            ));
        }
    };
    let checkin = CheckinRecord {
        id,
        site_id,
        customer_id: person.id,
        wristband,
        product_id: product.id,
        order_id,
        ledger_entry_id: visit.as_ref().map(|v| v.id),
        starts_at: now,
        ends_at: now + Duration::minutes(i64::from(minutes)),
        created_at: now,
    };
    if let Err(reason) = checkin.check() {
        return refuse(ApiError::Unprocessable(reason));
    }
    Ok((checkin, visit))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Sessions {
    sessions: Vec<CheckinRecord>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/sessions/active", tag = "checkins", summary = "The sessions running now, soonest end first", params(PageQuery), responses((status = 200, description = "OK", body = Sessions)))]
async fn active(
    State(state): State<AppState>,
    _auth: Auth,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Sessions>, ApiError> {
    let page = paging.page::<TimeKey>()?;
    let now = state.clock.now();
    let (after, fetch) = (page.after, page.fetch());
    let sessions = state
        .replica
        .read(move |c| active_checkins(c, now, after.as_ref(), fetch))
        .await?;
    let paged = page.finish(sessions, |s| (s.ends_at, s.id));
    Ok(Json(Sessions {
        sessions: paged.rows,
        next_after: paged.next_after,
    }))
}

//! Customers and waivers: registered at this venue (row + outbox op in one transaction), looked
//! up chain-wide from the replica. A waiver records the version of the waiver text its signer
//! was shown (see `waiver_texts`).

use super::AppState;
use crate::outbox::append_op;
use crate::replica::apply::{upsert_customer, upsert_waiver};
use crate::replica::{CustomerView, customer_exists, waiver_texts};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::idempotency::Answer;
use aero_shared::json::{JsonText, ValidJson};
use aero_shared::openapi::guarded;
use aero_shared::page::{PageQuery, TimeKey};
use aero_shared::validate::{Validate, Validator, normalize_phone};
use aero_shared::wire::{CustomerRecord, Entity, OpKind, WaiverRecord};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{Months, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// How long a signed waiver is valid.
const WAIVER_MONTHS: u32 = 12;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(guarded(Permission::LookupCustomers, routes!(lookup)))
        .routes(guarded(Permission::RegisterCustomers, routes!(register)))
        .routes(guarded(Permission::SignWaivers, routes!(sign_waiver)))
}

/// Most minors one guardian registers at once.
const MAX_MINORS: usize = 10;
/// Age of majority: a guardian must have reached it, a minor must not.
const ADULT_YEARS: u32 = 18;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    pub first_name: String,
    pub last_name: String,
    pub birth_date: NaiveDate,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Children registered under this customer as their guardian.
    #[serde(default)]
    pub minors: Vec<NewMinor>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMinor {
    pub first_name: String,
    pub last_name: String,
    pub birth_date: NaiveDate,
}

fn check_person(v: &mut Validator, prefix: &str, first: &str, last: &str, birth: NaiveDate) {
    v.text(&format!("{prefix}first_name"), first, 100);
    v.text(&format!("{prefix}last_name"), last, 100);
    let today = Utc::now().date_naive();
    v.check(
        birth <= today && birth >= today - Months::new(130 * 12),
        &format!("{prefix}birth_date"),
        "must be a plausible date of birth",
    );
}

fn is_adult(birth: NaiveDate, today: NaiveDate) -> bool {
    birth <= today - Months::new(ADULT_YEARS * 12)
}

impl Validate for NewCustomer {
    fn validate(&self, v: &mut Validator) {
        check_person(v, "", &self.first_name, &self.last_name, self.birth_date);
        if let Some(phone) = &self.phone {
            v.phone("phone", phone);
        }
        if let Some(email) = &self.email {
            v.email("email", email.trim());
        }
        if self.minors.is_empty() {
            return;
        }
        let today = Utc::now().date_naive();
        v.check(
            self.minors.len() <= MAX_MINORS,
            "minors",
            "at most 10 minors per registration",
        );
        v.check(
            is_adult(self.birth_date, today),
            "birth_date",
            "a guardian registering minors must be an adult",
        );
        for (i, minor) in self.minors.iter().enumerate() {
            let prefix = format!("minors[{i}].");
            check_person(
                v,
                &prefix,
                &minor.first_name,
                &minor.last_name,
                minor.birth_date,
            );
            v.check(
                !is_adult(minor.birth_date, today),
                &format!("{prefix}birth_date"),
                "a minor must be under 18",
            );
        }
    }
}

/// A registration's answer: the customer, and the minors registered under them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Registered {
    #[serde(flatten)]
    customer: CustomerView,
    minors: Vec<CustomerView>,
}

#[utoipa::path(post, path = "/v1/customers", tag = "customers", request_body = NewCustomer, responses((status = 201, description = "Created", body = Registered)))]
async fn register(
    State(state): State<AppState>,
    _auth: Auth,
    ValidJson(body): ValidJson<NewCustomer>,
) -> Result<Answer, ApiError> {
    // Milliseconds, as central stores them, so the row central echoes back is identical.
    let now = state.clock.now().trunc_subsecs(3);
    let guardian = CustomerRecord {
        id: Uuid::now_v7(),
        first_name: body.first_name.trim().to_string(),
        last_name: body.last_name.trim().to_string(),
        birth_date: body.birth_date,
        phone: body.phone.as_deref().map(normalize_phone),
        email: body.email.as_deref().map(|e| e.trim().to_string()),
        guardian_id: None,
        home_site_id: state.site_id,
        created_at: now,
    };
    let minors: Vec<CustomerRecord> = body
        .minors
        .iter()
        .map(|minor| CustomerRecord {
            id: Uuid::now_v7(),
            first_name: minor.first_name.trim().to_string(),
            last_name: minor.last_name.trim().to_string(),
            birth_date: minor.birth_date,
            phone: None,
            email: None,
            guardian_id: Some(guardian.id),
            home_site_id: state.site_id,
            created_at: now,
        })
        .collect();
    let view = CustomerView::new_customer;
    let answer = Answer::json(
        StatusCode::CREATED,
        &Registered {
            customer: view(guardian.clone()),
            minors: minors.iter().cloned().map(view).collect(),
        },
    )?;
    // The guardian and every minor commit together, each with its own outbox op.
    let rows: Vec<CustomerRecord> = std::iter::once(guardian).chain(minors).collect();
    state
        .writer
        .mutate_answering(move |c| {
            for row in &rows {
                upsert_customer(c, row)?;
                append_op(c, Entity::Customer, row.id, OpKind::Upsert, row, now)?;
            }
            Ok(answer.clone())
        })
        .await
        .map_err(super::write_error)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LookupQuery {
    phone: Option<String>,
    email: Option<String>,
}

#[utoipa::path(get, path = "/v1/customers", tag = "customers", summary = "Chain-wide customer lookup (?phone=|email=) with balances, oldest registration first", params(LookupQuery, PageQuery), responses((status = 200, description = "OK", body = Customers)))]
async fn lookup(
    State(state): State<AppState>,
    _auth: Auth,
    Query(query): Query<LookupQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<JsonText<Customers>, ApiError> {
    let page = paging.page::<TimeKey>()?;
    let (after, fetch) = (page.after.as_ref(), page.fetch());
    let now = state.clock.now();
    let customers = match (query.phone, query.email) {
        (Some(phone), None) => {
            let phone = normalize_phone(&phone);
            if phone.is_empty() {
                return Err(ApiError::field("phone", "must contain digits"));
            }
            state
                .replica
                .customers_by_phone(phone, after, fetch, now)
                .await?
        }
        (None, Some(email)) => {
            let email = email.trim().to_lowercase();
            if email.is_empty() {
                return Err(ApiError::field("email", "must not be blank"));
            }
            state
                .replica
                .customers_by_email(email, after, fetch, now)
                .await?
        }
        _ => {
            return Err(ApiError::field(
                "phone",
                "give exactly one of phone or email",
            ));
        }
    };
    let paged = page.finish(customers, |c| (c.customer.created_at, c.customer.id));
    JsonText::new(&Customers {
        customers: paged.rows,
        next_after: paged.next_after,
    })
    .map_err(ApiError::internal)
}

/// The lookup's answer, serialized straight from the rows (no intermediate `Value`).
#[derive(Serialize, utoipa::ToSchema)]
struct Customers {
    customers: Vec<CustomerView>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWaiver {
    pub signer_name: String,
}

impl Validate for NewWaiver {
    fn validate(&self, v: &mut Validator) {
        v.text("signer_name", &self.signer_name, 200);
    }
}

#[utoipa::path(post, path = "/v1/customers/{id}/waivers", tag = "customers", params(("id" = Uuid, Path)), request_body = NewWaiver, responses((status = 201, description = "Created", body = WaiverRecord)))]
async fn sign_waiver(
    State(state): State<AppState>,
    _auth: Auth,
    Path(customer_id): Path<Uuid>,
    ValidJson(body): ValidJson<NewWaiver>,
) -> Result<Answer, ApiError> {
    // Milliseconds, as central stores them, so the row central echoes back is identical.
    let now = state.clock.now().trunc_subsecs(3);
    let expires_at = now
        .checked_add_months(Months::new(WAIVER_MONTHS))
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("waiver expiry out of range")))?;
    let site_id = state.site_id;
    let signer_name = body.signer_name.trim().to_string();
    // The existence check and the text version are read on the writer, in the same
    // transaction as the insert: the waiver names the newest text the venue held when it was
    // signed, even if a pull lands a newer one a moment later.
    state
        .writer
        .mutate_answering(move |c| {
            if !customer_exists(c, customer_id)? {
                return Err(ApiError::NotFound("no such customer").into());
            }
            let waiver = WaiverRecord {
                id: Uuid::now_v7(),
                customer_id,
                site_id,
                signer_name: signer_name.clone(),
                signed_at: now,
                expires_at,
                text_version: waiver_texts::current_version(c)?,
            };
            upsert_waiver(c, &waiver)?;
            append_op(c, Entity::Waiver, waiver.id, OpKind::Upsert, &waiver, now)?;
            Ok(Answer::json(StatusCode::CREATED, &waiver)?)
        })
        .await
        .map_err(super::write_error)
}

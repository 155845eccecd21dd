//! HQ's chain-wide customer lookup, by phone, email or name, with each customer's balances.
//! Customers are chain-wide (every venue replicates them), so any reader of reports may look.

use crate::state::AppState;
use crate::store::{CustomerBalances, CustomerSearch};
use aero_shared::ApiError;
use aero_shared::auth::extract::{Auth, require};
use aero_shared::auth::principal::Permission;
use aero_shared::validate::normalize_phone;
use axum::extract::{Query, State};
use axum::handler::Handler;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Most customers one lookup returns.
const MAX_MATCHES: u32 = 50;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/customers",
        get(lookup.layer(require(Permission::ReadReports))),
    )
}

#[derive(Deserialize)]
struct LookupQuery {
    phone: Option<String>,
    email: Option<String>,
    name: Option<String>,
}

impl LookupQuery {
    fn search(self) -> Result<CustomerSearch, ApiError> {
        match (self.phone, self.email, self.name) {
            (Some(phone), None, None) => {
                let phone = normalize_phone(&phone);
                if phone.is_empty() || phone.len() > 32 {
                    return Err(ApiError::field("phone", "must be a phone number"));
                }
                Ok(CustomerSearch::Phone(phone))
            }
            (None, Some(email), None) => {
                let email = email.trim().to_string();
                if email.is_empty() || email.len() > 254 {
                    return Err(ApiError::field("email", "must be an email address"));
                }
                Ok(CustomerSearch::Email(email))
            }
            (None, None, Some(name)) => {
                let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
                if name.is_empty() || name.chars().count() > 201 {
                    return Err(ApiError::field("name", "must be 1 to 201 characters"));
                }
                Ok(CustomerSearch::Name(name))
            }
            _ => Err(ApiError::field(
                "phone",
                "give exactly one of phone, email or name",
            )),
        }
    }
}

#[derive(Serialize)]
struct Customers {
    customers: Vec<CustomerBalances>,
}

async fn lookup(
    State(state): State<AppState>,
    _auth: Auth,
    Query(query): Query<LookupQuery>,
) -> Result<Json<Customers>, ApiError> {
    let customers = state
        .store
        .search_customers(&query.search()?, MAX_MATCHES, state.clock.now())
        .await?;
    Ok(Json(Customers { customers }))
}

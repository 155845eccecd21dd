//! HQ's chain-wide customer lookup, by phone, email or name, with each customer's balances.
//! Customers are chain-wide (every venue replicates them), so any reader of reports may look.

use crate::state::AppState;
use crate::store::{CustomerBalances, CustomerKey, CustomerSearch};
use aero_shared::ApiError;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Permission;
use aero_shared::openapi::guarded;
use aero_shared::page::PageQuery;
use aero_shared::validate::normalize_phone;
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(guarded(Permission::ReadReports, routes!(lookup)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

#[derive(Serialize, utoipa::ToSchema)]
struct Customers {
    customers: Vec<CustomerBalances>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/customers", tag = "customers", summary = "Chain-wide customer lookup (?phone=|email=|name=) with balances, by last name, first name", params(LookupQuery, PageQuery), responses((status = 200, description = "OK", body = Customers)))]
async fn lookup(
    State(state): State<AppState>,
    _auth: Auth,
    Query(query): Query<LookupQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Customers>, ApiError> {
    let search = query.search()?;
    let page = paging.page::<CustomerKey>()?;
    let found = state
        .store
        .search_customers(
            &search,
            page.after.as_ref(),
            page.fetch(),
            state.clock.now(),
        )
        .await?;
    let paged = page.finish(found, |c| {
        let c = &c.customer;
        (c.last_name.clone(), c.first_name.clone(), c.id)
    });
    Ok(Json(Customers {
        customers: paged.rows,
        next_after: paged.next_after,
    }))
}

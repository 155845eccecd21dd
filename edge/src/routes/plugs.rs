//! The venue's smart plugs as the reconcile loop last found them: state, reachability, draw and
//! what each should be doing (`GET /v1/plugs`). Answered from memory, never from the network.

use super::AppState;
use crate::plugs::reconcile::PlugView;
use aero_shared::auth::extract::{Auth, require};
use aero_shared::auth::principal::Permission;
use axum::extract::State;
use axum::handler::Handler;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/plugs", get(list.layer(require(Permission::ReadPlugs))))
}

#[derive(Serialize)]
struct Plugs {
    plugs: Vec<PlugView>,
}

async fn list(State(state): State<AppState>, _auth: Auth) -> Json<Plugs> {
    Json(Plugs {
        plugs: state.plugs.list(),
    })
}

//! A venue's dead letters as HQ sees them: the ops central refused for good from it, the
//! venue's decision about each, and HQ's requests that the venue retry or discard one.

use super::{StoreError, StoreResult};
use aero_shared::wire::{DeadLetterRequest, Resolution};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// An op central refused for good, as HQ sees it per venue.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RejectedOpRecord {
    pub seq: i64,
    pub op_id: Uuid,
    pub reason: String,
    pub rejected_at: DateTime<Utc>,
    /// What the venue decided about it; `None` while it is still an open dead letter there.
    pub resolution: Option<ResolutionRecord>,
    /// HQ's latest request about it, until and after the venue acts on it.
    pub request: Option<DeadLetterRequest>,
}

/// A venue's decision about one of its refused ops, as central recorded it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ResolutionRecord {
    /// `retried` or `discarded`.
    pub how: Resolution,
    /// The new op that carries the same write again, when it was retried.
    pub retried_as: Option<Uuid>,
    /// Who decided, at the venue.
    pub by: String,
    /// When the venue decided (the edge's clock).
    pub at: DateTime<Utc>,
    /// The op that carried the decision to central.
    pub resolution_op_id: Uuid,
    /// When central recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// Which of a venue's refused ops to list.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterState {
    /// Not yet retried or discarded at the venue.
    #[default]
    Open,
    /// Retried or discarded at the venue.
    Resolved,
    All,
}

/// Whether HQ may ask a venue about refused op: `refused` is `None` when central refused no
/// such op from the site, else the venue's resolution so far. The same rule for every backend.
pub fn admit_request(refused: Option<Option<Resolution>>) -> StoreResult<()> {
    match refused {
        None => Err(StoreError::NotFound),
        Some(Some(done)) => Err(StoreError::Conflict(format!(
            "the venue has already {} this dead letter",
            done.as_str()
        ))),
        Some(None) => Ok(()),
    }
}

/// The condition on the venue's resolution (joined as `r`) that picks the refused ops in
/// `state`; the same SQL on every backend.
pub fn state_filter(state: DeadLetterState) -> &'static str {
    match state {
        DeadLetterState::Open => "AND r.op_id IS NULL",
        DeadLetterState::Resolved => "AND r.op_id IS NOT NULL",
        DeadLetterState::All => "",
    }
}

/// The audit action for a request.
pub fn request_audit_action(request: &DeadLetterRequest) -> &'static str {
    match request.action {
        aero_shared::wire::DeadLetterAction::Retry => "dead_letter.retry_requested",
        aero_shared::wire::DeadLetterAction::Discard => "dead_letter.discard_requested",
    }
}

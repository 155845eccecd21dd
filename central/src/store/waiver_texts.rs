//! Waiver texts as both backends publish them: the draft a route hands over and the record it
//! becomes once the publishing transaction has given it the next version.

use aero_shared::wire::WaiverTextRecord;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The audit action of a publication.
pub(crate) const PUBLISHED: &str = "waiver_text.published";

/// A waiver text to publish: everything but its version, which only the publishing transaction
/// can know (one more than the highest version the chain holds).
#[derive(Clone, Debug, PartialEq)]
pub struct WaiverTextDraft {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub published_at: DateTime<Utc>,
    /// Who publishes it (their username).
    pub published_by: String,
}

impl WaiverTextDraft {
    /// The record this draft is stored and replicated as, published as `version`.
    pub fn published_as(&self, version: i64) -> WaiverTextRecord {
        WaiverTextRecord {
            id: self.id,
            version,
            title: self.title.clone(),
            body: self.body.clone(),
            published_at: self.published_at,
            published_by: self.published_by.clone(),
        }
    }
}

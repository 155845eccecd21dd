//! Types that travel between services: the records of the change feed (HQ data and chain-wide
//! venue data) and the sync protocol (enroll, push, pull). Central stores these records; edges
//! replicate them.
//!
//! The times of the records that travel by the thousand (customers, waivers, the change log's
//! entries and the venue's own records), and a customer's date of birth, are written and read by
//! [`crate::timestamp`]: the same text as chrono's, and the same values, for a fraction of the
//! cost.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::principal::{DeviceKind, Role};
use crate::validate::{Validate, Validator};

mod venue;
pub use venue::*;

/// Most ops one push may carry; edges send smaller batches.
pub const MAX_PUSH_OPS: usize = 5_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteRecord {
    pub id: Uuid,
    pub name: String,
    pub timezone: String,
    #[schema(value_type = Vec<String>)]
    pub allowed_networks: Vec<ipnet::IpNet>,
    pub created_at: DateTime<Utc>,
}

/// A device and its API-key hash. Revoked devices stay (with `revoked_at`) for the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceRecord {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    pub kind: DeviceKind,
    #[schema(value_type = Vec<String>)]
    pub allowed_networks: Vec<ipnet::IpNet>,
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserRecord {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub site_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Bumped by every change to the account (disable, role, sites, password); a staff token
    /// carries the version it was issued at and is refused once the two differ. Records from
    /// a central that predates it read as 0.
    #[serde(default)]
    pub token_version: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    Pass,
    Addon,
    Credits,
    Membership,
}

impl ProductKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Addon => "addon",
            Self::Credits => "credits",
            Self::Membership => "membership",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pass" => Some(Self::Pass),
            "addon" => Some(Self::Addon),
            "credits" => Some(Self::Credits),
            "membership" => Some(Self::Membership),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductRecord {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub kind: ProductKind,
    pub price_cents: i64,
    pub duration_minutes: Option<i32>,
    /// What one unit adds to the buyer's balances: credit packs and memberships have one.
    #[serde(default)]
    pub grant: Option<Grant>,
    /// A retired product is no longer sold; old orders still name it.
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScoreOrder {
    HighestWins,
    LowestWins,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GameRecord {
    pub id: Uuid,
    pub name: String,
    pub score_order: ScoreOrder,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlugRecord {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The outlet of a power strip; `None` for a single plug.
    pub child_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    On,
    Off,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRecord {
    pub id: Uuid,
    pub plug_id: Uuid,
    pub site_id: Uuid,
    /// Six-field cron (with seconds), evaluated in the site's timezone.
    pub cron: String,
    pub state: PowerState,
    pub created_at: DateTime<Utc>,
}

/// Longest problem text a plug status may carry.
pub const MAX_PLUG_PROBLEM_CHARS: usize = 500;

/// What a venue last saw of one of its plugs, pushed when its state or reachability changes;
/// HQ keeps the latest per plug.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlugStatusRecord {
    pub plug_id: Uuid,
    pub site_id: Uuid,
    /// `None` until the plug first answered.
    pub state: Option<PowerState>,
    pub reachable: bool,
    /// When the plug last answered.
    pub last_seen: Option<DateTime<Utc>>,
    /// The draw in milliwatts, on plugs with an energy meter.
    pub power_mw: Option<u64>,
    /// Why the venue cannot reach or use the plug, as its staff screen says it.
    pub problem: Option<String>,
    /// When the venue saw this.
    pub observed_at: DateTime<Utc>,
}

/// Longest an override may hold a plug against its schedules.
pub const MAX_OVERRIDE_DAYS: i64 = 31;

/// A manual "on" or "off" for a plug, holding against its schedules until `until`; set at HQ or
/// by a venue manager, written once and never edited. Of several, the one set last counts (see
/// the edge's `plugs::schedule`); from `until` on the schedules govern again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlugOverrideRecord {
    pub id: Uuid,
    pub plug_id: Uuid,
    pub site_id: Uuid,
    pub state: PowerState,
    /// When the server that accepted it took it (the edge for a manager, central for HQ).
    pub set_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Who set it, for the audit trail.
    pub set_by: String,
}

impl PlugOverrideRecord {
    pub fn check(&self) -> Result<(), String> {
        if self.until <= self.set_at {
            return Err("an override ends after it was set".into());
        }
        if self.until - self.set_at > chrono::Duration::days(MAX_OVERRIDE_DAYS) {
            return Err(format!(
                "an override holds for at most {MAX_OVERRIDE_DAYS} days"
            ));
        }
        if self.set_by.trim().is_empty() || self.set_by.chars().count() > 200 {
            return Err("an override names who set it, in at most 200 characters".into());
        }
        Ok(())
    }
}

/// The body that sets an override, at HQ (`POST /v1/plugs/{id}/overrides`) or by a venue
/// manager (`POST /v1/plugs/{id}/power`): the plug on or off until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlugOverride {
    pub on: bool,
    pub until: DateTime<Utc>,
}

impl NewPlugOverride {
    /// The override of `plug` this sets, taken at `set_at` by `set_by`; refused (with the
    /// reason, about `until`) if it does not pass [`PlugOverrideRecord::check`].
    pub fn record(
        &self,
        plug: &PlugRecord,
        set_at: DateTime<Utc>,
        set_by: String,
    ) -> Result<PlugOverrideRecord, String> {
        use chrono::SubsecRound;
        let record = PlugOverrideRecord {
            id: Uuid::now_v7(),
            plug_id: plug.id,
            site_id: plug.site_id,
            state: if self.on {
                PowerState::On
            } else {
                PowerState::Off
            },
            set_at: set_at.trunc_subsecs(3),
            until: self.until.trunc_subsecs(3),
            set_by,
        };
        record.check()?;
        Ok(record)
    }
}

impl Validate for NewPlugOverride {
    /// What `until` may be depends on when the request arrives: checked with the record.
    fn validate(&self, _: &mut Validator) {}
}

/// A customer, chain-wide: registered at one venue, found at every other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustomerRecord {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    #[serde(with = "crate::timestamp::date")]
    pub birth_date: NaiveDate,
    /// Normalised to digits with an optional leading `+`.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub guardian_id: Option<Uuid>,
    /// The venue that registered the customer.
    pub home_site_id: Uuid,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaiverRecord {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub site_id: Uuid,
    pub signer_name: String,
    #[serde(with = "crate::timestamp")]
    pub signed_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub expires_at: DateTime<Utc>,
    /// The version of the waiver text the signer was shown: the newest the venue held when it
    /// was signed. `None` when the chain had published none, and on waivers signed (or queued)
    /// by an edge that predates waiver texts.
    #[serde(default)]
    pub text_version: Option<i64>,
}

/// Longest title of a waiver text, in characters.
pub const MAX_WAIVER_TITLE_CHARS: usize = 200;
/// Longest body of a waiver text, in characters.
pub const MAX_WAIVER_BODY_CHARS: usize = 50_000;

/// The wording of the liability waiver, published at HQ and replicated to every venue, whose
/// terminals show the newest version before a waiver is signed. Versions count 1, 2, 3, ...
/// chain-wide; a published text is never edited (new wording is the next version), so the
/// `text_version` of a [`WaiverRecord`] says for good what its signer was shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaiverTextRecord {
    pub id: Uuid,
    /// 1 for the chain's first text, one more for each text published after it.
    pub version: i64,
    pub title: String,
    pub body: String,
    pub published_at: DateTime<Utc>,
    /// Who published it at HQ (their username).
    pub published_by: String,
}

/// What kind of row a change or an op is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Site,
    Device,
    User,
    Product,
    Game,
    Plug,
    PlugSchedule,
    Customer,
    Waiver,
    Order,
    Refund,
    LedgerEntry,
    Checkin,
    Score,
    /// A venue's decision about one of its ops central refused for good (pushed only, never in
    /// the change feed): see [`DeadLetterResolution`].
    DeadLetter,
    /// What a venue last saw of one of its plugs (pushed only, never in the change feed): see
    /// [`PlugStatusRecord`].
    PlugStatus,
    /// A manual "on" or "off" for a plug until a given time, set at HQ or by a venue manager:
    /// see [`PlugOverrideRecord`].
    PlugOverride,
    /// HQ asks a venue to retry or discard one of its dead letters (central's change feed only,
    /// never pushed): see [`DeadLetterRequest`].
    DeadLetterRequest,
    /// A published version of the waiver's wording (HQ-owned, chain-wide): see
    /// [`WaiverTextRecord`].
    WaiverText,
}

impl Entity {
    /// Every entity this version knows.
    pub const ALL: [Entity; 19] = [
        Self::Site,
        Self::Device,
        Self::User,
        Self::Product,
        Self::Game,
        Self::Plug,
        Self::PlugSchedule,
        Self::Customer,
        Self::Waiver,
        Self::Order,
        Self::Refund,
        Self::LedgerEntry,
        Self::Checkin,
        Self::Score,
        Self::DeadLetter,
        Self::PlugStatus,
        Self::PlugOverride,
        Self::DeadLetterRequest,
        Self::WaiverText,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::Device => "device",
            Self::User => "user",
            Self::Product => "product",
            Self::Game => "game",
            Self::Plug => "plug",
            Self::PlugSchedule => "plug_schedule",
            Self::Customer => "customer",
            Self::Waiver => "waiver",
            Self::Order => "order",
            Self::Refund => "refund",
            Self::LedgerEntry => "ledger_entry",
            Self::Checkin => "checkin",
            Self::Score => "score",
            Self::DeadLetter => "dead_letter",
            Self::PlugStatus => "plug_status",
            Self::PlugOverride => "plug_override",
            Self::DeadLetterRequest => "dead_letter_request",
            Self::WaiverText => "waiver_text",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Upsert,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "upsert" => Some(Self::Upsert),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// The entity of a change-log entry: one this version knows, or one only a newer version knows.
/// Central instances behind one load balancer are upgraded one at a time, so an older instance
/// may read entries a newer one logged; it serves them by name, and edges that do not know the
/// entity either keep them as they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ChangeEntity {
    Known(Entity),
    Other(String),
}

impl ChangeEntity {
    pub fn parse(text: &str) -> Self {
        Entity::parse(text).map_or_else(|| Self::Other(text.to_string()), Self::Known)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(entity) => entity.as_str(),
            Self::Other(name) => name,
        }
    }
}

impl From<Entity> for ChangeEntity {
    fn from(entity: Entity) -> Self {
        Self::Known(entity)
    }
}

impl PartialEq<Entity> for ChangeEntity {
    fn eq(&self, other: &Entity) -> bool {
        matches!(self, Self::Known(entity) if entity == other)
    }
}

/// One entry of central's change feed: the full new state of a row (or its deletion).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub seq: i64,
    pub entity: ChangeEntity,
    pub entity_id: Uuid,
    pub op: ChangeOp,
    /// `None` for chain-wide rows; otherwise the one site that replicates it.
    pub site_id: Option<Uuid>,
    /// The row's JSON for an upsert, `null` for a delete.
    pub data: serde_json::Value,
    /// When central logged the change: with `seq` and `entity_id` it identifies this entry, so
    /// an edge can tell a restored change log that reused the seq (see [`ChangeAnchor`]).
    #[serde(with = "crate::timestamp")]
    pub changed_at: DateTime<Utc>,
}

impl Change {
    pub fn anchor(&self) -> ChangeAnchor {
        ChangeAnchor {
            seq: self.seq,
            entity_id: self.entity_id,
            changed_at: self.changed_at,
        }
    }
}

/// The identity of one change-log entry. An edge keeps the anchor of the last change it
/// applied; central answers every pull with the anchor it holds at the edge's cursor. A
/// different (or missing) anchor means central's change log is not the one the edge followed:
/// it was restored from a backup, and the edge resynchronises its replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeAnchor {
    pub seq: i64,
    pub entity_id: Uuid,
    pub changed_at: DateTime<Utc>,
}

/// `GET /v1/sync/pull?after=&limit=`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullResponse {
    pub changes: Vec<Change>,
    /// Store this and pass it as `after` next time.
    pub next_cursor: i64,
    /// True when more changes are waiting beyond this page.
    pub more: bool,
    /// Which central database answered (made once, when the database was created).
    pub store_id: Uuid,
    /// The highest seq in central's change log.
    pub head: i64,
    /// The highest contiguous outbox seq central holds for the pulling site.
    pub acked_seq: i64,
    /// The change central holds at `after` (`None` when it holds none there, or `after` is 0).
    pub anchor: Option<ChangeAnchor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Upsert,
    Delete,
    LedgerAppend,
    Event,
}

/// One local mutation of an edge, as queued in its outbox.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushOp {
    /// Dense per site, starting at 1.
    pub seq: i64,
    pub op_id: Uuid,
    pub entity: Entity,
    pub entity_id: Uuid,
    pub kind: OpKind,
    /// The record or event the op carries.
    // Kept as the JSON text it is: the edge sends what its outbox holds without decoding it,
    // and central decodes it once, straight into the entity's type.
    #[schema(value_type = serde_json::Value)]
    pub data: Box<serde_json::value::RawValue>,
}

/// What a venue manager decided about a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The same write was queued again as a new op (`retried_as`).
    Retried,
    /// The write was dropped.
    Discarded,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retried => "retried",
            Self::Discarded => "discarded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "retried" => Some(Self::Retried),
            "discarded" => Some(Self::Discarded),
            _ => None,
        }
    }
}

/// What HQ asks a venue to do with one of its dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterAction {
    /// Queue the same write again as a new op.
    Retry,
    /// Drop the write.
    Discard,
}

impl DeadLetterAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Discard => "discard",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "retry" => Some(Self::Retry),
            "discard" => Some(Self::Discard),
            _ => None,
        }
    }
}

/// HQ's request that a venue retry or discard one of its dead letters, carried to the venue by
/// central's change feed (entity `dead_letter_request`, `entity_id` = `op_id`). The venue acts
/// on it when it pulls it, as a manager there would, and its decision comes back as a
/// [`DeadLetterResolution`]; a dead letter the venue already resolved is left as it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterRequest {
    /// The refused op this request is about.
    pub op_id: Uuid,
    pub site_id: Uuid,
    pub action: DeadLetterAction,
    /// Who asked, at HQ (their username).
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
}

/// The data of a `dead_letter` event op: a venue retried or discarded one of its ops central
/// refused for good. Queued in the edge's outbox in the same transaction as the decision, so
/// central learns it exactly once; the op's `entity_id` is `op_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterResolution {
    /// The refused op this decision is about.
    pub op_id: Uuid,
    pub resolution: Resolution,
    /// The new op carrying the same write, when it was retried.
    #[serde(default)]
    pub retried_as: Option<Uuid>,
    /// Who decided (the staff member's username).
    pub by: String,
    /// When the venue decided, by the edge's clock: shown, never used to order anything.
    pub at: DateTime<Utc>,
}

/// `POST /v1/sync/push`
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushRequest {
    pub ops: Vec<PushOp>,
    /// The central database the edge is bound to: central refuses the batch (409) if it is
    /// another one, so an edge's ops are never merged into the wrong database.
    #[serde(default)]
    pub store_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RejectedOp {
    pub seq: i64,
    pub op_id: Uuid,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushResponse {
    /// Highest contiguous seq central holds for the site (applied or permanently rejected).
    pub acked_seq: i64,
    /// Set when the batch started beyond `acked_seq + 1`: send from this seq.
    pub expected_seq: Option<i64>,
    /// Ops in this batch (or replayed from it) that central refused for good.
    pub rejected: Vec<RejectedOp>,
    /// Set when central already holds this seq from the site under another `op_id` (a box
    /// restored from a backup, or a cloned one): the ops from this seq on were not taken, and
    /// the edge renumbers its pending ops after `acked_seq`, keeping their op ids.
    pub forked_at: Option<i64>,
    /// Which central database answered.
    pub store_id: Uuid,
    /// The highest seq in central's change log.
    pub head: i64,
}

/// `POST /v1/edge/enroll`
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollRequest {
    pub token: String,
    pub name: Option<String>,
}

/// The edge's credential for its site: shown once, stored by the edge owner-only.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollResponse {
    pub site_id: Uuid,
    pub device_id: Uuid,
    pub api_key: String,
    /// The next outbox seq the edge must use (a re-enrolled site continues the sequence).
    pub next_seq: i64,
    pub site: SiteRecord,
    /// The central database the edge is bound to from now on.
    pub store_id: Uuid,
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("site_id", &self.site_id)
            .field("device_id", &self.device_id)
            .field("api_key", &"**redacted**")
            .field("next_seq", &self.next_seq)
            .field("store_id", &self.store_id)
            .finish()
    }
}

/// `GET /v1/sites/{id}/sync`: a venue's sync health as HQ sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteSyncStatus {
    pub site_id: Uuid,
    pub last_push_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
    pub acked_seq: i64,
    pub pull_cursor: i64,
    /// Changes in the feed for this site beyond its pull cursor.
    pub pull_lag: i64,
    /// The edge's outbox as it reported it at its last pull; `null` before its first report.
    pub outbox: Option<OutboxBacklog>,
    /// When an instance of central last heard the venue's change-hint socket (on connecting and
    /// at each answered ping); `null` if none ever connected.
    pub hint_seen_at: Option<DateTime<Utc>>,
    /// When the instance holding that socket last heard it before it closed; `null` if none
    /// ever closed. A socket heard since it closed is another one, open.
    pub hint_closed_at: Option<DateTime<Utc>>,
}

/// What an edge says of its outbox when it pulls: the ops waiting to be pushed and when the
/// oldest of them was written (`null` when none waits).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxBacklog {
    pub pending_ops: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// `GET /v1/status` at the edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EdgeStatus {
    pub online: bool,
    pub pending_ops: i64,
    pub oldest_pending_age_seconds: Option<i64>,
    pub last_push_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
    pub cursor: i64,
    pub dead_letters: i64,
    pub last_error: Option<String>,
    /// Why the last push round failed; cleared by a successful one. Pushes and pulls fail and
    /// recover independently.
    pub push_error: Option<String>,
    /// Why the last pull round failed; cleared by a successful one.
    pub pull_error: Option<String>,
    /// Pulled changes this version could not decode. They were skipped and kept in the
    /// replica's `skipped_changes` table with the reason.
    pub skipped_changes: i64,
    /// Set when central refused this edge's credential (the site was enrolled on another box,
    /// or central does not know this edge): the edge no longer syncs or takes writes until it is
    /// enrolled again.
    pub fenced: Option<String>,
}

impl Validate for EnrollRequest {
    fn validate(&self, v: &mut Validator) {
        v.text("token", &self.token, 200);
        if let Some(name) = &self.name {
            v.text("name", name, 100);
        }
    }
}

impl Validate for PushRequest {
    fn validate(&self, v: &mut Validator) {
        v.check(
            self.ops.len() <= MAX_PUSH_OPS,
            "ops",
            "at most 5000 ops per push",
        );
        // A field's name is formatted only for an error: a batch holds up to 5000 ops.
        for (i, op) in self.ops.iter().enumerate() {
            if op.seq < 1 {
                v.error(&format!("ops[{i}].seq"), "must be at least 1");
            }
            if i > 0 && op.seq <= self.ops[i - 1].seq {
                v.error(&format!("ops[{i}].seq"), "seqs must be strictly increasing");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_entity_is_its_name_whether_this_version_knows_it_or_not() {
        let known: ChangeEntity = serde_json::from_str("\"customer\"").expect("known");
        assert_eq!(known, Entity::Customer);
        let newer: ChangeEntity = serde_json::from_str("\"future_thing\"").expect("newer");
        assert_eq!(newer, ChangeEntity::Other("future_thing".into()));
        assert_eq!(newer.as_str(), "future_thing");
        assert_eq!(ChangeEntity::parse("future_thing"), newer);
        for entity in [known, newer] {
            let text = serde_json::to_string(&entity).expect("serialize");
            assert_eq!(text, format!("\"{}\"", entity.as_str()));
        }
    }

    #[test]
    fn every_entity_parses_back_from_its_name() {
        for entity in Entity::ALL {
            assert_eq!(Entity::parse(entity.as_str()), Some(entity));
            let json = serde_json::to_value(entity).expect("serialize");
            assert_eq!(json, entity.as_str());
        }
        assert_eq!(Entity::WaiverText.as_str(), "waiver_text");
    }

    #[test]
    fn a_waiver_from_before_waiver_texts_decodes_without_a_text_version() {
        let id = Uuid::now_v7();
        let old = serde_json::json!({
            "id": id, "customer_id": id, "site_id": id, "signer_name": "Ada",
            "signed_at": "2025-01-01T10:00:00Z", "expires_at": "2026-01-01T10:00:00Z",
        });
        let waiver: WaiverRecord = serde_json::from_value(old).expect("old waiver");
        assert_eq!(waiver.text_version, None);
        let signed = WaiverRecord {
            text_version: Some(3),
            ..waiver
        };
        let text = serde_json::to_value(&signed).expect("serialize");
        assert_eq!(text["text_version"], 3);
        assert_eq!(
            serde_json::from_value::<WaiverRecord>(text).unwrap(),
            signed
        );
    }
}

/// The body of `/healthz` and `/readyz`: `ok` or `ready`, or `unavailable` with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthStatus {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HealthStatus {
    pub fn up(status: &str) -> Self {
        Self {
            status: status.into(),
            detail: None,
        }
    }

    pub fn unavailable(detail: &str) -> Self {
        Self {
            status: "unavailable".into(),
            detail: Some(detail.into()),
        }
    }
}

//! The central store: one trait speaking domain types, with a SQLite backend (the default) and
//! a SQL Server backend (production), chosen by the database URL.

mod audit;
mod dead_letters;
pub mod listing;
pub mod mssql;
pub mod push_rules;
pub mod reports;
pub mod sqlite;
mod waiver_texts;

pub use audit::{AuditActor, AuditEntry, AuditFilter};
pub use dead_letters::{DeadLetterState, RejectedOpRecord, ResolutionRecord};
pub use listing::{CustomerKey, NameKey, TimeKey};
pub use reports::{
    CustomerBalances, CustomerSearch, DailyReport, LeaderboardEntry, LeaderboardQuery,
    NegativeBalance, ProductSales,
};
pub use waiver_texts::WaiverTextDraft;

use aero_shared::auth::principal::Role;
use aero_shared::etag::IfMatch;
use aero_shared::idempotency::{Begin, StoredResponse};
use aero_shared::wire::{
    Change, ChangeAnchor, CheckinRecord, CustomerRecord, DeadLetterRequest, DeadLetterResolution,
    DeviceRecord, GameRecord, LedgerEntry, MAX_AMOUNT_CENTS, MAX_ORDER_LINES,
    MAX_PLUG_PROBLEM_CHARS, OrderRecord, OutboxBacklog, PlugOverrideRecord, PlugRecord,
    PlugStatusRecord, ProductRecord, PushOp, RefundRecord, RejectedOp, Resolution, ScheduleRecord,
    ScoreRecord, SiteRecord, SiteSyncStatus, UserRecord, WaiverRecord, WaiverTextRecord,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated; the text names what is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Worth retrying: lock contention, deadlock, a dropped connection.
    #[error("transient storage error: {0}")]
    Transient(String),
    /// The row changed since the version the caller based its write on; nothing was written.
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    #[error("storage error: {0:#}")]
    Other(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<StoreError> for aero_shared::ApiError {
    fn from(err: StoreError) -> Self {
        use aero_shared::ApiError;
        match err {
            StoreError::NotFound => ApiError::NotFound("no such resource"),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::PreconditionFailed => ApiError::PreconditionFailed(
                "the resource has changed since it was read; read it again and retry",
            ),
            StoreError::Transient(why) => {
                tracing::warn!(error = %why, "storage stayed busy past the retry deadline");
                ApiError::Unavailable("storage is busy; retry shortly".into())
            }
            StoreError::Other(err) => ApiError::Internal(err),
        }
    }
}

/// Who did a write, recorded in the audit log in the same transaction as the write itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Actor {
    /// `user`, `device`, `edge` or `system` (the CLI).
    pub kind: &'static str,
    pub id: Option<Uuid>,
    pub name: String,
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl Actor {
    pub fn system(name: &str) -> Self {
        Self {
            kind: "system",
            id: None,
            name: name.to_string(),
            ip: None,
            request_id: None,
        }
    }
}

/// What an audited write says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub action: &'static str,
    pub target: Option<String>,
    pub site_id: Option<Uuid>,
}

/// A one-time enrollment token (only its hash is kept).
#[derive(Clone, Debug, PartialEq)]
pub struct EnrollmentToken {
    pub id: Uuid,
    pub site_id: Uuid,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Redeemed {
    /// The edge credential was created; the site's outbox continues after `acked_seq`.
    Enrolled { site: SiteRecord, acked_seq: i64 },
    /// Unknown, already used or expired.
    Refused,
}

/// Outcome of applying one pushed batch.
#[derive(Clone, Debug, PartialEq)]
pub struct PushOutcome {
    pub acked_seq: i64,
    pub expected_seq: Option<i64>,
    pub rejected: Vec<RejectedOp>,
    /// The first seq of the batch central holds under another op id (see `push_rules`).
    pub forked_at: Option<i64>,
}

/// Where one change of the log is visible: to one venue, or (`site_id: None`) to every venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeScope {
    pub seq: i64,
    pub site_id: Option<Uuid>,
}

/// Which of a site's fields to change; `None` keeps the stored value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteChanges {
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub allowed_networks: Option<Vec<IpNet>>,
}

impl SiteChanges {
    /// The site after these changes, or `None` when they change nothing. Compared in Rust, not
    /// in SQL: a case-insensitive collation would call a case-only rename "unchanged".
    pub fn apply(&self, current: &SiteRecord) -> Option<SiteRecord> {
        let updated = SiteRecord {
            name: self.name.clone().unwrap_or_else(|| current.name.clone()),
            timezone: self
                .timezone
                .clone()
                .unwrap_or_else(|| current.timezone.clone()),
            allowed_networks: self
                .allowed_networks
                .clone()
                .unwrap_or_else(|| current.allowed_networks.clone()),
            ..current.clone()
        };
        (updated != *current).then_some(updated)
    }
}

/// A site's entity tag: what `GET /v1/sites/{id}` sends as `ETag` and `If-Match` is compared to.
pub fn site_etag(site: &SiteRecord) -> String {
    aero_shared::etag::etag_of(site)
}

/// A staff account's entity tag. Every change to the account bumps its token version, so the
/// version alone tells one state from the next.
pub fn user_etag(user: &UserRecord) -> String {
    format!("\"{}.{}\"", user.id.simple(), user.token_version)
}

/// Which of a staff account's fields to change; `None` keeps the stored value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserChanges {
    pub role: Option<Role>,
    /// Replaces the account's sites.
    pub site_ids: Option<Vec<Uuid>>,
    /// An argon2id hash of the new password.
    pub password_hash: Option<String>,
    /// `true` disables the account (keeping an earlier `disabled_at`), `false` enables it.
    pub disabled: Option<bool>,
}

impl UserChanges {
    /// The account after these changes with its token version bumped, or `None` when they
    /// change nothing. Decided here once, so both backends write the same record: a change to
    /// a chain-wide role drops the account's sites unless new ones are named (which the HQ
    /// route refuses), and sites are kept sorted and unique.
    pub fn apply(&self, current: &UserRecord, at: DateTime<Utc>) -> Option<UserRecord> {
        let role = self.role.unwrap_or(current.role);
        let mut site_ids = match (&self.site_ids, self.role) {
            (Some(sites), _) => sites.clone(),
            (None, Some(role)) if role.is_chain_wide() => Vec::new(),
            (None, _) => current.site_ids.clone(),
        };
        site_ids.sort();
        site_ids.dedup();
        let disabled_at = match self.disabled {
            Some(true) => current.disabled_at.or(Some(at)),
            Some(false) => None,
            None => current.disabled_at,
        };
        let password_hash = self
            .password_hash
            .clone()
            .unwrap_or_else(|| current.password_hash.clone());
        let updated = UserRecord {
            role,
            site_ids,
            disabled_at,
            password_hash,
            ..current.clone()
        };
        (updated != *current).then(|| UserRecord {
            token_version: current.token_version + 1,
            ..updated
        })
    }
}

/// Where a change to a staff account replicates: every site it had and has, so an edge it was
/// removed from learns so too; chain-wide (`None`) when either side is chain-wide or has no
/// site, since every edge may hold the record then.
pub fn user_change_scopes(before: &UserRecord, after: &UserRecord) -> Vec<Option<Uuid>> {
    let scoped = |u: &UserRecord| !u.role.is_chain_wide() && !u.site_ids.is_empty();
    if !scoped(before) || !scoped(after) {
        return vec![None];
    }
    let mut sites: Vec<Uuid> = before
        .site_ids
        .iter()
        .chain(&after.site_ids)
        .copied()
        .collect();
    sites.sort();
    sites.dedup();
    sites.into_iter().map(Some).collect()
}

/// Everything central persists. Every HQ-side write appends to the change log and the audit
/// log in its own transaction; `push` applies a whole batch in one transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Cheap liveness check of the database, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// The random id this database was given when it was created. A restored backup keeps it;
    /// another chain's database has another one, and edges refuse to sync with it.
    fn store_id(&self) -> Uuid;

    // Sites.
    async fn create_site(&self, actor: &Actor, site: &SiteRecord) -> StoreResult<()>;
    /// Sites by name, then id: at most `limit` after `after`.
    async fn list_sites(&self, after: Option<&NameKey>, limit: u32)
    -> StoreResult<Vec<SiteRecord>>;
    async fn get_site(&self, id: Uuid) -> StoreResult<Option<SiteRecord>>;
    /// Changes the fields of a site that `changes` names, and only those columns, if the
    /// stored site's entity tag is admitted by `if_match`; audits `site.update` and replicates
    /// the stored row to the site, in one transaction, and returns it. `NotFound` if there is
    /// no such site, `PreconditionFailed` (writing nothing) if the tag is not admitted.
    /// Changes that leave the site as it is write nothing (so a retried update is a no-op).
    async fn update_site(
        &self,
        actor: &Actor,
        id: Uuid,
        changes: &SiteChanges,
        if_match: &IfMatch,
        at: DateTime<Utc>,
    ) -> StoreResult<SiteRecord>;

    // Enrollment.
    async fn create_enrollment_token(
        &self,
        actor: &Actor,
        token: &EnrollmentToken,
    ) -> StoreResult<()>;
    /// Atomically consumes the token, creates the edge's device credential and revokes every
    /// earlier edge credential of the site (a new enrollment fences the previous box).
    async fn redeem_enrollment_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        edge: &DeviceRecord,
    ) -> StoreResult<Redeemed>;

    // Devices.
    async fn create_device(&self, actor: &Actor, device: &DeviceRecord) -> StoreResult<()>;
    async fn get_device(&self, id: Uuid) -> StoreResult<Option<DeviceRecord>>;
    /// The site's devices by creation time, then id: at most `limit` after `after`.
    async fn list_devices(
        &self,
        site_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<DeviceRecord>>;
    /// The live device for a key hash (revoked devices are not returned).
    async fn device_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<DeviceRecord>>;
    /// Returns false if the device was already revoked.
    async fn revoke_device(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;

    // Staff users.
    async fn create_user(&self, actor: &Actor, user: &UserRecord) -> StoreResult<()>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Users by username, then id: at most `limit` after `after`.
    async fn list_users(&self, after: Option<&NameKey>, limit: u32)
    -> StoreResult<Vec<UserRecord>>;
    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>>;
    /// Disables a user (the row stays, with `disabled_at`), audits `user.disable` and replicates
    /// the record to each of the user's sites (chain-wide for owners and admins), in one
    /// transaction. Returns false, writing nothing, if the user is unknown or already disabled.
    async fn disable_user(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Applies `changes` (see [`UserChanges::apply`]) to the user whose token version is still
    /// `expected_version`, bumping it, auditing `user.update` and replicating the record to
    /// every site the account had or now has (chain-wide if either side is), in one
    /// transaction; returns the stored record. `NotFound` if there is no such user,
    /// `PreconditionFailed` (writing nothing) if its version moved. Changes that change
    /// nothing write nothing and return the record as it is.
    async fn update_user(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_version: i64,
        changes: &UserChanges,
        at: DateTime<Utc>,
    ) -> StoreResult<UserRecord>;
    /// The user's token version, `None` if the user is unknown or disabled: what every staff
    /// request is checked against.
    async fn user_token_version(&self, id: Uuid) -> StoreResult<Option<i64>>;

    // Catalog.
    async fn create_product(&self, actor: &Actor, product: &ProductRecord) -> StoreResult<()>;
    /// Products by SKU, then id: at most `limit` after `after`.
    async fn list_products(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<ProductRecord>>;
    /// Retires a product (`active = false`: no longer sold, still listed, old orders still name
    /// it), audits `product.retire` and replicates the stored row chain-wide, in one
    /// transaction; returns the stored product. `NotFound` if there is no such product.
    /// Retiring a retired product changes nothing and appends nothing.
    async fn retire_product(
        &self,
        actor: &Actor,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<ProductRecord>;
    async fn create_game(&self, actor: &Actor, game: &GameRecord) -> StoreResult<()>;
    /// Games by name, then id: at most `limit` after `after`.
    async fn list_games(&self, after: Option<&NameKey>, limit: u32)
    -> StoreResult<Vec<GameRecord>>;

    // Waiver texts.
    /// Publishes `draft` as the next version of the waiver text (one more than the highest the
    /// chain holds, 1 for the first), audits `waiver_text.published` and replicates the record
    /// chain-wide, in one transaction; returns the stored record. Concurrent publications get
    /// distinct versions: each backend serialises them, and a unique constraint on the version
    /// backs that up (a publication that loses the race is retried within the store's deadline).
    async fn publish_waiver_text(
        &self,
        actor: &Actor,
        draft: &WaiverTextDraft,
    ) -> StoreResult<WaiverTextRecord>;
    /// Waiver texts, newest version first: at most `limit` with a version below `before`.
    async fn list_waiver_texts(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WaiverTextRecord>>;

    // Plugs and schedules (data only; the edge drives the plugs).
    async fn create_plug(&self, actor: &Actor, plug: &PlugRecord) -> StoreResult<()>;
    async fn get_plug(&self, id: Uuid) -> StoreResult<Option<PlugRecord>>;
    /// The site's plugs by name, then id: at most `limit` after `after`.
    async fn list_plugs(
        &self,
        site_id: Uuid,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<PlugRecord>>;
    /// Sets an override at HQ: stored, audited and replicated to the plug's site.
    async fn create_plug_override(
        &self,
        actor: &Actor,
        set: &PlugOverrideRecord,
    ) -> StoreResult<()>;
    /// The plug's overrides, from HQ and its venue, the one set last first (by `set_at`,
    /// then id, descending): at most `limit` after `after`.
    async fn plug_overrides(
        &self,
        plug_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<PlugOverrideRecord>>;
    /// What the site's venue last reported of each of its plugs (plugs it never reported on
    /// have none).
    async fn plug_statuses(&self, site_id: Uuid) -> StoreResult<Vec<PlugStatusRecord>>;
    async fn create_schedule(&self, actor: &Actor, schedule: &ScheduleRecord) -> StoreResult<()>;
    /// The plug's schedules by creation time, then id: at most `limit` after `after`.
    async fn list_schedules(
        &self,
        plug_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>>;

    // Audit log.
    /// The newest `limit` entries `filter` chooses, newest first.
    async fn list_audit(&self, filter: &AuditFilter, limit: u32) -> StoreResult<Vec<AuditEntry>>;

    // Change feed and sync.
    /// Changes visible to `site_id` (chain-wide plus its own) after `after`, in seq order,
    /// at most `limit` rows and roughly `max_bytes` of data (always at least one row).
    async fn pull(
        &self,
        site_id: Uuid,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Vec<Change>>;
    /// The highest seq in the change log (0 when empty).
    async fn change_head(&self) -> StoreResult<i64>;
    /// The seq and scope of each change after `after`, in seq order, at most `limit`: which
    /// venues a change hint concerns (see `crate::hints`).
    async fn change_scopes(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeScope>>;
    /// The change at `seq` if it is in `site_id`'s scope, for an edge to check its cursor.
    async fn change_anchor(&self, site_id: Uuid, seq: i64) -> StoreResult<Option<ChangeAnchor>>;
    /// The highest contiguous seq central holds for the site (0 before its first push).
    async fn acked_seq(&self, site_id: Uuid) -> StoreResult<i64>;
    /// The ops central refused for good from the site in `state`, newest first, each with the
    /// venue's resolution once it was recorded (see [`VenueWrite::DeadLetterResolved`]): at
    /// most `limit` with a seq below `before`.
    async fn rejected_ops(
        &self,
        site_id: Uuid,
        state: DeadLetterState,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RejectedOpRecord>>;
    /// Records HQ's request that a site retry or discard one of its dead letters, audits it
    /// and queues it in the site's change feed, in one transaction. `NotFound` if central
    /// refused no such op from the site; `Conflict` once the venue has resolved it.
    async fn request_dead_letter_action(
        &self,
        actor: &Actor,
        request: &DeadLetterRequest,
    ) -> StoreResult<()>;
    /// Records a site's pull, for HQ's view of its health, with what the edge said of its
    /// outbox (kept as it was when the edge said nothing).
    async fn record_pull(
        &self,
        site_id: Uuid,
        cursor: i64,
        at: DateTime<Utc>,
        outbox: Option<OutboxBacklog>,
    ) -> StoreResult<()>;
    /// Applies a batch by the rules of [`push_rules`], in one transaction.
    async fn push(
        &self,
        site_id: Uuid,
        ops: &[PushOp],
        at: DateTime<Utc>,
    ) -> StoreResult<PushOutcome>;
    async fn site_sync(&self, site_id: Uuid) -> StoreResult<SiteSyncStatus>;
    /// Records what this instance heard of a site's change-hint socket at `at`: `Heard` moves
    /// `hint_seen_at` forward (never back), `Closed` sets `hint_closed_at`.
    async fn record_hint_socket(
        &self,
        site_id: Uuid,
        event: HintSocketEvent,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    // Chain-wide venue data (HQ-side reads and the data pushed by edges).
    async fn get_customer(&self, id: Uuid) -> StoreResult<Option<CustomerRecord>>;
    async fn customers_by_phone(&self, phone: &str) -> StoreResult<Vec<CustomerRecord>>;
    async fn count_customers(&self) -> StoreResult<i64>;
    async fn waivers_for(&self, customer_id: Uuid) -> StoreResult<Vec<WaiverRecord>>;
    /// Customers matching `search` (by last name, first name, id: at most `limit` after
    /// `after`), each with their balances at `now`.
    async fn search_customers(
        &self,
        search: &CustomerSearch,
        after: Option<&CustomerKey>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<CustomerBalances>>;

    // Reports (the rules are in [`reports`]). A day is `[from, to)` in UTC.
    async fn daily_report(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<DailyReport>;
    /// Sorted by [`reports::sort_sales`].
    async fn sales_by_product(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ProductSales>>;
    /// The site's check-ins created in each interval `[bounds[i], bounds[i + 1])`: one count
    /// per interval (none for fewer than two bounds). Bounds are increasing.
    async fn checkins_between(
        &self,
        site_id: Uuid,
        bounds: &[DateTime<Utc>],
    ) -> StoreResult<Vec<i64>>;
    /// Every balance below zero at `now`, lowest first (then by customer id and account).
    async fn negative_balances(&self, now: DateTime<Utc>) -> StoreResult<Vec<NegativeBalance>>;
    /// Ranked best first.
    async fn leaderboard(&self, query: &LeaderboardQuery) -> StoreResult<Vec<LeaderboardEntry>>;

    // Idempotency keys of HQ POSTs. Every write method records the idempotent request it serves
    // (see `aero_shared::idempotency::current_request`) in its own transaction.
    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Begin>;
    /// Stores a started request's answer, unless its writes recorded one already.
    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()>;
    async fn idempotency_release(&self, scope: &str, key: &str) -> StoreResult<()>;
    /// Deletes keys created before `before`; returns how many.
    async fn idempotency_purge(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Where a database URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An ADO.NET connection string (`server=...`).
    SqlServer,
    /// A SQLite file.
    Sqlite(PathBuf),
}

/// Reads a database URL: an ADO.NET string (`server=...`) selects SQL Server, `sqlite://PATH`
/// or a bare path selects SQLite; `None` is `central.db` in the data directory.
pub fn locate(database_url: Option<&str>, data_dir: &Path) -> Location {
    match database_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) if mssql::is_ado_connection_string(url) => Location::SqlServer,
        Some(url) => Location::Sqlite(PathBuf::from(url.strip_prefix("sqlite://").unwrap_or(url))),
        None => Location::Sqlite(data_dir.join("central.db")),
    }
}

/// Opens the store a database URL names (see [`locate`]).
pub async fn open(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    match locate(database_url, data_dir) {
        Location::SqlServer => {
            let url = database_url.map(str::trim).unwrap_or_default();
            Ok(Arc::new(mssql::MssqlStore::connect(url).await?))
        }
        Location::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(&path)?)),
    }
}

/// A venue write carried by a pushed op, decoded and checked before either backend stores it.
#[derive(Clone, Debug, PartialEq)]
pub enum VenueWrite {
    Customer(CustomerRecord),
    Waiver(WaiverRecord),
    Order(OrderRecord),
    Refund(RefundRecord),
    LedgerEntry(LedgerEntry),
    Checkin(CheckinRecord),
    Score(ScoreRecord),
    /// The venue retried or discarded one of its refused ops: recorded on that op (last
    /// arrival wins), for HQ's view of the site's dead letters. Nothing is replicated.
    DeadLetterResolved {
        site_id: Uuid,
        resolution: DeadLetterResolution,
    },
    /// What the venue last saw of one of its plugs: kept as the plug's latest status (last
    /// arrival wins), for HQ's view of the site's plugs. Nothing is replicated.
    PlugStatus(PlugStatusRecord),
    /// A venue manager's override of one of the site's plugs: kept once, replicated back to
    /// the site (a rebuilt box gets it again) like HQ's own.
    PlugOverride(PlugOverrideRecord),
}

/// Longest name a dead-letter resolution may give for who decided.
const MAX_RESOLVER_CHARS: usize = 200;

/// Longest SKU and product name an order line may copy: the catalog's own limits.
const MAX_LINE_SKU_CHARS: usize = 40;
const MAX_LINE_NAME_CHARS: usize = 100;

impl VenueWrite {
    /// Decodes an op pushed by `site_id`. An `Err` is a permanent rejection with its reason:
    /// replaying the same op can never succeed, so it goes to the edge's dead letters.
    ///
    /// `known` is what central holds of what the op refers to, plus what earlier ops of the
    /// batch took (see [`push_rules::Known`]):
    /// - a new customer can only be registered by its home site, while any venue may edit a
    ///   known one (the home site stays the registering venue's);
    /// - orders, refunds, check-ins and scores are upserts and ledger entries ledger-appends,
    ///   each pushed only by the site it names;
    /// - they are written once and never edited: the same id again with the same content is a
    ///   no-op, with other content a rejection;
    /// - a refund needs its order at central and may not give back, per tender kind, more than
    ///   the order's tenders paid less earlier refunds; check-ins, scores and ledger entries
    ///   need their customer at central, and scores their game;
    /// - a dead-letter resolution must be about an op central refused from this site;
    /// - a waiver is pushed by the site that took it; the text version it names (if any) counts
    ///   from 1 and is kept as sent, not looked up: a venue only shows texts central published,
    ///   and refusing a signed waiver would lose the signature.
    pub fn decode(site_id: Uuid, op: &PushOp, known: &push_rules::Known) -> Result<Self, String> {
        use aero_shared::wire::{Entity, OpKind};
        let expected = match op.entity {
            Entity::LedgerEntry => OpKind::LedgerAppend,
            Entity::DeadLetter | Entity::PlugStatus => OpKind::Event,
            _ => OpKind::Upsert,
        };
        if op.kind != expected {
            return Err(format!(
                "{:?} ops are not accepted for {}",
                op.kind,
                op.entity.as_str()
            ));
        }
        let write = match op.entity {
            Entity::Customer => {
                let customer: CustomerRecord = record(op, "customer")?;
                Self::check_customer(&customer)?;
                if customer.id != op.entity_id {
                    return Err("customer id does not match the op's entity_id".into());
                }
                if !known.customers.contains(&customer.id) && customer.home_site_id != site_id {
                    return Err("a new customer can only be pushed by its home site".into());
                }
                Self::Customer(customer)
            }
            Entity::Waiver => {
                let waiver: WaiverRecord = record(op, "waiver")?;
                if waiver.id != op.entity_id {
                    return Err("waiver id does not match the op's entity_id".into());
                }
                if waiver.site_id != site_id {
                    return Err("a waiver can only be pushed by the site that took it".into());
                }
                if waiver.expires_at <= waiver.signed_at || waiver.signer_name.trim().is_empty() {
                    return Err(
                        "a waiver needs a signer and must expire after it was signed".into(),
                    );
                }
                if waiver.text_version.is_some_and(|v| v < 1) {
                    return Err("a waiver's text version counts from 1".into());
                }
                Self::Waiver(waiver)
            }
            Entity::Order => {
                let order: OrderRecord = record(op, "order")?;
                own_record(site_id, op, order.id, order.site_id, "order")?;
                if let Some(held) = known.orders.get(&order.id) {
                    return unchanged(held, &order, "order").map(|()| Self::Order(order));
                }
                Self::check_order(&order)?;
                Self::Order(order)
            }
            Entity::Refund => {
                let refund: RefundRecord = record(op, "refund")?;
                own_record(site_id, op, refund.id, refund.site_id, "refund")?;
                if let Some(held) = known.refunds.get(&refund.id) {
                    return unchanged(held, &refund, "refund").map(|()| Self::Refund(refund));
                }
                // Bounded before the sums of `check` are taken.
                if refund.tenders.len() > MAX_ORDER_LINES
                    || refund
                        .tenders
                        .iter()
                        .any(|t| t.amount_cents > MAX_AMOUNT_CENTS)
                {
                    return Err(format!(
                        "a refund gives back at most {MAX_ORDER_LINES} tenders of bounded amounts"
                    ));
                }
                let order = known.orders.get(&refund.order_id).ok_or_else(|| {
                    format!(
                        "refund of order {}, which central does not hold",
                        refund.order_id
                    )
                })?;
                let earlier = known.refunds_of(refund.order_id, refund.id);
                refund.check(order, &earlier)?;
                Self::Refund(refund)
            }
            Entity::LedgerEntry => {
                let entry: LedgerEntry = record(op, "ledger entry")?;
                own_record(site_id, op, entry.id, entry.site_id, "ledger entry")?;
                if let Some(held) = known.ledger_entries.get(&entry.id) {
                    return unchanged(held, &entry, "ledger entry")
                        .map(|()| Self::LedgerEntry(entry));
                }
                entry.check()?;
                known_customer(known, entry.customer_id, "ledger entry")?;
                Self::LedgerEntry(entry)
            }
            Entity::Checkin => {
                let checkin: CheckinRecord = record(op, "check-in")?;
                own_record(site_id, op, checkin.id, checkin.site_id, "check-in")?;
                if let Some(held) = known.checkins.get(&checkin.id) {
                    return unchanged(held, &checkin, "check-in").map(|()| Self::Checkin(checkin));
                }
                checkin.check()?;
                known_customer(known, checkin.customer_id, "check-in")?;
                Self::Checkin(checkin)
            }
            Entity::Score => {
                let score: ScoreRecord = record(op, "score")?;
                own_record(site_id, op, score.id, score.site_id, "score")?;
                if let Some(held) = known.scores.get(&score.id) {
                    return unchanged(held, &score, "score").map(|()| Self::Score(score));
                }
                score.check()?;
                if !known.games.contains(&score.game_id) {
                    return Err(format!(
                        "score for game {}, which central does not hold",
                        score.game_id
                    ));
                }
                known_customer(known, score.customer_id, "score")?;
                Self::Score(score)
            }
            Entity::DeadLetter => {
                let resolution: DeadLetterResolution = record(op, "dead-letter resolution")?;
                Self::check_resolution(&resolution)?;
                if resolution.op_id != op.entity_id {
                    return Err("resolved op id does not match the op's entity_id".into());
                }
                if !known.rejected_ops.contains(&resolution.op_id) {
                    return Err(format!(
                        "op {} is not an op central refused from this site",
                        resolution.op_id
                    ));
                }
                Self::DeadLetterResolved {
                    site_id,
                    resolution,
                }
            }
            Entity::PlugOverride => {
                let set: PlugOverrideRecord = record(op, "plug override")?;
                own_record(site_id, op, set.id, set.site_id, "plug override")?;
                if let Some(held) = known.plug_overrides.get(&set.id) {
                    return unchanged(held, &set, "plug override")
                        .map(|()| Self::PlugOverride(set));
                }
                set.check()?;
                if known.plugs.get(&set.plug_id) != Some(&site_id) {
                    return Err(format!(
                        "plug {} is not one of this site's plugs at central",
                        set.plug_id
                    ));
                }
                Self::PlugOverride(set)
            }
            Entity::PlugStatus => {
                let status: PlugStatusRecord = record(op, "plug status")?;
                own_record(site_id, op, status.plug_id, status.site_id, "plug status")?;
                if known.plugs.get(&status.plug_id) != Some(&site_id) {
                    return Err(format!(
                        "plug {} is not one of this site's plugs at central",
                        status.plug_id
                    ));
                }
                if status
                    .problem
                    .as_deref()
                    .is_some_and(|p| p.chars().count() > MAX_PLUG_PROBLEM_CHARS)
                {
                    return Err(format!(
                        "a plug status's problem is at most {MAX_PLUG_PROBLEM_CHARS} characters"
                    ));
                }
                Self::PlugStatus(status)
            }
            other => {
                return Err(format!(
                    "{} is owned by HQ and cannot be pushed",
                    other.as_str()
                ));
            }
        };
        Ok(write)
    }

    fn check_customer(customer: &CustomerRecord) -> Result<(), String> {
        let blank = |s: &str| s.trim().is_empty() || s.chars().count() > 100;
        if blank(&customer.first_name) || blank(&customer.last_name) {
            return Err("a customer needs a first and last name of at most 100 characters".into());
        }
        if customer.phone.as_deref().is_some_and(|p| p.len() > 32)
            || customer.email.as_deref().is_some_and(|e| e.len() > 254)
        {
            return Err("phone or email too long".into());
        }
        Ok(())
    }

    fn check_resolution(resolution: &DeadLetterResolution) -> Result<(), String> {
        let by = resolution.by.trim();
        if by.is_empty() || by.chars().count() > MAX_RESOLVER_CHARS {
            return Err(format!(
                "a dead-letter resolution names who decided, in at most {MAX_RESOLVER_CHARS} characters"
            ));
        }
        match (resolution.resolution, resolution.retried_as) {
            (Resolution::Retried, Some(new)) if new == resolution.op_id => {
                Err("an op cannot be retried as itself".into())
            }
            (Resolution::Retried, Some(_)) | (Resolution::Discarded, None) => Ok(()),
            (Resolution::Retried, None) => {
                Err("a retried op names the op it was retried as".into())
            }
            (Resolution::Discarded, Some(_)) => {
                Err("a discarded op was not retried as another op".into())
            }
        }
    }

    /// The order's own arithmetic, plus what central stores of its lines.
    fn check_order(order: &OrderRecord) -> Result<(), String> {
        for line in &order.lines {
            if line.sku.chars().count() > MAX_LINE_SKU_CHARS
                || line.name.chars().count() > MAX_LINE_NAME_CHARS
            {
                return Err(format!(
                    "an order line names its product in at most {MAX_LINE_SKU_CHARS} (sku) and \
                     {MAX_LINE_NAME_CHARS} (name) characters"
                ));
            }
        }
        // Bounded before the sums of `check` are taken.
        if order
            .tenders
            .iter()
            .any(|t| t.received_cents.is_some_and(|r| r > MAX_AMOUNT_CENTS))
        {
            return Err("cash received is a bounded amount".into());
        }
        order.check()
    }
}

fn record<T: serde::de::DeserializeOwned>(op: &PushOp, what: &str) -> Result<T, String> {
    serde_json::from_str(op.data.get()).map_err(|e| format!("invalid {what}: {e}"))
}

/// A venue record is pushed under its own id, by the site it names.
fn own_record(
    site_id: Uuid,
    op: &PushOp,
    id: Uuid,
    record_site: Uuid,
    what: &str,
) -> Result<(), String> {
    if id != op.entity_id {
        return Err(format!("{what} id does not match the op's entity_id"));
    }
    if record_site != site_id {
        return Err(format!(
            "a {what} can only be pushed by the site it belongs to"
        ));
    }
    Ok(())
}

/// A record central holds may arrive again (a dead letter retried, a box rebuilt), but never
/// changed.
fn unchanged<T: PartialEq>(held: &T, pushed: &T, what: &str) -> Result<(), String> {
    if held == pushed {
        Ok(())
    } else {
        Err(format!(
            "central already holds this {what} with other content; a {what} is never changed"
        ))
    }
}

fn known_customer(known: &push_rules::Known, customer_id: Uuid, what: &str) -> Result<(), String> {
    if known.customers.contains(&customer_id) {
        Ok(())
    } else {
        Err(format!(
            "{what} for customer {customer_id}, which central does not hold"
        ))
    }
}

/// What an instance of central heard of a venue's change-hint socket (see
/// [`Store::record_hint_socket`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintSocketEvent {
    /// The socket connected, or answered a ping.
    Heard,
    /// The socket closed; `at` is when it was last heard.
    Closed,
}

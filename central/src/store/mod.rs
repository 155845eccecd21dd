//! The central store: one trait speaking domain types, with a SQLite backend (the default) and
//! a SQL Server backend (production), chosen by the database URL.

pub mod mssql;
pub mod push_rules;
pub mod sqlite;

use aero_shared::idempotency::{Begin, StoredResponse};
use aero_shared::wire::{
    Change, ChangeAnchor, CustomerRecord, DeviceRecord, GameRecord, PlugRecord, ProductRecord,
    PushOp, RejectedOp, ScheduleRecord, SiteRecord, SiteSyncStatus, UserRecord, WaiverRecord,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use std::path::Path;
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

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub site_id: Option<Uuid>,
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

/// An op central refused for good, as HQ sees it per venue.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RejectedOpRecord {
    pub seq: i64,
    pub op_id: Uuid,
    pub reason: String,
    pub rejected_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyReport {
    pub orders: i64,
    pub revenue_cents: i64,
    pub checkins: i64,
    pub new_customers: i64,
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
    async fn list_sites(&self) -> StoreResult<Vec<SiteRecord>>;
    async fn get_site(&self, id: Uuid) -> StoreResult<Option<SiteRecord>>;
    /// Replaces a site's name, timezone and allowed networks (its id and `created_at` stay),
    /// audits `site.update` and replicates the stored row to the site, in one transaction.
    /// `NotFound` if there is no such site. Writing the values the site already has changes
    /// nothing and appends nothing (so a retried update is a no-op).
    async fn update_site(
        &self,
        actor: &Actor,
        site: &SiteRecord,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

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
    async fn list_devices(&self, site_id: Uuid) -> StoreResult<Vec<DeviceRecord>>;
    /// The live device for a key hash (revoked devices are not returned).
    async fn device_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<DeviceRecord>>;
    /// Returns false if the device was already revoked.
    async fn revoke_device(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;

    // Staff users.
    async fn create_user(&self, actor: &Actor, user: &UserRecord) -> StoreResult<()>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>>;
    /// Disables a user (the row stays, with `disabled_at`), audits `user.disable` and replicates
    /// the record to each of the user's sites (chain-wide for owners and admins), in one
    /// transaction. Returns false, writing nothing, if the user is unknown or already disabled.
    async fn disable_user(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;

    // Catalog.
    async fn create_product(&self, actor: &Actor, product: &ProductRecord) -> StoreResult<()>;
    async fn list_products(&self) -> StoreResult<Vec<ProductRecord>>;
    async fn create_game(&self, actor: &Actor, game: &GameRecord) -> StoreResult<()>;
    async fn list_games(&self) -> StoreResult<Vec<GameRecord>>;

    // Plugs and schedules (data only; the edge drives the plugs).
    async fn create_plug(&self, actor: &Actor, plug: &PlugRecord) -> StoreResult<()>;
    async fn get_plug(&self, id: Uuid) -> StoreResult<Option<PlugRecord>>;
    async fn list_plugs(&self, site_id: Uuid) -> StoreResult<Vec<PlugRecord>>;
    async fn create_schedule(&self, actor: &Actor, schedule: &ScheduleRecord) -> StoreResult<()>;
    async fn list_schedules(&self, plug_id: Uuid) -> StoreResult<Vec<ScheduleRecord>>;

    // Audit log, newest first.
    async fn list_audit(&self, site_id: Option<Uuid>, limit: u32) -> StoreResult<Vec<AuditEntry>>;

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
    /// The change at `seq` if it is in `site_id`'s scope, for an edge to check its cursor.
    async fn change_anchor(&self, site_id: Uuid, seq: i64) -> StoreResult<Option<ChangeAnchor>>;
    /// The highest contiguous seq central holds for the site (0 before its first push).
    async fn acked_seq(&self, site_id: Uuid) -> StoreResult<i64>;
    /// The ops central refused for good from the site, newest first.
    async fn rejected_ops(&self, site_id: Uuid, limit: u32) -> StoreResult<Vec<RejectedOpRecord>>;
    /// Records a site's pull, for HQ's view of its health.
    async fn record_pull(&self, site_id: Uuid, cursor: i64, at: DateTime<Utc>) -> StoreResult<()>;
    /// Applies a batch by the rules of [`push_rules`], in one transaction.
    async fn push(
        &self,
        site_id: Uuid,
        ops: &[PushOp],
        at: DateTime<Utc>,
    ) -> StoreResult<PushOutcome>;
    async fn site_sync(&self, site_id: Uuid) -> StoreResult<SiteSyncStatus>;

    // Chain-wide venue data (HQ-side reads and the data pushed by edges).
    async fn get_customer(&self, id: Uuid) -> StoreResult<Option<CustomerRecord>>;
    async fn customers_by_phone(&self, phone: &str) -> StoreResult<Vec<CustomerRecord>>;
    async fn count_customers(&self) -> StoreResult<i64>;
    async fn waivers_for(&self, customer_id: Uuid) -> StoreResult<Vec<WaiverRecord>>;
    async fn daily_report(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<DailyReport>;

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

/// Opens the store a database URL names: an ADO.NET string (`server=...`) selects SQL Server,
/// `sqlite://PATH` or a bare path selects SQLite; `None` is `central.db` in the data directory.
pub async fn open(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    match database_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) if mssql::is_ado_connection_string(url) => {
            Ok(Arc::new(mssql::MssqlStore::connect(url).await?))
        }
        Some(url) => {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            Ok(Arc::new(sqlite::SqliteStore::open(Path::new(path))?))
        }
        None => Ok(Arc::new(sqlite::SqliteStore::open(
            &data_dir.join("central.db"),
        )?)),
    }
}

/// A venue write carried by a pushed op, decoded and checked before either backend stores it.
#[derive(Clone, Debug, PartialEq)]
pub enum VenueWrite {
    Customer(CustomerRecord),
    Waiver(WaiverRecord),
}

impl VenueWrite {
    /// Decodes an op pushed by `site_id`. An `Err` is a permanent rejection with its reason:
    /// replaying the same op can never succeed, so it goes to the edge's dead letters.
    ///
    /// `known_customer` says whether central already holds the customer the op is about: a new
    /// customer can only be registered by its home site, while any venue may edit a known one
    /// (the home site stays the registering venue's).
    pub fn decode(site_id: Uuid, op: &PushOp, known_customer: bool) -> Result<Self, String> {
        use aero_shared::wire::{Entity, OpKind};
        if op.kind != OpKind::Upsert {
            return Err(format!(
                "{:?} ops are not accepted for {}",
                op.kind,
                op.entity.as_str()
            ));
        }
        let write = match op.entity {
            Entity::Customer => {
                let customer: CustomerRecord = serde_json::from_value(op.data.clone())
                    .map_err(|e| format!("invalid customer: {e}"))?;
                Self::check_customer(&customer)?;
                if customer.id != op.entity_id {
                    return Err("customer id does not match the op's entity_id".into());
                }
                if !known_customer && customer.home_site_id != site_id {
                    return Err("a new customer can only be pushed by its home site".into());
                }
                Self::Customer(customer)
            }
            Entity::Waiver => {
                let waiver: WaiverRecord = serde_json::from_value(op.data.clone())
                    .map_err(|e| format!("invalid waiver: {e}"))?;
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
                Self::Waiver(waiver)
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
}

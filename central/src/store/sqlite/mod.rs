//! The SQLite backend: one file in WAL mode, one writer connection (so change-log order is
//! commit order) and a few reader connections, driven from blocking threads.
//!
//! This file holds the store, its opening and migrations, and the `Store` impl, which only
//! delegates. Split by concern: `conn` (opening connections, the readers, `write` and `read`
//! running work on a blocking thread, `exec`), `errors` (what an SQLite error means to the
//! store), `codec` (values and rows), `changelog` (audit and change log), `pages` (keyset
//! pages), `sync` (push, pull and the change feed), `venue` (the venue records edges push),
//! `reports` (HQ's reads of them), `dead_letters` (what HQ sees and asks of a venue's refused
//! ops), `idempotency` (idempotency keys), then one file per entity (`waiver_texts`, the
//! versions of the waiver's wording, among them).

mod audit_log;
mod catalog;
mod changelog;
mod codec;
mod conn;
mod customers;
mod dead_letters;
mod devices;
mod enrollment;
mod errors;
mod idempotency;
mod pages;
mod plugs;
mod reports;
mod sites;
mod sync;
mod users;
mod venue;
mod waiver_texts;

use super::{
    Actor, AuditEntry, AuditFilter, ChangeScope, CustomerBalances, CustomerKey, CustomerSearch,
    DailyReport, DeadLetterState, EnrollmentToken, HintSocketEvent, LeaderboardEntry,
    LeaderboardQuery, NameKey, NegativeBalance, ProductSales, PushOutcome, Redeemed,
    RejectedOpRecord, SiteChanges, Store, StoreResult, TimeKey, UserChanges, WaiverTextDraft,
};
use aero_shared::etag::IfMatch;
use aero_shared::idempotency::{Begin, StoredResponse};
use aero_shared::wire::{
    Change, ChangeAnchor, CustomerRecord, DeadLetterRequest, DeviceRecord, GameRecord,
    OutboxBacklog, PlugOverrideRecord, PlugRecord, PlugStatusRecord, ProductRecord, PushOp,
    ScheduleRecord, SiteRecord, SiteSyncStatus, UserRecord, WaiverRecord, WaiverTextRecord,
};
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conn::READERS;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

pub(crate) use conn::open_connection;

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

pub struct SqliteStore {
    path: PathBuf,
    /// The only connection that writes: SQLite serialises writers anyway, and holding one
    /// connection makes the change log's seq order equal to commit order.
    writer: Arc<Mutex<Connection>>,
    /// Readers see committed snapshots (WAL) and never wait for the writer.
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Read once at open: it never changes for the life of a database.
    store_id: Uuid,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut writer = open_connection(path)?;
        embedded::migrations::runner()
            .run(&mut writer)
            .context("migrating the central SQLite database")?;
        let readers = (0..READERS)
            .map(|_| open_connection(path))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let store_id = writer
            .query_row("SELECT store_id FROM store_meta WHERE id = 1", [], |r| {
                r.get(0)
            })
            .context("reading the store id")?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(readers)),
            store_id,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    fn store_id(&self) -> Uuid {
        self.store_id
    }

    // -- Sites ------------------------------------------------------------------------------

    async fn create_site(&self, actor: &Actor, site: &SiteRecord) -> StoreResult<()> {
        sites::create(self, actor, site).await
    }

    async fn list_sites(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<SiteRecord>> {
        sites::list(self, after, limit).await
    }

    async fn get_site(&self, id: Uuid) -> StoreResult<Option<SiteRecord>> {
        sites::get(self, id).await
    }

    async fn update_site(
        &self,
        actor: &Actor,
        id: Uuid,
        changes: &SiteChanges,
        if_match: &IfMatch,
        at: DateTime<Utc>,
    ) -> StoreResult<SiteRecord> {
        sites::update(self, actor, id, changes, if_match, at).await
    }

    // -- Enrollment -------------------------------------------------------------------------

    async fn create_enrollment_token(
        &self,
        actor: &Actor,
        token: &EnrollmentToken,
    ) -> StoreResult<()> {
        enrollment::create_token(self, actor, token).await
    }

    async fn redeem_enrollment_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        edge: &DeviceRecord,
    ) -> StoreResult<Redeemed> {
        enrollment::redeem(self, token_hash, now, edge).await
    }

    // -- Devices ----------------------------------------------------------------------------

    async fn create_device(&self, actor: &Actor, device: &DeviceRecord) -> StoreResult<()> {
        devices::create(self, actor, device).await
    }

    async fn get_device(&self, id: Uuid) -> StoreResult<Option<DeviceRecord>> {
        devices::get(self, id).await
    }

    async fn list_devices(
        &self,
        site_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<DeviceRecord>> {
        devices::list(self, site_id, after, limit).await
    }

    async fn device_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<DeviceRecord>> {
        devices::by_key_hash(self, key_hash).await
    }

    async fn revoke_device(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        devices::revoke(self, actor, id, at).await
    }

    // -- Staff users ------------------------------------------------------------------------

    async fn create_user(&self, actor: &Actor, user: &UserRecord) -> StoreResult<()> {
        users::create(self, actor, user).await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        users::by_username(self, username).await
    }

    async fn list_users(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<UserRecord>> {
        users::list(self, after, limit).await
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        users::get(self, id).await
    }

    async fn disable_user(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        users::disable(self, actor, id, at).await
    }

    async fn update_user(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_version: i64,
        changes: &UserChanges,
        at: DateTime<Utc>,
    ) -> StoreResult<UserRecord> {
        users::update(self, actor, id, expected_version, changes, at).await
    }

    async fn user_token_version(&self, id: Uuid) -> StoreResult<Option<i64>> {
        users::token_version(self, id).await
    }

    // -- Catalog ----------------------------------------------------------------------------

    async fn create_product(&self, actor: &Actor, product: &ProductRecord) -> StoreResult<()> {
        catalog::create_product(self, actor, product).await
    }

    async fn list_products(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<ProductRecord>> {
        catalog::list_products(self, after, limit).await
    }

    async fn retire_product(
        &self,
        actor: &Actor,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<ProductRecord> {
        catalog::retire_product(self, actor, id, at).await
    }

    async fn create_game(&self, actor: &Actor, game: &GameRecord) -> StoreResult<()> {
        catalog::create_game(self, actor, game).await
    }

    async fn list_games(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<GameRecord>> {
        catalog::list_games(self, after, limit).await
    }

    // -- Waiver texts -----------------------------------------------------------------------

    async fn publish_waiver_text(
        &self,
        actor: &Actor,
        draft: &WaiverTextDraft,
    ) -> StoreResult<WaiverTextRecord> {
        let (actor, draft) = (actor.clone(), draft.clone());
        self.write(move |tx| waiver_texts::publish(tx, &actor, &draft))
            .await
    }

    async fn list_waiver_texts(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WaiverTextRecord>> {
        self.read(move |c| waiver_texts::list(c, before, limit))
            .await
    }

    // -- Plugs and schedules ----------------------------------------------------------------

    async fn create_plug(&self, actor: &Actor, plug: &PlugRecord) -> StoreResult<()> {
        plugs::create(self, actor, plug).await
    }

    async fn get_plug(&self, id: Uuid) -> StoreResult<Option<PlugRecord>> {
        plugs::get(self, id).await
    }

    async fn list_plugs(
        &self,
        site_id: Uuid,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<PlugRecord>> {
        plugs::list(self, site_id, after, limit).await
    }

    async fn create_plug_override(
        &self,
        actor: &Actor,
        set: &PlugOverrideRecord,
    ) -> StoreResult<()> {
        plugs::create_override(self, actor, set).await
    }

    async fn plug_overrides(
        &self,
        plug_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<PlugOverrideRecord>> {
        plugs::overrides(self, plug_id, after, limit).await
    }

    async fn plug_statuses(&self, site_id: Uuid) -> StoreResult<Vec<PlugStatusRecord>> {
        plugs::statuses(self, site_id).await
    }

    async fn create_schedule(&self, actor: &Actor, schedule: &ScheduleRecord) -> StoreResult<()> {
        plugs::create_schedule(self, actor, schedule).await
    }

    async fn list_schedules(
        &self,
        plug_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>> {
        plugs::list_schedules(self, plug_id, after, limit).await
    }

    // -- Audit log --------------------------------------------------------------------------

    async fn list_audit(&self, filter: &AuditFilter, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        audit_log::list(self, filter, limit).await
    }

    // -- Change feed and sync ---------------------------------------------------------------

    async fn pull(
        &self,
        site_id: Uuid,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Vec<Change>> {
        sync::pull(self, site_id, after, limit, max_bytes).await
    }

    async fn change_head(&self) -> StoreResult<i64> {
        sync::change_head(self).await
    }

    async fn change_scopes(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeScope>> {
        sync::change_scopes(self, after, limit).await
    }

    async fn change_anchor(&self, site_id: Uuid, seq: i64) -> StoreResult<Option<ChangeAnchor>> {
        sync::change_anchor(self, site_id, seq).await
    }

    async fn acked_seq(&self, site_id: Uuid) -> StoreResult<i64> {
        sync::acked_seq(self, site_id).await
    }

    async fn rejected_ops(
        &self,
        site_id: Uuid,
        state: DeadLetterState,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RejectedOpRecord>> {
        self.read(move |c| dead_letters::rejected_ops(c, site_id, state, before, limit))
            .await
    }

    async fn request_dead_letter_action(
        &self,
        actor: &Actor,
        request: &DeadLetterRequest,
    ) -> StoreResult<()> {
        let (actor, request) = (actor.clone(), request.clone());
        self.write(move |tx| dead_letters::request_action(tx, &actor, &request))
            .await
    }

    async fn record_pull(
        &self,
        site_id: Uuid,
        cursor: i64,
        at: DateTime<Utc>,
        outbox: Option<OutboxBacklog>,
    ) -> StoreResult<()> {
        sync::record_pull(self, site_id, cursor, at, outbox).await
    }

    async fn push(
        &self,
        site_id: Uuid,
        ops: &[PushOp],
        at: DateTime<Utc>,
    ) -> StoreResult<PushOutcome> {
        sync::push(self, site_id, ops, at).await
    }

    async fn site_sync(&self, site_id: Uuid) -> StoreResult<SiteSyncStatus> {
        sync::site_sync(self, site_id).await
    }

    async fn record_hint_socket(
        &self,
        site_id: Uuid,
        event: HintSocketEvent,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sync::record_hint_socket(self, site_id, event, at).await
    }

    // -- Chain-wide venue data --------------------------------------------------------------

    async fn get_customer(&self, id: Uuid) -> StoreResult<Option<CustomerRecord>> {
        customers::get(self, id).await
    }

    async fn customers_by_phone(&self, phone: &str) -> StoreResult<Vec<CustomerRecord>> {
        customers::by_phone(self, phone).await
    }

    async fn count_customers(&self) -> StoreResult<i64> {
        customers::count(self).await
    }

    async fn waivers_for(&self, customer_id: Uuid) -> StoreResult<Vec<WaiverRecord>> {
        customers::waivers_for(self, customer_id).await
    }

    async fn search_customers(
        &self,
        search: &CustomerSearch,
        after: Option<&CustomerKey>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<CustomerBalances>> {
        let (search, after) = (search.clone(), after.cloned());
        self.read(move |c| reports::search_customers(c, &search, after.as_ref(), limit, now))
            .await
    }

    // -- Reports ----------------------------------------------------------------------------

    async fn daily_report(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<DailyReport> {
        self.read(move |c| reports::daily(c, site_id, from, to))
            .await
    }

    async fn sales_by_product(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ProductSales>> {
        self.read(move |c| reports::sales_by_product(c, site_id, from, to))
            .await
    }

    async fn checkins_between(
        &self,
        site_id: Uuid,
        bounds: &[DateTime<Utc>],
    ) -> StoreResult<Vec<i64>> {
        let bounds = bounds.to_vec();
        self.read(move |c| reports::checkins_between(c, site_id, &bounds))
            .await
    }

    async fn negative_balances(&self, now: DateTime<Utc>) -> StoreResult<Vec<NegativeBalance>> {
        self.read(move |c| reports::negative_balances(c, now)).await
    }

    async fn leaderboard(&self, query: &LeaderboardQuery) -> StoreResult<Vec<LeaderboardEntry>> {
        let query = query.clone();
        self.read(move |c| reports::leaderboard(c, &query)).await
    }

    // -- Idempotency keys -------------------------------------------------------------------

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Begin> {
        idempotency::begin(self, scope, key, fingerprint, now).await
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        idempotency::complete(self, scope, key, response).await
    }

    async fn idempotency_release(&self, scope: &str, key: &str) -> StoreResult<()> {
        idempotency::release(self, scope, key).await
    }

    async fn idempotency_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        idempotency::purge(self, before).await
    }
}

//! The SQL Server backend (SQL Server 2019+, Azure SQL, Babelfish for PostgreSQL): tiberius
//! connections in a bb8 pool, refinery migrations, and T-SQL kept to what all three run.
//!
//! Rules every statement here follows:
//! - values are always bound as `@P1`, `@P2`, ...; SQL text is only ever built from constants;
//! - times are bound as `NaiveDateTime` in UTC, truncated to whole milliseconds exactly like the
//!   SQLite store's text, so `DATETIME2(3)` stores them unrounded and they read back unchanged;
//! - a write is one explicit transaction under `XACT_ABORT ON`, committed on success and rolled
//!   back on error; a connection left in an unknown state (a cancelled request, an I/O error, a
//!   transaction that could not be closed) is dropped by the pool, never reused;
//! - transient failures (deadlock, lock timeout, a dropped connection, Azure SQL failover) are
//!   retried with jittered exponential backoff within a deadline; nothing else is.
//!
//! Split by concern: `conn` (connections, the pool, the transaction helper), `errors` (what a
//! server error means, retries), `codec` (values and rows), `changelog` (audit and change log),
//! `migrate` (schema migrations and the store's identity), `sync` (push, pull and the change
//! feed), `venue` (the venue records edges push), `reports` (HQ's reads of them), then one file
//! per entity (`waiver_texts` among them). The `Store` impl below only delegates to them.

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
mod migrate;
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
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conn::Manager;
use tiberius::Query;
use uuid::Uuid;

/// True when `url` is an ADO.NET connection string (`server=...` or `data source=...`), which
/// selects this backend; SQLite URLs and paths are not.
pub fn is_ado_connection_string(url: &str) -> bool {
    let url = url.trim();
    if url.starts_with("sqlite:") || url.starts_with("file:") {
        return false;
    }
    url.split(';').any(|pair| {
        pair.split_once('=').is_some_and(|(key, _)| {
            let key = key
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_lowercase();
            key == "server" || key == "data source"
        })
    })
}

pub struct MssqlStore {
    pool: bb8::Pool<Manager>,
    /// `host:port`, for diagnostics. The connection string (and its password) is not kept.
    server: String,
    /// Read once at start-up, after the migrations: it never changes for the life of a database.
    store_id: Uuid,
}

impl std::fmt::Debug for MssqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("MssqlStore")
            .field("server", &self.server)
            .field("store_id", &self.store_id)
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .finish()
    }
}

#[async_trait]
impl Store for MssqlStore {
    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.checkout().await?;
        conn.rows(Query::new("SELECT 1")).await.map(drop)
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
        waiver_texts::publish(self, actor, draft).await
    }

    async fn list_waiver_texts(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WaiverTextRecord>> {
        waiver_texts::list(self, before, limit).await
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
        dead_letters::rejected_ops(self, site_id, state, before, limit).await
    }

    async fn request_dead_letter_action(
        &self,
        actor: &Actor,
        request: &DeadLetterRequest,
    ) -> StoreResult<()> {
        dead_letters::request_action(self, actor, request).await
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
        customers::search(self, search, after, limit, now).await
    }

    // -- Reports ----------------------------------------------------------------------------

    async fn daily_report(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<DailyReport> {
        reports::daily(self, site_id, from, to).await
    }

    async fn sales_by_product(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ProductSales>> {
        reports::sales_by_product(self, site_id, from, to).await
    }

    async fn checkins_between(
        &self,
        site_id: Uuid,
        bounds: &[DateTime<Utc>],
    ) -> StoreResult<Vec<i64>> {
        reports::checkins_between(self, site_id, bounds).await
    }

    async fn negative_balances(&self, now: DateTime<Utc>) -> StoreResult<Vec<NegativeBalance>> {
        reports::negative_balances(self, now).await
    }

    async fn leaderboard(&self, query: &LeaderboardQuery) -> StoreResult<Vec<LeaderboardEntry>> {
        reports::leaderboard(self, query).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_ado_connection_strings() {
        for ado in [
            "server=tcp:localhost,1433;user=sa;password=P@ss;database=aero;encrypt=false",
            "Server=tcp:db.example.com,1433;Database=aero;User Id=aero;Password=x;TrustServerCertificate=true",
            "  SERVER = db ; database = aero",
            "Data Source=db.example.com;Initial Catalog=aero;User ID=aero;Password=x",
            "data  source=db;database=aero",
            "database=aero;server=db",
        ] {
            assert!(is_ado_connection_string(ado), "{ado}");
        }
        for other in [
            "",
            "central.db",
            "/var/lib/aero-central/central.db",
            "sqlite:///var/lib/aero-central/central.db",
            "sqlite://central.db",
            "file:central.db?mode=rwc",
            "/tmp/server=1/central.db",
            "mssql://db.example.com/aero",
            "servers=db;database=aero",
        ] {
            assert!(!is_ado_connection_string(other), "{other}");
        }
    }
}

//! The SQLite backend: one file in WAL mode, one writer connection (so change-log order is
//! commit order) and a few reader connections, driven from blocking threads.
//!
//! This file holds the connections, the codecs and the HQ-owned entities; `venue` stores the
//! venue records edges push, `reports` answers HQ's reads of them, `dead_letters` holds
//! what HQ sees and asks of a venue's refused ops and `waiver_texts` the versions of the
//! waiver's wording.

mod dead_letters;
mod pages;
mod reports;
mod venue;
mod waiver_texts;

use super::audit::{AuditValue, Dialect};
use super::push_rules::{self, Held, HeldOp, Lookup, Step};
use super::{
    Actor, AuditEntry, AuditEvent, AuditFilter, ChangeScope, CustomerBalances, CustomerKey,
    CustomerSearch, DailyReport, DeadLetterState, EnrollmentToken, HintSocketEvent,
    LeaderboardEntry, LeaderboardQuery, NameKey, NegativeBalance, ProductSales, PushOutcome,
    Redeemed, RejectedOpRecord, SiteChanges, Store, StoreError, StoreResult, TimeKey, UserChanges,
    VenueWrite, WaiverTextDraft, site_etag, user_change_scopes,
};
use aero_shared::etag::IfMatch;
use aero_shared::idempotency::{
    Begin, Decision, KEY_LIFETIME, KeyState, KeyedRequest, StoredResponse, current_request, decide,
};
use aero_shared::wire::{
    Change, ChangeAnchor, ChangeEntity, ChangeOp, CustomerRecord, DeadLetterRequest, DeviceRecord,
    Entity, GameRecord, Grant, OutboxBacklog, PlugOverrideRecord, PlugRecord, PlugStatusRecord,
    ProductRecord, PushOp, ScheduleRecord, SiteRecord, SiteSyncStatus, UserRecord, WaiverRecord,
    WaiverTextRecord,
};
use anyhow::Context;
use async_trait::async_trait;
use backon::{BlockingRetryable, ExponentialBuilder};
use chrono::{DateTime, SecondsFormat, Utc};
use pages::keyset_sql;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, ToSql, Transaction, params, params_from_iter,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

const READERS: usize = 4;

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

pub(crate) fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a write acknowledged to a caller survives power loss, not just a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
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

    /// Runs `work` in one write transaction on a blocking thread, retrying SQLITE_BUSY (another
    /// process holding the lock, e.g. the CLI) within a deadline.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        // The idempotent request this write serves (read here: task-locals stay on this task).
        let request = current_request();
        tokio::task::spawn_blocking(move || {
            let attempt = || {
                let mut conn = writer.lock().expect("writer mutex poisoned");
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(map_err)?;
                let out = work(&tx)?;
                if let Some(request) = &request {
                    record_request(&tx, request)?;
                }
                tx.commit().map_err(map_err)?;
                Ok(out)
            };
            attempt
                .retry(busy_backoff())
                .when(|e: &StoreError| matches!(e, StoreError::Transient(_)))
                .call()
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("store task failed: {e}")))?
    }

    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().expect("reader pool poisoned").pop();
            let conn = match conn {
                Some(conn) => conn,
                None => open_connection(&path)?,
            };
            let out = work(&conn);
            let mut pool = readers.lock().expect("reader pool poisoned");
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("store task failed: {e}")))?
    }
}

/// Records, in the transaction of its writes, that the idempotent request committed, with its
/// answer when the route declared one: a retry replays that answer (or, without one, is refused
/// rather than run again).
fn record_request(tx: &Transaction<'_>, request: &KeyedRequest) -> StoreResult<()> {
    let now = ts(Utc::now());
    match &request.answer {
        Some(answer) => exec(
            tx,
            "UPDATE idempotency_keys SET committed_at = ?3, status = ?4, content_type = ?5, body = ?6 WHERE scope = ?1 AND key = ?2",
            params![
                request.scope,
                request.key,
                now,
                answer.status().as_u16(),
                answer.content_type(),
                answer.body()
            ],
        )?,
        None => exec(
            tx,
            "UPDATE idempotency_keys SET committed_at = ?3 WHERE scope = ?1 AND key = ?2",
            params![request.scope, request.key, now],
        )?,
    };
    Ok(())
}

fn busy_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .with_total_delay(Some(Duration::from_secs(10)))
        .without_max_times()
}

fn map_err(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(failure, message) = &err {
        match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StoreError::Transient(err.to_string());
            }
            ErrorCode::ConstraintViolation
                if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                // "UNIQUE constraint failed: users.username" -> "username"
                let what = message
                    .as_deref()
                    .and_then(|m| m.rsplit(": ").next())
                    .map(|cols| {
                        cols.split(", ")
                            .map(|c| c.rsplit('.').next().unwrap_or(c))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| "record".to_string());
                return StoreError::Conflict(format!("{what} already exists"));
            }
            _ => {}
        }
    }
    StoreError::Other(err.into())
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        map_err(err)
    }
}

/// Executes through the connection's statement cache: the sync path runs the same few
/// statements for every pushed op.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(text: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
}

/// A time key as the text the columns hold, so the cursor compares as the rows sort.
fn time_key(key: Option<&TimeKey>) -> Option<(String, Uuid)> {
    key.map(|(at, id)| (ts(*at), *id))
}

/// Binds a cursor of a text (or time, see [`time_key`]) column and an id.
fn push_name_key<'a>(values: &mut Vec<&'a dyn ToSql>, after: &'a Option<(String, Uuid)>) {
    if let Some((text, id)) = after {
        values.push(text);
        values.push(id);
    }
}

fn parse_opt_ts(text: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_ts).transpose()
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    parse_json(&format!("\"{text}\""))
}

fn enum_text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(e.into()))
}

/// How the audit log's filter is spelled here: usernames compare ignoring case like the
/// `users.username` column.
const AUDIT_DIALECT: Dialect = Dialect {
    placeholder: |n| format!("?{n}"),
    ignore_case: " COLLATE NOCASE",
};

fn audit(
    tx: &Transaction<'_>,
    actor: &Actor,
    event: AuditEvent,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    exec(
 tx,
        "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            Uuid::now_v7(),
            ts(at),
            actor.kind,
            actor.id,
            actor.name,
            actor.ip.map(|ip| ip.to_string()),
            actor.request_id,
            event.action,
            event.target,
            event.site_id,
        ],
    )?;
    Ok(())
}

/// Appends the new state of a row to the change feed, inside the caller's transaction.
fn append_change<T: Serialize>(
    tx: &Transaction<'_>,
    entity: Entity,
    entity_id: Uuid,
    site_id: Option<Uuid>,
    record: &T,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO change_log (entity, entity_id, op, site_id, data, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entity.as_str(),
        entity_id,
        ChangeOp::Upsert.as_str(),
        site_id,
        json(record)?,
        ts(at)
    ])?;
    Ok(())
}

fn append_user_changes(
    tx: &Transaction<'_>,
    user: &UserRecord,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    for scope in user_change_scopes(user, user) {
        append_change(tx, Entity::User, user.id, scope, user, at)?;
    }
    Ok(())
}

fn site_from_row(row: &Row<'_>) -> rusqlite::Result<SiteRecord> {
    Ok(SiteRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        timezone: row.get(2)?,
        allowed_networks: parse_json(&row.get::<_, String>(3)?)?,
        created_at: parse_ts(&row.get::<_, String>(4)?)?,
    })
}

const DEVICE_COLUMNS: &str =
    "id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at";

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: row.get(0)?,
        site_id: row.get(1)?,
        name: row.get(2)?,
        kind: parse_enum(&row.get::<_, String>(3)?)?,
        allowed_networks: parse_json(&row.get::<_, String>(4)?)?,
        key_hash: row.get(5)?,
        created_at: parse_ts(&row.get::<_, String>(6)?)?,
        revoked_at: parse_opt_ts(row.get(7)?)?,
    })
}

fn insert_device(tx: &Transaction<'_>, d: &DeviceRecord) -> StoreResult<()> {
    exec(
 tx,
        "INSERT INTO devices (id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
        params![d.id, d.site_id, d.name, d.kind.as_str(), json(&d.allowed_networks)?, d.key_hash, ts(d.created_at)],
    )?;
    Ok(())
}

fn user_from_row(conn: &Connection, row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    let id: Uuid = row.get(0)?;
    let mut stmt =
        conn.prepare_cached("SELECT site_id FROM user_sites WHERE user_id = ?1 ORDER BY site_id")?;
    let site_ids = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<Uuid>>>()?;
    Ok(UserRecord {
        id,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        role: parse_enum(&row.get::<_, String>(3)?)?,
        site_ids,
        created_at: parse_ts(&row.get::<_, String>(4)?)?,
        disabled_at: parse_opt_ts(row.get(5)?)?,
        token_version: row.get(6)?,
    })
}

const PRODUCT_COLUMNS: &str = "id, sku, name, kind, price_cents, duration_minutes, active, created_at, grant_account, grant_amount, grant_period";

fn product_from_row(row: &Row<'_>) -> rusqlite::Result<ProductRecord> {
    Ok(ProductRecord {
        id: row.get(0)?,
        sku: row.get(1)?,
        name: row.get(2)?,
        kind: parse_enum(&row.get::<_, String>(3)?)?,
        price_cents: row.get(4)?,
        duration_minutes: row.get(5)?,
        grant: match (
            row.get::<_, Option<String>>(8)?,
            row.get::<_, Option<i64>>(9)?,
        ) {
            (Some(account), Some(amount)) => Some(Grant {
                account: parse_enum(&account)?,
                amount,
                per: row
                    .get::<_, Option<String>>(10)?
                    .map(|p| parse_enum(&p))
                    .transpose()?,
            }),
            _ => None,
        },
        active: row.get(6)?,
        created_at: parse_ts(&row.get::<_, String>(7)?)?,
    })
}

fn plug_from_row(row: &Row<'_>) -> rusqlite::Result<PlugRecord> {
    Ok(PlugRecord {
        id: row.get(0)?,
        site_id: row.get(1)?,
        name: row.get(2)?,
        host: row.get(3)?,
        port: row.get(4)?,
        child_id: row.get(5)?,
        created_at: parse_ts(&row.get::<_, String>(6)?)?,
    })
}

const CUSTOMER_COLUMNS: &str =
    "id, first_name, last_name, birth_date, phone, email, guardian_id, home_site_id, created_at";

fn customer_from_row(row: &Row<'_>) -> rusqlite::Result<CustomerRecord> {
    Ok(CustomerRecord {
        id: row.get(0)?,
        first_name: row.get(1)?,
        last_name: row.get(2)?,
        birth_date: row.get(3)?,
        phone: row.get(4)?,
        email: row.get(5)?,
        guardian_id: row.get(6)?,
        home_site_id: row.get(7)?,
        created_at: parse_ts(&row.get::<_, String>(8)?)?,
    })
}

/// Applies one accepted venue write, carried by the op `op_id`.
fn apply_venue_write(
    tx: &Transaction<'_>,
    op_id: Uuid,
    write: &VenueWrite,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    match write {
        VenueWrite::Customer(c) => {
            // Last arrival wins: central is the authority on a customer's final state.
            exec(
 tx,
                "INSERT INTO customers (id, first_name, last_name, birth_date, phone, email, guardian_id, home_site_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET first_name = excluded.first_name,
                    last_name = excluded.last_name, birth_date = excluded.birth_date,
                    phone = excluded.phone, email = excluded.email, guardian_id = excluded.guardian_id",
                params![c.id, c.first_name, c.last_name, c.birth_date, c.phone, c.email, c.guardian_id, c.home_site_id, ts(c.created_at)],
            )?;
            let stored = tx.query_row(
                &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?1"),
                [c.id],
                customer_from_row,
            )?;
            append_change(tx, Entity::Customer, c.id, None, &stored, at)
        }
        VenueWrite::Waiver(w) => {
            let inserted = exec(
                tx,
                "INSERT INTO waivers (id, customer_id, site_id, signer_name, signed_at, expires_at, text_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                params![
                    w.id,
                    w.customer_id,
                    w.site_id,
                    w.signer_name,
                    ts(w.signed_at),
                    ts(w.expires_at),
                    w.text_version
                ],
            )?;
            if inserted == 1 {
                append_change(tx, Entity::Waiver, w.id, None, w, at)?;
            }
            Ok(())
        }
        VenueWrite::DeadLetterResolved {
            site_id,
            resolution: r,
        } => {
            // Last arrival wins: a box restored from a backup may decide again about the same op.
            tx.prepare_cached(
                "INSERT INTO dead_letter_resolutions (site_id, op_id, resolution, retried_as,
                    resolved_by, resolved_at, resolution_op_id, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (site_id, op_id) DO UPDATE SET resolution = excluded.resolution,
                    retried_as = excluded.retried_as, resolved_by = excluded.resolved_by,
                    resolved_at = excluded.resolved_at, resolution_op_id = excluded.resolution_op_id,
                    recorded_at = excluded.recorded_at",
            )?
            .execute(params![
                site_id,
                r.op_id,
                r.resolution.as_str(),
                r.retried_as,
                r.by.trim(),
                ts(r.at),
                op_id,
                ts(at)
            ])?;
            Ok(())
        }
        VenueWrite::PlugStatus(s) => {
            // Last arrival wins: the venue pushes a plug's statuses in the order it saw them.
            tx.prepare_cached(
                "INSERT INTO plug_status (plug_id, site_id, observed_at, recorded_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (plug_id) DO UPDATE SET site_id = excluded.site_id,
                    observed_at = excluded.observed_at, recorded_at = excluded.recorded_at,
                    data = excluded.data",
            )?
            .execute(params![
                s.plug_id,
                s.site_id,
                ts(s.observed_at),
                ts(at),
                serde_json::to_string(s).map_err(anyhow::Error::from)?
            ])?;
            Ok(())
        }
        VenueWrite::PlugOverride(o) => venue::plug_override(tx, o, at),
        VenueWrite::Order(o) => venue::order(tx, o, at),
        VenueWrite::Refund(r) => venue::refund(tx, r, at),
        VenueWrite::LedgerEntry(e) => venue::ledger_entry(tx, e, at),
        VenueWrite::Checkin(c) => venue::checkin(tx, c, at),
        VenueWrite::Score(s) => venue::score(tx, s, at),
    }
}

/// Loads what central holds for a batch (see [`push_rules::Lookup`]).
fn held_for(tx: &Transaction<'_>, site_id: Uuid, ops: &[PushOp]) -> StoreResult<Held> {
    let acked: i64 = tx.query_row(
        "SELECT acked_seq FROM site_sync WHERE site_id = ?1",
        [site_id],
        |r| r.get(0),
    )?;
    let lookup = Lookup::of(ops);
    let mut held = Vec::new();
    let row_to_held = |r: &Row<'_>| {
        Ok(HeldOp {
            seq: r.get(0)?,
            op_id: r.get(1)?,
            rejected: r.get(2)?,
        })
    };
    let mut by_seq = tx.prepare_cached(
        "SELECT seq, op_id, rejected FROM applied_ops WHERE site_id = ?1 AND seq BETWEEN ?2 AND ?3",
    )?;
    for op in by_seq.query_map(
        params![site_id, lookup.first_seq, lookup.last_seq],
        row_to_held,
    )? {
        held.push(op?);
    }
    // Through the op_id index: with `ORDER BY seq` the planner would walk the site's whole
    // history in key order instead. The lowest seq (the original, not an alias) is chosen here.
    let mut by_id = tx.prepare_cached(
        "SELECT seq, op_id, rejected FROM applied_ops INDEXED BY applied_ops_op_id
          WHERE op_id = ?2 AND site_id = ?1",
    )?;
    let mut by_op_id = Vec::new();
    for op_id in &lookup.op_ids {
        let mut found: Option<HeldOp> = None;
        for op in by_id.query_map(params![site_id, op_id], row_to_held)? {
            let op = op?;
            if found.as_ref().is_none_or(|f| op.seq < f.seq) {
                found = Some(op);
            }
        }
        by_op_id.extend(found);
    }
    let mut known = Vec::new();
    let mut customer =
        tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM customers WHERE id = ?1)")?;
    for id in &lookup.customer_ids {
        if customer.query_row([id], |r| r.get::<_, bool>(0))? {
            known.push(*id);
        }
    }
    let mut refused = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM applied_ops INDEXED BY applied_ops_op_id
                         WHERE op_id = ?2 AND site_id = ?1 AND rejected IS NOT NULL)",
    )?;
    let mut rejected_ops = Vec::new();
    for &op_id in &lookup.resolved_op_ids {
        if refused.query_row(params![site_id, op_id], |r| r.get::<_, bool>(0))? {
            rejected_ops.push(op_id);
        }
    }
    let mut held = Held::new(acked, held, known);
    held.known.rejected_ops.extend(rejected_ops);
    venue::load_known(tx, &lookup, &mut held.known)?;
    // An op's original (lowest) seq is what identifies it; aliases are found by seq above.
    for op in by_op_id {
        held.by_op_id.insert(op.op_id, op);
    }
    Ok(held)
}

fn push_batch(
    tx: &Transaction<'_>,
    site_id: Uuid,
    ops: &[PushOp],
    at: DateTime<Utc>,
) -> StoreResult<PushOutcome> {
    exec(
        tx,
        "INSERT INTO site_sync (site_id) VALUES (?1) ON CONFLICT (site_id) DO NOTHING",
        [site_id],
    )?;
    let held = held_for(tx, site_id, ops)?;
    let plan = push_rules::plan(site_id, ops, &held, |_| Ok(()));
    for step in &plan.steps {
        let (seq, op_id, rejected) = match step {
            Step::Apply { seq, op_id, write } => {
                apply_venue_write(tx, *op_id, write, at)?;
                (*seq, *op_id, None)
            }
            Step::Reject { seq, op_id, reason } => (*seq, *op_id, Some(reason.as_str())),
            Step::Alias {
                seq,
                op_id,
                rejected,
            } => (*seq, *op_id, rejected.as_deref()),
        };
        tx.prepare_cached(
            "INSERT INTO applied_ops (site_id, seq, op_id, rejected, applied_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![site_id, seq, op_id, rejected, ts(at)])?;
    }
    exec(
        tx,
        "UPDATE site_sync SET acked_seq = ?2, last_push_at = ?3 WHERE site_id = ?1",
        params![site_id, plan.outcome.acked_seq, ts(at)],
    )?;
    Ok(plan.outcome)
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

    async fn create_site(&self, actor: &Actor, site: &SiteRecord) -> StoreResult<()> {
        let (actor, site) = (actor.clone(), site.clone());
        self.write(move |tx| {
            exec(
 tx,
                "INSERT INTO sites (id, name, timezone, allowed_networks, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![site.id, site.name, site.timezone, json(&site.allowed_networks)?, ts(site.created_at)],
            )?;
            exec(tx, "INSERT INTO site_sync (site_id) VALUES (?1)", [site.id])?;
            audit(tx, &actor, AuditEvent { action: "site.create", target: Some(site.id.to_string()), site_id: Some(site.id) }, site.created_at)?;
            append_change(tx, Entity::Site, site.id, Some(site.id), &site, site.created_at)
        })
        .await
    }

    async fn list_sites(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<SiteRecord>> {
        let after = after.cloned();
        self.read(move |c| {
            let sql = keyset_sql(
                "SELECT id, name, timezone, allowed_networks, created_at FROM sites",
                None,
                0,
                &["name", "id"],
                false,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt
                .query_map(params_from_iter(values), site_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn get_site(&self, id: Uuid) -> StoreResult<Option<SiteRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT id, name, timezone, allowed_networks, created_at FROM sites WHERE id = ?1",
                [id],
                site_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn update_site(
        &self,
        actor: &Actor,
        id: Uuid,
        changes: &SiteChanges,
        if_match: &IfMatch,
        at: DateTime<Utc>,
    ) -> StoreResult<SiteRecord> {
        let (actor, changes, if_match) = (actor.clone(), changes.clone(), if_match.clone());
        self.write(move |tx| {
            // The one writer connection serialises this read-compare-write against every other.
            let current = tx
                .query_row(
                    "SELECT id, name, timezone, allowed_networks, created_at FROM sites WHERE id = ?1",
                    [id],
                    site_from_row,
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if !if_match.admits(&site_etag(&current)) {
                return Err(StoreError::PreconditionFailed);
            }
            let Some(updated) = changes.apply(&current) else {
                return Ok(current);
            };
            // Only the columns sent: a concurrent edit of another field is never written back.
            let networks = changes.allowed_networks.as_ref().map(json).transpose()?;
            tx.execute(
                "UPDATE sites SET name = COALESCE(?2, name), timezone = COALESCE(?3, timezone),
                    allowed_networks = COALESCE(?4, allowed_networks) WHERE id = ?1",
                params![id, changes.name, changes.timezone, networks],
            )?;
            audit(tx, &actor, AuditEvent { action: "site.update", target: Some(id.to_string()), site_id: Some(id) }, at)?;
            append_change(tx, Entity::Site, id, Some(id), &updated, at)?;
            Ok(updated)
        })
        .await
    }

    async fn create_enrollment_token(
        &self,
        actor: &Actor,
        token: &EnrollmentToken,
    ) -> StoreResult<()> {
        let (actor, token) = (actor.clone(), token.clone());
        self.write(move |tx| {
            exec(
 tx,
                "INSERT INTO enrollment_tokens (id, site_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.id, token.site_id, token.token_hash, ts(token.created_at), ts(token.expires_at)],
            )?;
            audit(tx, &actor, AuditEvent { action: "enrollment_token.create", target: Some(token.id.to_string()), site_id: Some(token.site_id) }, token.created_at)
        })
        .await
    }

    async fn redeem_enrollment_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        edge: &DeviceRecord,
    ) -> StoreResult<Redeemed> {
        let (token_hash, edge) = (token_hash.to_string(), edge.clone());
        self.write(move |tx| {
            let token: Option<(Uuid, Uuid)> = tx
                .query_row(
                    "SELECT id, site_id FROM enrollment_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                    params![token_hash, ts(now)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((token_id, site_id)) = token else {
                return Ok(Redeemed::Refused);
            };
            let device = DeviceRecord { site_id, ..edge.clone() };
            exec(tx, "UPDATE enrollment_tokens SET used_at = ?2, device_id = ?3 WHERE id = ?1", params![token_id, ts(now), device.id])?;
            let actor = Actor { kind: "edge", id: Some(device.id), name: device.name.clone(), ip: None, request_id: None };
            // A new enrollment fences the previous box: its credential stops working here, and
            // (replicated) at the venue.
            let fenced: Vec<DeviceRecord> = tx
                .prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE site_id = ?1 AND kind = 'edge' AND revoked_at IS NULL"))?
                .query_map([site_id], device_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            for old in fenced {
                exec(tx, "UPDATE devices SET revoked_at = ?2 WHERE id = ?1", params![old.id, ts(now)])?;
                let old = DeviceRecord { revoked_at: Some(now), ..old };
                audit(tx, &actor, AuditEvent { action: "edge.fence", target: Some(old.id.to_string()), site_id: Some(site_id) }, now)?;
                append_change(tx, Entity::Device, old.id, Some(site_id), &old, now)?;
            }
            insert_device(tx, &device)?;
            audit(tx, &actor, AuditEvent { action: "edge.enroll", target: Some(device.id.to_string()), site_id: Some(site_id) }, now)?;
            append_change(tx, Entity::Device, device.id, Some(site_id), &device, now)?;
            let site = tx.query_row("SELECT id, name, timezone, allowed_networks, created_at FROM sites WHERE id = ?1", [site_id], site_from_row)?;
            let acked_seq = tx
                .query_row("SELECT acked_seq FROM site_sync WHERE site_id = ?1", [site_id], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            Ok(Redeemed::Enrolled { site, acked_seq })
        })
        .await
    }

    async fn create_device(&self, actor: &Actor, device: &DeviceRecord) -> StoreResult<()> {
        let (actor, device) = (actor.clone(), device.clone());
        self.write(move |tx| {
            insert_device(tx, &device)?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "device.create",
                    target: Some(device.id.to_string()),
                    site_id: Some(device.site_id),
                },
                device.created_at,
            )?;
            append_change(
                tx,
                Entity::Device,
                device.id,
                Some(device.site_id),
                &device,
                device.created_at,
            )
        })
        .await
    }

    async fn get_device(&self, id: Uuid) -> StoreResult<Option<DeviceRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                [id],
                device_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_devices(
        &self,
        site_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<DeviceRecord>> {
        let after = time_key(after);
        self.read(move |c| {
            let sql = keyset_sql(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices"),
                Some("site_id = ?1"),
                1,
                &["created_at", "id"],
                false,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&site_id, &limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt
                .query_map(params_from_iter(values), device_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn device_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<DeviceRecord>> {
        let key_hash = key_hash.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE key_hash = ?1 AND revoked_at IS NULL"
            ))?;
            Ok(stmt.query_row([key_hash], device_from_row).optional()?)
        })
        .await
    }

    async fn revoke_device(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let actor = actor.clone();
        self.write(move |tx| {
            let changed = exec(
                tx,
                "UPDATE devices SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, ts(at)],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            let device = tx.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                [id],
                device_from_row,
            )?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "device.revoke",
                    target: Some(id.to_string()),
                    site_id: Some(device.site_id),
                },
                at,
            )?;
            append_change(tx, Entity::Device, id, Some(device.site_id), &device, at)?;
            Ok(true)
        })
        .await
    }

    async fn create_user(&self, actor: &Actor, user: &UserRecord) -> StoreResult<()> {
        let (actor, user) = (actor.clone(), user.clone());
        self.write(move |tx| {
            exec(
 tx,
                "INSERT INTO users (id, username, password_hash, role, created_at, token_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![user.id, user.username, user.password_hash, user.role.as_str(), ts(user.created_at), user.token_version],
            )?;
            for site in &user.site_ids {
                exec(tx, "INSERT INTO user_sites (user_id, site_id) VALUES (?1, ?2)", params![user.id, site])?;
            }
            audit(tx, &actor, AuditEvent { action: "user.create", target: Some(user.id.to_string()), site_id: user.site_ids.first().copied() }, user.created_at)?;
            append_user_changes(tx, &user, user.created_at)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE username = ?1",
                [username],
                |row| user_from_row(c, row),
            )
            .optional()?)
        })
        .await
    }

    async fn list_users(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<UserRecord>> {
        let after = after.cloned();
        self.read(move |c| {
            let sql = keyset_sql(
                "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users",
                None,
                0,
                &["username", "id"],
                false,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt
                .query_map(params_from_iter(values), |row| user_from_row(c, row))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE id = ?1",
                [id],
                |row| user_from_row(c, row),
            )
            .optional()?)
        })
        .await
    }

    async fn disable_user(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let actor = actor.clone();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE users SET disabled_at = ?2, token_version = token_version + 1
                 WHERE id = ?1 AND disabled_at IS NULL",
                params![id, ts(at)],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            // The record as stored, `disabled_at` included: edges refuse its logins when it lands.
            let user = tx.query_row(
                "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE id = ?1",
                [id],
                |row| user_from_row(tx, row),
            )?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "user.disable",
                    target: Some(id.to_string()),
                    site_id: user.site_ids.first().copied(),
                },
                at,
            )?;
            append_user_changes(tx, &user, at)?;
            Ok(true)
        })
        .await
    }

    async fn update_user(
        &self,
        actor: &Actor,
        id: Uuid,
        expected_version: i64,
        changes: &UserChanges,
        at: DateTime<Utc>,
    ) -> StoreResult<UserRecord> {
        let (actor, changes) = (actor.clone(), changes.clone());
        self.write(move |tx| {
            // The one writer connection serialises this read-compare-write against every other.
            let current = tx
                .query_row(
                    "SELECT id, username, password_hash, role, created_at, disabled_at, token_version FROM users WHERE id = ?1",
                    [id],
                    |row| user_from_row(tx, row),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if current.token_version != expected_version {
                return Err(StoreError::PreconditionFailed);
            }
            let Some(updated) = changes.apply(&current, at) else {
                return Ok(current);
            };
            tx.execute(
                "UPDATE users SET role = ?2, password_hash = ?3, disabled_at = ?4, token_version = ?5 WHERE id = ?1",
                params![
                    id,
                    updated.role.as_str(),
                    updated.password_hash,
                    updated.disabled_at.map(ts),
                    updated.token_version
                ],
            )?;
            if updated.site_ids != current.site_ids {
                exec(tx, "DELETE FROM user_sites WHERE user_id = ?1", [id])?;
                for site in &updated.site_ids {
                    exec(tx, "INSERT INTO user_sites (user_id, site_id) VALUES (?1, ?2)", params![id, site])?;
                }
            }
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "user.update",
                    target: Some(id.to_string()),
                    site_id: updated.site_ids.first().or(current.site_ids.first()).copied(),
                },
                at,
            )?;
            for scope in user_change_scopes(&current, &updated) {
                append_change(tx, Entity::User, id, scope, &updated, at)?;
            }
            Ok(updated)
        })
        .await
    }

    async fn user_token_version(&self, id: Uuid) -> StoreResult<Option<i64>> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT token_version FROM users WHERE id = ?1 AND disabled_at IS NULL",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    async fn create_product(&self, actor: &Actor, product: &ProductRecord) -> StoreResult<()> {
        let (actor, p) = (actor.clone(), product.clone());
        self.write(move |tx| {
            exec(
 tx,
                "INSERT INTO products (id, sku, name, kind, price_cents, duration_minutes, active, created_at, grant_account, grant_amount, grant_period)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![p.id, p.sku, p.name, p.kind.as_str(), p.price_cents, p.duration_minutes, p.active, ts(p.created_at),
                    p.grant.map(|g| g.account.as_str()), p.grant.map(|g| g.amount), p.grant.and_then(|g| g.per).map(|per| per.as_str())],
            )?;
            audit(tx, &actor, AuditEvent { action: "product.create", target: Some(p.id.to_string()), site_id: None }, p.created_at)?;
            append_change(tx, Entity::Product, p.id, None, &p, p.created_at)
        })
        .await
    }

    async fn list_products(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<ProductRecord>> {
        let after = after.cloned();
        self.read(move |c| {
            let sql = keyset_sql(
                &format!("SELECT {PRODUCT_COLUMNS} FROM products"),
                None,
                0,
                &["sku", "id"],
                false,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt
                .query_map(params_from_iter(values), product_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn retire_product(
        &self,
        actor: &Actor,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<ProductRecord> {
        let actor = actor.clone();
        self.write(move |tx| {
            let current = tx
                .query_row(
                    &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?1"),
                    [id],
                    product_from_row,
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if !current.active {
                return Ok(current);
            }
            exec(tx, "UPDATE products SET active = 0 WHERE id = ?1", [id])?;
            let retired = ProductRecord {
                active: false,
                ..current
            };
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "product.retire",
                    target: Some(id.to_string()),
                    site_id: None,
                },
                at,
            )?;
            append_change(tx, Entity::Product, id, None, &retired, at)?;
            Ok(retired)
        })
        .await
    }

    async fn create_game(&self, actor: &Actor, game: &GameRecord) -> StoreResult<()> {
        let (actor, g) = (actor.clone(), game.clone());
        self.write(move |tx| {
            exec(
                tx,
                "INSERT INTO games (id, name, score_order, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![g.id, g.name, enum_text(&g.score_order), ts(g.created_at)],
            )?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "game.create",
                    target: Some(g.id.to_string()),
                    site_id: None,
                },
                g.created_at,
            )?;
            append_change(tx, Entity::Game, g.id, None, &g, g.created_at)
        })
        .await
    }

    async fn list_games(
        &self,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<GameRecord>> {
        let after = after.cloned();
        self.read(move |c| {
            let sql = keyset_sql(
                "SELECT id, name, score_order, created_at FROM games",
                None,
                0,
                &["name", "id"],
                false,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt
                .query_map(params_from_iter(values), |r| {
                    Ok(GameRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        score_order: parse_enum(&r.get::<_, String>(2)?)?,
                        created_at: parse_ts(&r.get::<_, String>(3)?)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

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

    async fn create_plug(&self, actor: &Actor, plug: &PlugRecord) -> StoreResult<()> {
        let (actor, p) = (actor.clone(), plug.clone());
        self.write(move |tx| {
            exec(
 tx,
                "INSERT INTO plugs (id, site_id, name, host, port, child_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![p.id, p.site_id, p.name, p.host, p.port, p.child_id, ts(p.created_at)],
            )?;
            audit(tx, &actor, AuditEvent { action: "plug.create", target: Some(p.id.to_string()), site_id: Some(p.site_id) }, p.created_at)?;
            append_change(tx, Entity::Plug, p.id, Some(p.site_id), &p, p.created_at)
        })
        .await
    }

    async fn get_plug(&self, id: Uuid) -> StoreResult<Option<PlugRecord>> {
        self.read(move |c| {
            Ok(c.query_row("SELECT id, site_id, name, host, port, child_id, created_at FROM plugs WHERE id = ?1", [id], plug_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_plugs(
        &self,
        site_id: Uuid,
        after: Option<&NameKey>,
        limit: u32,
    ) -> StoreResult<Vec<PlugRecord>> {
        let after = after.cloned();
        self.read(move |c| {
            let sql = keyset_sql(
                "SELECT id, site_id, name, host, port, child_id, created_at FROM plugs",
                Some("site_id = ?1"),
                1,
                &["name", "id"],
                false,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&site_id, &limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt
                .query_map(params_from_iter(values), plug_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn create_plug_override(
        &self,
        actor: &Actor,
        set: &PlugOverrideRecord,
    ) -> StoreResult<()> {
        let (actor, o) = (actor.clone(), set.clone());
        self.write(move |tx| {
            venue::plug_override(tx, &o, o.set_at)?;
            audit(
                tx,
                &actor,
                AuditEvent {
                    action: "plug_override.create",
                    target: Some(o.plug_id.to_string()),
                    site_id: Some(o.site_id),
                },
                o.set_at,
            )
        })
        .await
    }

    async fn plug_overrides(
        &self,
        plug_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<PlugOverrideRecord>> {
        let after = time_key(after);
        self.read(move |c| {
            let sql = keyset_sql(
                "SELECT data FROM plug_overrides",
                Some("plug_id = ?1"),
                1,
                &["set_at", "id"],
                true,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&plug_id, &limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
            rows.map(|data| Ok(parse_json(&data?)?)).collect()
        })
        .await
    }

    async fn plug_statuses(&self, site_id: Uuid) -> StoreResult<Vec<PlugStatusRecord>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT data FROM plug_status WHERE site_id = ?1")?;
            let rows = stmt.query_map([site_id], |r| r.get::<_, String>(0))?;
            rows.map(|data| Ok(parse_json(&data?)?)).collect()
        })
        .await
    }

    async fn create_schedule(&self, actor: &Actor, schedule: &ScheduleRecord) -> StoreResult<()> {
        let (actor, s) = (actor.clone(), schedule.clone());
        self.write(move |tx| {
            exec(
 tx,
                "INSERT INTO plug_schedules (id, plug_id, site_id, cron, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.id, s.plug_id, s.site_id, s.cron, enum_text(&s.state), ts(s.created_at)],
            )?;
            audit(tx, &actor, AuditEvent { action: "plug_schedule.create", target: Some(s.id.to_string()), site_id: Some(s.site_id) }, s.created_at)?;
            append_change(tx, Entity::PlugSchedule, s.id, Some(s.site_id), &s, s.created_at)
        })
        .await
    }

    async fn list_schedules(
        &self,
        plug_id: Uuid,
        after: Option<&TimeKey>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleRecord>> {
        let after = time_key(after);
        self.read(move |c| {
            let sql = keyset_sql(
                "SELECT id, plug_id, site_id, cron, state, created_at FROM plug_schedules",
                Some("plug_id = ?1"),
                1,
                &["created_at", "id"],
                false,
                after.is_some(),
            );
            let mut values: Vec<&dyn ToSql> = vec![&plug_id, &limit];
            push_name_key(&mut values, &after);
            let mut stmt = c.prepare_cached(&sql)?;
            Ok(stmt
                .query_map(params_from_iter(values), |r| {
                    Ok(ScheduleRecord {
                        id: r.get(0)?,
                        plug_id: r.get(1)?,
                        site_id: r.get(2)?,
                        cron: r.get(3)?,
                        state: parse_enum(&r.get::<_, String>(4)?)?,
                        created_at: parse_ts(&r.get::<_, String>(5)?)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn list_audit(&self, filter: &AuditFilter, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let filter = filter.clone();
        self.read(move |c| {
            let (condition, values) = filter.sql(2, &AUDIT_DIALECT);
            let mut stmt = c.prepare_cached(&format!(
                "SELECT id, at, actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id FROM audit_log
                 {condition} ORDER BY at DESC, id DESC LIMIT ?1"
            ))?;
            let mut params: Vec<&dyn ToSql> = vec![&limit];
            params.extend(values.iter().map(|value| match value {
                AuditValue::Id(id) => id as &dyn ToSql,
                AuditValue::Text(text) => text as &dyn ToSql,
            }));
            Ok(stmt
                .query_map(params.as_slice(), |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: parse_ts(&r.get::<_, String>(1)?)?,
                        actor_kind: r.get(2)?,
                        actor_id: r.get(3)?,
                        actor_name: r.get(4)?,
                        ip: r.get(5)?,
                        request_id: r.get(6)?,
                        action: r.get(7)?,
                        target: r.get(8)?,
                        site_id: r.get(9)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn pull(
        &self,
        site_id: Uuid,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Vec<Change>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, entity, entity_id, op, site_id, data, changed_at FROM change_log
                 WHERE seq > ?1 AND (site_id IS NULL OR site_id = ?2) ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![after, site_id, limit])?;
            let mut changes = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let data: String = row.get(5)?;
                if !changes.is_empty() && bytes + data.len() > max_bytes {
                    break;
                }
                bytes += data.len();
                let entity: String = row.get(1)?;
                let op: String = row.get(3)?;
                changes.push(Change {
                    seq: row.get(0)?,
                    entity: ChangeEntity::parse(&entity),
                    entity_id: row.get(2)?,
                    op: ChangeOp::parse(&op).with_context(|| format!("unknown op {op}"))?,
                    site_id: row.get(4)?,
                    data: serde_json::from_str(&data).map_err(|e| StoreError::Other(e.into()))?,
                    changed_at: parse_ts(&row.get::<_, String>(6)?)?,
                });
            }
            Ok(changes)
        })
        .await
    }

    async fn change_head(&self) -> StoreResult<i64> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM change_log", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    async fn change_scopes(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeScope>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, site_id FROM change_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let scopes = stmt
                .query_map(params![after, limit], |r| {
                    Ok(ChangeScope {
                        seq: r.get(0)?,
                        site_id: r.get(1)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(scopes)
        })
        .await
    }

    async fn change_anchor(&self, site_id: Uuid, seq: i64) -> StoreResult<Option<ChangeAnchor>> {
        self.read(move |c| {
            let row: Option<(Uuid, String)> = c
                .prepare_cached(
                    "SELECT entity_id, changed_at FROM change_log
                     WHERE seq = ?1 AND (site_id IS NULL OR site_id = ?2)",
                )?
                .query_row(params![seq, site_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            row.map(|(entity_id, at)| {
                Ok(ChangeAnchor {
                    seq,
                    entity_id,
                    changed_at: parse_ts(&at)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn acked_seq(&self, site_id: Uuid) -> StoreResult<i64> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT acked_seq FROM site_sync WHERE site_id = ?1")?
                    .query_row([site_id], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0),
            )
        })
        .await
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
        self.write(move |tx| {
            exec(
                tx,
                "INSERT INTO site_sync (site_id, pull_cursor, last_pull_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (site_id) DO UPDATE SET pull_cursor = excluded.pull_cursor, last_pull_at = excluded.last_pull_at",
                params![site_id, cursor, ts(at)],
            )?;
            if let Some(outbox) = outbox {
                exec(
                    tx,
                    "UPDATE site_sync SET pending_ops = ?2, oldest_pending_at = ?3 WHERE site_id = ?1",
                    params![site_id, outbox.pending_ops, outbox.oldest_pending_at.map(ts)],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn push(
        &self,
        site_id: Uuid,
        ops: &[PushOp],
        at: DateTime<Utc>,
    ) -> StoreResult<PushOutcome> {
        let ops = ops.to_vec();
        self.write(move |tx| push_batch(tx, site_id, &ops, at))
            .await
    }

    async fn site_sync(&self, site_id: Uuid) -> StoreResult<SiteSyncStatus> {
        self.read(move |c| {
            type Times = (Option<String>, Option<String>, Option<String>, Option<String>);
            type Row = (i64, i64, Option<i64>, Option<String>, Times);
            let row: Option<Row> = c
                .query_row(
                    "SELECT acked_seq, pull_cursor, pending_ops, oldest_pending_at,
                            last_push_at, last_pull_at, hint_seen_at, hint_closed_at
                       FROM site_sync WHERE site_id = ?1",
                    [site_id],
                    |r| {
                        let times = (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?);
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, times))
                    },
                )
                .optional()?;
            let (acked_seq, pull_cursor, pending_ops, oldest, (push, pull, seen, closed)) =
                row.unwrap_or((0, 0, None, None, (None, None, None, None)));
            let oldest_pending_at = parse_opt_ts(oldest)?;
            let pull_lag = c.query_row(
                "SELECT COUNT(*) FROM change_log WHERE seq > ?1 AND (site_id IS NULL OR site_id = ?2)",
                params![pull_cursor, site_id],
                |r| r.get(0),
            )?;
            Ok(SiteSyncStatus {
                site_id,
                last_push_at: parse_opt_ts(push)?,
                last_pull_at: parse_opt_ts(pull)?,
                acked_seq,
                pull_cursor,
                pull_lag,
                outbox: pending_ops.map(|pending_ops| OutboxBacklog {
                    pending_ops,
                    oldest_pending_at,
                }),
                hint_seen_at: parse_opt_ts(seen)?,
                hint_closed_at: parse_opt_ts(closed)?,
            })
        })
        .await
    }

    async fn record_hint_socket(
        &self,
        site_id: Uuid,
        event: HintSocketEvent,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        // Timestamps are written in one fixed-width format, so they compare as text.
        let sql = match event {
            HintSocketEvent::Heard => {
                "UPDATE site_sync SET hint_seen_at = ?2
                  WHERE site_id = ?1 AND (hint_seen_at IS NULL OR hint_seen_at < ?2)"
            }
            HintSocketEvent::Closed => {
                "UPDATE site_sync SET hint_closed_at = ?2 WHERE site_id = ?1"
            }
        };
        self.write(move |tx| {
            exec(tx, sql, params![site_id, ts(at)])?;
            Ok(())
        })
        .await
    }

    async fn get_customer(&self, id: Uuid) -> StoreResult<Option<CustomerRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?1"),
                [id],
                customer_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn customers_by_phone(&self, phone: &str) -> StoreResult<Vec<CustomerRecord>> {
        let phone = phone.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE phone = ?1 ORDER BY last_name, first_name, id LIMIT 50"
            ))?;
            Ok(stmt.query_map([phone], customer_from_row)?.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn count_customers(&self) -> StoreResult<i64> {
        self.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0))?))
            .await
    }

    async fn waivers_for(&self, customer_id: Uuid) -> StoreResult<Vec<WaiverRecord>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, customer_id, site_id, signer_name, signed_at, expires_at, text_version FROM waivers WHERE customer_id = ?1 ORDER BY signed_at",
            )?;
            Ok(stmt
                .query_map([customer_id], |r| {
                    Ok(WaiverRecord {
                        id: r.get(0)?,
                        customer_id: r.get(1)?,
                        site_id: r.get(2)?,
                        signer_name: r.get(3)?,
                        signed_at: parse_ts(&r.get::<_, String>(4)?)?,
                        expires_at: parse_ts(&r.get::<_, String>(5)?)?,
                        text_version: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
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

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Begin> {
        let (scope, key, fingerprint) =
            (scope.to_string(), key.to_string(), fingerprint.to_string());
        self.write(move |tx| {
            let stale = ts(now - KEY_LIFETIME);
            exec(tx, "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND created_at < ?3", params![scope, key, stale])?;
            let found = tx
                .query_row(
                    "SELECT fingerprint, status, content_type, body, created_at, committed_at FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
                    params![scope, key],
                    |r| {
                        let status: Option<u16> = r.get(1)?;
                        let response = match status {
                            Some(status) => Some(StoredResponse {
                                status,
                                content_type: r.get(2)?,
                                body: r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
                            }),
                            None => None,
                        };
                        Ok(KeyState {
                            fingerprint: r.get(0)?,
                            response,
                            created_at: parse_ts(&r.get::<_, String>(4)?)?,
                            committed: r.get::<_, Option<String>>(5)?.is_some(),
                        })
                    },
                )
                .optional()?;
            Ok(match decide(found, &fingerprint, now) {
                Decision::Insert => {
                    exec(
                        tx,
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![scope, key, fingerprint, ts(now)],
                    )?;
                    Begin::Started
                }
                Decision::TakeOver => {
                    exec(
                        tx,
                        "UPDATE idempotency_keys SET created_at = ?3 WHERE scope = ?1 AND key = ?2",
                        params![scope, key, ts(now)],
                    )?;
                    Begin::Started
                }
                Decision::Answer(begin) => begin,
            })
        })
        .await
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        let (scope, key, response) = (scope.to_string(), key.to_string(), response.clone());
        self.write(move |tx| {
            // An answer recorded with the request's writes stays its answer.
            exec(
                tx,
                "UPDATE idempotency_keys SET status = ?3, content_type = ?4, body = ?5 WHERE scope = ?1 AND key = ?2 AND status IS NULL",
                params![scope, key, response.status, response.content_type, response.body],
            )?;
            Ok(())
        })
        .await
    }

    async fn idempotency_release(&self, scope: &str, key: &str) -> StoreResult<()> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.write(move |tx| {
            exec(
                tx,
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND committed_at IS NULL",
                params![scope, key],
            )?;
            Ok(())
        })
        .await
    }

    async fn idempotency_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |tx| {
            let removed = exec(
                tx,
                "DELETE FROM idempotency_keys WHERE created_at < ?1",
                [ts(before)],
            )?;
            Ok(u64::try_from(removed).unwrap_or(0))
        })
        .await
    }
}

//! The edge's SQLite database (`edge.db`): the read-only replica of HQ data for this site, the
//! venue's own rows, and the sync machinery (cursor, outbox, dead letters).
//!
//! One connection writes (owned by [`crate::outbox::Writer`]); reads use a small pool of other
//! connections, which in WAL mode see committed snapshots and never wait for the writer.
//! Bulky reads run on the blocking pool ([`Replica::read`]); the kiosk's indexed point lookups
//! run in place ([`Replica::read_now`]), because a thread hop costs more than the query.

pub mod apply;
pub mod batched_wal;
pub mod scores;
pub mod venue;
pub mod waiver_texts;

use aero_shared::page::{NameKey, TimeKey};
use aero_shared::wire::{CustomerRecord, EdgeStatus, ProductRecord, SiteRecord, WaiverRecord};
use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params, params_from_iter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub const DB_FILE: &str = "edge.db";
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// Timestamps are stored in one fixed format so that text comparison is time comparison.
pub fn ts(at: DateTime<Utc>) -> String {
    aero_shared::timestamp::millis(at)
}

pub fn parse_ts(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("bad timestamp {text:?}"))?
        .with_timezone(&Utc))
}

/// Where a data directory keeps its edge database.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// The newest schema version (migration) this binary knows; a database migrated further was
/// written by a newer release and is not opened.
pub fn latest_schema_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The site the edge database in `data_dir` belongs to; `None` when there is no database yet.
/// Reads only: nothing is created or migrated.
pub fn site_of(data_dir: &Path) -> anyhow::Result<Option<Uuid>> {
    let path = db_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    let conn = open_connection(&path)?;
    conn.query_row("SELECT site_id FROM sync_state WHERE id = 1", [], |r| {
        r.get(0)
    })
    .optional()
    .with_context(|| format!("reading the site of {}", path.display()))
}

pub(crate) fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, open_flags())
        .with_context(|| format!("opening {}", path.display()))?;
    configure(conn)
}

/// The writer's connection: as [`open_connection`], and each of its commits reaches the log
/// file in one write (see [`batched_wal`]).
fn open_writer_connection(path: &Path) -> anyhow::Result<Connection> {
    batched_wal::register()?;
    let conn = Connection::open_with_flags_and_vfs(path, open_flags(), batched_wal::vfs_name())
        .with_context(|| format!("opening {}", path.display()))?;
    configure(conn)
}

fn open_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

fn configure(conn: Connection) -> anyhow::Result<Connection> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a sale acknowledged to a terminal survives power loss, not just a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // A request of a group commit that runs in a savepoint of its own (see `outbox`) first
    // copies every page it changes to the statement journal; kept in memory, that copy is a
    // memcpy instead of a write to a temporary file (it spilled to one past 64 KiB).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Plans never depend on bound values. Without this, SQLite (built with STAT4) re-prepares a
    // cached statement whenever a bound value it looked at while planning changes, i.e. on
    // almost every kiosk lookup, which made parsing the biggest cost of a lookup.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Room for every statement of the write path and the hot reads.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A customer as the kiosk lookup returns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct CustomerView {
    #[serde(flatten)]
    pub customer: CustomerRecord,
    /// A waiver of their own is valid, or (for a minor) their guardian's is.
    pub waiver_valid: bool,
    pub balances: venue::Balances,
    pub active_sessions: Vec<venue::ActiveSession>,
}

impl CustomerView {
    /// A customer just registered: no waiver, no balance, no session yet.
    pub fn new_customer(customer: CustomerRecord) -> Self {
        Self {
            customer,
            waiver_valid: false,
            balances: venue::Balances::default(),
            active_sessions: Vec::new(),
        }
    }
}

/// Read access to `edge.db`.
#[derive(Debug)]
pub struct Replica {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    /// Bumped after every committed change to the `devices` table, so caches of device
    /// credentials (see [`crate::auth::ReplicaCredentials`]) know they are stale.
    device_epoch: AtomicU64,
    /// Signalled after a commit that changed the venue's plugs, their schedules or its site
    /// row: the plug reconcile loop makes a pass then instead of at the end of its period.
    plugs_changed: tokio::sync::Notify,
}

impl Replica {
    /// Opens (creating and migrating) `edge.db` in `data_dir` for `site_id`; returns the
    /// replica and the connection that will be the only writer.
    ///
    /// `first_seq` seeds the outbox sequence on first start; afterwards the database's own
    /// counter is the truth. A database enrolled for another site is refused rather than mixed.
    pub fn open(
        data_dir: &Path,
        site_id: Uuid,
        first_seq: i64,
    ) -> anyhow::Result<(Arc<Self>, Connection)> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = db_path(data_dir);
        let mut writer = open_writer_connection(&path)?;
        embedded::migrations::runner()
            .run(&mut writer)
            .context("migrating the edge database")?;
        writer.execute(
            "INSERT INTO sync_state (id, site_id, next_seq) VALUES (1, ?1, ?2) ON CONFLICT (id) DO NOTHING",
            params![site_id, first_seq.max(1)],
        )?;
        let stored: Uuid =
            writer.query_row("SELECT site_id FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        anyhow::ensure!(
            stored == site_id,
            "{} belongs to site {stored}, but the credential is for site {site_id}",
            path.display()
        );
        let replica = Arc::new(Self {
            path,
            readers: Mutex::new(Vec::new()),
            device_epoch: AtomicU64::new(0),
            plugs_changed: tokio::sync::Notify::new(),
        });
        Ok((replica, writer))
    }

    /// Runs `work` on a pooled read connection on a blocking thread.
    pub async fn read<T, F>(self: &Arc<Self>, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.read_now(work))
            .await
            .context("replica read task failed")?
    }

    /// Runs `work` on a pooled read connection on the calling thread. Only for reads that touch
    /// a handful of pages through an index (microseconds, from the page cache): for those a hop
    /// to the blocking pool and back costs more than the query. A reader in WAL mode never waits
    /// for the writer.
    pub fn read_now<T>(
        &self,
        work: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let pooled = self
            .readers
            .lock()
            .map_err(|_| anyhow::anyhow!("reader pool poisoned"))?
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.path)?,
        };
        let out = work(&conn);
        if let Ok(mut idle) = self.readers.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(conn);
        }
        out
    }

    /// The current device epoch: it changes whenever replicated devices may have changed.
    pub fn device_epoch(&self) -> u64 {
        self.device_epoch.load(Ordering::Acquire)
    }

    /// Called after a commit that changed `devices` (a pulled page carrying device changes).
    pub fn devices_changed(&self) {
        self.device_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Called after a commit that changed plugs, their schedules or overrides, or the site row.
    pub fn plugs_changed(&self) {
        self.plugs_changed.notify_one();
    }

    /// Resolves at the next [`Replica::plugs_changed`] (or at once if one came meanwhile).
    pub async fn plug_change(&self) {
        self.plugs_changed.notified().await;
    }

    pub async fn status(self: &Arc<Self>, now: DateTime<Utc>) -> anyhow::Result<EdgeStatus> {
        self.read(move |c| status(c, now)).await
    }

    /// Indexed lookup of one page (at most `limit` rows after `after`, oldest registration
    /// first): runs in place, see [`Replica::read_now`].
    pub async fn customers_by_phone(
        self: &Arc<Self>,
        phone: String,
        after: Option<&TimeKey>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<CustomerView>> {
        self.read_now(|c| customers_where(c, CustomerKey::Phone, &phone, after, limit, now))
    }

    /// Indexed lookup of one page (at most `limit` rows after `after`, oldest registration
    /// first): runs in place, see [`Replica::read_now`].
    pub async fn customers_by_email(
        self: &Arc<Self>,
        email: String,
        after: Option<&TimeKey>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<CustomerView>> {
        self.read_now(|c| customers_where(c, CustomerKey::Email, &email, after, limit, now))
    }

    pub async fn customer(self: &Arc<Self>, id: Uuid) -> anyhow::Result<Option<CustomerRecord>> {
        self.read(move |c| customer(c, id)).await
    }

    /// One page of the products this venue sells now, by SKU: at most `limit` after `after`.
    pub async fn active_products(
        self: &Arc<Self>,
        after: Option<NameKey>,
        limit: u32,
    ) -> anyhow::Result<Vec<ProductRecord>> {
        self.read(move |c| {
            let cursor = if after.is_some() {
                "AND (sku, id) > (?2, ?3)"
            } else {
                ""
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT data FROM products WHERE active = 1 {cursor} ORDER BY sku, id LIMIT ?1"
            ))?;
            let mut values: Vec<&dyn ToSql> = vec![&limit];
            if let Some((sku, id)) = &after {
                values.extend([sku as &dyn ToSql, id]);
            }
            let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
            rows.map(|text| Ok(serde_json::from_str(&text?)?)).collect()
        })
        .await
    }
}

pub fn customer(c: &Connection, id: Uuid) -> anyhow::Result<Option<CustomerRecord>> {
    customer_as(c, id)
}

/// The stored customer record decoded as `T`: only the fields `T` names are decoded.
fn customer_as<T: serde::de::DeserializeOwned>(
    c: &Connection,
    id: Uuid,
) -> anyhow::Result<Option<T>> {
    let data: Option<String> = c
        .prepare_cached("SELECT data FROM customers WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
}

/// Whether the replica holds this customer: a point read on the key, nothing decoded.
pub fn customer_exists(c: &Connection, id: Uuid) -> anyhow::Result<bool> {
    venue::holds(c, "customers", id)
}

/// What the gate needs of a customer: their name, and whose waiver also covers them.
#[derive(Debug, serde::Deserialize)]
pub struct Jumper {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub guardian_id: Option<Uuid>,
}

/// The customer as the gate needs them, decoding only those fields of the stored record.
pub fn jumper(c: &Connection, id: Uuid) -> anyhow::Result<Option<Jumper>> {
    customer_as(c, id)
}

/// The column a customer is looked up by.
#[derive(Clone, Copy)]
enum CustomerKey {
    Phone,
    Email,
}

/// The lookup's statement by `$column`, with or without `$cursor`: constant text, so the
/// statement cache finds it without the text being built on every lookup.
macro_rules! customers_where_sql {
    ($column:literal, $cursor:literal) => {
        concat!(
            "SELECT data,
            EXISTS (SELECT 1 FROM waivers w WHERE w.customer_id = customers.id AND w.expires_at > ?2),
            EXISTS (SELECT 1 FROM ledger l WHERE l.customer_id = customers.id),
            EXISTS (SELECT 1 FROM checkins k WHERE k.customer_id = customers.id AND k.ends_at > ?2)
         FROM customers WHERE ",
            $column,
            " = ?1 ",
            $cursor,
            " ORDER BY created_at, id LIMIT ?3"
        )
    };
}

fn customers_where(
    c: &Connection,
    key: CustomerKey,
    value: &str,
    after: Option<&TimeKey>,
    limit: u32,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<CustomerView>> {
    // The kiosk's hottest read: one statement answers the common case (whether a waiver is valid,
    // any ledger entry exists or any session runs come from correlated point lookups on their
    // indexes); only a customer with ledger entries or a running session, or a minor without a
    // waiver of their own, costs another query.
    let sql = match (key, after.is_some()) {
        (CustomerKey::Phone, false) => customers_where_sql!("phone", ""),
        (CustomerKey::Phone, true) => {
            customers_where_sql!("phone", "AND (created_at, id) > (?4, ?5)")
        }
        (CustomerKey::Email, false) => customers_where_sql!("email", ""),
        (CustomerKey::Email, true) => {
            customers_where_sql!("email", "AND (created_at, id) > (?4, ?5)")
        }
    };
    let mut stmt = c.prepare_cached(sql)?;
    let now_at = now;
    let now = ts(now);
    let after = after.map(|(at, id)| (ts(*at), *id));
    let mut values: Vec<&dyn ToSql> = vec![&value, &now, &limit];
    if let Some((at, id)) = &after {
        values.extend([at as &dyn ToSql, id]);
    }
    let mut rows = stmt.query(params_from_iter(values))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let customer: CustomerRecord = serde_json::from_str(row.get_ref(0)?.as_str()?)?;
        let mut waiver_valid: bool = row.get(1)?;
        if !waiver_valid && let Some(guardian) = customer.guardian_id {
            waiver_valid = venue::has_valid_waiver(c, guardian, &now)?;
        }
        // Most customers at the kiosk never bought credit or a membership: one probe of the
        // ledger says so, and only a customer with entries has them summed.
        let balances = if row.get(2)? {
            venue::balances(c, customer.id, now_at)?
        } else {
            venue::Balances::default()
        };
        let active_sessions = if row.get(3)? {
            venue::active_sessions_of(c, customer.id, &now)?
        } else {
            Vec::new()
        };
        out.push(CustomerView {
            customer,
            waiver_valid,
            balances,
            active_sessions,
        });
    }
    Ok(out)
}

/// A replicated site (this edge's own, once the first pull landed).
pub fn site(c: &Connection, id: Uuid) -> anyhow::Result<Option<SiteRecord>> {
    let data: Option<String> = c
        .prepare_cached("SELECT data FROM sites WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
}

pub fn waiver(c: &Connection, id: Uuid) -> anyhow::Result<Option<WaiverRecord>> {
    let data: Option<String> = c
        .query_row("SELECT data FROM waivers WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
}

/// The sync status at `now`, as `GET /v1/status` serves it and `aero-edge status` prints it
/// (that one through a read-only connection of its own, beside a running daemon or without one).
pub fn status(c: &Connection, now: DateTime<Utc>) -> anyhow::Result<EdgeStatus> {
    // One read transaction: the counts and the sync state describe the same moment.
    c.execute_batch("BEGIN")?;
    let result = (|| {
        let (online, cursor, last_push_at, last_pull_at, last_error): (bool, i64, Option<String>, Option<String>, Option<String>) =
            c.query_row(
                "SELECT online, cursor, last_push_at, last_pull_at, last_error FROM sync_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
        let (push_error, pull_error, fenced): (Option<String>, Option<String>, Option<String>) = c
            .query_row(
                "SELECT push_error, pull_error, fenced FROM sync_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let skipped_changes: i64 =
            c.query_row("SELECT COUNT(*) FROM skipped_changes", [], |r| r.get(0))?;
        let backlog = crate::outbox::backlog(c)?;
        let dead_letters: i64 =
            c.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
        let oldest_pending_age_seconds = backlog
            .oldest_pending_at
            .map(|t| (now - t).num_seconds().max(0));
        Ok(EdgeStatus {
            online,
            pending_ops: backlog.pending_ops,
            oldest_pending_age_seconds,
            last_push_at: last_push_at.map(|t| parse_ts(&t)).transpose()?,
            last_pull_at: last_pull_at.map(|t| parse_ts(&t)).transpose()?,
            cursor,
            dead_letters,
            last_error,
            push_error,
            pull_error,
            skipped_changes,
            fenced,
        })
    })();
    c.execute_batch("COMMIT")?;
    result
}

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

use super::{
    Actor, AuditEntry, AuditEvent, DailyReport, EnrollmentToken, PushOutcome, Redeemed, Store,
    StoreError, StoreResult, VenueWrite,
};
use aero_shared::idempotency::{Begin, StoredResponse};
use aero_shared::wire::{
    Change, ChangeOp, CustomerRecord, DeviceRecord, Entity, GameRecord, PlugRecord, ProductRecord,
    PushOp, RejectedOp, ScheduleRecord, SiteRecord, SiteSyncStatus, UserRecord, WaiverRecord,
};
use anyhow::Context as _;
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable as _};
use chrono::{DateTime, Datelike as _, NaiveDate, NaiveDateTime, Timelike as _, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tiberius::{Client, ColumnData, Config, FromSql, Query, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt as _};
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations/mssql");
}

/// Pooled connections per central instance. Several instances share one server, so modest.
const POOL_SIZE: u32 = 16;
/// How long to wait for a pooled connection, and for a new TCP connection to be accepted.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A transient error met after this long is returned to the caller instead of retried.
const RETRY_DEADLINE: Duration = Duration::from_secs(10);
/// Per-response bound on the migration connection, instead of tiberius' 30 s default: DDL on a
/// large table, or waiting for another instance's migration, may legitimately take longer.
const MIGRATION_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Sent once on every new connection (a plain batch, so the settings last for the session).
/// XACT_ABORT ON: any error rolls the whole transaction back on the server, so a failed write
/// is never half-applied. LOCK_TIMEOUT: a lock wait ends in error 1222 (retried) after 10 s,
/// well before tiberius' 30 s command timeout would abandon the connection mid-response.
const SESSION_SETUP: &str = "SET XACT_ABORT ON; SET LOCK_TIMEOUT 10000;";

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

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

type TdsClient = Client<Compat<TcpStream>>;

/// One pooled connection plus what the pool must know to decide whether it may be reused.
struct Conn {
    client: TdsClient,
    /// Set while a request is on the wire and cleared once its whole response has been read.
    /// Still set after a cancelled future or an I/O / protocol error: the next response on
    /// the wire would belong to someone else's request, so the connection is dropped.
    in_flight: bool,
    /// Set from BEGIN until COMMIT or ROLLBACK succeeded. Still set if the future was dropped
    /// in between: closing the connection is then the only safe way to end the transaction.
    in_tx: bool,
}

#[derive(Debug)]
struct Manager {
    config: Config,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = tiberius::error::Error;

    async fn connect(&self) -> Result<Conn, Self::Error> {
        let mut client = open_client(self.config.clone()).await?;
        client
            .simple_query(SESSION_SETUP)
            .await?
            .into_results()
            .await?;
        Ok(Conn {
            client,
            in_flight: false,
            in_tx: false,
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), Self::Error> {
        conn.client
            .simple_query("SELECT 1")
            .await?
            .into_row()
            .await?;
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.in_flight || conn.in_tx
    }
}

/// Connects, following at most one Azure SQL gateway redirect (the `Redirect` connection policy
/// answers the login with the address of the node that hosts the database).
async fn open_client(mut config: Config) -> Result<TdsClient, tiberius::error::Error> {
    for _ in 0..2 {
        let addr = config.get_addr();
        let tcp = match tokio::time::timeout(CONNECTION_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(connected) => connected?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )
                .into());
            }
        };
        tcp.set_nodelay(true)?;
        match Client::connect(config.clone(), tcp.compat_write()).await {
            Err(tiberius::error::Error::Routing { host, port }) => {
                config.host(host);
                config.port(port);
            }
            other => return other,
        }
    }
    Err(tiberius::error::Error::Protocol(
        "SQL Server redirected the connection more than once".into(),
    ))
}

/// Logs what the pool would otherwise swallow: failed connection attempts and health checks.
#[derive(Debug, Clone, Copy)]
struct LogErrors;

impl bb8::ErrorSink<tiberius::error::Error> for LogErrors {
    fn sink(&self, error: tiberius::error::Error) {
        tracing::warn!(error = %error, "SQL Server connection failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<tiberius::error::Error>> {
        Box::new(*self)
    }
}

impl Conn {
    /// Runs `query` and returns all its result sets, reading the response to the end.
    async fn results(&mut self, query: Query<'_>) -> StoreResult<Vec<Vec<Row>>> {
        self.in_flight = true;
        let result = match query.query(&mut self.client).await {
            Ok(stream) => stream.into_results().await,
            Err(err) => Err(err),
        };
        self.settle(result)
    }

    /// The first result set of `query` (later ones are read and dropped).
    async fn rows(&mut self, query: Query<'_>) -> StoreResult<Vec<Row>> {
        Ok(self
            .results(query)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    async fn row(&mut self, query: Query<'_>) -> StoreResult<Option<Row>> {
        Ok(self.rows(query).await?.into_iter().next())
    }

    async fn exec(&mut self, query: Query<'_>) -> StoreResult<()> {
        self.in_flight = true;
        let result = query.execute(&mut self.client).await.map(drop);
        self.settle(result)
    }

    /// A parameterless batch, sent as plain SQL (not through sp_executesql).
    async fn batch(&mut self, sql: &str) -> StoreResult<()> {
        self.in_flight = true;
        let result = match self.client.simple_query(sql).await {
            Ok(stream) => stream.into_results().await.map(drop),
            Err(err) => Err(err),
        };
        self.settle(result)
    }

    fn settle<T>(&mut self, result: Result<T, tiberius::error::Error>) -> StoreResult<T> {
        match result {
            Ok(value) => {
                self.in_flight = false;
                Ok(value)
            }
            Err(err) => {
                // tiberius reports a server error only after reading its response to the end,
                // so the connection is still in step; any other error leaves it unusable.
                if matches!(err, tiberius::error::Error::Server(_)) {
                    self.in_flight = false;
                }
                Err(classify(err))
            }
        }
    }

    /// Starts a transaction. XACT_ABORT is repeated here so a write never depends on how the
    /// session was set up.
    async fn begin(&mut self) -> StoreResult<()> {
        self.in_tx = true;
        self.batch("SET XACT_ABORT ON; BEGIN TRANSACTION;").await
    }

    /// Commits on `Ok`, rolls back on `Err`; returns `result` unless the commit itself failed.
    async fn finish<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        match result {
            Ok(value) => {
                self.batch("COMMIT TRANSACTION;").await?;
                self.in_tx = false;
                Ok(value)
            }
            Err(err) => {
                // Under XACT_ABORT the server has usually rolled back already; the @@TRANCOUNT
                // test makes this right either way. A connection that cannot be rolled back
                // keeps `in_tx` set and is dropped, which ends the transaction server-side.
                if !self.in_flight
                    && self
                        .batch("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;")
                        .await
                        .is_ok()
                {
                    self.in_tx = false;
                }
                Err(err)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and retries
// ---------------------------------------------------------------------------------------------

/// Server errors worth retrying: deadlock victim, lock timeout and lock resources, snapshot
/// update conflict, memory pressure, and the connection/failover errors Azure SQL documents as
/// transient (Babelfish maps PostgreSQL deadlocks and lock timeouts to 1205 and 1222).
const TRANSIENT_SERVER_ERRORS: &[u32] = &[
    1204, 1205, 1222, 3960, 8645, 8651, 64, 233, 4060, 4221, 10053, 10054, 10060, 10928, 10929,
    40143, 40197, 40501, 40540, 40613, 49918, 49919, 49920,
];

/// Named unique constraints and primary keys (see the migration), and what a duplicate means.
/// No name is a substring of another, so a message matches at most one.
const DUPLICATES: &[(&str, &str)] = &[
    ("uq_users_username", "username"),
    ("uq_products_sku", "sku"),
    ("uq_games_name", "game name"),
    ("uq_plugs_site_name", "plug name"),
    ("uq_devices_key_hash", "device key"),
    ("uq_enrollment_tokens_token_hash", "enrollment token"),
    ("uq_applied_ops_op_id", "op"),
    ("pk_sites", "site"),
    ("pk_enrollment_tokens", "enrollment token"),
    ("pk_devices", "device"),
    ("pk_users", "user"),
    ("pk_user_sites", "site assignment"),
    ("pk_products", "product"),
    ("pk_games", "game"),
    ("pk_plugs", "plug"),
    ("pk_plug_schedules", "schedule"),
    ("pk_customers", "customer"),
    ("pk_waivers", "waiver"),
    ("pk_orders", "order"),
    ("pk_checkins", "checkin"),
    ("pk_change_log", "change"),
    ("pk_site_sync", "site sync state"),
    ("pk_applied_ops", "op"),
    ("pk_audit_log", "audit entry"),
    ("pk_idempotency_keys", "idempotency key"),
];

fn classify(err: tiberius::error::Error) -> StoreError {
    use tiberius::error::Error;
    match &err {
        Error::Server(token) => {
            classify_server(token.code(), token.message()).unwrap_or_else(|| {
                StoreError::Other(anyhow::Error::new(err).context("SQL Server error"))
            })
        }
        // Refused, reset or timed-out connections: a fresh connection may well succeed.
        Error::Io { .. } | Error::Routing { .. } => StoreError::Transient(err.to_string()),
        _ => StoreError::Other(anyhow::Error::new(err).context("SQL Server client error")),
    }
}

/// The store error a server error number stands for, if it is one the store handles.
fn classify_server(code: u32, message: &str) -> Option<StoreError> {
    let lower = message.to_ascii_lowercase();
    if code == 2627 || code == 2601 {
        // SQL Server quotes the constraint name in the message; Babelfish passes on
        // PostgreSQL's, which names it too.
        let what = DUPLICATES
            .iter()
            .find(|(name, _)| lower.contains(name))
            .map_or("record", |(_, what)| what);
        Some(StoreError::Conflict(format!("{what} already exists")))
    } else if code == 547 && lower.contains("foreign key") {
        // A reference to a row that does not exist (a site, user or plug).
        Some(StoreError::NotFound)
    } else if TRANSIENT_SERVER_ERRORS.contains(&code) {
        Some(StoreError::Transient(format!(
            "SQL Server error {code}: {message}"
        )))
    } else {
        None
    }
}

/// For units of work whose only possible duplicate is a concurrent twin (two deliveries of one
/// push batch, two first uses of one idempotency key, two first pulls of a site): the loser
/// retries and then finds the winner's row.
fn race_is_transient(err: StoreError) -> StoreError {
    match err {
        StoreError::Conflict(what) => StoreError::Transient(format!("concurrent write: {what}")),
        other => other,
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .with_max_times(8)
        .with_total_delay(Some(RETRY_DEADLINE))
}

/// Runs `work` until it succeeds, fails for good, or stays transient past the deadline.
/// Every attempt is a whole unit of work (its own connection checkout and transaction), so a
/// retry never continues a half-done one. Ids are chosen by callers, so a retry after a commit
/// whose acknowledgement was lost cannot duplicate anything; it reports the row as existing.
async fn retrying<T, F, Fut>(work: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let started = Instant::now();
    work.retry(backoff())
        .when(move |err: &StoreError| {
            matches!(err, StoreError::Transient(_)) && started.elapsed() < RETRY_DEADLINE
        })
        .notify(|err: &StoreError, delay: Duration| {
            tracing::debug!(error = %err, ?delay, "retrying after a transient SQL Server error");
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// Values in and out
// ---------------------------------------------------------------------------------------------

/// The UTC wall time bound for a `DATETIME2(3)` column, truncated (not rounded) to milliseconds.
fn ts(at: DateTime<Utc>) -> NaiveDateTime {
    let naive = at.naive_utc();
    naive
        .with_nanosecond(naive.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(naive)
}

fn decode_error(idx: usize, err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(anyhow::anyhow!("reading column {idx}: {err}"))
}

fn get<'r, T: FromSql<'r>>(row: &'r Row, idx: usize) -> StoreResult<Option<T>> {
    row.try_get::<T, usize>(idx)
        .map_err(|e| decode_error(idx, e))
}

fn req<'r, T: FromSql<'r>>(row: &'r Row, idx: usize) -> StoreResult<T> {
    get(row, idx)?.ok_or_else(|| decode_error(idx, "unexpected NULL"))
}

fn text(row: &Row, idx: usize) -> StoreResult<String> {
    req::<&str>(row, idx).map(str::to_owned)
}

fn opt_text(row: &Row, idx: usize) -> StoreResult<Option<String>> {
    Ok(get::<&str>(row, idx)?.map(str::to_owned))
}

fn uuid(row: &Row, idx: usize) -> StoreResult<Uuid> {
    req(row, idx)
}

fn opt_uuid(row: &Row, idx: usize) -> StoreResult<Option<Uuid>> {
    get(row, idx)
}

fn time(row: &Row, idx: usize) -> StoreResult<DateTime<Utc>> {
    Ok(req::<NaiveDateTime>(row, idx)?.and_utc())
}

fn opt_time(row: &Row, idx: usize) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(get::<NaiveDateTime>(row, idx)?.map(|t| t.and_utc()))
}

/// Any integer column (or an integral NUMERIC, which some engines return for aggregates).
fn opt_int(row: &Row, idx: usize) -> StoreResult<Option<i64>> {
    let data = row.get_column_data(idx).map_err(|e| decode_error(idx, e))?;
    Ok(match data {
        ColumnData::U8(v) => v.map(i64::from),
        ColumnData::I16(v) => v.map(i64::from),
        ColumnData::I32(v) => v.map(i64::from),
        ColumnData::I64(v) => *v,
        ColumnData::Numeric(Some(n)) if n.scale() == 0 => {
            Some(i64::try_from(n.value()).map_err(|e| decode_error(idx, e))?)
        }
        ColumnData::Numeric(None) => None,
        other => {
            return Err(decode_error(
                idx,
                format!("expected an integer, got {other:?}"),
            ));
        }
    })
}

fn int(row: &Row, idx: usize) -> StoreResult<i64> {
    opt_int(row, idx)?.ok_or_else(|| decode_error(idx, "unexpected NULL"))
}

fn json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> StoreResult<T> {
    serde_json::from_str(&text(row, idx)?).map_err(|e| decode_error(idx, e))
}

/// An enum stored as its serde name (`highest_wins`, `on`, `kiosk`, ...).
fn enum_col<T: DeserializeOwned>(row: &Row, idx: usize) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text(row, idx)?))
        .map_err(|e| decode_error(idx, e))
}

fn enum_text<T: Serialize>(value: &T) -> StoreResult<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        Ok(other) => Err(StoreError::Other(anyhow::anyhow!(
            "{other} is not a unit variant"
        ))),
        Err(e) => Err(StoreError::Other(e.into())),
    }
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(e.into()))
}

// Column lists, as macros so that `concat!` can build whole statements at compile time.
macro_rules! site_columns {
    () => {
        "id, name, timezone, allowed_networks, created_at"
    };
}
macro_rules! device_columns {
    () => {
        "id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at"
    };
}
macro_rules! user_columns {
    () => {
        "id, username, password_hash, role, created_at, disabled_at"
    };
}
macro_rules! product_columns {
    () => {
        "id, sku, name, kind, price_cents, duration_minutes, active, created_at"
    };
}
macro_rules! plug_columns {
    () => {
        "id, site_id, name, host, port, child_id, created_at"
    };
}
macro_rules! schedule_columns {
    () => {
        "id, plug_id, site_id, cron, state, created_at"
    };
}
macro_rules! customer_columns {
    () => {
        "id, first_name, last_name, birth_date, phone, email, guardian_id, home_site_id, created_at"
    };
}
macro_rules! waiver_columns {
    () => {
        "id, customer_id, site_id, signer_name, signed_at, expires_at"
    };
}
macro_rules! audit_columns {
    () => {
        "id, [at], actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id"
    };
}

// Ties are broken by `CONVERT(CHAR(36), id)`: SQL Server sorts UNIQUEIDENTIFIER by its last
// bytes first, while the text form sorts like the SQLite store's ids (UUIDv7: creation order).

fn site_from(row: &Row) -> StoreResult<SiteRecord> {
    Ok(SiteRecord {
        id: uuid(row, 0)?,
        name: text(row, 1)?,
        timezone: text(row, 2)?,
        allowed_networks: json_col(row, 3)?,
        created_at: time(row, 4)?,
    })
}

fn device_from(row: &Row) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        id: uuid(row, 0)?,
        site_id: uuid(row, 1)?,
        name: text(row, 2)?,
        kind: enum_col(row, 3)?,
        allowed_networks: json_col(row, 4)?,
        key_hash: text(row, 5)?,
        created_at: time(row, 6)?,
        revoked_at: opt_time(row, 7)?,
    })
}

/// A user row; `site_ids` are filled in by the caller from `user_sites`.
fn user_from(row: &Row) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        id: uuid(row, 0)?,
        username: text(row, 1)?,
        password_hash: text(row, 2)?,
        role: enum_col(row, 3)?,
        site_ids: Vec::new(),
        created_at: time(row, 4)?,
        disabled_at: opt_time(row, 5)?,
    })
}

fn product_from(row: &Row) -> StoreResult<ProductRecord> {
    let duration = opt_int(row, 5)?
        .map(|m| i32::try_from(m).map_err(|e| decode_error(5, e)))
        .transpose()?;
    Ok(ProductRecord {
        id: uuid(row, 0)?,
        sku: text(row, 1)?,
        name: text(row, 2)?,
        kind: enum_col(row, 3)?,
        price_cents: int(row, 4)?,
        duration_minutes: duration,
        active: req(row, 6)?,
        created_at: time(row, 7)?,
    })
}

fn game_from(row: &Row) -> StoreResult<GameRecord> {
    Ok(GameRecord {
        id: uuid(row, 0)?,
        name: text(row, 1)?,
        score_order: enum_col(row, 2)?,
        created_at: time(row, 3)?,
    })
}

fn plug_from(row: &Row) -> StoreResult<PlugRecord> {
    Ok(PlugRecord {
        id: uuid(row, 0)?,
        site_id: uuid(row, 1)?,
        name: text(row, 2)?,
        host: text(row, 3)?,
        port: u16::try_from(int(row, 4)?).map_err(|e| decode_error(4, e))?,
        child_id: opt_text(row, 5)?,
        created_at: time(row, 6)?,
    })
}

fn schedule_from(row: &Row) -> StoreResult<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: uuid(row, 0)?,
        plug_id: uuid(row, 1)?,
        site_id: uuid(row, 2)?,
        cron: text(row, 3)?,
        state: enum_col(row, 4)?,
        created_at: time(row, 5)?,
    })
}

fn customer_from(row: &Row) -> StoreResult<CustomerRecord> {
    Ok(CustomerRecord {
        id: uuid(row, 0)?,
        first_name: text(row, 1)?,
        last_name: text(row, 2)?,
        birth_date: req::<NaiveDate>(row, 3)?,
        phone: opt_text(row, 4)?,
        email: opt_text(row, 5)?,
        guardian_id: opt_uuid(row, 6)?,
        home_site_id: uuid(row, 7)?,
        created_at: time(row, 8)?,
    })
}

fn waiver_from(row: &Row) -> StoreResult<WaiverRecord> {
    Ok(WaiverRecord {
        id: uuid(row, 0)?,
        customer_id: uuid(row, 1)?,
        site_id: uuid(row, 2)?,
        signer_name: text(row, 3)?,
        signed_at: time(row, 4)?,
        expires_at: time(row, 5)?,
    })
}

fn audit_from(row: &Row) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: uuid(row, 0)?,
        at: time(row, 1)?,
        actor_kind: text(row, 2)?,
        actor_id: opt_uuid(row, 3)?,
        actor_name: text(row, 4)?,
        ip: opt_text(row, 5)?,
        request_id: opt_text(row, 6)?,
        action: text(row, 7)?,
        target: opt_text(row, 8)?,
        site_id: opt_uuid(row, 9)?,
    })
}

fn change_from(row: &Row) -> StoreResult<Change> {
    let entity = text(row, 1)?;
    let op = text(row, 3)?;
    Ok(Change {
        seq: int(row, 0)?,
        entity: Entity::parse(&entity)
            .ok_or_else(|| decode_error(1, format!("unknown entity {entity}")))?,
        entity_id: uuid(row, 2)?,
        op: ChangeOp::parse(&op).ok_or_else(|| decode_error(3, format!("unknown op {op}")))?,
        site_id: opt_uuid(row, 4)?,
        data: json_col(row, 5)?,
    })
}

/// The user of a "user row; its site links" pair of result sets, if the first set has a row.
fn one_user(sets: Vec<Vec<Row>>) -> StoreResult<Option<UserRecord>> {
    let mut sets = sets.into_iter();
    let users = sets.next().unwrap_or_default();
    let links = sets.next().unwrap_or_default();
    let Some(row) = users.first() else {
        return Ok(None);
    };
    let mut found = [user_from(row)?];
    attach_sites(&mut found, &links)?;
    let [user] = found;
    Ok(Some(user))
}

/// Collects `(user_id, site_id)` rows into each user's sorted `site_ids`. Sorting in Rust keeps
/// the order the SQLite store returns (UUID byte order), which SQL Server's GUID order is not.
fn attach_sites(users: &mut [UserRecord], links: &[Row]) -> StoreResult<()> {
    let mut by_user: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for link in links {
        by_user
            .entry(uuid(link, 0)?)
            .or_default()
            .push(uuid(link, 1)?);
    }
    for user in users {
        let mut sites = by_user.remove(&user.id).unwrap_or_default();
        sites.sort();
        user.site_ids = sites;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Audit log and change log
// ---------------------------------------------------------------------------------------------

async fn audit(
    conn: &mut Conn,
    actor: &Actor,
    event: AuditEvent,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut q = Query::new(
        "INSERT INTO audit_log (id, [at], actor_kind, actor_id, actor_name, ip, request_id, action, target, site_id) \
         VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10)",
    );
    q.bind(Uuid::now_v7());
    q.bind(ts(at));
    q.bind(actor.kind);
    q.bind(actor.id);
    q.bind(actor.name.as_str());
    q.bind(actor.ip.map(|ip| ip.to_string()));
    q.bind(actor.request_id.as_deref());
    q.bind(event.action);
    q.bind(event.target);
    q.bind(event.site_id);
    conn.exec(q).await
}

/// A change-log row to append: the full new state of one row, already serialised.
struct NewChange {
    entity: Entity,
    entity_id: Uuid,
    /// `None`: chain-wide, pulled by every site.
    site_id: Option<Uuid>,
    data: String,
    at: DateTime<Utc>,
}

impl NewChange {
    fn upsert<T: Serialize>(
        entity: Entity,
        entity_id: Uuid,
        site_id: Option<Uuid>,
        record: &T,
        at: DateTime<Utc>,
    ) -> StoreResult<Self> {
        Ok(Self {
            entity,
            entity_id,
            site_id,
            data: to_json(record)?,
            at,
        })
    }
}

/// A user replicates to each of its sites, or (chain-wide roles, or no sites) everywhere.
fn user_changes(user: &UserRecord, at: DateTime<Utc>) -> StoreResult<Vec<NewChange>> {
    if user.role.is_chain_wide() || user.site_ids.is_empty() {
        return Ok(vec![NewChange::upsert(
            Entity::User,
            user.id,
            None,
            user,
            at,
        )?]);
    }
    user.site_ids
        .iter()
        .map(|site| NewChange::upsert(Entity::User, user.id, Some(*site), user, at))
        .collect()
}

/// Takes the change-log lock for the rest of the transaction.
///
/// Why: `change_log.seq` is an IDENTITY, handed out when a row is inserted but visible only
/// when its transaction commits. Two concurrent writers could take 42 and 43 and commit 43
/// first; an edge pulling at that moment moves its cursor to 43 and never sees 42. With this
/// exclusive, transaction-owned lock held from just before the first change-log INSERT until
/// COMMIT, no writer can take a seq until the previous appender has committed, so seq order is
/// commit order and "every row after my cursor" is complete. Callers do their other writes
/// first and take the lock last, so it is held only for a few inserts and the commit.
async fn lock_change_log(conn: &mut Conn) -> StoreResult<()> {
    let row = conn
        .row(Query::new(
            "DECLARE @result INT; \
             EXEC @result = sp_getapplock @Resource = N'aero_change_log', @LockMode = N'Exclusive', \
                  @LockOwner = N'Transaction', @LockTimeout = 10000; \
             SELECT @result;",
        ))
        .await?
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("sp_getapplock returned no result")))?;
    match int(&row, 0)? {
        // 0: granted at once; 1: granted after waiting.
        code if code >= 0 => Ok(()),
        // -1: timed out; -2: cancelled; -3: chosen as a deadlock victim.
        code @ -3..=-1 => Err(StoreError::Transient(format!(
            "could not take the change-log lock (sp_getapplock returned {code})"
        ))),
        // -999: a parameter or call error, which no retry will fix.
        code => Err(StoreError::Other(anyhow::anyhow!(
            "sp_getapplock failed with {code}"
        ))),
    }
}

/// Appends `changes` under the change-log lock; call it last in a transaction.
async fn append_changes(conn: &mut Conn, changes: &[NewChange]) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    lock_change_log(conn).await?;
    for change in changes {
        let mut q = Query::new(
            "INSERT INTO change_log (entity, entity_id, op, site_id, data, changed_at) \
             VALUES (@P1, @P2, @P3, @P4, @P5, @P6)",
        );
        q.bind(change.entity.as_str());
        q.bind(change.entity_id);
        q.bind(ChangeOp::Upsert.as_str());
        q.bind(change.site_id);
        q.bind(change.data.as_str());
        q.bind(ts(change.at));
        conn.exec(q).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Transactional units of work (each runs inside `begin` .. `finish`)
// ---------------------------------------------------------------------------------------------

async fn insert_device(conn: &mut Conn, d: &DeviceRecord, networks: &str) -> StoreResult<()> {
    let mut q = Query::new(
        "INSERT INTO devices (id, site_id, name, kind, allowed_networks, key_hash, created_at, revoked_at) \
         VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, NULL)",
    );
    q.bind(d.id);
    q.bind(d.site_id);
    q.bind(d.name.as_str());
    q.bind(d.kind.as_str());
    q.bind(networks);
    q.bind(d.key_hash.as_str());
    q.bind(ts(d.created_at));
    conn.exec(q).await
}

async fn redeem_tx(
    conn: &mut Conn,
    token_hash: &str,
    now: DateTime<Utc>,
    edge: &DeviceRecord,
) -> StoreResult<Redeemed> {
    // Claim the token with the UPDATE itself: a concurrent redemption waits on the row lock
    // and then no longer matches `used_at IS NULL`, so a token is used exactly once.
    let mut q = Query::new(
        "DECLARE @claimed INT; \
         UPDATE enrollment_tokens SET used_at = @P2, device_id = @P3 \
          WHERE token_hash = @P1 AND used_at IS NULL AND expires_at > @P2; \
         SET @claimed = @@ROWCOUNT; \
         SELECT site_id FROM enrollment_tokens WHERE token_hash = @P1 AND @claimed = 1;",
    );
    q.bind(token_hash);
    q.bind(ts(now));
    q.bind(edge.id);
    let Some(claimed) = conn.row(q).await? else {
        return Ok(Redeemed::Refused);
    };
    let site_id = uuid(&claimed, 0)?;
    let device = DeviceRecord {
        site_id,
        ..edge.clone()
    };
    insert_device(conn, &device, &to_json(&device.allowed_networks)?).await?;
    let actor = Actor {
        kind: "edge",
        id: Some(device.id),
        name: device.name.clone(),
        ip: None,
        request_id: None,
    };
    let event = AuditEvent {
        action: "edge.enroll",
        target: Some(device.id.to_string()),
        site_id: Some(site_id),
    };
    audit(conn, &actor, event, now).await?;

    let mut q = Query::new(concat!(
        "SELECT ",
        site_columns!(),
        " FROM sites WHERE id = @P1; ",
        "SELECT acked_seq FROM site_sync WHERE site_id = @P1;"
    ));
    q.bind(site_id);
    let mut sets = conn.results(q).await?.into_iter();
    let site_rows = sets.next().unwrap_or_default();
    let site = site_from(site_rows.first().ok_or(StoreError::NotFound)?)?;
    let acked_seq = match sets.next().unwrap_or_default().first() {
        Some(row) => int(row, 0)?,
        None => 0,
    };

    let change = NewChange::upsert(Entity::Device, device.id, Some(site_id), &device, now)?;
    append_changes(conn, &[change]).await?;
    Ok(Redeemed::Enrolled { site, acked_seq })
}

async fn revoke_tx(
    conn: &mut Conn,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut q = Query::new(concat!(
        "DECLARE @revoked INT; ",
        "UPDATE devices SET revoked_at = @P2 WHERE id = @P1 AND revoked_at IS NULL; ",
        "SET @revoked = @@ROWCOUNT; ",
        "SELECT ",
        device_columns!(),
        " FROM devices WHERE id = @P1 AND @revoked = 1;"
    ));
    q.bind(id);
    q.bind(ts(at));
    let Some(row) = conn.row(q).await? else {
        return Ok(false);
    };
    // The record as stored, `revoked_at` included: edges stop accepting the key when it lands.
    let device = device_from(&row)?;
    let event = AuditEvent {
        action: "device.revoke",
        target: Some(id.to_string()),
        site_id: Some(device.site_id),
    };
    audit(conn, actor, event, at).await?;
    let change = NewChange::upsert(Entity::Device, id, Some(device.site_id), &device, at)?;
    append_changes(conn, &[change]).await?;
    Ok(true)
}

async fn update_site_tx(
    conn: &mut Conn,
    actor: &Actor,
    site: &SiteRecord,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    // Lock the row before reading it: the no-op UPDATE takes an exclusive row lock held until
    // COMMIT on SQL Server and on Babelfish alike (Babelfish ignores table hints by default), so
    // concurrent updates of one site run one after the other and each compares against the
    // previous one's committed result. @@ROWCOUNT = 0: there is no such site.
    let mut q = Query::new(concat!(
        "DECLARE @found INT; ",
        "UPDATE sites SET name = name WHERE id = @P1; ",
        "SET @found = @@ROWCOUNT; ",
        "SELECT ",
        site_columns!(),
        " FROM sites WHERE id = @P1 AND @found = 1;"
    ));
    q.bind(site.id);
    let current = match conn.row(q).await? {
        Some(row) => site_from(&row)?,
        None => return Err(StoreError::NotFound),
    };
    // Only the editable fields change; id and created_at are the stored ones. Compared in Rust,
    // not in SQL: a case-insensitive collation would call a case-only rename "unchanged".
    let updated = SiteRecord {
        name: site.name.clone(),
        timezone: site.timezone.clone(),
        allowed_networks: site.allowed_networks.clone(),
        ..current.clone()
    };
    if updated == current {
        // Nothing to write (also what a retry finds after a commit whose answer was lost).
        return Ok(());
    }
    let mut q = Query::new(
        "UPDATE sites SET name = @P2, timezone = @P3, allowed_networks = @P4 WHERE id = @P1",
    );
    q.bind(updated.id);
    q.bind(updated.name.as_str());
    q.bind(updated.timezone.as_str());
    q.bind(to_json(&updated.allowed_networks)?);
    conn.exec(q).await?;
    let event = AuditEvent {
        action: "site.update",
        target: Some(updated.id.to_string()),
        site_id: Some(updated.id),
    };
    audit(conn, actor, event, at).await?;
    let change = NewChange::upsert(Entity::Site, updated.id, Some(updated.id), &updated, at)?;
    append_changes(conn, &[change]).await
}

async fn disable_user_tx(
    conn: &mut Conn,
    actor: &Actor,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    // The guarded UPDATE claims the change: a concurrent disable waits on the row lock and then
    // no longer matches `disabled_at IS NULL`, so exactly one of them audits and replicates.
    let mut q = Query::new(concat!(
        "DECLARE @disabled INT; ",
        "UPDATE users SET disabled_at = @P2 WHERE id = @P1 AND disabled_at IS NULL; ",
        "SET @disabled = @@ROWCOUNT; ",
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = @P1 AND @disabled = 1; ",
        "SELECT user_id, site_id FROM user_sites WHERE user_id = @P1 AND @disabled = 1;"
    ));
    q.bind(id);
    q.bind(ts(at));
    let mut sets = conn.results(q).await?.into_iter();
    let users = sets.next().unwrap_or_default();
    let links = sets.next().unwrap_or_default();
    let Some(row) = users.first() else {
        return Ok(false);
    };
    // The record as stored, `disabled_at` included: edges refuse its logins when it lands.
    let mut found = [user_from(row)?];
    attach_sites(&mut found, &links)?;
    let [user] = found;
    let event = AuditEvent {
        action: "user.disable",
        target: Some(id.to_string()),
        site_id: user.site_ids.first().copied(),
    };
    audit(conn, actor, event, at).await?;
    append_changes(conn, &user_changes(&user, at)?).await?;
    Ok(true)
}

async fn create_user_tx(
    conn: &mut Conn,
    actor: &Actor,
    user: &UserRecord,
    changes: &[NewChange],
) -> StoreResult<()> {
    let mut q = Query::new(
        "INSERT INTO users (id, username, password_hash, role, created_at, disabled_at) \
         VALUES (@P1, @P2, @P3, @P4, @P5, NULL)",
    );
    q.bind(user.id);
    q.bind(user.username.as_str());
    q.bind(user.password_hash.as_str());
    q.bind(user.role.as_str());
    q.bind(ts(user.created_at));
    conn.exec(q).await?;
    for site in &user.site_ids {
        let mut q = Query::new("INSERT INTO user_sites (user_id, site_id) VALUES (@P1, @P2)");
        q.bind(user.id);
        q.bind(*site);
        conn.exec(q).await?;
    }
    let event = AuditEvent {
        action: "user.create",
        target: Some(user.id.to_string()),
        site_id: user.site_ids.first().copied(),
    };
    audit(conn, actor, event, user.created_at).await?;
    append_changes(conn, changes).await
}

/// Everything in a pushed write must be storable, or the op would fail the whole batch on every
/// retry and block the site's queue. DATE and DATETIME2 hold years 1 to 9999 only.
fn check_representable(write: &VenueWrite) -> Result<(), String> {
    let fits = |year: i32| (1..=9999).contains(&year);
    let ok = match write {
        VenueWrite::Customer(c) => fits(c.birth_date.year()) && fits(c.created_at.year()),
        VenueWrite::Waiver(w) => fits(w.signed_at.year()) && fits(w.expires_at.year()),
    };
    if ok {
        Ok(())
    } else {
        Err("a date is outside the years 1 to 9999".into())
    }
}

/// Applies one accepted venue write; returns its change-log row (none for a waiver that was
/// already stored: waivers are immutable).
async fn apply_venue_write(
    conn: &mut Conn,
    write: &VenueWrite,
    at: DateTime<Utc>,
) -> StoreResult<Option<NewChange>> {
    match write {
        VenueWrite::Customer(c) => {
            // Last arrival wins: central is the authority on a customer's final state. UPDATE
            // first, INSERT when nothing matched; UPDLOCK + SERIALIZABLE hold the key range so a
            // concurrent first insert of the same id waits instead of racing. Home site and
            // creation time never change once stored. The stored row is what replicates.
            let mut q = Query::new(concat!(
                "UPDATE customers WITH (UPDLOCK, SERIALIZABLE) ",
                "SET first_name = @P2, last_name = @P3, birth_date = @P4, phone = @P5, email = @P6, guardian_id = @P7 ",
                "WHERE id = @P1; ",
                "IF @@ROWCOUNT = 0 ",
                "INSERT INTO customers (",
                customer_columns!(),
                ") ",
                "VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9); ",
                "SELECT ",
                customer_columns!(),
                " FROM customers WHERE id = @P1;"
            ));
            q.bind(c.id);
            q.bind(c.first_name.as_str());
            q.bind(c.last_name.as_str());
            q.bind(c.birth_date);
            q.bind(c.phone.as_deref());
            q.bind(c.email.as_deref());
            q.bind(c.guardian_id);
            q.bind(c.home_site_id);
            q.bind(ts(c.created_at));
            let row = conn.row(q).await?.ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!("customer {} vanished after upsert", c.id))
            })?;
            let stored = customer_from(&row)?;
            Ok(Some(NewChange::upsert(
                Entity::Customer,
                c.id,
                None,
                &stored,
                at,
            )?))
        }
        VenueWrite::Waiver(w) => {
            let mut q = Query::new(concat!(
                "INSERT INTO waivers (",
                waiver_columns!(),
                ") ",
                "SELECT @P1, @P2, @P3, @P4, @P5, @P6 ",
                "WHERE NOT EXISTS (SELECT 1 FROM waivers WITH (UPDLOCK, HOLDLOCK) WHERE id = @P1); ",
                "SELECT @@ROWCOUNT;"
            ));
            q.bind(w.id);
            q.bind(w.customer_id);
            q.bind(w.site_id);
            q.bind(w.signer_name.as_str());
            q.bind(ts(w.signed_at));
            q.bind(ts(w.expires_at));
            let inserted = match conn.row(q).await? {
                Some(row) => int(&row, 0)?,
                None => 0,
            };
            if inserted == 1 {
                Ok(Some(NewChange::upsert(Entity::Waiver, w.id, None, w, at)?))
            } else {
                Ok(None)
            }
        }
    }
}

/// Applies one pushed batch (sorted by seq, each op with its decoded write or rejection).
async fn push_tx(
    conn: &mut Conn,
    site_id: Uuid,
    ops: &[(&PushOp, Result<VenueWrite, String>)],
    at: DateTime<Utc>,
) -> StoreResult<PushOutcome> {
    // Serialise pushes of one site on its sync row, creating it on first use. The hinted
    // SELECT is the lock on SQL Server; Babelfish ignores table hints by default, so the no-op
    // UPDATE takes the row lock there (and is harmless here).
    let mut q = Query::new(
        "INSERT INTO site_sync (site_id, acked_seq, pull_cursor) \
         SELECT @P1, 0, 0 \
          WHERE NOT EXISTS (SELECT 1 FROM site_sync WITH (UPDLOCK, HOLDLOCK) WHERE site_id = @P1); \
         UPDATE site_sync SET acked_seq = acked_seq WHERE site_id = @P1; \
         SELECT acked_seq FROM site_sync WITH (UPDLOCK, HOLDLOCK) WHERE site_id = @P1;",
    );
    q.bind(site_id);
    let row = conn
        .row(q)
        .await?
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("site_sync row missing for {site_id}")))?;
    let mut acked = int(&row, 0)?;

    // Reasons already recorded for seqs this batch replays, fetched in one round trip, so a
    // replayed batch reports the same rejections again.
    let mut reasons: HashMap<i64, String> = HashMap::new();
    if let Some((first, _)) = ops.first().filter(|(op, _)| op.seq <= acked) {
        let mut q = Query::new(
            "SELECT seq, rejected FROM applied_ops \
             WHERE site_id = @P1 AND seq >= @P2 AND seq <= @P3 AND rejected IS NOT NULL",
        );
        q.bind(site_id);
        q.bind(first.seq);
        q.bind(acked);
        for row in conn.rows(q).await? {
            reasons.insert(int(&row, 0)?, text(&row, 1)?);
        }
    }

    let mut rejected = Vec::new();
    let mut expected_seq = None;
    let mut changes = Vec::new();
    for (op, decoded) in ops {
        if op.seq <= acked {
            if let Some(reason) = reasons.get(&op.seq) {
                rejected.push(RejectedOp {
                    seq: op.seq,
                    op_id: op.op_id,
                    reason: reason.clone(),
                });
            }
            continue;
        }
        if op.seq != acked + 1 {
            expected_seq = Some(acked + 1);
            break;
        }
        let mut q = Query::new("SELECT TOP (1) seq FROM applied_ops WHERE op_id = @P1");
        q.bind(op.op_id);
        let seen = conn.row(q).await?.is_some();
        let outcome = if seen {
            Err("duplicate op_id".to_string())
        } else {
            decoded.clone()
        };
        let reason = match outcome {
            Ok(write) => {
                changes.extend(apply_venue_write(conn, &write, at).await?);
                None
            }
            Err(reason) => Some(reason),
        };
        // A duplicate op_id cannot be stored again under its own id; keep the reason only.
        let stored_op_id = if seen { Uuid::now_v7() } else { op.op_id };
        let mut q = Query::new(
            "INSERT INTO applied_ops (site_id, seq, op_id, rejected, applied_at) VALUES (@P1, @P2, @P3, @P4, @P5)",
        );
        q.bind(site_id);
        q.bind(op.seq);
        q.bind(stored_op_id);
        q.bind(reason.as_deref());
        q.bind(ts(at));
        conn.exec(q).await?;
        if let Some(reason) = reason {
            reasons.insert(op.seq, reason.clone());
            rejected.push(RejectedOp {
                seq: op.seq,
                op_id: op.op_id,
                reason,
            });
        }
        acked = op.seq;
    }

    let mut q =
        Query::new("UPDATE site_sync SET acked_seq = @P2, last_push_at = @P3 WHERE site_id = @P1");
    q.bind(site_id);
    q.bind(acked);
    q.bind(ts(at));
    conn.exec(q).await?;
    // Last, so the change-log lock is held only for these inserts and the commit.
    append_changes(conn, &changes).await?;
    Ok(PushOutcome {
        acked_seq: acked,
        expected_seq,
        rejected,
    })
}

async fn record_pull_tx(
    conn: &mut Conn,
    site_id: Uuid,
    cursor: i64,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut q = Query::new(
        "UPDATE site_sync WITH (UPDLOCK, SERIALIZABLE) SET pull_cursor = @P2, last_pull_at = @P3 \
          WHERE site_id = @P1; \
         IF @@ROWCOUNT = 0 \
             INSERT INTO site_sync (site_id, acked_seq, pull_cursor, last_pull_at) VALUES (@P1, 0, @P2, @P3);",
    );
    q.bind(site_id);
    q.bind(cursor);
    q.bind(ts(at));
    conn.exec(q).await
}

async fn idempotency_begin_tx(
    conn: &mut Conn,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> StoreResult<Begin> {
    // A key older than 24 hours is forgotten and may be used afresh.
    let mut q = Query::new(
        "DELETE FROM idempotency_keys WHERE scope = @P1 AND [key] = @P2 AND created_at < @P3; \
         SELECT fingerprint, status, content_type, body FROM idempotency_keys WITH (UPDLOCK, HOLDLOCK) \
          WHERE scope = @P1 AND [key] = @P2;",
    );
    q.bind(scope);
    q.bind(key);
    q.bind(ts(now - chrono::Duration::hours(24)));
    let Some(row) = conn.row(q).await? else {
        let mut q = Query::new(
            "INSERT INTO idempotency_keys (scope, [key], fingerprint, status, content_type, body, created_at) \
             VALUES (@P1, @P2, @P3, NULL, NULL, NULL, @P4)",
        );
        q.bind(scope);
        q.bind(key);
        q.bind(fingerprint);
        q.bind(ts(now));
        conn.exec(q).await?;
        return Ok(Begin::Started);
    };
    if text(&row, 0)? != fingerprint {
        return Ok(Begin::Mismatch);
    }
    let Some(status) = opt_int(&row, 1)? else {
        return Ok(Begin::InProgress);
    };
    Ok(Begin::Replay(StoredResponse {
        status: u16::try_from(status).map_err(|e| decode_error(1, e))?,
        content_type: opt_text(&row, 2)?,
        body: get::<&[u8]>(&row, 3)?
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    }))
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

pub struct MssqlStore {
    pool: bb8::Pool<Manager>,
    /// `host:port`, for diagnostics. The connection string (and its password) is not kept.
    server: String,
}

impl std::fmt::Debug for MssqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("MssqlStore")
            .field("server", &self.server)
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .finish()
    }
}

impl MssqlStore {
    /// Connects to the server an ADO.NET connection string names, brings its schema up to date
    /// and opens the connection pool.
    pub async fn connect(ado: &str) -> anyhow::Result<Self> {
        let config =
            Config::from_ado_string(ado).context("parsing the SQL Server connection string")?;
        let server = config.get_addr();
        let manager = Manager { config };

        // Migrate on a dedicated connection, outside the pool, with a longer response bound.
        let mut migration_config = manager.config.clone();
        migration_config.command_timeout(Some(MIGRATION_COMMAND_TIMEOUT));
        let mut conn = bb8::ManageConnection::connect(&Manager {
            config: migration_config,
        })
        .await
        .with_context(|| format!("connecting to SQL Server at {server}"))?;
        migrate(&mut conn)
            .await
            .with_context(|| format!("migrating the central database on {server}"))?;
        drop(conn);

        let pool = bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .connection_timeout(CONNECTION_TIMEOUT)
            .error_sink(Box::new(LogErrors))
            .build(manager)
            .await
            .with_context(|| format!("opening the SQL Server connection pool for {server}"))?;
        tracing::info!(%server, "SQL Server store ready");
        Ok(Self { pool, server })
    }

    async fn checkout(&self) -> StoreResult<bb8::PooledConnection<'_, Manager>> {
        self.pool.get().await.map_err(|err| match err {
            bb8::RunError::User(err) => classify(err),
            bb8::RunError::TimedOut => StoreError::Transient(format!(
                "no SQL Server connection to {} within {CONNECTION_TIMEOUT:?}",
                self.server
            )),
        })
    }
}

/// Runs the embedded migrations. Central instances may start together, so the run is
/// serialised across them by a session-owned application lock (released when this
/// connection closes, whatever happens). The lock wait (5 min) stays within the migration
/// connection's response bound, so a wait ends in a clear error rather than a dead connection.
async fn migrate(conn: &mut Conn) -> anyhow::Result<()> {
    let row = conn
        .row(Query::new(
            "DECLARE @result INT; \
             EXEC @result = sp_getapplock @Resource = N'aero_schema_migrations', @LockMode = N'Exclusive', \
                  @LockOwner = N'Session', @LockTimeout = 300000; \
             SELECT @result;",
        ))
        .await?
        .context("sp_getapplock returned no result")?;
    let code = int(&row, 0)?;
    anyhow::ensure!(
        code >= 0,
        "could not take the migration lock (sp_getapplock returned {code})"
    );

    let report = embedded::migrations::runner()
        .run_async(&mut conn.client)
        .await;
    // Best effort: closing the connection releases the lock anyway.
    let _ = conn
        .batch("EXEC sp_releaseapplock @Resource = N'aero_schema_migrations', @LockOwner = N'Session';")
        .await;
    let report = report?;
    for migration in report.applied_migrations() {
        tracing::info!(%migration, "applied SQL Server migration");
    }
    Ok(())
}

#[async_trait]
impl Store for MssqlStore {
    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.checkout().await?;
        conn.rows(Query::new("SELECT 1")).await.map(drop)
    }

    // -- Sites ------------------------------------------------------------------------------

    async fn create_site(&self, actor: &Actor, site: &SiteRecord) -> StoreResult<()> {
        let networks = to_json(&site.allowed_networks)?;
        let change =
            NewChange::upsert(Entity::Site, site.id, Some(site.id), site, site.created_at)?;
        let (networks, change) = (networks.as_str(), &change);
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                let mut q = Query::new(
                    "INSERT INTO sites (id, name, timezone, allowed_networks, created_at) \
                     VALUES (@P1, @P2, @P3, @P4, @P5); \
                     INSERT INTO site_sync (site_id, acked_seq, pull_cursor) VALUES (@P1, 0, 0);",
                );
                q.bind(site.id);
                q.bind(site.name.as_str());
                q.bind(site.timezone.as_str());
                q.bind(networks);
                q.bind(ts(site.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "site.create",
                    target: Some(site.id.to_string()),
                    site_id: Some(site.id),
                };
                audit(&mut conn, actor, event, site.created_at).await?;
                append_changes(&mut conn, std::slice::from_ref(change)).await
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    async fn list_sites(&self) -> StoreResult<Vec<SiteRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let rows = conn
                .rows(Query::new(concat!(
                    "SELECT ",
                    site_columns!(),
                    " FROM sites ORDER BY name, CONVERT(CHAR(36), id)"
                )))
                .await?;
            rows.iter().map(site_from).collect()
        })
        .await
    }

    async fn get_site(&self, id: Uuid) -> StoreResult<Option<SiteRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                site_columns!(),
                " FROM sites WHERE id = @P1"
            ));
            q.bind(id);
            conn.row(q).await?.as_ref().map(site_from).transpose()
        })
        .await
    }

    async fn update_site(
        &self,
        actor: &Actor,
        site: &SiteRecord,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = update_site_tx(&mut conn, actor, site, at).await;
            conn.finish(result).await
        })
        .await
    }

    // -- Enrollment -------------------------------------------------------------------------

    async fn create_enrollment_token(
        &self,
        actor: &Actor,
        token: &EnrollmentToken,
    ) -> StoreResult<()> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                let mut q = Query::new(
                    "INSERT INTO enrollment_tokens (id, site_id, token_hash, created_at, expires_at, used_at, device_id) \
                     VALUES (@P1, @P2, @P3, @P4, @P5, NULL, NULL)",
                );
                q.bind(token.id);
                q.bind(token.site_id);
                q.bind(token.token_hash.as_str());
                q.bind(ts(token.created_at));
                q.bind(ts(token.expires_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "enrollment_token.create",
                    target: Some(token.id.to_string()),
                    site_id: Some(token.site_id),
                };
                audit(&mut conn, actor, event, token.created_at).await
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    async fn redeem_enrollment_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        edge: &DeviceRecord,
    ) -> StoreResult<Redeemed> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = redeem_tx(&mut conn, token_hash, now, edge).await;
            conn.finish(result).await
        })
        .await
    }

    // -- Devices ----------------------------------------------------------------------------

    async fn create_device(&self, actor: &Actor, device: &DeviceRecord) -> StoreResult<()> {
        let networks = to_json(&device.allowed_networks)?;
        let change = NewChange::upsert(
            Entity::Device,
            device.id,
            Some(device.site_id),
            device,
            device.created_at,
        )?;
        let (networks, change) = (networks.as_str(), &change);
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                insert_device(&mut conn, device, networks).await?;
                let event = AuditEvent {
                    action: "device.create",
                    target: Some(device.id.to_string()),
                    site_id: Some(device.site_id),
                };
                audit(&mut conn, actor, event, device.created_at).await?;
                append_changes(&mut conn, std::slice::from_ref(change)).await
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    async fn get_device(&self, id: Uuid) -> StoreResult<Option<DeviceRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                device_columns!(),
                " FROM devices WHERE id = @P1"
            ));
            q.bind(id);
            conn.row(q).await?.as_ref().map(device_from).transpose()
        })
        .await
    }

    async fn list_devices(&self, site_id: Uuid) -> StoreResult<Vec<DeviceRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                device_columns!(),
                " FROM devices WHERE site_id = @P1 ",
                "ORDER BY created_at, CONVERT(CHAR(36), id)"
            ));
            q.bind(site_id);
            conn.rows(q).await?.iter().map(device_from).collect()
        })
        .await
    }

    async fn device_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<DeviceRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                device_columns!(),
                " FROM devices WHERE key_hash = @P1 AND revoked_at IS NULL"
            ));
            q.bind(key_hash);
            conn.row(q).await?.as_ref().map(device_from).transpose()
        })
        .await
    }

    async fn revoke_device(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = revoke_tx(&mut conn, actor, id, at).await;
            conn.finish(result).await
        })
        .await
    }

    // -- Staff users ------------------------------------------------------------------------

    async fn create_user(&self, actor: &Actor, user: &UserRecord) -> StoreResult<()> {
        let changes = user_changes(user, user.created_at)?;
        let changes = changes.as_slice();
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = create_user_tx(&mut conn, actor, user, changes).await;
            conn.finish(result).await
        })
        .await
    }

    /// Case-insensitive: `users.username` is declared with a case-insensitive collation, which
    /// governs this comparison (and the unique constraint), so no LOWER() is needed, and the
    /// index is still used.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE username = @P1; ",
                "SELECT us.user_id, us.site_id FROM user_sites us ",
                "JOIN users u ON u.id = us.user_id WHERE u.username = @P1;"
            ));
            q.bind(username);
            one_user(conn.results(q).await?)
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut sets = conn
                .results(Query::new(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users ORDER BY username; ",
                    "SELECT user_id, site_id FROM user_sites;"
                )))
                .await?
                .into_iter();
            let rows = sets.next().unwrap_or_default();
            let links = sets.next().unwrap_or_default();
            let mut users = rows
                .iter()
                .map(user_from)
                .collect::<StoreResult<Vec<_>>>()?;
            attach_sites(&mut users, &links)?;
            Ok(users)
        })
        .await
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = @P1; ",
                "SELECT user_id, site_id FROM user_sites WHERE user_id = @P1;"
            ));
            q.bind(id);
            one_user(conn.results(q).await?)
        })
        .await
    }

    async fn disable_user(&self, actor: &Actor, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = disable_user_tx(&mut conn, actor, id, at).await;
            conn.finish(result).await
        })
        .await
    }

    // -- Catalog ----------------------------------------------------------------------------

    async fn create_product(&self, actor: &Actor, product: &ProductRecord) -> StoreResult<()> {
        let change = NewChange::upsert(
            Entity::Product,
            product.id,
            None,
            product,
            product.created_at,
        )?;
        let (p, change) = (product, &change);
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                let mut q = Query::new(concat!(
                    "INSERT INTO products (",
                    product_columns!(),
                    ") ",
                    "VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8)"
                ));
                q.bind(p.id);
                q.bind(p.sku.as_str());
                q.bind(p.name.as_str());
                q.bind(p.kind.as_str());
                q.bind(p.price_cents);
                q.bind(p.duration_minutes);
                q.bind(p.active);
                q.bind(ts(p.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "product.create",
                    target: Some(p.id.to_string()),
                    site_id: None,
                };
                audit(&mut conn, actor, event, p.created_at).await?;
                append_changes(&mut conn, std::slice::from_ref(change)).await
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    async fn list_products(&self) -> StoreResult<Vec<ProductRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let rows = conn
                .rows(Query::new(concat!(
                    "SELECT ",
                    product_columns!(),
                    " FROM products ORDER BY sku"
                )))
                .await?;
            rows.iter().map(product_from).collect()
        })
        .await
    }

    async fn create_game(&self, actor: &Actor, game: &GameRecord) -> StoreResult<()> {
        let score_order = enum_text(&game.score_order)?;
        let change = NewChange::upsert(Entity::Game, game.id, None, game, game.created_at)?;
        let (g, score_order, change) = (game, score_order.as_str(), &change);
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                let mut q = Query::new(
                    "INSERT INTO games (id, name, score_order, created_at) VALUES (@P1, @P2, @P3, @P4)",
                );
                q.bind(g.id);
                q.bind(g.name.as_str());
                q.bind(score_order);
                q.bind(ts(g.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "game.create",
                    target: Some(g.id.to_string()),
                    site_id: None,
                };
                audit(&mut conn, actor, event, g.created_at).await?;
                append_changes(&mut conn, std::slice::from_ref(change)).await
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    async fn list_games(&self) -> StoreResult<Vec<GameRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let rows = conn
                .rows(Query::new(
                    "SELECT id, name, score_order, created_at FROM games ORDER BY name",
                ))
                .await?;
            rows.iter().map(game_from).collect()
        })
        .await
    }

    // -- Plugs and schedules ----------------------------------------------------------------

    async fn create_plug(&self, actor: &Actor, plug: &PlugRecord) -> StoreResult<()> {
        let change = NewChange::upsert(
            Entity::Plug,
            plug.id,
            Some(plug.site_id),
            plug,
            plug.created_at,
        )?;
        let (p, change) = (plug, &change);
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                let mut q = Query::new(concat!(
                    "INSERT INTO plugs (",
                    plug_columns!(),
                    ") VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7)"
                ));
                q.bind(p.id);
                q.bind(p.site_id);
                q.bind(p.name.as_str());
                q.bind(p.host.as_str());
                q.bind(i32::from(p.port));
                q.bind(p.child_id.as_deref());
                q.bind(ts(p.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "plug.create",
                    target: Some(p.id.to_string()),
                    site_id: Some(p.site_id),
                };
                audit(&mut conn, actor, event, p.created_at).await?;
                append_changes(&mut conn, std::slice::from_ref(change)).await
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    async fn get_plug(&self, id: Uuid) -> StoreResult<Option<PlugRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                plug_columns!(),
                " FROM plugs WHERE id = @P1"
            ));
            q.bind(id);
            conn.row(q).await?.as_ref().map(plug_from).transpose()
        })
        .await
    }

    async fn list_plugs(&self, site_id: Uuid) -> StoreResult<Vec<PlugRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                plug_columns!(),
                " FROM plugs WHERE site_id = @P1 ORDER BY name"
            ));
            q.bind(site_id);
            conn.rows(q).await?.iter().map(plug_from).collect()
        })
        .await
    }

    async fn create_schedule(&self, actor: &Actor, schedule: &ScheduleRecord) -> StoreResult<()> {
        let state = enum_text(&schedule.state)?;
        let change = NewChange::upsert(
            Entity::PlugSchedule,
            schedule.id,
            Some(schedule.site_id),
            schedule,
            schedule.created_at,
        )?;
        let (s, state, change) = (schedule, state.as_str(), &change);
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                let mut q = Query::new(concat!(
                    "INSERT INTO plug_schedules (",
                    schedule_columns!(),
                    ") VALUES (@P1, @P2, @P3, @P4, @P5, @P6)"
                ));
                q.bind(s.id);
                q.bind(s.plug_id);
                q.bind(s.site_id);
                q.bind(s.cron.as_str());
                q.bind(state);
                q.bind(ts(s.created_at));
                conn.exec(q).await?;
                let event = AuditEvent {
                    action: "plug_schedule.create",
                    target: Some(s.id.to_string()),
                    site_id: Some(s.site_id),
                };
                audit(&mut conn, actor, event, s.created_at).await?;
                append_changes(&mut conn, std::slice::from_ref(change)).await
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    async fn list_schedules(&self, plug_id: Uuid) -> StoreResult<Vec<ScheduleRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                schedule_columns!(),
                " FROM plug_schedules WHERE plug_id = @P1 ",
                "ORDER BY created_at, CONVERT(CHAR(36), id)"
            ));
            q.bind(plug_id);
            conn.rows(q).await?.iter().map(schedule_from).collect()
        })
        .await
    }

    // -- Audit log --------------------------------------------------------------------------

    async fn list_audit(&self, site_id: Option<Uuid>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            // Two statements rather than `@P2 IS NULL OR site_id = @P2`, so each gets its own plan.
            let mut q = match site_id {
                None => Query::new(concat!(
                    "SELECT TOP (@P1) ",
                    audit_columns!(),
                    " FROM audit_log ",
                    "ORDER BY [at] DESC, CONVERT(CHAR(36), id) DESC"
                )),
                Some(_) => Query::new(concat!(
                    "SELECT TOP (@P1) ",
                    audit_columns!(),
                    " FROM audit_log WHERE site_id = @P2 ",
                    "ORDER BY [at] DESC, CONVERT(CHAR(36), id) DESC"
                )),
            };
            q.bind(i64::from(limit));
            if let Some(site_id) = site_id {
                q.bind(site_id);
            }
            conn.rows(q).await?.iter().map(audit_from).collect()
        })
        .await
    }

    // -- Change feed and sync ---------------------------------------------------------------

    async fn pull(
        &self,
        site_id: Uuid,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Vec<Change>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(
                "SELECT TOP (@P1) seq, entity, entity_id, op, site_id, data FROM change_log \
                 WHERE seq > @P2 AND (site_id IS NULL OR site_id = @P3) ORDER BY seq",
            );
            q.bind(i64::from(limit));
            q.bind(after);
            q.bind(site_id);
            let rows = conn.rows(q).await?;
            let mut changes = Vec::new();
            let mut bytes = 0usize;
            for row in &rows {
                // Sized like the SQLite store: the JSON text's UTF-8 length.
                let size = req::<&str>(row, 5)?.len();
                if !changes.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                changes.push(change_from(row)?);
            }
            Ok(changes)
        })
        .await
    }

    async fn change_head(&self) -> StoreResult<i64> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            match conn
                .row(Query::new("SELECT ISNULL(MAX(seq), 0) FROM change_log"))
                .await?
            {
                Some(row) => int(&row, 0),
                None => Ok(0),
            }
        })
        .await
    }

    async fn record_pull(&self, site_id: Uuid, cursor: i64, at: DateTime<Utc>) -> StoreResult<()> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = record_pull_tx(&mut conn, site_id, cursor, at)
                .await
                .map_err(race_is_transient);
            conn.finish(result).await
        })
        .await
    }

    async fn push(
        &self,
        site_id: Uuid,
        ops: &[PushOp],
        at: DateTime<Utc>,
    ) -> StoreResult<PushOutcome> {
        // Decoding is pure, so it is done once, outside the retried transaction. The storage
        // check rejects what VenueWrite accepts but SQL Server cannot hold.
        let mut sorted: Vec<&PushOp> = ops.iter().collect();
        sorted.sort_by_key(|op| op.seq);
        let decoded: Vec<(&PushOp, Result<VenueWrite, String>)> = sorted
            .into_iter()
            .map(|op| {
                let write = VenueWrite::decode(site_id, op)
                    .and_then(|w| check_representable(&w).map(|()| w));
                (op, write)
            })
            .collect();
        let decoded = decoded.as_slice();
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            // Within a push a duplicate key can only come from a concurrent writer of the same
            // row (a second delivery of this batch, or the same customer, waiver or op_id
            // arriving at once from elsewhere): retry, and the next attempt sees the winner's.
            let result = push_tx(&mut conn, site_id, decoded, at)
                .await
                .map_err(race_is_transient);
            conn.finish(result).await
        })
        .await
    }

    async fn site_sync(&self, site_id: Uuid) -> StoreResult<SiteSyncStatus> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(
                "SELECT acked_seq, pull_cursor, last_push_at, last_pull_at FROM site_sync WHERE site_id = @P1; \
                 SELECT COUNT_BIG(*) FROM change_log \
                  WHERE seq > ISNULL((SELECT pull_cursor FROM site_sync WHERE site_id = @P1), 0) \
                    AND (site_id IS NULL OR site_id = @P1);",
            );
            q.bind(site_id);
            let mut sets = conn.results(q).await?.into_iter();
            let sync = sets.next().unwrap_or_default();
            let lag = sets.next().unwrap_or_default();
            let (acked_seq, pull_cursor, last_push_at, last_pull_at) = match sync.first() {
                Some(row) => (int(row, 0)?, int(row, 1)?, opt_time(row, 2)?, opt_time(row, 3)?),
                None => (0, 0, None, None),
            };
            let pull_lag = match lag.first() {
                Some(row) => int(row, 0)?,
                None => 0,
            };
            Ok(SiteSyncStatus {
                site_id,
                last_push_at,
                last_pull_at,
                acked_seq,
                pull_cursor,
                pull_lag,
            })
        })
        .await
    }

    // -- Chain-wide venue data --------------------------------------------------------------

    async fn get_customer(&self, id: Uuid) -> StoreResult<Option<CustomerRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                customer_columns!(),
                " FROM customers WHERE id = @P1"
            ));
            q.bind(id);
            conn.row(q).await?.as_ref().map(customer_from).transpose()
        })
        .await
    }

    async fn customers_by_phone(&self, phone: &str) -> StoreResult<Vec<CustomerRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT TOP (50) ",
                customer_columns!(),
                " FROM customers WHERE phone = @P1 ",
                "ORDER BY last_name, first_name, CONVERT(CHAR(36), id)"
            ));
            q.bind(phone);
            conn.rows(q).await?.iter().map(customer_from).collect()
        })
        .await
    }

    async fn count_customers(&self) -> StoreResult<i64> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            match conn
                .row(Query::new("SELECT COUNT_BIG(*) FROM customers"))
                .await?
            {
                Some(row) => int(&row, 0),
                None => Ok(0),
            }
        })
        .await
    }

    async fn waivers_for(&self, customer_id: Uuid) -> StoreResult<Vec<WaiverRecord>> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(concat!(
                "SELECT ",
                waiver_columns!(),
                " FROM waivers WHERE customer_id = @P1 ",
                "ORDER BY signed_at, CONVERT(CHAR(36), id)"
            ));
            q.bind(customer_id);
            conn.rows(q).await?.iter().map(waiver_from).collect()
        })
        .await
    }

    async fn daily_report(
        &self,
        site_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<DailyReport> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(
                "SELECT \
                   (SELECT COUNT_BIG(*) FROM orders \
                     WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3), \
                   (SELECT ISNULL(SUM(total_cents), 0) FROM orders \
                     WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3), \
                   (SELECT COUNT_BIG(*) FROM checkins \
                     WHERE site_id = @P1 AND created_at >= @P2 AND created_at < @P3), \
                   (SELECT COUNT_BIG(*) FROM customers \
                     WHERE home_site_id = @P1 AND created_at >= @P2 AND created_at < @P3)",
            );
            q.bind(site_id);
            q.bind(ts(from));
            q.bind(ts(to));
            let row = conn.row(q).await?.ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!("the report query returned no row"))
            })?;
            Ok(DailyReport {
                orders: int(&row, 0)?,
                revenue_cents: int(&row, 1)?,
                checkins: int(&row, 2)?,
                new_customers: int(&row, 3)?,
            })
        })
        .await
    }

    // -- Idempotency keys -------------------------------------------------------------------

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Begin> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            // Two first uses of one key race to insert it; the loser retries and sees InProgress.
            let result = idempotency_begin_tx(&mut conn, scope, key, fingerprint, now)
                .await
                .map_err(race_is_transient);
            conn.finish(result).await
        })
        .await
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q = Query::new(
                "UPDATE idempotency_keys SET status = @P3, content_type = @P4, body = @P5 \
                 WHERE scope = @P1 AND [key] = @P2",
            );
            q.bind(scope);
            q.bind(key);
            q.bind(i32::from(response.status));
            q.bind(response.content_type.as_deref());
            q.bind(response.body.as_slice());
            conn.exec(q).await
        })
        .await
    }

    async fn idempotency_release(&self, scope: &str, key: &str) -> StoreResult<()> {
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            let mut q =
                Query::new("DELETE FROM idempotency_keys WHERE scope = @P1 AND [key] = @P2");
            q.bind(scope);
            q.bind(key);
            conn.exec(q).await
        })
        .await
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

    /// The T-SQL of every embedded migration, with `--` comments removed (none of the checked
    /// words may hide in a string literal: the migrations have none).
    fn migration_sql() -> Vec<(String, String)> {
        let runner = embedded::migrations::runner();
        let migrations = runner.get_migrations();
        assert!(
            !migrations.is_empty(),
            "no SQL Server migrations were embedded"
        );
        migrations
            .iter()
            .map(|m| {
                let sql = m.sql().expect("embedded migrations carry their SQL");
                let code = sql
                    .lines()
                    .map(|line| line.split("--").next().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n");
                (m.to_string(), code)
            })
            .collect()
    }

    fn words(sql: &str) -> Vec<String> {
        sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@'))
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_uppercase)
            .collect()
    }

    /// What in `sql` (comments already removed) SQL Server 2019, Azure SQL and Babelfish do not
    /// all run, or refinery cannot send.
    fn portability_problems(sql: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let all = words(sql);
        for banned in ["MERGE", "CHANGE_TRACKING", "MIN_ACTIVE_ROWVERSION"] {
            if all.iter().any(|w| w == banned) {
                problems.push(banned.to_string());
            }
        }
        if all.windows(3).any(|w| w == ["CREATE", "OR", "ALTER"]) {
            problems.push("CREATE OR ALTER".into());
        }
        // A batch separator is a line holding GO (optionally with a count); refinery would send
        // it to the server, which does not know it.
        for line in sql.lines() {
            let line = words(line);
            if line.first().is_some_and(|w| w == "GO")
                && line
                    .iter()
                    .skip(1)
                    .all(|w| w.chars().all(|c| c.is_ascii_digit()))
            {
                problems.push("GO".into());
            }
        }
        // Filtered indexes: CREATE [UNIQUE] [NONCLUSTERED] INDEX ... WHERE.
        for statement in sql.split(';') {
            let statement = words(statement);
            if statement.first().is_some_and(|w| w == "CREATE")
                && statement.iter().take(4).any(|w| w == "INDEX")
                && statement.iter().any(|w| w == "WHERE")
            {
                problems.push("filtered index".into());
            }
        }
        problems
    }

    #[test]
    fn the_portability_check_finds_what_it_looks_for() {
        for (sql, problem) in [
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE;",
                "MERGE",
            ),
            (
                "create or alter procedure p as select 1;",
                "CREATE OR ALTER",
            ),
            (
                "ALTER DATABASE d SET CHANGE_TRACKING = ON;",
                "CHANGE_TRACKING",
            ),
            ("SELECT MIN_ACTIVE_ROWVERSION();", "MIN_ACTIVE_ROWVERSION"),
            (
                "CREATE TABLE a (id INT);\ngo\nCREATE TABLE b (id INT);",
                "GO",
            ),
            ("CREATE TABLE a (id INT);\n  GO 2\n", "GO"),
            (
                "CREATE UNIQUE INDEX ix ON t (a) WHERE a IS NOT NULL;",
                "filtered index",
            ),
        ] {
            assert_eq!(
                portability_problems(sql),
                vec![problem.to_string()],
                "{sql}"
            );
        }
        assert!(portability_problems("CREATE TABLE going (gone INT, go_to INT);").is_empty());
    }

    #[test]
    fn migrations_use_only_portable_t_sql() {
        for (name, sql) in migration_sql() {
            assert_eq!(portability_problems(&sql), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn every_named_constraint_maps_to_a_conflict_message() {
        let sql: String = migration_sql()
            .into_iter()
            .map(|(_, sql)| sql.to_ascii_lowercase())
            .collect();
        let declared: Vec<String> = words(&sql)
            .windows(2)
            .filter(|w| {
                w[0] == "CONSTRAINT" && (w[1].starts_with("PK_") || w[1].starts_with("UQ_"))
            })
            .map(|w| w[1].to_ascii_lowercase())
            .collect();
        assert!(!declared.is_empty());
        for name in &declared {
            assert!(
                DUPLICATES.iter().any(|(known, _)| known == name),
                "{name} has no conflict message"
            );
        }
        for (name, _) in DUPLICATES {
            assert!(
                declared.iter().any(|d| d == name),
                "{name} is not declared by any migration"
            );
            let others = DUPLICATES.iter().filter(|(other, _)| other != name);
            for (other, _) in others {
                assert!(!other.contains(name), "{name} is a substring of {other}");
            }
        }
    }

    #[test]
    fn times_are_truncated_to_milliseconds() {
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123999999Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            ts(at).and_utc().to_rfc3339(),
            "2024-05-06T07:08:09.123+00:00"
        );
    }

    #[test]
    fn server_errors_map_to_store_errors() {
        let conflict = |code, message| match classify_server(code, message) {
            Some(StoreError::Conflict(what)) => what,
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(
            conflict(
                2627,
                "Violation of UNIQUE KEY constraint 'uq_users_username'. Cannot insert duplicate key in object 'dbo.users'. The duplicate key value is (bob)."
            ),
            "username already exists"
        );
        assert_eq!(
            conflict(
                2627,
                "duplicate key value violates unique constraint \"uq_plugs_site_name\""
            ),
            "plug name already exists"
        );
        assert_eq!(
            conflict(2627, "Violation of PRIMARY KEY constraint 'PK_Sites'."),
            "site already exists"
        );
        assert_eq!(
            conflict(2601, "Cannot insert duplicate key row in object 'dbo.x'"),
            "record already exists"
        );
        assert!(matches!(
            classify_server(
                547,
                "The INSERT statement conflicted with the FOREIGN KEY constraint \"fk_plugs_site\"."
            ),
            Some(StoreError::NotFound)
        ));
        for code in [1205, 1222, 40613] {
            assert!(
                matches!(
                    classify_server(code, "busy"),
                    Some(StoreError::Transient(_))
                ),
                "{code}"
            );
        }
        assert!(
            classify_server(
                547,
                "The INSERT statement conflicted with the CHECK constraint"
            )
            .is_none()
        );
        assert!(classify_server(208, "Invalid object name 'nope'.").is_none());
    }
}

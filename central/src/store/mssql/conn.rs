//! Connections: the bb8 pool of tiberius clients (session setup, the Azure SQL gateway
//! redirect, when a connection may be reused), the `Conn` primitives every statement goes
//! through, and the store's two ways of running work on a pooled connection: `transaction`
//! and `with_connection`.

use super::errors::{classify, retrying};
use super::migrate::{migrate, read_store_id};
use super::{MssqlStore, idempotency};
use crate::store::{StoreError, StoreResult};
use aero_shared::idempotency::KeyedRequest;
use anyhow::Context as _;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tiberius::{Client, Config, Query, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt as _};

/// Pooled connections per central instance. Several instances share one server, so modest.
const POOL_SIZE: u32 = 16;
/// How long to wait for a pooled connection, and for a new TCP connection to be accepted.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-response bound on the migration connection, instead of tiberius' 30 s default: DDL on a
/// large table, or waiting for another instance's migration, may legitimately take longer.
const MIGRATION_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Sent once on every new connection (a plain batch, so the settings last for the session).
/// XACT_ABORT ON: any error rolls the whole transaction back on the server, so a failed write
/// is never half-applied. LOCK_TIMEOUT: a lock wait ends in error 1222 (retried) after 10 s,
/// well before tiberius' 30 s command timeout would abandon the connection mid-response.
const SESSION_SETUP: &str = "SET XACT_ABORT ON; SET LOCK_TIMEOUT 10000;";

type TdsClient = Client<Compat<TcpStream>>;

/// One pooled connection plus what the pool must know to decide whether it may be reused.
pub(super) struct Conn {
    pub(super) client: TdsClient,
    /// Set while a request is on the wire and cleared once its whole response has been read.
    /// Still set after a cancelled future or an I/O / protocol error: the next response on
    /// the wire would belong to someone else's request, so the connection is dropped.
    in_flight: bool,
    /// Set from BEGIN until COMMIT or ROLLBACK succeeded. Still set if the future was dropped
    /// in between: closing the connection is then the only safe way to end the transaction.
    in_tx: bool,
}

#[derive(Debug)]
pub(super) struct Manager {
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
    pub(super) async fn results(&mut self, query: Query<'_>) -> StoreResult<Vec<Vec<Row>>> {
        self.in_flight = true;
        let result = match query.query(&mut self.client).await {
            Ok(stream) => stream.into_results().await,
            Err(err) => Err(err),
        };
        self.settle(result)
    }

    /// The first result set of `query` (later ones are read and dropped).
    pub(super) async fn rows(&mut self, query: Query<'_>) -> StoreResult<Vec<Row>> {
        Ok(self
            .results(query)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    pub(super) async fn row(&mut self, query: Query<'_>) -> StoreResult<Option<Row>> {
        Ok(self.rows(query).await?.into_iter().next())
    }

    pub(super) async fn exec(&mut self, query: Query<'_>) -> StoreResult<()> {
        self.in_flight = true;
        let result = query.execute(&mut self.client).await.map(drop);
        self.settle(result)
    }

    /// A parameterless batch, sent as plain SQL (not through sp_executesql).
    pub(super) async fn batch(&mut self, sql: &str) -> StoreResult<()> {
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

/// A connection checked out of the pool; it derefs to `Conn`.
pub(super) type Pooled<'s> = bb8::PooledConnection<'s, Manager>;

/// The future of one attempt at a unit of work, boxed so that it may borrow its connection.
pub(super) type Work<'c, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'c>>;

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
        let store_id = read_store_id(&mut conn)
            .await
            .with_context(|| format!("reading the store id on {server}"))?;
        drop(conn);

        let pool = bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .connection_timeout(CONNECTION_TIMEOUT)
            .error_sink(Box::new(LogErrors))
            .build(manager)
            .await
            .with_context(|| format!("opening the SQL Server connection pool for {server}"))?;
        tracing::info!(%server, %store_id, "SQL Server store ready");
        Ok(Self {
            pool,
            server,
            store_id,
        })
    }

    pub(super) async fn checkout(&self) -> StoreResult<Pooled<'_>> {
        self.pool.get().await.map_err(|err| match err {
            bb8::RunError::User(err) => classify(err),
            bb8::RunError::TimedOut => StoreError::Transient(format!(
                "no SQL Server connection to {} within {CONNECTION_TIMEOUT:?}",
                self.server
            )),
        })
    }

    /// Runs `work` as one transaction, the whole unit of work retried on transient errors: each
    /// attempt checks out a connection, begins, calls `work` on it, then finishes: commits on
    /// `Ok`, rolls back on `Err`. `work`'s result is returned as is, so a caller that maps
    /// errors (with `race_is_transient`) does so inside `work`.
    ///
    /// `work` is called once per attempt and gets `&mut Pooled<'s>` (which derefs to `Conn`)
    /// rather than a bare `&mut Conn` for the sake of `'s`: it bounds every `'c`, which lets
    /// the boxed future borrow the caller's arguments instead of owning them.
    pub(super) async fn transaction<'s, T, F>(&'s self, work: F) -> StoreResult<T>
    where
        F: for<'c> Fn(&'c mut Pooled<'s>) -> Work<'c, T>,
    {
        let work = &work;
        // The idempotent request this unit of work serves, if any: recorded (committed, with
        // its answer when it has one) in the same transaction, and checked before a retry, so a
        // COMMIT whose acknowledgement was lost is never run blindly a second time.
        let request = aero_shared::idempotency::current_request();
        let request = &request;
        // Whether an earlier unit of the same request had already committed when this one
        // started (then a committed key says nothing about this unit).
        let committed_before = &std::sync::Mutex::new(None::<bool>);
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            conn.begin().await?;
            let result = async {
                if let Some(request) = request {
                    let committed =
                        idempotency::is_committed(&mut conn, &request.scope, &request.key).await?;
                    let before = *committed_before
                        .lock()
                        .map_err(|_| StoreError::Other(anyhow::anyhow!("poisoned")))?
                        .get_or_insert(committed);
                    if committed && !before {
                        return Err(StoreError::Conflict(lost_commit_answer(request).into()));
                    }
                    let value = work(&mut conn).await?;
                    idempotency::record_committed(&mut conn, request, chrono::Utc::now()).await?;
                    Ok(value)
                } else {
                    work(&mut conn).await
                }
            }
            .await;
            conn.finish(result).await
        })
        .await
    }

    /// Runs `work` on a pooled connection outside any explicit transaction (each statement
    /// commits on its own), retried like `transaction`: for reads and single-statement writes.
    pub(super) async fn with_connection<'s, T, F>(&'s self, work: F) -> StoreResult<T>
    where
        F: for<'c> Fn(&'c mut Pooled<'s>) -> Work<'c, T>,
    {
        let work = &work;
        retrying(move || async move {
            let mut conn = self.checkout().await?;
            work(&mut conn).await
        })
        .await
    }
}

/// What a request is told when the COMMIT of its write went through but its acknowledgement was
/// lost: the write is not run again; an answer recorded with it is replayed to a retry.
fn lost_commit_answer(request: &KeyedRequest) -> &'static str {
    if request.answer.is_some() {
        "this request was carried out, but the acknowledgement of its commit was lost; it is not \
         run again: send it again with the same Idempotency-Key for its answer"
    } else {
        "this request was carried out, but its answer was lost; it is not run again: look the \
         result up"
    }
}

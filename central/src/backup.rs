//! `aero-central backup`: a consistent copy of central's SQLite database taken while central
//! serves. A SQL Server database is backed up with the server's own `BACKUP DATABASE`.

use crate::config::Settings;
use crate::store::{self, Location};
use aero_shared::sqlite_backup;
use anyhow::Context;
use rusqlite::Connection;
use secrecy::ExposeSecret;
use std::path::Path;
use uuid::Uuid;

/// What a copy of central's database holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contents {
    /// The database's identity: edges bound to it accept a central restored from this copy.
    pub store_id: Uuid,
    pub sites: i64,
    pub customers: i64,
    /// The change log's head: edges whose cursor is past it resynchronise after a restore.
    pub change_head: i64,
}

impl Contents {
    fn read(conn: &Connection) -> anyhow::Result<Self> {
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(Self {
            store_id: conn
                .query_row("SELECT store_id FROM store_meta WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .context("it has no store id: not an aero-central database")?,
            sites: count("SELECT COUNT(*) FROM sites")?,
            customers: count("SELECT COUNT(*) FROM customers")?,
            change_head: count("SELECT COALESCE(MAX(seq), 0) FROM change_log")?,
        })
    }
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "store id:      {}", self.store_id)?;
        writeln!(f, "sites:         {}", self.sites)?;
        writeln!(f, "customers:     {}", self.customers)?;
        writeln!(f, "change head:   {}", self.change_head)
    }
}

/// A finished central backup: the file and what it holds.
pub type BackupReport = sqlite_backup::BackupReport<Contents>;

/// Copies the SQLite database `settings` name to `target` (replacing a file there) with
/// SQLite's online backup API, safe while central serves; the copy is integrity-checked and
/// read back before it is renamed into place. Refuses a SQL Server database.
pub fn backup(settings: &Settings, target: &Path) -> anyhow::Result<BackupReport> {
    let url = settings
        .database_url
        .as_ref()
        .map(|u| u.expose_secret().to_string());
    let db = match store::locate(url.as_deref(), &settings.data_dir()) {
        Location::SqlServer => anyhow::bail!(
            "this central's database is on SQL Server: `aero-central backup` copies a SQLite \
             database only. Back SQL Server up with its own BACKUP DATABASE (see \"Backup\" in \
             deploy/README.md)"
        ),
        Location::Sqlite(db) => db,
    };
    anyhow::ensure!(
        db.is_file(),
        "{} not found: no central database there (check --data-dir or --database-url)",
        db.display()
    );
    let source = store::sqlite::open_connection(&db)?;
    sqlite_backup::backup(&source, target, |copy| {
        Contents::read(copy).with_context(|| format!("reading the copy of {}", db.display()))
    })
}

//! `aero-edge backup`: a consistent copy of the venue database taken while the edge serves,
//! and what a copy holds (site, pending ops, replica cursor), which `restore` checks too.

pub mod restore;

use crate::replica;
use aero_shared::sqlite_backup;
use anyhow::Context;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use uuid::Uuid;

/// What an edge database holds, as far as running a venue from it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contents {
    pub site_id: Uuid,
    /// Venue writes not yet acknowledged by central.
    pub pending_ops: i64,
    pub dead_letters: i64,
    /// How far the replica has pulled central's change feed.
    pub cursor: i64,
    /// The newest migration applied to it.
    pub schema_version: i64,
}

impl Contents {
    /// Reads an edge database's contents; an error naming what is missing when `conn` is not
    /// an edge database.
    pub fn read(conn: &Connection) -> anyhow::Result<Self> {
        let has = |table: &str| -> anyhow::Result<bool> {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                    [table],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        };
        for table in [
            "refinery_schema_history",
            "sync_state",
            "outbox",
            "dead_letters",
        ] {
            anyhow::ensure!(
                has(table)?,
                "it is not an aero-edge database (it has no {table} table)"
            );
        }
        let (site_id, cursor): (Uuid, i64) = conn
            .query_row(
                "SELECT site_id, cursor FROM sync_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .context("it is not an aero-edge database of a site (its sync state is empty)")?;
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(Self {
            site_id,
            pending_ops: count("SELECT COUNT(*) FROM outbox")?,
            dead_letters: count("SELECT COUNT(*) FROM dead_letters")?,
            cursor,
            schema_version: count("SELECT COALESCE(MAX(version), 0) FROM refinery_schema_history")?,
        })
    }
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "site:          {}", self.site_id)?;
        writeln!(
            f,
            "pending ops:   {} (venue writes central had not acknowledged)",
            self.pending_ops
        )?;
        writeln!(f, "dead letters:  {}", self.dead_letters)?;
        writeln!(f, "cursor:        {}", self.cursor)?;
        writeln!(f, "schema:        V{}", self.schema_version)
    }
}

/// A finished edge backup: the file and what it holds.
pub type BackupReport = sqlite_backup::BackupReport<Contents>;

/// Copies the edge database of `data_dir` to `target` (replacing a file there) with SQLite's
/// online backup API: safe while the edge serves, which keeps writing meanwhile. The copy is
/// integrity-checked and read back before it is renamed into place.
pub fn backup(data_dir: &Path, target: &Path) -> anyhow::Result<BackupReport> {
    let db = replica::db_path(data_dir);
    anyhow::ensure!(
        db.is_file(),
        "{} not found: no edge database in {} (enroll and start the edge first, or pass the \
         right --data-dir)",
        db.display(),
        data_dir.display()
    );
    let source = replica::open_connection(&db)?;
    sqlite_backup::backup(&source, target, |copy| {
        Contents::read(copy).with_context(|| format!("reading the copy of {}", db.display()))
    })
}

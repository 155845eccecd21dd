//! `aero-edge restore`: puts a backup in place of the venue database. Only while no edge serves
//! the data directory (it holds [`DataDirLock`] for the whole restore), only a backup this
//! binary can open and only one of this box's site; the database it replaces is kept aside.

use super::Contents;
use crate::credential::{self, Credential};
use crate::replica;
use aero_shared::data_lock::DataDirLock;
use aero_shared::sqlite_backup::{self, Written, with_suffix};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// A finished restore.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub from: PathBuf,
    pub installed: Written,
    pub contents: Contents,
    /// Where the database it replaced went (with its `-wal`/`-shm`), renamed, not deleted.
    pub kept: Vec<PathBuf>,
    /// Whether the data directory holds a credential (of the backup's site); without one the
    /// box must be enrolled again before it can serve.
    pub enrolled: bool,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "restored:      {} from {} ({} bytes)",
            self.installed.path.display(),
            self.from.display(),
            self.installed.bytes
        )?;
        write!(f, "{}", self.contents)?;
        if self.kept.is_empty() {
            writeln!(f, "kept aside:    nothing (there was no database)")?;
        }
        for path in &self.kept {
            writeln!(f, "kept aside:    {}", path.display())?;
        }
        writeln!(
            f,
            "lost:          venue writes acknowledged after the backup was taken that had not \
             reached central"
        )?;
        if self.enrolled {
            writeln!(
                f,
                "next:          start the service (`systemctl start aero-edge`): it pushes the \
                 pending ops and pulls what it is missing from central"
            )
        } else {
            writeln!(
                f,
                "next:          this data directory holds no credential: run `aero-edge enroll \
                 --replace --central URL --token TOKEN` with an enrollment token for site {}, \
                 then start the service",
                self.contents.site_id
            )
        }
    }
}

/// Replaces the edge database of `data_dir` with the backup at `from`. Refuses while an edge
/// serves `data_dir`, and refuses a file that fails its integrity check, is not an edge
/// database, was migrated by a newer release, or belongs to another site than the credential
/// in `data_dir`; in each case nothing in `data_dir` changes. `now` names the kept-aside files.
pub fn restore(data_dir: &Path, from: &Path, now: DateTime<Utc>) -> anyhow::Result<RestoreReport> {
    let _serving = DataDirLock::acquire(data_dir, "aero-edge restore")?;
    let db = replica::db_path(data_dir);
    let staged = {
        let source = sqlite_backup::open_existing_read_only(from)?;
        sqlite_backup::stage(&source, &db)
            .with_context(|| format!("copying {} into {}", from.display(), data_dir.display()))?
    };
    let contents = Contents::read(staged.conn())
        .with_context(|| format!("{} cannot be restored", from.display()))?;
    let latest = replica::latest_schema_version();
    anyhow::ensure!(
        contents.schema_version <= latest,
        "{} was written by a newer aero-edge (schema V{}; this one knows up to V{latest}): \
         restore it with that release or a newer one",
        from.display(),
        contents.schema_version
    );
    let credential = Credential::load(data_dir)?;
    if let Some(credential) = &credential {
        anyhow::ensure!(
            credential.site_id == contents.site_id,
            "{} is a backup of site {}, but this box is enrolled for site {} ({}): restore a \
             backup of this venue",
            from.display(),
            contents.site_id,
            credential.site_id,
            credential::path_in(data_dir).display()
        );
    }
    let kept = set_aside(&db, now)?;
    let installed = staged.install(&db)?;
    Ok(RestoreReport {
        from: from.to_path_buf(),
        installed,
        contents,
        kept,
        enrolled: credential.is_some(),
    })
}

/// Renames `db` and its companions to `<db>.replaced-<time>` (`-wal`, `-shm` keep their
/// suffixes, so SQLite still opens the set as one database). A companion without its database
/// (left by an interrupted restore) is moved too: a stale WAL next to the restored file would
/// be replayed into it.
fn set_aside(db: &Path, now: DateTime<Utc>) -> anyhow::Result<Vec<PathBuf>> {
    let aside = with_suffix(
        db,
        &format!(".replaced-{}", now.format("%Y%m%dT%H%M%S%.3fZ")),
    );
    let mut kept = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let from = with_suffix(db, suffix);
        if !from.exists() {
            continue;
        }
        let to = with_suffix(&aside, suffix);
        anyhow::ensure!(!to.exists(), "{} already exists", to.display());
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} aside to {}", from.display(), to.display()))?;
        kept.push(to);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Replica;
    use chrono::TimeZone;
    use uuid::Uuid;

    /// An edge database for `site` in a new directory, with one pending op.
    fn edge_dir(site: Uuid) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open");
        conn.execute(
            "INSERT INTO outbox (seq, op_id, entity, entity_id, kind, data, created_at)
             VALUES (1, ?1, 'customer', ?2, 'upsert', '{}', '2026-12-03T00:00:00.000Z')",
            rusqlite::params![Uuid::now_v7(), Uuid::now_v7()],
        )
        .expect("queue an op");
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    #[test]
    fn the_replaced_database_is_kept_aside_with_its_wal_and_the_backup_installed() {
        let site = Uuid::now_v7();
        let backup_dir = edge_dir(site);
        let from = backup_dir.path().join("copy.db");
        super::super::backup(backup_dir.path(), &from).expect("backup");
        let target = tempfile::tempdir().expect("target");
        let (_replica, live) = Replica::open(target.path(), site, 1).expect("open");
        // The replaced database is still open (a killed edge's WAL is still there).
        assert!(with_suffix(&replica::db_path(target.path()), "-wal").exists());

        let report = restore(target.path(), &from, noon()).expect("restore");
        assert_eq!(report.contents.site_id, site);
        assert_eq!(report.contents.pending_ops, 1);
        assert!(!report.enrolled);
        let aside = "edge.db.replaced-20261203T120000.000Z";
        assert_eq!(
            report.kept,
            [
                target.path().join(aside),
                target.path().join(format!("{aside}-wal")),
                target.path().join(format!("{aside}-shm")),
            ]
        );
        drop(live);
        let installed = replica::open_connection(&replica::db_path(target.path())).expect("open");
        assert_eq!(
            super::super::Contents::read(&installed).expect("read"),
            report.contents
        );
        assert!(report.to_string().contains("aero-edge enroll --replace"));
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused_and_nothing_changes() {
        let site = Uuid::now_v7();
        let source = edge_dir(site);
        let from = source.path().join("copy.db");
        {
            let conn = replica::open_connection(&replica::db_path(source.path())).expect("open");
            conn.execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
                 VALUES (9999, 'from_the_future', '2027-01-01T00:00:00Z', '0')",
                [],
            )
            .expect("a newer migration");
        }
        super::super::backup(source.path(), &from).expect("backup");
        let target = tempfile::tempdir().expect("target");
        let before = names(target.path());
        let err = restore(target.path(), &from, noon()).expect_err("newer");
        assert!(
            err.to_string().contains("newer aero-edge (schema V9999"),
            "{err:#}"
        );
        let mut after = names(target.path());
        // The refusal took the data-dir lock (its file stays, like a serving edge's).
        after.retain(|n| n != "serve.lock");
        assert_eq!(after, before, "a refused restore left files");
    }

    #[test]
    fn a_file_that_is_not_an_edge_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = dir.path().join("other.db");
        rusqlite::Connection::open(&other)
            .expect("open")
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("create");
        let target = tempfile::tempdir().expect("target");
        let err = restore(target.path(), &other, noon()).expect_err("not an edge db");
        assert!(
            format!("{err:#}").contains("not an aero-edge database"),
            "{err:#}"
        );
        assert_eq!(names(target.path()), ["serve.lock"]);
    }
}

//! Consistent copies of a live SQLite database, for the services' `backup` and `restore`
//! commands: SQLite's online backup API into a temporary file beside the target, checked with
//! `PRAGMA integrity_check`, fsynced and renamed into place, so the target is either what it
//! was or a complete, verified copy, never a torn one.

use anyhow::Context;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a copy waits out a source that is busy (a checkpoint or a writer in rollback mode)
/// before giving up.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// A database file a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
}

/// A checked copy waiting beside its final path; [`Staged::install`] renames it into place,
/// dropping it unused removes it.
#[derive(Debug)]
pub struct Staged {
    conn: Option<Connection>,
    tmp: PathBuf,
    installed: bool,
}

impl Staged {
    /// The copy, open, for reading what it holds before it is installed.
    pub fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("open until installed")
    }

    /// The copy's temporary path (in the target's directory).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Closes the copy, flushes it to disk and renames it to `target`, replacing what is there;
    /// the directory entry is flushed too, so the rename survives a power loss.
    pub fn install(mut self, target: &Path) -> anyhow::Result<Written> {
        let conn = self.conn.take().expect("open until installed");
        conn.close()
            .map_err(|(_, err)| err)
            .with_context(|| format!("closing {}", self.tmp.display()))?;
        std::fs::File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("flushing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, target)
            .with_context(|| format!("renaming the copy into {}", target.display()))?;
        self.installed = true;
        sync_dir(target)?;
        let bytes = std::fs::metadata(target)
            .with_context(|| format!("reading {}", target.display()))?
            .len();
        Ok(Written {
            path: target.to_path_buf(),
            bytes,
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.installed {
            drop(self.conn.take());
            remove_with_companions(&self.tmp);
        }
    }
}

/// Copies the database `source` is connected to into a new temporary file beside `target`
/// (mode 0600: a copy holds what the database holds) and checks the copy.
///
/// The whole copy is one step of the backup API, i.e. one read transaction on the source: in
/// WAL mode a reader never blocks the writer, so the service keeps writing meanwhile, and the
/// copy is the database as of one commit. The copy is left in rollback-journal mode, one
/// self-contained file; the services switch it back to WAL when they open it.
pub fn stage(source: &Connection, target: &Path) -> anyhow::Result<Staged> {
    let tmp = temp_path_beside(target)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // From here on the temporary file is removed on any failure.
    let mut staged = Staged {
        conn: None,
        tmp,
        installed: false,
    };
    let mut conn = Connection::open_with_flags(
        &staged.tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", staged.tmp.display()))?;
    copy_all(source, &mut conn)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("delete"),
        "the copy stayed in {mode} journal mode"
    );
    integrity_check(&conn).with_context(|| {
        format!(
            "the copy of {} failed its integrity check",
            source.path().unwrap_or("the database")
        )
    })?;
    staged.conn = Some(conn);
    Ok(staged)
}

/// A finished backup: the file, and what the service read from the copy.
#[derive(Clone, Debug)]
pub struct BackupReport<T> {
    pub written: Written,
    pub contents: T,
}

impl<T: std::fmt::Display> std::fmt::Display for BackupReport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "backup:        {}", self.written.path.display())?;
        writeln!(f, "size:          {} bytes", self.written.bytes)?;
        write!(f, "{}", self.contents)
    }
}

/// Takes a checked copy of the live database `source` is connected to and writes it to
/// `target` (replacing a file there). `describe` reads what the copy holds, for the report.
pub fn backup<T>(
    source: &Connection,
    target: &Path,
    describe: impl FnOnce(&Connection) -> anyhow::Result<T>,
) -> anyhow::Result<BackupReport<T>> {
    check_target(source, target)?;
    let staged = stage(source, target)?;
    let contents = describe(staged.conn())?;
    Ok(BackupReport {
        written: staged.install(target)?,
        contents,
    })
}

/// Opens a database file read-only, without creating it, for copying from. Refuses a path that
/// is not a file.
pub fn open_existing_read_only(path: &Path) -> anyhow::Result<Connection> {
    anyhow::ensure!(
        path.is_file(),
        "{} does not exist or is not a file",
        path.display()
    );
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Opening is lazy: reading the schema is what tells a database from any other file.
    conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .with_context(|| format!("{} is not an SQLite database", path.display()))?;
    Ok(conn)
}

/// `PRAGMA integrity_check`: Ok when SQLite finds nothing wrong, otherwise the problems it
/// lists (the first few).
pub fn integrity_check(conn: &Connection) -> anyhow::Result<()> {
    let mut stmt = conn.prepare("PRAGMA integrity_check(10)")?;
    let problems = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    anyhow::ensure!(
        problems.len() == 1 && problems[0] == "ok",
        "integrity check: {}",
        problems.join("; ")
    );
    Ok(())
}

/// Removes a database file with its `-journal`, `-wal` and `-shm` companions, ignoring the ones
/// that do not exist.
pub fn remove_with_companions(path: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}

/// `path` with `suffix` appended to its file name (`edge.db` + `-wal` = `edge.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn copy_all(source: &Connection, dest: &mut Connection) -> anyhow::Result<()> {
    let backup = Backup::new(source, dest).context("starting the online backup")?;
    let deadline = Instant::now() + BUSY_PATIENCE;
    loop {
        match backup.step(-1).context("copying the database")? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked => {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the database stayed locked for {} s",
                    BUSY_PATIENCE.as_secs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            other => anyhow::bail!("unexpected backup step result {other:?}"),
        }
    }
}

/// Refuses a target that would overwrite the database being copied, or that is a directory.
fn check_target(source: &Connection, target: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !target.is_dir(),
        "{} is a directory: give the path of the file to write, e.g. {}",
        target.display(),
        target.join("backup.db").display()
    );
    if let (Some(source), Ok(target_real)) = (source.path(), target.canonicalize()) {
        let source_real = Path::new(source).canonicalize()?;
        for suffix in ["", "-wal", "-shm"] {
            anyhow::ensure!(
                target_real != with_suffix(&source_real, suffix),
                "{} is the live database itself: write the backup elsewhere",
                target.display()
            );
        }
    }
    Ok(())
}

fn temp_path_beside(target: &Path) -> anyhow::Result<PathBuf> {
    let dir = parent_dir(target);
    anyhow::ensure!(
        dir.is_dir(),
        "{} does not exist: create the directory first",
        dir.display()
    );
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", target.display()))?;
    Ok(dir.join(format!(".{name}.{}.tmp", Uuid::now_v7())))
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Flushes the directory entry of `path` (a rename is durable only then).
fn sync_dir(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(parent_dir(path))
        .and_then(|d| d.sync_all())
        .with_context(|| format!("flushing {}", parent_dir(path).display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("live.db")).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1), (2);")
            .expect("fill");
        conn
    }

    #[test]
    fn a_backup_is_one_checked_file_with_the_data_and_no_leftovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = live(dir.path());
        let out = tempfile::tempdir().expect("out");
        let target = out.path().join("copy.db");
        let BackupReport {
            written,
            contents: rows,
        } = backup(&source, &target, |c| {
            Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?)
        })
        .expect("backup");
        assert_eq!(rows, 2);
        assert_eq!(written.path, target);
        assert_eq!(
            written.bytes,
            std::fs::metadata(&target).expect("meta").len()
        );
        let names: Vec<_> = std::fs::read_dir(out.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["copy.db"], "only the backup is left");
        let copy = open_existing_read_only(&target).expect("reopen");
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "delete");
        integrity_check(&copy).expect("intact");
    }

    #[test]
    fn the_live_database_and_directories_are_refused_as_targets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = live(dir.path());
        let err = backup(&source, &dir.path().join("live.db"), |_| Ok(())).expect_err("self");
        assert!(err.to_string().contains("live database itself"), "{err}");
        let err = backup(&source, dir.path(), |_| Ok(())).expect_err("dir");
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err = backup(&source, &dir.path().join("nope/copy.db"), |_| Ok(())).expect_err("dir");
        assert!(
            err.to_string().contains("create the directory first"),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, vec![b'x'; 4096]).expect("write");
        let err = open_existing_read_only(&path).expect_err("not a db");
        assert!(
            err.to_string().contains("is not an SQLite database"),
            "{err:#}"
        );
        let err = open_existing_read_only(&dir.path().join("missing.db")).expect_err("missing");
        assert!(err.to_string().contains("does not exist"), "{err:#}");
    }
}

//! The lock a serving process holds on its data directory for as long as it runs, so commands
//! that must not run beside it (a restore) can refuse, and ops tools can tell whether it runs.
//!
//! An advisory `flock` on `<data dir>/serve.lock`: the kernel releases it when the process
//! exits, however it exits (kill -9 included), so a stale lock file never blocks anything.
//! The file holds the holder's pid, for the messages only.

use anyhow::Context;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FILE_NAME: &str = "serve.lock";

/// How long [`DataDirLock::acquire`] waits for a brief holder (a status probe) to let go.
const ACQUIRE_PATIENCE: Duration = Duration::from_secs(1);

/// An exclusive hold on a data directory, released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the data directory for `what` (e.g. "aero-edge serve"), creating the directory if
    /// needed. Fails, naming the holder's pid, when another process holds it.
    pub fn acquire(data_dir: &Path, what: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join(FILE_NAME);
        let mut file = open(&path)?;
        let deadline = std::time::Instant::now() + ACQUIRE_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = read_pid(&mut file)
                        .map(|pid| format!("process {pid}"))
                        .unwrap_or_else(|| "another process".to_string());
                    anyhow::bail!(
                        "{} is in use by {holder}, a running service: stop it first \
                         (`systemctl stop <service>`); {what} cannot run beside it",
                        data_dir.display()
                    );
                }
                Err(TryLockError::Error(err)) => {
                    return Err(err).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }

    /// The pid of the process holding `data_dir`, if one does (`Some(None)` when the holder
    /// wrote no pid), or `None` when nothing holds it.
    pub fn holder(data_dir: &Path) -> anyhow::Result<Option<Option<u32>>> {
        let path = data_dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let mut file = open(&path)?;
        match file.try_lock_shared() {
            Ok(()) => {
                file.unlock()?;
                Ok(None)
            }
            Err(TryLockError::WouldBlock) => Ok(Some(read_pid(&mut file))),
            Err(TryLockError::Error(err)) => {
                Err(err).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_refused_and_freed_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(DataDirLock::holder(dir.path()).expect("holder"), None);
        let lock = DataDirLock::acquire(dir.path(), "serve").expect("first");
        assert_eq!(
            DataDirLock::holder(dir.path()).expect("holder"),
            Some(Some(std::process::id()))
        );
        let err = DataDirLock::acquire(dir.path(), "restore").expect_err("second");
        let message = err.to_string();
        assert!(
            message.contains(&format!("process {}", std::process::id())),
            "{message}"
        );
        assert!(
            message.contains("restore cannot run beside it"),
            "{message}"
        );
        drop(lock);
        assert_eq!(DataDirLock::holder(dir.path()).expect("holder"), None);
        DataDirLock::acquire(dir.path(), "restore").expect("free again");
    }
}

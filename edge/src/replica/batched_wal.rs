//! The writer's connection appends each commit to the write-ahead log in a few system calls,
//! not two per page.
//!
//! SQLite writes a WAL frame as two `pwrite` calls, its 24-byte header and then its page, so a
//! group commit of 50 pages makes 100 calls, each walking the kernel's write path for one or
//! two page-cache pages. This VFS wraps the default one and, for WAL files only, holds the
//! appended bytes in memory until the commit is complete, then hands them to the real file in
//! one write at the same offset (or a few: the unix VFS writes at most 128 KiB per call). The
//! file ends up with exactly the bytes SQLite wrote, in the same order; only the number of
//! calls changes.
//!
//! Why a reader never sees a frame the file does not hold: SQLite publishes new frames to other
//! connections (in the shared wal-index) only after the last frame of the commit was written.
//! The commit frame is the one whose header carries the database size after the commit
//! (non-zero); the buffer is written out as soon as that frame's page arrives, before the
//! `xWrite` call returns to SQLite. A commit header that continues nothing buffered (a one-frame
//! commit, or checksums rewritten in place) is written at once. Everything that could observe the file through this handle
//! (a read, a sync, its size, a truncation, a file control, closing it) and any write that does
//! not continue the buffer also write the buffer out first, so the handle behaves as if every
//! write had gone straight to the file. A failed write-out fails the `xWrite` (or other call)
//! that asked for it, so the commit fails as it would have without the buffer.
//!
//! Durability is unchanged: the sync thread (`outbox::durable`) fsyncs the log after COMMIT
//! returned, when every byte of the commit has reached the kernel.

use rusqlite::ffi;
use std::cell::Cell;
use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

/// The name the writer's connection opens the database with.
pub const VFS_NAME: &CStr = c"aero-batched-wal";

/// A commit bigger than this is written out in pieces of about this size.
const MAX_BUFFERED: usize = 1024 * 1024;
/// The most the unix VFS writes in one call: it masks a write's length to 17 bits.
const MAX_WRITE: usize = 124 * 1024;
/// Capacity kept between commits; a bigger buffer left by a large commit is given back.
const KEEP_CAPACITY: usize = 256 * 1024;
/// A WAL frame header: page number, database size after a commit (zero otherwise), salts and
/// checksums, all big-endian (<https://sqlite.org/fileformat2.html#walformat>).
const FRAME_HEADER: usize = 24;

thread_local! {
    /// Writes handed to real WAL files by this thread: what the tests count.
    static WAL_WRITES: Cell<u64> = const { Cell::new(0) };
}

/// Registers the VFS with SQLite (once per process). Connections choose it by [`VFS_NAME`].
pub fn register() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which SQLite keeps for the
            // life of the process; the VFS registered here is leaked, so it lives as long.
            unsafe {
                let real = ffi::sqlite3_vfs_find(std::ptr::null());
                if real.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let wrapper_size = std::mem::size_of::<BatchedFile>();
                let mut vfs = *real;
                vfs.iVersion = vfs.iVersion.min(2);
                vfs.szOsFile = (*real).szOsFile + c_int::try_from(wrapper_size).expect("small");
                vfs.pNext = std::ptr::null_mut();
                vfs.zName = VFS_NAME.as_ptr();
                // The real VFS, for `x_open`. Its other methods are copied as they are: the unix
                // VFS's methods other than xOpen ignore the VFS they are called with.
                vfs.pAppData = real.cast();
                vfs.xOpen = Some(x_open);
                let vfs = Box::leak(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!(
                        "registering the {VFS_NAME:?} VFS failed with code {rc}"
                    )),
                }
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The file SQLite holds: this header, then the real VFS's file in the same allocation.
#[repr(C)]
struct BatchedFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Bytes appended and not yet written, for a WAL file; null for any other file.
    pending: *mut Pending,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where `bytes` start in the file.
    offset: i64,
    /// The last write was the header of a commit frame: its page completes the commit.
    commit_page_next: bool,
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite allocated `szOsFile` bytes at `file`: room for the header and, after it,
    // the real VFS's file; `pAppData` is the real VFS (see `register`).
    unsafe {
        let this = file.cast::<BatchedFile>();
        let real_vfs = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let real = file
            .cast::<u8>()
            .add(std::mem::size_of::<BatchedFile>())
            .cast::<ffi::sqlite3_file>();
        (*this).real = real;
        (*this).pending = std::ptr::null_mut();
        (*this).base.pMethods = std::ptr::null();
        let Some(open) = (*real_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(real_vfs, name, real, flags, out_flags);
        // A failed open leaves `pMethods` null: SQLite then does not close the file.
        if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
            return rc;
        }
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            (*this).pending = Box::into_raw(Box::default());
        }
        (*this).base.pMethods = &METHODS;
        rc
    }
}

/// The real file and its methods.
///
/// # Safety
/// `file` is a [`BatchedFile`] opened by [`x_open`].
unsafe fn real_of(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, ffi::sqlite3_io_methods) {
    // SAFETY: per this function's contract.
    unsafe {
        let real = (*file.cast::<BatchedFile>()).real;
        (real, *(*real).pMethods)
    }
}

/// Writes out what `file` holds, if anything.
///
/// # Safety
/// `file` is a [`BatchedFile`] opened by [`x_open`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per this function's contract; `pending` is null or owned by this file.
    unsafe {
        let pending = (*file.cast::<BatchedFile>()).pending;
        if pending.is_null() || (*pending).bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let pending = &mut *pending;
        let (real, methods) = real_of(file);
        let mut rc = ffi::SQLITE_OK;
        let mut offset = pending.offset;
        for chunk in pending.bytes.chunks(MAX_WRITE) {
            rc = match (methods.xWrite, c_int::try_from(chunk.len())) {
                (Some(write), Ok(len)) => {
                    WAL_WRITES.with(|n| n.set(n.get() + 1));
                    write(real, chunk.as_ptr().cast(), len, offset)
                }
                _ => ffi::SQLITE_IOERR_WRITE,
            };
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset += chunk.len() as i64;
        }
        pending.bytes.clear();
        pending.commit_page_next = false;
        if pending.bytes.capacity() > KEEP_CAPACITY {
            pending.bytes.shrink_to(KEEP_CAPACITY);
        }
        rc
    }
}

/// The real file and its methods, once what `file` holds is written out.
///
/// # Safety
/// `file` is a [`BatchedFile`] opened by [`x_open`].
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
) -> Result<(*mut ffi::sqlite3_file, ffi::sqlite3_io_methods), c_int> {
    // SAFETY: per this function's contract.
    unsafe {
        match flush(file) {
            ffi::SQLITE_OK => Ok(real_of(file)),
            rc => Err(rc),
        }
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes the file it opened and `amount` readable bytes at `data`.
    unsafe {
        let pending = (*file.cast::<BatchedFile>()).pending;
        let (real, methods) = real_of(file);
        let Some(write) = methods.xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let Ok(len) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        if pending.is_null() {
            return write(real, data, amount, offset);
        }
        let buffered_end = (*pending).offset + (*pending).bytes.len() as i64;
        if !(*pending).bytes.is_empty() && offset != buffered_end {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let pending = &mut *pending;
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
        let commit_header = len == FRAME_HEADER && bytes[4..8] != [0, 0, 0, 0];
        if commit_header && pending.bytes.is_empty() {
            // A commit frame's header that continues nothing buffered: a one-frame commit, or
            // the header rewritten with new checksums once a commit overwrote frames of its own
            // (SQLite's `walRewriteChecksums`), after which no page follows. Written now.
            pending.commit_page_next = true;
            return write(real, data, amount, offset);
        }
        if pending.bytes.is_empty() {
            pending.offset = offset;
        }
        pending.bytes.extend_from_slice(bytes);
        let mut rc = ffi::SQLITE_OK;
        if pending.commit_page_next || pending.bytes.len() >= MAX_BUFFERED {
            rc = flush(file);
        }
        // Set after the write-out, which clears it: a commit header written out for the size
        // of the buffer still waits for its page.
        pending.commit_page_next = commit_header;
        rc
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened, once.
    unsafe {
        let flushed = flush(file);
        let this = file.cast::<BatchedFile>();
        if !(*this).pending.is_null() {
            drop(Box::from_raw((*this).pending));
            (*this).pending = std::ptr::null_mut();
        }
        let (real, methods) = real_of(file);
        let closed = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(real));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = match flushed(file) {
            Ok(real) => real,
            Err(rc) => return rc,
        };
        methods.xRead.map_or(ffi::SQLITE_IOERR_READ, |read| {
            read(real, data, amount, offset)
        })
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = match flushed(file) {
            Ok(real) => real,
            Err(rc) => return rc,
        };
        methods
            .xTruncate
            .map_or(ffi::SQLITE_IOERR_TRUNCATE, |truncate| truncate(real, size))
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = match flushed(file) {
            Ok(real) => real,
            Err(rc) => return rc,
        };
        methods
            .xSync
            .map_or(ffi::SQLITE_IOERR_FSYNC, |sync| sync(real, flags))
    }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = match flushed(file) {
            Ok(real) => real,
            Err(rc) => return rc,
        };
        methods
            .xFileSize
            .map_or(ffi::SQLITE_IOERR_FSTAT, |file_size| file_size(real, size))
    }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = match flushed(file) {
            Ok(real) => real,
            Err(rc) => return rc,
        };
        methods
            .xFileControl
            .map_or(ffi::SQLITE_NOTFOUND, |control| control(real, op, arg))
    }
}

// The rest pass straight through to the real file (the locks and the shared memory are the
// database file's; the WAL file has none of them).

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods
            .xLock
            .map_or(ffi::SQLITE_IOERR_LOCK, |lock| lock(real, level))
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods
            .xUnlock
            .map_or(ffi::SQLITE_IOERR_UNLOCK, |unlock| unlock(real, level))
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods
            .xCheckReservedLock
            .map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |check| {
                check(real, out)
            })
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods
            .xSectorSize
            .map_or(4096, |sector_size| sector_size(real))
    }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods
            .xDeviceCharacteristics
            .map_or(0, |characteristics| characteristics(real))
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods.xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |map| {
            map(real, region, size, extend, out)
        })
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods.xShmLock.map_or(ffi::SQLITE_IOERR_SHMLOCK, |lock| {
            lock(real, offset, n, flags)
        })
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        if let Some(barrier) = methods.xShmBarrier {
            barrier(real);
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        methods
            .xShmUnmap
            .map_or(ffi::SQLITE_OK, |unmap| unmap(real, delete))
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite passes the file it opened. A memory-mapped read of a WAL file would bypass
    // the buffer, but SQLite maps only the database file, which is never buffered.
    unsafe {
        let (real, methods) = real_of(file);
        match methods.xFetch {
            Some(fetch) if methods.iVersion >= 3 => fetch(real, offset, amount, out),
            _ => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(file: *mut ffi::sqlite3_file, offset: i64, p: *mut c_void) -> c_int {
    // SAFETY: SQLite passes the file it opened.
    unsafe {
        let (real, methods) = real_of(file);
        match methods.xUnfetch {
            Some(unfetch) if methods.iVersion >= 3 => unfetch(real, offset, p),
            _ => ffi::SQLITE_OK,
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// The VFS name as the `&str` rusqlite's `open_with_flags_and_vfs` takes.
pub fn vfs_name() -> &'static str {
    VFS_NAME.to_str().expect("ASCII")
}

#[cfg(test)]
fn wal_writes_on_this_thread() -> u64 {
    WAL_WRITES.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::ops::Range;
    use std::path::{Path, PathBuf};

    /// A database in a new directory, its writer's connection through this VFS (as the edge's
    /// writer: WAL, `synchronous=NORMAL`, no automatic checkpoints) and a table `t`.
    fn fresh() -> (tempfile::TempDir, PathBuf, Connection) {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open_with_flags_and_vfs(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            vfs_name(),
        )
        .unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        (dir, path, conn)
    }

    /// Inserts a row for each id with a body of `size` bytes, in the caller's transaction.
    fn insert(conn: &Connection, ids: Range<i64>, size: usize) {
        let body = "b".repeat(size);
        for id in ids {
            conn.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                rusqlite::params![id, body],
            )
            .unwrap();
        }
    }

    /// The database as a crash right now would leave it: its file and its log copied aside
    /// while the writer holds them open, then opened afresh (SQLite recovers the log).
    fn after_a_crash(path: &Path) -> Connection {
        let dir = path
            .parent()
            .unwrap()
            .join(format!("crash-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).unwrap();
        let copy = dir.join("t.db");
        std::fs::copy(path, &copy).unwrap();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut wal_copy = copy.as_os_str().to_owned();
        wal_copy.push("-wal");
        std::fs::copy(wal, wal_copy).unwrap();
        let conn = Connection::open(&copy).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        conn
    }

    fn rows(conn: &Connection) -> Vec<(i64, String)> {
        conn.prepare("SELECT id, body FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_commit_is_in_the_log_file_when_it_returns_and_in_one_write() {
        let (_dir, path, writer) = fresh();
        // A reader through the default VFS and its own file handle sees only what reached the
        // file: a frame published but still buffered would fail its read.
        let reader = Connection::open(&path).unwrap();
        for round in 0..20_i64 {
            let before = wal_writes_on_this_thread();
            let tx = writer.unchecked_transaction().unwrap();
            insert(&tx, round * 50..(round + 1) * 50, 300);
            tx.commit().unwrap();
            assert_eq!(
                wal_writes_on_this_thread() - before,
                1,
                "one write per commit"
            );
            assert_eq!(rows(&reader), rows(&writer));
            assert_eq!(rows(&after_a_crash(&path)), rows(&writer));
        }
        assert_eq!(rows(&reader).len(), 1_000);
    }

    #[test]
    fn a_rolled_back_transaction_that_spilled_frames_leaves_only_the_commits() {
        let (_dir, path, writer) = fresh();
        // A cache of ten pages: a big transaction writes frames to the log before its commit.
        writer.pragma_update(None, "cache_size", 10).unwrap();
        insert(&writer, 0..1, 10);
        let tx = writer.unchecked_transaction().unwrap();
        insert(&tx, 1..2_000, 500);
        tx.rollback().unwrap();
        insert(&writer, 1..2, 20);
        let expected = vec![(0, "b".repeat(10)), (1, "b".repeat(20))];
        assert_eq!(rows(&writer), expected);
        assert_eq!(rows(&Connection::open(&path).unwrap()), expected);
        assert_eq!(rows(&after_a_crash(&path)), expected);
    }

    #[test]
    fn a_commit_that_rewrote_frames_it_spilled_is_in_the_log_file_with_its_checksums() {
        let (_dir, path, writer) = fresh();
        writer.pragma_update(None, "cache_size", 10).unwrap();
        for round in 0..3_i64 {
            let tx = writer.unchecked_transaction().unwrap();
            insert(&tx, round * 1_000..round * 1_000 + 500, 400);
            // Pages spilled to the log earlier in this transaction change again: SQLite
            // overwrites their frames in place and rewrites the checksums at the commit.
            tx.execute(
                "UPDATE t SET body = 'changed' WHERE id BETWEEN ?1 AND ?2",
                [round * 1_000, round * 1_000 + 20],
            )
            .unwrap();
            tx.commit().unwrap();
            assert_eq!(rows(&after_a_crash(&path)), rows(&writer));
        }
    }

    #[test]
    fn a_commit_bigger_than_the_buffer_and_a_restarted_log_read_back_whole() {
        let (_dir, path, writer) = fresh();
        // About 2 MB of frames: buffered up to MAX_BUFFERED at a time, written in pieces of
        // MAX_WRITE.
        let tx = writer.unchecked_transaction().unwrap();
        insert(&tx, 0..1_000, 2_000);
        tx.commit().unwrap();
        assert_eq!(rows(&after_a_crash(&path)), rows(&writer));
        // Everything copied back into the database: the next commit starts the log over at its
        // first frame, a write that does not continue the buffer.
        let reader = Connection::open(&path).unwrap();
        reader
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let tx = writer.unchecked_transaction().unwrap();
        insert(&tx, 1_000..2_000, 2_000);
        tx.commit().unwrap();
        assert_eq!(rows(&reader).len(), 2_000);
        assert_eq!(rows(&after_a_crash(&path)), rows(&writer));
    }
}

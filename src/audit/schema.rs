//! The `audit_log` table: the legacy DDL, then versioned, idempotent
//! migrations recorded in `PRAGMA user_version`.
//!
//! Migrations only add (columns, indexes, the `audit_meta` table); they never
//! rewrite a row, so a database the legacy service wrote keeps its rows
//! byte for byte, and the legacy service can still read and append to a
//! database auditbus migrated (its INSERT names only the legacy columns; the
//! new ones are nullable).

use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::audit::{chain, query};
use crate::errors::{Error, Result};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Exactly the legacy service's schema script.
const LEGACY_DDL: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    event_type TEXT NOT NULL,
    plan_id TEXT,
    user_identity TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS ix_audit_log_event_type ON audit_log(event_type);
CREATE INDEX IF NOT EXISTS ix_audit_log_plan_id ON audit_log(plan_id);
CREATE INDEX IF NOT EXISTS ix_audit_log_timestamp ON audit_log(timestamp);
";

/// Columns added by version 1, all nullable so legacy INSERTs keep working.
const V1_COLUMNS: [&str; 9] = [
    "event_id",
    "actor_name",
    "project_name",
    "session_id",
    "outcome",
    "source",
    "recorded_at",
    "prev_hash",
    "chain_hash",
];

/// Indexes of version 1. A single-column index also orders by rowid, so
/// `WHERE user_identity = ? ORDER BY id DESC LIMIT n` reads n index entries.
const V1_INDEXES: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS ux_audit_log_event_id ON audit_log(event_id);
CREATE INDEX IF NOT EXISTS ix_audit_log_user_identity ON audit_log(user_identity);
CREATE INDEX IF NOT EXISTS ix_audit_log_session_id ON audit_log(session_id);
CREATE INDEX IF NOT EXISTS ix_audit_log_type_time ON audit_log(event_type, timestamp);
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Every column of a row in table order, for SELECTs.
pub const ROW_COLUMNS: &str = "id, timestamp, event_type, plan_id, user_identity, details, event_id, actor_name, \
                               project_name, session_id, outcome, source, recorded_at, prev_hash, chain_hash";

/// The names of [`ROW_COLUMNS`], in order.
pub fn row_column_names() -> impl Iterator<Item = &'static str> {
    ROW_COLUMNS.split(',').map(str::trim)
}

/// How hard `COMMIT` pushes to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is synced on every commit (survives power loss).
    Full,
    /// `synchronous=NORMAL`: survives a process crash; the last commits may roll back on power loss.
    Normal,
}

impl Durability {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "full" => Ok(Self::Full),
            "normal" => Ok(Self::Normal),
            other => Err(Error::invalid(
                "durability",
                format!("{} is not accepted; use 'full' or 'normal'", crate::values::short_text(other)),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Normal => "normal",
        }
    }

    fn pragma(self) -> i64 {
        match self {
            Self::Full => 2,
            Self::Normal => 1,
        }
    }
}

/// Describes an open failure with the path, so a corrupt or foreign file
/// gives a clear `AuditError` instead of a bare SQLite code.
fn at(path: &str, what: &str, err: rusqlite::Error) -> Error {
    Error::Storage(format!("audit database {path:?}: {what}: {err}"))
}

/// Why the files of the database SQLite opened at `file` cannot be read,
/// if they cannot. SQLite turns an EIO from `read()` into SQLITE_CORRUPT
/// ("database disk image is malformed", see `unixRead`), so a failing disk
/// and a damaged file look the same to its callers; reading the files
/// ourselves tells them apart. Only asked once SQLite has reported damage.
pub fn unreadable(file: &str) -> Option<String> {
    if file.is_empty() {
        return None;
    }
    let mut buf = vec![0_u8; 1 << 20];
    // The database file through a descriptor that stays open (see
    // `probe`); SQLite locks no byte of the -wal file, so it may be closed.
    probe::read_all(file, &mut buf).err().or_else(|| {
        let wal = format!("{file}-wal");
        match std::fs::File::open(&wal) {
            Ok(opened) => probe::read_through(&opened, &wal, &mut buf).err(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("cannot open {wal:?}: {e}")),
        }
    })
}

/// Reading a database file without closing a descriptor of it: closing any
/// descriptor of a file drops every POSIX lock the process holds on it,
/// SQLite's too, and another process could then take the write lock,
/// checkpoint and delete the -wal file under a service still writing to it.
mod probe {
    use std::fs::File;
    #[cfg(unix)]
    use std::{
        collections::HashMap,
        sync::{Arc, LazyLock},
    };

    #[cfg(unix)]
    use parking_lot::Mutex;

    /// Open descriptors by file (device and inode).
    #[cfg(unix)]
    type Descriptors = HashMap<(u64, u64), Arc<File>>;

    /// One descriptor per file that ever reported damage, kept for the life of the process.
    #[cfg(unix)]
    static OPEN: LazyLock<Mutex<Descriptors>> = LazyLock::new(Default::default);

    #[cfg(unix)]
    pub fn read_all(path: &str, buf: &mut [u8]) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot open {path:?}: {e}")),
        };
        let key = (meta.dev(), meta.ino());
        let known = OPEN.lock().get(&key).cloned();
        let file = match known {
            Some(file) => file,
            None => {
                let opened = Arc::new(File::open(path).map_err(|e| format!("cannot open {path:?}: {e}"))?);
                // Kept even if the path now names another file: closing it could drop a lock.
                OPEN.lock().entry(key).or_insert(opened).clone()
            }
        };
        read_through(&file, path, buf)
    }

    #[cfg(not(unix))]
    pub fn read_all(path: &str, buf: &mut [u8]) -> Result<(), String> {
        match File::open(path) {
            Ok(opened) => read_through(&opened, path, buf),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot open {path:?}: {e}")),
        }
    }

    /// Reads the whole file from its start (positioned reads: the
    /// descriptor is shared between threads).
    pub fn read_through(file: &File, path: &str, buf: &mut [u8]) -> Result<(), String> {
        let mut offset = 0_u64;
        loop {
            #[cfg(unix)]
            let read = std::os::unix::fs::FileExt::read_at(file, buf, offset);
            #[cfg(windows)]
            let read = std::os::windows::fs::FileExt::seek_read(file, buf, offset);
            match read {
                Ok(0) => return Ok(()),
                Ok(n) => offset += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read {path:?}: {e}")),
            }
        }
    }
}

/// `err` as a reader reports it for the trail at `path` (read through
/// `conn`): a damaged page names the file, and a read that failed in the
/// operating system is told apart from damage (see [`unreadable`]).
pub fn read_error(path: &str, conn: &Connection, err: Error) -> Error {
    match err {
        Error::Sqlite(inner) => {
            let corrupt = inner.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt);
            match corrupt.then(|| conn.path().and_then(unreadable)).flatten() {
                Some(io) => {
                    Error::Storage(format!("audit database {path:?}: I/O error, {io} (SQLite reports it as: {inner})"))
                }
                None => Error::Storage(format!("audit database {path:?}: {inner}")),
            }
        }
        other => other,
    }
}

/// Opens a connection with the settings every connection needs. `path` is
/// a file name, taken literally as the legacy's `sqlite3.connect(path)`
/// does: one beginning with `file:` is not read as an SQLite URI.
pub fn open(path: &str, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let _sqlite = crate::audit::writer::in_sqlite();
    let opened = names::open(path, flags);
    if let Some(refusal) = opened.as_ref().err().and_then(|_| missing_folder(path)) {
        return Err(refusal);
    }
    prepared(path, opened, busy_timeout)
}

/// A new trail whose folder does not exist, named: SQLite says only "unable to open database file".
fn missing_folder(path: &str) -> Option<Error> {
    let folder = std::path::Path::new(path).parent().filter(|folder| !folder.as_os_str().is_empty())?;
    (!folder.exists()).then(|| {
        Error::Storage(format!("audit database {path:?} cannot be created: its folder {folder:?} does not exist"))
    })
}

/// A connection just opened to the trail at `path`, with the settings every connection needs.
fn prepared(path: &str, opened: Result<Connection>, busy_timeout: Duration) -> Result<Connection> {
    let conn = opened?;
    conn.busy_timeout(busy_timeout).map_err(|e| at(path, "cannot set busy_timeout", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    query::register_functions(&conn).map_err(|e| at(path, "cannot register SQL functions", e))?;
    Ok(conn)
}

/// One name per database file in this process. SQLite keeps a database's
/// `-wal` file beside the name it was opened by, but maps one `-shm` index
/// per file (device and inode) while any connection has it open: two
/// connections opening one file by two names (hard links) would pair one
/// `-wal` file with the other's index, and every commit through the second
/// name would fail. A file is opened again by the name it was opened by in
/// this process, as long as that name still leads to it and either a
/// connection opened by it is still open or a `-wal` file beside it holds
/// rows (only read, and copied into the file, through that name). Otherwise
/// it is opened by the name given: a reader that opened the file by a name
/// in a folder it may not write must not send a later writer there. A WAL
/// file still open by a name that no longer leads to it (renamed, or that
/// name removed) cannot be opened by another until those connections close.
mod names {
    use super::{at, Result};
    #[cfg(unix)]
    use crate::errors::Error;
    use rusqlite::{Connection, OpenFlags};
    #[cfg(unix)]
    use std::{
        collections::HashMap,
        sync::{Arc, LazyLock, Weak},
    };

    #[cfg(unix)]
    use parking_lot::Mutex;

    /// The name each file (device and inode) was last opened by, as SQLite
    /// resolved it, and whether a connection opened by it is still open.
    #[cfg(unix)]
    static NAMES: LazyLock<Mutex<HashMap<File, Named>>> = LazyLock::new(Default::default);

    /// A file by device and inode.
    #[cfg(unix)]
    type File = (u64, u64);

    /// A name, alive while a connection opened by it is open.
    #[cfg(unix)]
    type Named = (String, Weak<()>);

    /// A function no statement calls: it holds its connection's share of a
    /// name in [`NAMES`], and SQLite drops it when the connection closes.
    #[cfg(unix)]
    const HOLDER: &str = "auditbus_open_name";

    #[cfg(unix)]
    fn file_of(name: &str) -> Option<File> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(name).ok().map(|meta| (meta.dev(), meta.ino()))
    }

    /// Opens `path` (a plain file name), by the name the file is open by (see above) if it is.
    #[cfg(unix)]
    pub fn open(path: &str, flags: OpenFlags) -> Result<Connection> {
        // Held across the open: two threads opening one file by two names at once agree on one.
        let mut names = NAMES.lock();
        let known = file_of(path).and_then(|key| names.get(&key).map(|named| (key, named)));
        if let Some((key, (name, held))) = known {
            // SQLite would pair this name's -wal file with the open one's index: "disk I/O error".
            // (Whether the file is in WAL mode is not read: a descriptor of it closed here
            // would drop every lock the open connections hold on it.)
            if held.strong_count() > 0 && file_of(name) != Some(key) {
                return Err(Error::Storage(format!(
                    "audit database {path:?} cannot be opened: this process still has it open by the name \
                     {name:?}, which no longer leads to it (renamed, removed or replaced), and SQLite cannot open \
                     it by another name meanwhile; close the services opened by that name first"
                )));
            }
        }
        let known = known.and_then(|(key, (name, held))| {
            if file_of(name) != Some(key) {
                return None;
            }
            let held = held.upgrade().or_else(|| super::wal_has_frames(name).then(|| Arc::new(())))?;
            Some((name.clone(), held))
        });
        let uri = super::plain_uri(known.as_ref().map_or(path, |(name, _)| name));
        let conn = Connection::open_with_flags(uri, flags).map_err(|e| at(path, "cannot open", e))?;
        let held = known.map_or_else(|| Arc::new(()), |(_, held)| held);
        if let Some(name) = conn.path().filter(|name| !name.is_empty()) {
            if let Some(key) = file_of(name) {
                names.insert(key, (name.to_owned(), Arc::downgrade(&held)));
            }
        }
        conn.create_scalar_function(HOLDER, 0, rusqlite::functions::FunctionFlags::SQLITE_UTF8, move |_| {
            let _ = &held;
            Ok(rusqlite::types::Null)
        })
        .map_err(|e| at(path, "cannot open", e))?;
        Ok(conn)
    }

    /// Elsewhere hard links are left to SQLite.
    #[cfg(not(unix))]
    pub fn open(path: &str, flags: OpenFlags) -> Result<Connection> {
        Connection::open_with_flags(super::plain_uri(path), flags).map_err(|e| at(path, "cannot open", e))
    }
}

/// Refuses a directory, FIFO, socket or device by name: opening a FIFO for
/// reading blocks until some process writes to it, and SQLite reports the
/// others only as "disk I/O error" or "unable to open database file".
fn regular_file(path: &str, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_dir() {
        return Err(Error::Storage(format!("{path:?} is a directory, not an audit database")));
    }
    if !meta.is_file() {
        return Err(Error::Storage(format!(
            "{path:?} is not a regular file (a FIFO, socket or device), not an audit database"
        )));
    }
    Ok(())
}

/// Opens an existing trail for reading only: nothing is created, migrated
/// or written. SQLite still needs a `-shm` file beside a WAL database; where
/// the folder refuses one (read-only media, an evidence copy in a folder the
/// reader may not write) and no `-wal` file holds rows not yet in the main
/// file, the file is read as immutable instead. A legacy trail (schema 0) is
/// read through temporary views that add the newer columns as NULL.
pub fn open_read_only(path: &str, busy_timeout: Duration) -> Result<Reader> {
    let _sqlite = crate::audit::writer::in_sqlite();
    match std::fs::metadata(path) {
        Err(e) => {
            return Err(Error::Storage(format!(
                "no audit database at {path:?} ({e}); read_only=True never creates one"
            )))
        }
        Ok(meta) => regular_file(path, &meta)?,
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let shared = prepared(path, names::open(path, flags), busy_timeout)?;
    let mut immutable = None;
    let (conn, version) = match user_version(&shared) {
        Ok(version) => (shared, version),
        Err(e) if needs_shm(&e) && !wal_has_frames(path) => {
            drop(shared);
            // Taken before the file is read: a change from here on reopens it.
            let file = absolute(path);
            let seen = FileState::of(&file);
            let uri = format!("{}?immutable=1", plain_uri(&file));
            let opened = Connection::open_with_flags(uri, flags).map_err(|e| at(path, "cannot open", e));
            let conn = prepared(path, opened, busy_timeout)?;
            let version = user_version(&conn).map_err(|e| at(path, "not a readable SQLite database", e))?;
            immutable = Some(Immutable { path: path.to_owned(), busy_timeout, file, seen });
            (conn, version)
        }
        Err(e) if needs_shm(&e) => {
            return Err(at(
                path,
                "cannot be read without write access to its folder (its -wal file holds rows, and SQLite cannot \
                 create the -shm file beside it); copy the database with its -wal file to a writable folder",
                e,
            ))
        }
        Err(e) => return Err(at(path, "not a readable SQLite database", e)),
    };
    known_version(version).map_err(|e| on_file(path, e))?;
    let columns = table_columns(&conn).map_err(|e| at(path, "cannot read the schema", e))?;
    if columns.is_empty() {
        return Err(Error::Storage(format!(
            "{path:?} is an SQLite database without an audit_log table, not an audit database"
        )));
    }
    if version < 1 {
        legacy_views(&conn, &columns).map_err(|e| at(path, "cannot read the legacy schema", e))?;
    }
    conn.pragma_update(None, "query_only", true).map_err(|e| at(path, "cannot set query_only", e))?;
    let legacy = (version < 1).then(|| Legacy { path: path.to_owned(), busy_timeout });
    Ok(Reader { conn, immutable, legacy })
}

/// A service's reading connection.
pub struct Reader {
    conn: Connection,
    /// Set when the file is read as immutable: SQLite then trusts it never
    /// to change, and sees no row written after it was opened.
    immutable: Option<Immutable>,
    /// Set when the file was a legacy trail (schema 0), read through the
    /// temporary views of [`legacy_views`]. Another process may migrate it
    /// meanwhile: the views would then hide every chain hash and pin the
    /// anchor where it was, so chained rows would read as appended without
    /// a hash and a later purge as deleted rows.
    legacy: Option<Legacy>,
}

struct Legacy {
    path: String,
    busy_timeout: Duration,
}

struct Immutable {
    path: String,
    busy_timeout: Duration,
    /// The file SQLite reads (links resolved).
    file: String,
    seen: FileState,
}

/// What an immutable read relies on staying as it was: no writer has
/// started (it makes a `-wal` file) or folded its `-wal` file into the
/// database file (its size or time changes).
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    len: Option<u64>,
    modified: Option<std::time::SystemTime>,
    wal: bool,
}

impl FileState {
    fn of(file: &str) -> Self {
        let meta = std::fs::metadata(file).ok();
        Self {
            len: meta.as_ref().map(std::fs::Metadata::len),
            modified: meta.and_then(|m| m.modified().ok()),
            wal: std::fs::symlink_metadata(format!("{file}-wal")).is_ok(),
        }
    }
}

impl Reader {
    /// A connection opened by [`open`], read as any other.
    pub fn new(conn: Connection) -> Self {
        Self { conn, immutable: None, legacy: None }
    }

    /// Closes the connection without a checkpoint (see [`crate::audit::writer::keep_wal_on_close`]).
    pub fn close_keeping_wal(self) {
        crate::audit::writer::keep_wal_on_close(&self.conn);
    }

    /// Runs the read `f` on a connection that shows the file as it is. A
    /// file read as immutable that has changed since is opened again first,
    /// so a follower (`auditbus tail -f`) sees what was written meanwhile
    /// instead of a stale snapshot; so is a legacy trail another process has
    /// migrated since. A migration that lands while `f` reads (the schema
    /// version is read again after it; it only ever grows) makes `f` read
    /// again on the migrated file: what it read through the legacy views may
    /// mix both schemas.
    pub fn read<T>(&mut self, f: impl Fn(&Connection) -> Result<T>) -> Result<T> {
        self.reopen_if_stale()?;
        let result = f(&self.conn);
        if self.legacy.is_none() || !self.migrated()? {
            return result;
        }
        self.reopen_if_stale()?;
        f(&self.conn)
    }

    fn reopen_if_stale(&mut self) -> Result<()> {
        if let Some(old) = &self.immutable {
            if FileState::of(&old.file) != old.seen {
                *self = open_read_only(&old.path, old.busy_timeout)?;
            }
        }
        if self.migrated()? {
            if let Some(old) = &self.legacy {
                *self = open_read_only(&old.path, old.busy_timeout)?;
            }
        }
        Ok(())
    }

    /// Whether a legacy trail has been migrated since it was opened.
    fn migrated(&self) -> Result<bool> {
        let Some(legacy) = &self.legacy else { return Ok(false) };
        let version: i64 = self
            .conn
            .query_row("PRAGMA main.user_version", [], |row| row.get(0))
            .map_err(|e| at(&legacy.path, "cannot read the schema version", e))?;
        Ok(version >= 1)
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    // Reads the header and, in WAL mode, the wal-index: the first access that needs the -shm file.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// The columns of [`ROW_COLUMNS`] that `audit_log` lacks: none once
/// migrated (a legacy trail read as one has them all in its views), unless
/// the table was altered outside auditbus. Every chained row's hash covers
/// them all.
pub fn missing_columns(conn: &Connection) -> rusqlite::Result<Vec<&'static str>> {
    let present = table_columns(conn)?;
    Ok(row_column_names().filter(|column| !present.iter().any(|p| p == column)).collect())
}

/// What [`missing_columns`] found, in words.
pub fn altered(missing: &[&str]) -> String {
    let names: Vec<String> = missing.iter().map(|column| format!("'{column}'")).collect();
    let noun = if missing.len() == 1 { "column" } else { "columns" };
    format!(
        "audit_log has no {noun} {} (dropped or renamed outside auditbus, or its schema version set by hand)",
        names.join(", ")
    )
}

fn table_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('audit_log')")?;
    let names = stmt.query_map([], |row| row.get::<_, String>(0))?;
    names.collect()
}

/// A read-only connection that could not set up WAL's shared memory.
fn needs_shm(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _)
        if matches!(e.code, rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen))
}

fn wal_has_frames(path: &str) -> bool {
    // Beside the file SQLite opens: through a link, that is the link's target.
    std::fs::metadata(format!("{}-wal", absolute(path))).is_ok_and(|meta| meta.len() > 0)
}

fn absolute(path: &str) -> String {
    std::fs::canonicalize(path).map_or_else(|_| path.to_owned(), |p| p.to_string_lossy().into_owned())
}

/// `path` as an SQLite URI filename: the characters URIs give a meaning are escaped.
fn plain_uri(path: &str) -> String {
    // "file://" and an empty authority: a path beginning with "//" must not name a host.
    let mut uri = String::from(if path.starts_with('/') { "file://" } else { "file:" });
    for c in path.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            other => uri.push(other),
        }
    }
    uri
}

/// Shadows a legacy `audit_log` (and the missing `audit_meta`) with
/// temporary views, so every read sees the current columns: the newer ones
/// NULL, and every row outside the chain, as the migration would leave them.
fn legacy_views(conn: &Connection, columns: &[String]) -> rusqlite::Result<()> {
    let select: Vec<String> = ROW_COLUMNS
        .split(',')
        .map(str::trim)
        .map(|column| {
            if columns.iter().any(|c| c == column) {
                format!("main.audit_log.{column}")
            } else {
                format!("NULL AS {column}")
            }
        })
        .collect();
    conn.execute_batch(&format!("CREATE TEMP VIEW audit_log AS SELECT {} FROM main.audit_log", select.join(", ")))?;
    // A trail migrated before (its schema version lowered since) keeps its
    // anchor: the migration leaves an `audit_meta` it finds as it is.
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = 'audit_meta'",
        [],
        |row| row.get(0),
    )?;
    if has_meta {
        return Ok(());
    }
    let last = last_id(conn)?;
    conn.execute_batch(&format!(
        "CREATE TEMP VIEW audit_meta (key, value) AS VALUES ('chain_anchor_id', '{last}'), ('chain_anchor_hash', '{}')",
        chain::GENESIS
    ))?;
    Ok(())
}

const NOT_WRITABLE: &str = "cannot be written by this process (every service records its own start and stop; \
                            open it with read_only=True to read it)";

/// The file may be written, but SQLite's companion files beside it may not.
const COMPANIONS_NOT_WRITABLE: &str =
    "its -wal and -shm files cannot be created or written beside it by this process (SQLite keeps them in the \
     database's folder, which, or files of those names in it, this process may not write; every service records \
     its own start and stop; open it with read_only=True to read it)";

/// The size the `-wal` file is cut back to once checkpointed: twice what the
/// writer lets it reach between checkpoints (`CHECKPOINT_FRAMES` pages and a
/// batch), so steady writing never pays for cutting and regrowing it.
pub const WAL_SIZE_LIMIT: i64 = 8 << 20;

/// This process opens a file by one name (see [`names`]); other processes
/// cannot be told, and two of them writing through two names would each
/// keep their own -wal file and index, and damage the file.
#[cfg(unix)]
fn warn_of_other_names(path: &str, meta: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    if meta.nlink() > 1 {
        crate::audit::writer::log(
            "warning",
            &format!(
                "audit database {path:?} has {} names (hard links): SQLite keeps the -wal file beside the name a \
                 process opens it by, so every process must open it by the same name; two processes writing \
                 through different names damage it",
                meta.nlink()
            ),
        );
    }
}

#[cfg(not(unix))]
fn warn_of_other_names(_path: &str, _meta: &std::fs::Metadata) {}

/// Opens the writer's connection: WAL, the chosen `synchronous` (read back
/// and checked, since wrappers and compile options can change defaults),
/// then the migrations.
pub fn open_writer(path: &str, busy_timeout: Duration, durability: Durability) -> Result<Connection> {
    // A missing file is created by the open below.
    if let Ok(meta) = std::fs::metadata(path) {
        regular_file(path, &meta)?;
        warn_of_other_names(path, &meta);
    }
    // After the warning: it is logged, and a use of SQLite waits for nothing.
    let _sqlite = crate::audit::writer::in_sqlite();
    let mut conn = open(path, busy_timeout)?;
    // SQLite quietly opens a file it may not write read-only; the writer
    // would then retry its first commit for ever.
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
        return Err(Error::Storage(format!("audit database {path:?} {NOT_WRITABLE}")));
    }
    let unusable = |e: rusqlite::Error| match e {
        // The file itself opened for writing (checked above): what failed is beside it.
        ref readonly if needs_shm(readonly) && std::fs::metadata(path).is_ok() => at(path, COMPANIONS_NOT_WRITABLE, e),
        ref busy if is_busy(busy) => held_too_long(path, busy_timeout, "switched to WAL", e),
        other => at(path, "not a usable SQLite database", other),
    };
    // A file refused is left as it was: not switched to WAL first.
    let version = user_version(&conn).map_err(unusable)?;
    known_version(version).map_err(|e| on_file(path, e))?;
    let mode: String = switch_to_wal(&mut conn, busy_timeout).map_err(unusable)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!("audit database {path:?}: journal_mode is {mode:?}, WAL was required")));
    }
    // Without a limit the -wal file keeps the size of the largest transaction
    // (a purge of months of rows) until close: weeks of a service holding
    // more disk in it than in the trail. With one, SQLite cuts it back when
    // it starts the file over after a checkpoint.
    conn.pragma_update_and_check(None, "journal_size_limit", WAL_SIZE_LIMIT, |row| row.get::<_, i64>(0))
        .map_err(|e| at(path, "cannot set journal_size_limit", e))?;
    conn.pragma_update(None, "synchronous", durability.pragma()).map_err(|e| at(path, "cannot set synchronous", e))?;
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(|e| at(path, "cannot read synchronous back", e))?;
    if sync != durability.pragma() {
        return Err(Error::Storage(format!(
            "audit database {path:?}: synchronous reads back as {sync}, expected {} ({})",
            durability.pragma(),
            durability.name()
        )));
    }
    // The migration's write lock is taken as eagerly, for the same writer (now in WAL).
    let deadline = Instant::now() + busy_timeout;
    eagerly(&mut conn, busy_timeout, deadline, migrate).map_err(Error::from).and_then(|migrated| migrated).map_err(
        |e| match e {
            Error::Sqlite(inner) if is_busy(&inner) => held_too_long(path, busy_timeout, "migrated", inner),
            Error::Sqlite(inner) => at(path, "migration failed", inner),
            other => on_file(path, other),
        },
    )?;
    // Each row written would fail for ever, as retries of a failed commit.
    let missing = missing_columns(&conn).map_err(|e| at(path, "cannot read the table's columns", e))?;
    if !missing.is_empty() {
        return Err(Error::Storage(format!(
            "audit database {path:?}: {}; nothing can be written to it (a service opened with \
             read_only=True reads it, and its verify() reports the alteration)",
            altered(&missing)
        )));
    }
    Ok(conn)
}

/// Sets `journal_mode=WAL`. On a file in a rollback journal the switch needs
/// the exclusive lock, which it takes without waiting (see [`until_free`]);
/// a process that writes without pause there (the legacy service) leaves
/// it free only for moments no retry would meet, and SQLite's busy handler,
/// sleeping milliseconds between tries, misses them too. So once refused,
/// the lock is first taken by an empty exclusive transaction that tries
/// again every 100 µs (once it holds the pending lock, no new reader comes
/// in), and the switch follows the moment it ends, while the other process
/// sleeps in its own busy handler.
fn switch_to_wal(conn: &mut Connection, busy_timeout: Duration) -> rusqlite::Result<String> {
    fn switch(conn: &Connection) -> rusqlite::Result<String> {
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
    }
    match switch(conn) {
        Err(e) if is_busy(&e) => {}
        done => return done,
    }
    let deadline = Instant::now() + busy_timeout;
    until_free(busy_timeout, || {
        let taken = eagerly(conn, busy_timeout, deadline, |conn| conn.execute_batch("BEGIN EXCLUSIVE; COMMIT"))?;
        if let Err(e) = taken {
            if !conn.is_autocommit() {
                // The switch cannot run inside a transaction.
                conn.execute_batch("ROLLBACK")?;
            }
            return Err(e);
        }
        switch(conn)
    })
}

/// Runs `f` with [`eager`] as the busy handler until `deadline`, then puts
/// back the connection's `busy_timeout`.
fn eagerly<T>(
    conn: &mut Connection,
    busy_timeout: Duration,
    deadline: Instant,
    f: impl FnOnce(&mut Connection) -> T,
) -> rusqlite::Result<T> {
    SWITCH_DEADLINE.with(|d| d.set(Some(deadline)));
    let done = conn.busy_handler(Some(eager)).map(|()| f(conn));
    SWITCH_DEADLINE.with(|d| d.set(None));
    conn.busy_timeout(busy_timeout)?;
    done
}

thread_local! {
    /// Until when [`eager`] tries again, on the thread switching a file to WAL.
    static SWITCH_DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// A busy handler that tries again every 100 µs until [`SWITCH_DEADLINE`].
fn eager(_tries: i32) -> bool {
    let wait = SWITCH_DEADLINE.with(std::cell::Cell::get).is_some_and(|deadline| Instant::now() < deadline);
    if wait {
        std::thread::sleep(Duration::from_micros(100));
    }
    wait
}

/// The lock another process held outlasted `busy_timeout`: who, and what to do.
fn held_too_long(path: &str, busy_timeout: Duration, what: &str, err: rusqlite::Error) -> Error {
    at(
        path,
        &format!(
            "another process (the legacy service writing, or one opening it too) held its lock for longer than \
             busy_timeout ({:.3}s), so it could not be {what}; open it again, or pass a longer busy_timeout",
            busy_timeout.as_secs_f64()
        ),
        err,
    )
}

/// Another connection holds the lock needed.
pub fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Runs `step` again while another connection holds the lock it needs, until
/// `busy_timeout` has passed. Switching a new file to WAL takes its exclusive
/// lock from inside a read, and there SQLite answers "locked" at once instead
/// of calling its busy handler: without this, one of several processes that
/// open a new trail together would fail.
fn until_free<T>(busy_timeout: Duration, mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match step() {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

/// Refuses a file written by a newer auditbus.
fn known_version(version: i64) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "schema version {version} is newer than this auditbus understands ({SCHEMA_VERSION})"
        )));
    }
    Ok(())
}

/// A refusal about the file at `path`, naming it.
fn on_file(path: &str, err: Error) -> Error {
    match err {
        Error::Storage(message) => Error::Storage(format!("audit database {path:?}: {message}")),
        other => other,
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] inside one write transaction, so
/// several processes opening the same file at once migrate it exactly once.
/// A file already at this version is only read: opening it must not need the
/// write lock, which another process may hold for longer than `busy_timeout`
/// (a purge of a long trail); the writer waits out such a lock, an open
/// would fail.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    known_version(version)?;
    // A table lacking a legacy column would fail in the DDL below, naming only SQL.
    let present = table_columns(&tx)?;
    if !present.is_empty() {
        let missing: Vec<&str> = row_column_names().take(6).filter(|c| !present.iter().any(|p| p == c)).collect();
        if !missing.is_empty() {
            return Err(Error::Storage(format!(
                "{}; nothing can be written to it (a service opened with read_only=True reads it)",
                altered(&missing)
            )));
        }
    }
    tx.execute_batch(LEGACY_DDL)?;
    if version < 1 {
        let existing = table_columns(&tx)?;
        for column in V1_COLUMNS {
            if !existing.iter().any(|c| c == column) {
                tx.execute_batch(&format!("ALTER TABLE audit_log ADD COLUMN {column} TEXT"))?;
            }
        }
        tx.execute_batch(V1_INDEXES)?;
        // Rows already present are outside the chain: the anchor sits after them.
        let last = last_id(&tx)?;
        tx.execute(
            "INSERT OR IGNORE INTO audit_meta (key, value) VALUES ('chain_anchor_id', ?1), ('chain_anchor_hash', ?2)",
            (last.to_string(), chain::GENESIS),
        )?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    }
    tx.commit()?;
    Ok(())
}

/// The largest id ever handed out (AUTOINCREMENT's `sqlite_sequence`, or the
/// largest present id), so ids are never reused even after a purge.
pub fn last_id(conn: &Connection) -> rusqlite::Result<i64> {
    let max: Option<i64> = conn.query_row("SELECT max(id) FROM audit_log", [], |row| row.get(0))?;
    Ok(sequence(conn)?.unwrap_or(0).max(max.unwrap_or(0)))
}

/// `sqlite_sequence`'s entry for `audit_log`: the largest id ever handed out.
/// None when there is no entry (or a NULL one), or no `sqlite_sequence` table at all (a
/// table made without AUTOINCREMENT, by an SQLite tool).
pub fn sequence(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    // As AUTOINCREMENT reads it: an edited text, real or blob value is cast, and
    // SQLite writes the integer back on the next insert.
    let seq: Option<Option<i64>> = conn
        .query_row("SELECT CAST(seq AS INTEGER) FROM sqlite_sequence WHERE name = 'audit_log'", [], |row| row.get(0))
        .optional()?;
    Ok(seq.flatten())
}

/// The chain anchor: rows with `id <= anchor_id` are outside the chain.
/// Without an `audit_meta` table (dropped), the chain starts at the first
/// row: rows a purge left no longer follow it, and the writer goes on.
pub fn anchor(conn: &Connection) -> rusqlite::Result<(i64, String)> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM (SELECT name FROM sqlite_master UNION ALL SELECT name FROM sqlite_temp_master) \
         WHERE name = 'audit_meta'",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok((0, chain::GENESIS.to_owned()));
    }
    let mut stmt = conn.prepare_cached("SELECT key, value FROM audit_meta WHERE key LIKE 'chain_anchor_%'")?;
    let mut id = 0;
    let mut hash = chain::GENESIS.to_owned();
    // Read leniently: an edited value of another type must not stop the writer.
    let rows = stmt.query_map([], |row| Ok((query::text(row, 0)?, query::text(row, 1)?.unwrap_or_default())))?;
    for row in rows {
        let (key, value) = row?;
        match key.as_deref().unwrap_or_default() {
            "chain_anchor_id" => id = value.parse().unwrap_or(0),
            "chain_anchor_hash" => hash = value,
            _ => {}
        }
    }
    Ok((id, hash))
}

/// Moves the anchor (after a purge), making `audit_meta` again if it was dropped.
pub fn set_anchor(conn: &Connection, id: i64, hash: &str) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    conn.execute(
        "INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('chain_anchor_id', ?1), ('chain_anchor_hash', ?2)",
        (id.to_string(), hash),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_the_operating_system_cannot_read_are_unreadable() {
        let folder = std::env::temp_dir().join(format!("auditbus-unreadable-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("trail.db").to_string_lossy().into_owned();
        std::fs::write(&path, vec![7_u8; 3 << 20]).unwrap();
        // Read to the end (over several buffers): damage, if any, is SQLite's to find.
        assert_eq!(unreadable(&path), None);
        assert_eq!(unreadable(""), None);
        assert_eq!(unreadable(&folder.join("missing.db").to_string_lossy()), None);
        // A read() that fails (EISDIR here, EIO on a failing disk) names the file.
        let dir = folder.to_string_lossy().into_owned();
        assert!(unreadable(&dir).is_some_and(|why| why.contains(&dir)));
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_new_file_switched_to_wal_while_another_connection_holds_its_lock_waits_instead_of_failing() {
        let folder = std::env::temp_dir().join(format!("auditbus-wal-switch-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("trail.db").to_string_lossy().into_owned();
        // Another process opening the same new file, inside its own switch: it holds the write lock.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut other = Some(other);
        let writer = open(&path, Duration::from_secs(30)).unwrap();
        let mut tries = 0;
        let mode = until_free(Duration::from_secs(30), || {
            tries += 1;
            let switched = writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
            // The other's lock is let go only after the first refusal.
            if let Err(rusqlite::Error::SqliteFailure(e, _)) = &switched {
                assert_eq!(e.code, rusqlite::ErrorCode::DatabaseBusy, "{switched:?}");
                other.take();
            }
            switched
        });
        assert_eq!(mode.unwrap(), "wal");
        assert_eq!(tries, 2);
        let gone = until_free(Duration::ZERO, || -> rusqlite::Result<()> {
            Err(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None))
        });
        assert!(gone.is_err(), "a lock still held when the busy timeout ends is an error");
        drop(writer);
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn migration_is_idempotent_and_keeps_legacy_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(LEGACY_DDL).unwrap();
        conn.execute(
            "INSERT INTO audit_log (timestamp, event_type, details) VALUES ('2026-01-01T00:00:00+00:00', 'auth_success', '{}')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(anchor(&conn).unwrap(), (1, chain::GENESIS.to_owned()));
        let details: String = conn.query_row("SELECT details FROM audit_log WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(details, "{}");
    }

    #[test]
    fn durability_names() {
        assert_eq!(Durability::parse("full").unwrap(), Durability::Full);
        assert!(Durability::parse("FULL").is_err());
    }
}

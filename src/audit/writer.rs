//! The writer thread: one per service, holding the write connection.
//!
//! Callers hand owned [`AuditRecord`]s to a bounded crossbeam channel; the
//! thread takes everything queued (up to [`MAX_BATCH`] rows) into one
//! `BEGIN IMMEDIATE … COMMIT`, so concurrent durable `record()` callers
//! share a commit (group commit). A burst of write-behind rows is gathered
//! and committed once, when it pauses or someone waits (see
//! `Thread::gather`). WAL checkpoints run after the replies, not inside a
//! commit. The chain head is read inside each write transaction (or reused
//! from the last commit when `PRAGMA data_version` shows no other writer in
//! between), so several processes appending to one file extend one chain.
//!
//! A lone durable `record()` that finds nothing queued and the thread idle
//! commits its own row on its own thread instead (see
//! [`Writer::commit_here`]): the same transaction on the same connection,
//! without the two thread wake-ups a hand-over costs. Any failure sends the
//! row through the queue, where the thread's retries take over.
//!
//! Durable callers wake together after a commit but come back one at a
//! time (each redacts holding the GIL), so committing as soon as the first
//! row arrives would give batches of two or three. The thread therefore
//! lingers while fewer durable rows are in hand than durable callers are
//! inside `record()`, as long as each next one comes within about one
//! commit's duration; a lone caller, write-behind batches and queued
//! control messages never wait.
//!
//! A failing commit (busy, locked, disk full, I/O) keeps its batch: the
//! thread rolls back, waits with exponential backoff and tries the same
//! rows again until they land, counting and logging each failure. Nothing
//! is dropped; the only way a handed-over row is not written is the bounded
//! wait at interpreter exit, which logs how many rows were given up.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, Select, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use rusqlite::limits::Limit;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::{Map, Value};

use crate::audit::chain::{self, RowContent};
use crate::audit::query::{self, RowData};
use crate::audit::record::{lifecycle, new_event_id, AuditRecord, Held, HeldBytes};
use crate::audit::schema;
use crate::errors::{Error, Result};
use crate::timestamp;

/// Waits with the GIL released until `wait` (given the end of each slice)
/// returns, or `deadline` passes, letting Python handle signals every
/// [`SIGNAL_POLL`]: a lock another process holds for good must not make a
/// wait uninterruptible. A KeyboardInterrupt comes back as the `Err`.
fn interruptible<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut wait: impl FnMut(Instant) -> std::result::Result<T, RecvTimeoutError> + Send,
) -> PyResult<std::result::Result<T, RecvTimeoutError>> {
    loop {
        let slice = Instant::now() + SIGNAL_POLL;
        match py.detach(|| wait(deadline.map_or(slice, |d| d.min(slice)))) {
            Err(RecvTimeoutError::Timeout) if deadline.is_none_or(|d| Instant::now() < d) => py.check_signals()?,
            other => return Ok(other),
        }
    }
}

/// Rows per transaction at most: large enough to amortise the fsync and
/// the index pages, small enough to keep a commit short.
pub const MAX_BATCH: usize = 2048;
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long past its limit the interpreter's exit waits for a writer
/// before it says on stderr that it still does.
const EXIT_NOTICE_AFTER: Duration = Duration::from_secs(2);
/// While a fault lasts, it is logged again at most this often.
const RELOG_EVERY: Duration = Duration::from_secs(10);
/// Bounds of the wait for each further durable row (about one commit's
/// duration, clamped), and of the whole linger: a stalled disk or a slow
/// caller cannot make the others wait long for company.
const MIN_LINGER: Duration = Duration::from_micros(50);
const MAX_LINGER: Duration = Duration::from_millis(10);
/// What a row takes besides its text columns, at most: the integer and
/// time columns, the two hashes, the record's header, a copy suffix on
/// its event id (the `source` column is counted apart).
const ROW_OVERHEAD: usize = 4096;
/// Bytes of row text that records handed over and not yet written may hold
/// in memory: the queue's slots bound how many records wait, this how big
/// they are together (a burst of large rows would otherwise grow the process
/// until the system kills it, and every queued row with it). A record that
/// does not fit waits like one facing a full queue; one larger than this is
/// taken once nothing else is held.
pub const QUEUE_BYTES: usize = 256_000_000;
/// WAL frames that trigger a checkpoint: SQLite's `wal_autocheckpoint` default.
pub const CHECKPOINT_FRAMES: i64 = 1000;
/// A write-behind burst is over once no row came for this long (see `Thread::gather`),
/// looked for every `GATHER_POLL`.
const GATHER_GAP: Duration = Duration::from_millis(1);
const GATHER_POLL: Duration = Duration::from_micros(250);
/// How long the thread stays awake for the next row after answering durable callers.
const DURABLE_POLL: Duration = Duration::from_micros(150);
/// The longest the thread gathers a burst once it turns to it (after the
/// commit before), before the burst's commit starts.
const MAX_GATHER: Duration = Duration::from_millis(20);
/// Rows of a burst that start its commit while it goes on: enough to spread
/// the commit's fsync and index pages thin (about 2 ms of a caller's
/// emitting), few enough that the emitting thread's closing `flush()` waits
/// for the rows it handed over after that commit began, not for the burst.
const COMMIT_ROWS: usize = 512;
/// How often a waiting `flush()` lets Python handle a signal (Ctrl-C): a
/// lock another process holds for good must not make it uninterruptible.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Who closes a service: its error afterwards says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// `close()` or the context manager.
    Program,
    /// The at-exit hook.
    Exit,
}

/// What a durable caller learns about its row once committed.
#[derive(Debug, Clone)]
pub struct Committed {
    pub id: i64,
    pub recorded_at: String,
    pub prev_hash: String,
    pub chain_hash: String,
    /// Set when the event_id was already taken by a different event: the id it was kept under.
    pub kept_as: Option<String>,
}

type RowReply = Sender<std::result::Result<Option<Committed>, String>>;

/// What travels through the queue.
pub enum Msg {
    /// A row; `reply` gets its id (None for a duplicate `event_id`) after COMMIT.
    Row(Box<AuditRecord>, Option<RowReply>),
    /// Answered once every message queued before it is committed.
    Flush(Sender<()>),
    /// Deletes the oldest rows, see [`purge`]; the identity the purge row names.
    Purge(DateTime<Utc>, Option<String>, Sender<std::result::Result<u64, String>>),
    /// The last message: commit what is left and stop.
    Stop,
}

/// Counters read by `stats()`.
#[derive(Default)]
pub struct Stats {
    /// Every row that entered the queue, the service's own included: once the
    /// writer has stopped, `queued == written + duplicates + lost`.
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub errors: AtomicU64,
    pub rejected: AtomicU64,
    pub lost: AtomicU64,
    /// Set when the thread ended on an internal error (a panic): the rows it
    /// held and those still queued were dropped uncounted, so [`Stats::lost`]
    /// is what entered the queue and never landed.
    crashed: AtomicBool,
    /// Purges handed over and not yet run: one whose caller stopped waiting
    /// (Ctrl-C) still runs, and a `flush()` after it waits for it.
    pub purges: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    /// Whether every row that entered the queue is committed (or a
    /// duplicate) and no purge waits. `queued` is counted before a row is
    /// sent and `written` (with release) after its commit, and `queued` is
    /// read last: a row seen written was seen queued, so done >= queued
    /// means none waits.
    fn settled(&self) -> bool {
        if self.purges.load(Ordering::Acquire) != 0 {
            return false;
        }
        let done = self.written.load(Ordering::Acquire) + self.duplicates.load(Ordering::Acquire);
        done >= self.queued.load(Ordering::Acquire)
    }

    /// Rows handed over and not written for good. After a crash, every row
    /// counted as queued and not landed: nothing writes them any more, and a
    /// sender refused after it gives its count back.
    pub fn lost(&self) -> u64 {
        let lost = self.lost.load(Ordering::Relaxed);
        if !self.crashed.load(Ordering::Acquire) {
            return lost;
        }
        let landed = self.written.load(Ordering::Acquire) + self.duplicates.load(Ordering::Acquire);
        self.queued.load(Ordering::Acquire).saturating_sub(landed).max(lost)
    }

    /// Counts a row about to be sent; undone by [`Stats::unqueue`] if the send fails.
    fn enqueue(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    fn unqueue(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// The last error, as `stats()` reports it. In a `fork()` child the lock
    /// is only tried: the fork may have copied it held by a writer thread the
    /// child does not have, and would then never be released.
    pub fn last_error_text(&self, forked: bool) -> Option<String> {
        if forked {
            return self.last_error.try_lock().and_then(|last| last.clone());
        }
        self.last_error.lock().clone()
    }
}

/// State shared by the handle and the thread.
pub struct Shared {
    pub path: String,
    pub stats: Stats,
    /// Set only by the at-exit close: past it, a failing batch is given up.
    stop_deadline: Mutex<Option<Instant>>,
    /// Set when the thread refused a batch and stops, before any caller
    /// hears of it: a later `close()` queues no stop row that nothing reads,
    /// and senders (which read it under `gate`) queue nothing more.
    refused: std::sync::atomic::AtomicBool,
    /// Set when the writer found the `-wal` or `-shm` file removed or
    /// replaced: the service's connections then close without a checkpoint.
    pub keep_wal: AtomicBool,
    /// `true` once closed. Senders hold it shared while they send, so the
    /// `Stop` message queued after it is shut is the last one; the thread
    /// holds it exclusively while it drains a queue it will never write, so
    /// no row is queued after that drain (acknowledged, then dropped uncounted).
    gate: RwLock<bool>,
    /// Durable callers inside `record()` (redacting, queued or waiting for
    /// their commit): how many durable rows the thread may expect soon.
    durable_callers: AtomicUsize,
    /// Counts messages someone waits on (a flush, a durable row, a purge, a
    /// stop), raised after each is queued: a gathering thread, which leaves
    /// the burst in the queue, reads it to stop gathering at once.
    urgent: AtomicU64,
    /// Set by a service dropped while its queue had no room for its last
    /// messages (see [`Writer::close_nowait`]): the thread writes `parting`
    /// (the stop row) and stops once it has drained the queue, which the
    /// shut gate keeps from filling again.
    stop_when_drained: AtomicBool,
    /// Why a lone caller's own commit failed (see [`Writer::commit_here`]):
    /// the thread's next commit reports it as its own first failure (logged,
    /// an `audit_failure` row), even when that commit lands at its first try.
    lone_fault: Mutex<Option<String>>,
    parting: Mutex<Option<Box<AuditRecord>>>,
    /// Who lets go of the writer once both the service is dropped and the
    /// thread has ended: the later of the two (see [`Writer::dropped`]).
    lifetime: Mutex<Lifetime>,
}

/// See [`Shared::lifetime`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lifetime {
    Running,
    Dropped,
    Ended,
}

impl Shared {
    fn new(path: String) -> Self {
        Self {
            path,
            stats: Stats::default(),
            stop_deadline: Mutex::new(None),
            refused: std::sync::atomic::AtomicBool::new(false),
            keep_wal: AtomicBool::new(false),
            gate: RwLock::new(false),
            durable_callers: AtomicUsize::new(0),
            urgent: AtomicU64::new(0),
            stop_when_drained: AtomicBool::new(false),
            lone_fault: Mutex::new(None),
            parting: Mutex::new(None),
            lifetime: Mutex::new(Lifetime::Running),
        }
    }

    /// Marks a message someone waits on as queued (see `urgent`).
    fn urge(&self) {
        self.urgent.fetch_add(1, Ordering::Release);
    }

    fn note_error(&self, message: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        *self.stats.last_error.lock() = Some(message.to_owned());
    }

    /// Counts a committed batch, `ids` as [`write_batch`] gave them.
    fn count_landed(&self, ids: &[Option<Committed>]) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        let stored = ids.iter().filter(|id| id.is_some()).count() as u64;
        // Release: see `Stats::settled`.
        self.stats.written.fetch_add(stored, Ordering::Release);
        self.stats.duplicates.fetch_add(ids.len() as u64 - stored, Ordering::Release);
    }

    /// The warning for a row whose `event_id` was taken by a different event, and kept as `kept_as`.
    fn kept_warning(&self, record: &AuditRecord, kept_as: &str) -> String {
        // The ids are the caller's text: escaped, a line break in one cannot forge a log line.
        format!(
            "audit trail {:?}: event_id {} was already stored for a different event; this {} event was stored as {}",
            self.path,
            record.event_id.escape_debug(),
            record.event_type,
            kept_as.escape_debug()
        )
    }
}

/// Counts one durable caller for as long as it lives (see [`Writer::durable_caller`]).
pub struct DurableCaller<'a>(&'a Shared);

impl Drop for DurableCaller<'_> {
    fn drop(&mut self) {
        self.0.durable_callers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The last messages of a closed writer, queued by whoever gets to them
/// first: the `close()` that shut the gate, a later one, or a flush that
/// waits for the thread to end. Each send waits in slices that let Python
/// handle signals, so a Ctrl-C can end a close() waiting for room in a queue
/// another process's lock keeps full; the next close() (or the exit) queues the rest.
#[derive(Default)]
struct Closing {
    /// The stop row, counted as queued, not in the queue yet.
    row: Option<Box<AuditRecord>>,
    /// `Stop` is queued (or the thread has ended): nothing is left to queue.
    stop_queued: bool,
}

/// How one slice of a blocked [`Writer::send`] ended.
enum Slice {
    Sent,
    Failed(Error),
    /// Still no room: the message comes back for the next slice.
    Waiting(Msg),
}

/// The service's side of the writer.
pub struct Writer {
    tx: Sender<Msg>,
    /// `true` once closed, as the gate says, but read without waiting: a
    /// sender may hold the gate for a slice of its wait for room, and
    /// `stats()` or a bus being wired ask with the GIL held.
    closed: AtomicBool,
    /// Closed by the interpreter's exit, not by the program: its error says so.
    closed_at_exit: AtomicBool,
    /// What a close has still to queue once the gate is shut (see [`Writer::queue_stop`]).
    closing: Mutex<Closing>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The writer thread: a call made on it (a handler of the `auditbus`
    /// logger, which the thread logs through) must not wait for it.
    thread_id: std::thread::ThreadId,
    /// The answer to the flush message of a `flush()` that gave up waiting
    /// for it (see [`Writer::flush`]).
    abandoned: Mutex<Option<Receiver<()>>>,
    /// Disconnects when the thread is done writing, its connection closed (its
    /// last log lines may follow), so a flush that finds the writer closed by someone else can wait for the drain.
    done: Receiver<()>,
    /// Disconnects when the thread has ended, its last log lines too.
    finished: Receiver<()>,
    pub shared: Arc<Shared>,
    capacity: usize,
    /// The process that started the thread, and [`FORKS`] then. A child
    /// made by `fork()` has a copy of the queue but not the thread: what it
    /// queued would never be written, and what it waited for would never come.
    owner_pid: u32,
    forks_at_start: u64,
    /// SQLite's length limit, which bounds a whole row, and what of it the
    /// row's text may take (see [`Writer::admit`]).
    row_limit: usize,
    text_room: usize,
    /// Row text held by records handed over and not yet written (see [`QUEUE_BYTES`]).
    held: Arc<HeldBytes>,
    queue_bytes: usize,
    /// The thread's connection, for a lone durable caller (see [`Writer::commit_here`]).
    core: CoreCell,
    wal_frames: Arc<AtomicI64>,
}

/// `fork()`s this process descends through, counted in each child by the
/// `os.register_at_fork` hook (which C code that forks runs too, through
/// `PyOS_AfterFork_Child`). Every hand-over checks it: an atomic load,
/// where `getpid()` would be a system call on the emitting thread.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Called in the child after each fork.
pub fn note_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Held shared by each use of SQLite made without the GIL (a commit, a
/// checkpoint, a purge, a read, a connection opened or closed), and
/// exclusively by the `before` fork hook until the fork is done. SQLite keeps
/// in process memory which locks the process's connections hold on a file: a
/// child copied in the middle of a transaction finds that lock still held
/// there, by a thread it does not have, for good, and a service it opens on
/// the trail could never commit. A `std` lock, as `LIVE` in service.rs: the
/// child lets go of it with no other thread left.
static SQLITE_USE: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    /// How deep this thread is in [`in_sqlite`]: only the outermost use takes
    /// the lock, since a share asked for again while the fork hook waits
    /// would wait for good.
    static SQLITE_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One use of SQLite (see [`SQLITE_USE`]). Taken after every other lock and
/// held without waiting for anything else, the GIL included: the fork hook
/// waits for it with the GIL held.
pub struct InSqlite {
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

impl Drop for InSqlite {
    fn drop(&mut self) {
        SQLITE_DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Marks a use of SQLite until the value is dropped.
pub fn in_sqlite() -> InSqlite {
    let outer = SQLITE_DEPTH.with(|depth| {
        let outer = depth.get() == 0;
        depth.set(depth.get() + 1);
        outer
    });
    let shared = outer.then(|| SQLITE_USE.read().unwrap_or_else(std::sync::PoisonError::into_inner));
    InSqlite { _shared: shared }
}

/// Waits for every use of SQLite in progress to end and lets no other start
/// until the guard is dropped (the fork hooks).
pub fn hold_sqlite_for_fork() -> std::sync::RwLockWriteGuard<'static, ()> {
    SQLITE_USE.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Writer {
    /// Starts the thread on an already opened and migrated connection.
    /// `retire` runs on the thread as it ends if the service was dropped
    /// meanwhile (see [`Writer::dropped`]).
    pub fn start(
        conn: Connection,
        path: String,
        source: String,
        capacity: usize,
        retire: fn(&Arc<Shared>),
    ) -> Result<Arc<Self>> {
        let row_limit = usize::try_from(conn.limit(Limit::SQLITE_LIMIT_LENGTH)?).unwrap_or(0);
        let text_room = row_limit.saturating_sub(source.len() + ROW_OVERHEAD);
        let (tx, rx) = bounded(capacity);
        let shared = Arc::new(Shared::new(path));
        let thread_shared = shared.clone();
        let (ended, done) = bounded::<()>(0);
        let (gone, finished) = bounded::<()>(0);
        let writer = Thread::new(conn, rx, shared.clone(), source);
        let (core, wal_frames) = (writer.core.clone(), writer.wal_frames.clone());
        let thread_core = core.clone();
        let thread = std::thread::Builder::new()
            .name("auditbus-writer".into())
            .spawn(move || {
                let _gone = gone;
                let outcome = catch_unwind(AssertUnwindSafe(|| writer.run()));
                // Closes the connection; no caller commits on it past this.
                let core = thread_core.lock().take();
                {
                    let _sqlite = in_sqlite();
                    drop(core);
                }
                let last_warnings = match &outcome {
                    Ok(warnings) => warnings.clone(),
                    Err(_) => Vec::new(),
                };
                if outcome.is_err() {
                    let message =
                        "audit writer thread stopped after an internal error; records still queued were not written";
                    *thread_shared.stats.last_error.lock() = Some(message.to_owned());
                    // The rows it held went with the panic: counted lost from the counters.
                    thread_shared.stats.crashed.store(true, Ordering::Release);
                    // Stopped as on a refused batch: flush() and close() say so.
                    thread_shared.refused.store(true, Ordering::Release);
                    log(
                        "critical",
                        &format!(
                            "{message} ({:?}): {} records were NOT written",
                            thread_shared.path,
                            thread_shared.stats.lost()
                        ),
                    );
                }
                // The closer waits for this, not for these log lines: a handler may wait
                // on a lock it holds. It leaves the thread to the exit to join meanwhile.
                drop(ended);
                for warning in last_warnings {
                    log("warning", &warning);
                }
                let dropped = {
                    let mut lifetime = thread_shared.lifetime.lock();
                    let dropped = *lifetime == Lifetime::Dropped;
                    *lifetime = Lifetime::Ended;
                    dropped
                };
                if dropped {
                    retire(&thread_shared);
                }
            })
            .map_err(|e| {
                Error::Storage(format!(
                    "cannot start the audit writer thread for {:?}: {e} (the process's thread limit, \
                     RLIMIT_NPROC or ulimit -u, may be reached)",
                    shared.path
                ))
            })?;
        Ok(Arc::new(Self {
            tx,
            closed: AtomicBool::new(false),
            closed_at_exit: AtomicBool::new(false),
            closing: Mutex::new(Closing::default()),
            thread_id: thread.thread().id(),
            abandoned: Mutex::new(None),
            thread: Mutex::new(Some(thread)),
            done,
            finished,
            shared,
            capacity,
            owner_pid: std::process::id(),
            forks_at_start: FORKS.load(Ordering::Relaxed),
            row_limit,
            text_room,
            held: Arc::new(HeldBytes::default()),
            queue_bytes: QUEUE_BYTES,
            core,
            wal_frames,
        }))
    }

    /// Whether this process is a `fork()` child of the one that opened the service.
    pub fn forked(&self) -> bool {
        FORKS.load(Ordering::Relaxed) != self.forks_at_start
    }

    /// The error for any use of the service in a forked child.
    pub fn check_process(&self) -> Result<()> {
        if !self.forked() {
            return Ok(());
        }
        Err(Error::Storage(format!(
            "AuditService({:?}) was opened in process {} and this is process {}, a fork of it: its writer \
             thread did not follow the fork, so nothing handed over here would be written. Open a new \
             AuditService in this process",
            self.shared.path,
            self.owner_pid,
            std::process::id()
        )))
    }

    fn closed_error(&self) -> Error {
        if self.closed_at_exit.load(Ordering::Acquire) {
            return Error::Closed(format!(
                "AuditService({:?}) was closed at interpreter exit: auditbus closes the services still open in an \
                 atexit hook registered when it is imported, and an exit hook registered before that import (or a \
                 daemon thread) runs after it",
                self.shared.path
            ));
        }
        Error::Closed(format!("AuditService({:?}) is closed", self.shared.path))
    }

    /// The error of every call that needs the writer once it has stopped,
    /// with how many handed-over rows it left unwritten.
    pub fn stopped_error(&self) -> Error {
        let last = self.shared.stats.last_error.lock().clone();
        let lost = match self.shared.stats.lost() {
            0 => String::new(),
            lost => format!("; {lost} records were not written"),
        };
        Error::Storage(format!(
            "the audit writer for {:?} has stopped{lost}{}",
            self.shared.path,
            last.map(|e| format!(" ({e})")).unwrap_or_default()
        ))
    }

    /// Whether the thread stopped on a fault (a refused batch, an internal
    /// error) rather than on `close()`: nothing handed over is written any more.
    pub fn stopped(&self) -> bool {
        self.shared.refused.load(Ordering::Acquire)
    }

    fn full_error(&self, timeout: Option<Duration>) -> Error {
        let waited = timeout.map_or_else(|| "0".to_owned(), |t| format!("{}", t.as_secs_f64()));
        Error::QueueFull(format!(
            "the audit queue for {:?} stayed full ({} records) for {waited} s (put_timeout); the record was not accepted",
            self.shared.path, self.capacity
        ))
    }

    fn on_writer_thread(&self) -> bool {
        std::thread::current().id() == self.thread_id
    }

    /// The error for a call that would wait for the writer thread, made on
    /// that thread: by a handler of the `auditbus` logger, which the thread
    /// logs its faults through. Waiting would stop the writer for good.
    fn check_not_writer(&self, what: &str) -> Result<()> {
        if !self.on_writer_thread() {
            return Ok(());
        }
        Err(Error::Storage(format!(
            "{what} was called on the audit writer thread of {:?} (from a handler of the \"auditbus\" logger): \
             it would wait for that thread itself. Use record_event() there, or hand the log records to another \
             thread (logging.handlers.QueueHandler)",
            self.shared.path
        )))
    }

    /// Queues a message: without releasing the GIL when there is room, else
    /// waiting up to `timeout` (None: as long as it takes) with the GIL
    /// released, in slices between which Python handles signals: a Ctrl-C
    /// comes back as the `Err`, the message not queued. On the writer thread
    /// nothing waits (only that thread makes room). A message someone waits
    /// on is urged as soon as it is queued, before the GIL is taken back:
    /// the threads holding the GIL may keep a burst going meanwhile.
    pub fn send(&self, py: Python<'_>, msg: Msg, timeout: Option<Duration>) -> Result<()> {
        self.check_process()?;
        let urgent = !matches!(msg, Msg::Row(_, None));
        let queued = || {
            if urgent {
                self.shared.urge();
            }
        };
        let mut msg = msg;
        if let Some(gate) = self.shared.gate.try_read() {
            if let Some(shut) = self.shut(*gate) {
                return Err(shut);
            }
            match self.tx.try_send(msg) {
                Ok(()) => {
                    queued();
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(self.stopped_error()),
                Err(TrySendError::Full(back)) => {
                    if timeout == Some(Duration::ZERO) || self.on_writer_thread() {
                        return Err(self.full_error(Some(Duration::ZERO)));
                    }
                    msg = back;
                }
            }
        }
        let timeout = if self.on_writer_thread() { Some(Duration::ZERO) } else { timeout };
        let deadline = timeout.map(|limit| Instant::now() + limit);
        loop {
            // Refused at once while a close() holds the gate waiting for room.
            if self.closed.load(Ordering::Acquire) {
                return Err(self.closed_error());
            }
            let slice = Instant::now() + SIGNAL_POLL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            // The gate is held for one slice only: a signal handler run between
            // slices may call close(), which takes it exclusively.
            let sent = py.detach(|| {
                let Some(gate) = self.shared.gate.try_read_until(until) else {
                    return Slice::Waiting(msg); // a close() shuts the gate, or the thread drains for good
                };
                if let Some(shut) = self.shut(*gate) {
                    return Slice::Failed(shut);
                }
                match self.tx.send_deadline(msg, until) {
                    Ok(()) => {
                        queued();
                        Slice::Sent
                    }
                    Err(SendTimeoutError::Timeout(back)) => Slice::Waiting(back),
                    Err(SendTimeoutError::Disconnected(_)) => Slice::Failed(self.stopped_error()),
                }
            });
            match sent {
                Slice::Sent => return Ok(()),
                Slice::Failed(err) => return Err(err),
                Slice::Waiting(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    let closed = self.closed.load(Ordering::Acquire);
                    return Err(if closed { self.closed_error() } else { self.full_error(timeout) });
                }
                Slice::Waiting(back) => {
                    py.check_signals()?;
                    msg = back;
                }
            }
        }
    }

    /// Why nothing may be queued now, read under the gate: closed, or the
    /// thread stopped on a refused batch (it drained the queue for the last
    /// time under the exclusive gate; a row queued after that would be dropped).
    fn shut(&self, closed: bool) -> Option<Error> {
        if closed {
            Some(self.closed_error())
        } else if self.shared.refused.load(Ordering::Acquire) {
            Some(self.stopped_error())
        } else {
            None
        }
    }

    /// Write-behind: returns once the record is queued.
    pub fn submit(&self, py: Python<'_>, mut record: AuditRecord, timeout: Option<Duration>) -> Result<()> {
        let size = self.admit(&record)?;
        let timeout = self.reserve(py, &mut record, size, timeout)?;
        self.shared.stats.enqueue();
        self.send(py, Msg::Row(Box::new(record), None), timeout).inspect_err(|e| self.not_accepted(e))
    }

    /// Takes the record's share of [`QUEUE_BYTES`] (`size`, its text, as
    /// [`Writer::admit`] measured it), waiting for room up to
    /// `timeout` as `send` waits for a slot (the GIL released, signals
    /// handled between slices); returns what is left of `timeout` for the send.
    fn reserve(
        &self,
        py: Python<'_>,
        record: &mut AuditRecord,
        size: usize,
        timeout: Option<Duration>,
    ) -> Result<Option<Duration>> {
        // A fork() child has no writer to give room back: refused as `send` refuses it.
        self.check_process()?;
        let fits = |held: usize| held == 0 || held.saturating_add(size) <= self.queue_bytes;
        let take = |held: &mut usize| {
            *held += size;
            Held { of: self.held.clone(), bytes: size }
        };
        {
            let mut held = self.held.bytes.lock();
            if fits(*held) {
                record.held.0 = Some(take(&mut held));
                return Ok(timeout);
            }
        }
        // Only the writer thread gives room back: there, waiting would never end.
        let timeout = if self.on_writer_thread() { Some(Duration::ZERO) } else { timeout };
        let deadline = timeout.map(|limit| Instant::now() + limit);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(self.closed_error());
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(self.bytes_full_error(size, timeout));
            }
            // A thread that stopped gives nothing back: its queue stays as it is.
            if self.shared.refused.load(Ordering::Acquire) || self.is_finished() {
                return Err(self.stopped_error());
            }
            let until = deadline.map_or(now + SIGNAL_POLL, |d| d.min(now + SIGNAL_POLL));
            let taken = py.detach(|| {
                let mut held = self.held.bytes.lock();
                if !fits(*held) {
                    self.held.freed.wait_until(&mut held, until);
                }
                fits(*held).then(|| take(&mut held))
            });
            if let Some(taken) = taken {
                record.held.0 = Some(taken);
                return Ok(deadline.map(|d| d.saturating_duration_since(Instant::now())));
            }
            py.check_signals()?;
        }
    }

    fn bytes_full_error(&self, size: usize, timeout: Option<Duration>) -> Error {
        let waited = timeout.map_or_else(|| "0".to_owned(), |t| format!("{}", t.as_secs_f64()));
        Error::QueueFull(format!(
            "the records queued for {:?} held over {} bytes for {waited} s (put_timeout), no room for this one's {} \
             bytes; the record was not accepted",
            self.shared.path,
            grouped(self.queue_bytes),
            grouped(size)
        ))
    }

    /// Refuses a row SQLite would never store: accepted, it would fail its
    /// commit on every try, and the writer would stop for good, the rows
    /// queued after it lost with it. Returns the bytes of the row's text.
    fn admit(&self, record: &AuditRecord) -> Result<usize> {
        let sizes = record.text_sizes();
        let text: usize = sizes.iter().map(|&(_, size)| size).sum();
        if text <= self.text_room {
            return Ok(text);
        }
        let largest = sizes.iter().max_by_key(|&&(_, size)| size).map_or("details", |&(field, _)| field);
        Err(Error::invalid(
            largest,
            format!(
                "the row's text would take {} bytes, more than the {} an audit row has room for (SQLite stores \
                 at most {} bytes in a row); keep large content elsewhere and record a reference to it",
                grouped(text),
                grouped(self.text_room),
                grouped(self.row_limit)
            ),
        ))
    }

    /// Undoes the count of a row the queue did not take; a full queue's refusal is counted as rejected.
    fn not_accepted(&self, err: &Error) {
        self.shared.stats.unqueue();
        if matches!(err, Error::QueueFull(_)) {
            self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Held by a durable `record()` from its start (before redaction), so the
    /// thread knows a row is coming and can hold a commit open for it.
    pub fn durable_caller(&self) -> DurableCaller<'_> {
        self.shared.durable_callers.fetch_add(1, Ordering::AcqRel);
        DurableCaller(&self.shared)
    }

    /// Durable: returns the row id once the batch holding it is committed.
    pub fn record(
        &self,
        py: Python<'_>,
        mut record: AuditRecord,
        timeout: Option<Duration>,
    ) -> Result<Option<Committed>> {
        self.check_not_writer("record()")?;
        let size = self.admit(&record)?;
        if let Some(committed) = py.detach(|| self.commit_here(&record)) {
            if let Some(kept_as) = committed.as_ref().and_then(|c| c.kept_as.as_deref()) {
                log("warning", &self.shared.kept_warning(&record, kept_as));
            }
            return Ok(committed);
        }
        let timeout = self.reserve(py, &mut record, size, timeout)?;
        let (reply, answer) = bounded(1);
        self.shared.stats.enqueue();
        self.send(py, Msg::Row(Box::new(record), Some(reply)), timeout).inspect_err(|e| self.not_accepted(e))?;
        py.detach(|| self.reply(&answer, None))
            .map_err(|_| self.stopped_error())?
            .map_err(|e| Error::Storage(format!("audit record not written to {:?}: {e}", self.shared.path)))
    }

    /// Commits a lone durable caller's row on its own thread (the GIL
    /// released) when nothing else is queued or in the thread's hands and
    /// the thread is not writing: the hand-over to the thread and the
    /// wake-up back would cost it more than the commit's CPU. The row lands
    /// after every row handed over before it, as through the queue. None
    /// when the row must go through the queue instead: other durable callers
    /// are about (the thread's shared commit serves them better), something
    /// waits in the queue, the thread holds the connection, the service is
    /// closing or stopped, the WAL is due a checkpoint, or the commit failed
    /// (rolled back and counted; the thread then reports it and retries the
    /// row with its backoff, as any other).
    fn commit_here(&self, record: &AuditRecord) -> Option<Option<Committed>> {
        if self.forked() {
            return None;
        }
        // Other durable callers inside record() share the thread's next commit
        // (see `Thread::linger`): a row committed here would cost them one more.
        if self.shared.durable_callers.load(Ordering::Acquire) > 1 {
            return None;
        }
        let mut core = self.core.try_lock()?;
        let core = core.as_mut()?;
        // Under the connection's lock the thread commits nothing: a row counted
        // as queued and not yet written is still to come, and this one goes after
        // it. Closed is read here too: a close() after this read queues its stop
        // row later, and the thread commits it only once this lock is free.
        if self.closed.load(Ordering::Acquire)
            || self.shared.refused.load(Ordering::Acquire)
            || !self.tx.is_empty()
            || !self.shared.stats.settled()
        {
            return None;
        }
        // A WAL due a checkpoint: this row goes to the thread, which checkpoints
        // after its commit and reply, as it does for its own rows. A message
        // asking for it would take a slot of the queue the callers' records need.
        if self.wal_frames.load(Ordering::Relaxed) >= CHECKPOINT_FRAMES {
            return None;
        }
        // Last, as the system calls: a row going to the thread is checked there.
        if core.gone().is_some() {
            return None;
        }
        let stats = &self.shared.stats;
        stats.enqueue();
        // A panic in the commit rolls it back; the row then goes to the thread, as on any failure.
        let written =
            catch_unwind(AssertUnwindSafe(|| write_batch(&mut core.conn, &[record], &core.source, &mut core.head)))
                .unwrap_or_else(|_| Err(Error::Storage("internal error in a commit on the caller's thread".into())));
        match written {
            Ok(ids) => {
                self.shared.count_landed(&ids);
                Some(ids.into_iter().next().flatten())
            }
            Err(err) => {
                stats.unqueue();
                let message = describe(&err);
                self.shared.note_error(&message);
                // A damaged file the thread finds again and refuses, no retry to announce.
                if !is_damaged(&err) {
                    *self.shared.lone_fault.lock() = Some(message);
                }
                None
            }
        }
    }

    /// Returns once everything queued before the call is committed.
    pub fn flush(&self, py: Python<'_>, timeout: Option<Duration>) -> Result<()> {
        self.check_process()?;
        // A stopped writer commits nothing more: "nothing waits" is no answer then.
        if self.stopped() {
            return Err(self.stopped_error());
        }
        // Nothing handed over waits: done, without a message for the thread
        // to answer (which `timeout=0` could never wait for).
        if self.shared.stats.settled() {
            return Ok(());
        }
        if timeout == Some(Duration::ZERO) {
            // A message queued for a wait of nothing would hold a slot of the
            // queue, unread, for as long as the fault lasts: a loop of such
            // calls during an outage would fill it and refuse the records.
            return Err(self.flush_timeout(timeout));
        }
        self.check_not_writer("flush()")?;
        let start = Instant::now();
        let deadline = timeout.map(|limit| start + limit);
        // The message of an earlier flush that gave up (timeout, Ctrl-C) is
        // still queued: wait for its answer before queueing one more, so that
        // flushes repeated during an outage do not fill the queue records need.
        let earlier = self.abandoned.lock().take();
        if let Some(answer) = earlier {
            self.await_flush(py, answer, deadline, timeout)?;
            if self.shared.stats.settled() {
                return Ok(());
            }
        }
        let (reply, answer) = bounded(1);
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match self.send(py, Msg::Flush(reply), left) {
            Ok(()) => {}
            Err(Error::Closed(_)) => return self.drained(py, timeout, start),
            Err(Error::QueueFull(_)) => return Err(self.flush_timeout(timeout)),
            Err(other) => return Err(other),
        }
        self.await_flush(py, answer, deadline, timeout)
    }

    /// Waits for the answer to a queued flush message. Given up (the
    /// deadline, or a KeyboardInterrupt), the answer is kept for the next
    /// flush; the rows stay queued and are written all the same.
    fn await_flush(
        &self,
        py: Python<'_>,
        answer: Receiver<()>,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let waited = interruptible(py, deadline, |until| self.reply(&answer, Some(until)));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(RecvTimeoutError::Disconnected)) => Err(self.stopped_error()),
            Ok(Err(RecvTimeoutError::Timeout)) => {
                *self.abandoned.lock() = Some(answer);
                Err(self.flush_timeout(timeout))
            }
            Err(interrupted) => {
                *self.abandoned.lock() = Some(answer);
                Err(interrupted.into())
            }
        }
    }

    /// Waits for the thread's answer to a message, or for the thread to end:
    /// a message queued just as the thread stopped is never answered, and
    /// its reply sender stays in the channel, so the answer alone could
    /// keep the caller waiting forever.
    fn reply<T>(&self, answer: &Receiver<T>, deadline: Option<Instant>) -> std::result::Result<T, RecvTimeoutError> {
        let mut select = Select::new();
        let answered = select.recv(answer);
        select.recv(&self.done);
        let op = match deadline {
            None => select.select(),
            Some(deadline) => select.select_deadline(deadline).map_err(|_| RecvTimeoutError::Timeout)?,
        };
        if op.index() == answered {
            return op.recv(answer).map_err(|_| RecvTimeoutError::Disconnected);
        }
        let _ = op.recv(&self.done);
        // The thread has ended; an answer sent before it did is in the channel.
        answer.try_recv().map_err(|_| RecvTimeoutError::Disconnected)
    }

    /// A flush on a closed writer: what was queued before the close is
    /// still being written (a `close()` on another thread may be draining
    /// it), so wait for the thread to end, then say whether anything was lost.
    fn drained(&self, py: Python<'_>, timeout: Option<Duration>, start: Instant) -> Result<()> {
        let deadline = timeout.map(|limit| start + limit);
        // A close() interrupted before its last messages were queued: the thread ends only once they are.
        if !self.queue_stop(py, deadline, true)? {
            return Err(self.flush_timeout(timeout));
        }
        // The thread's end disconnects the channel; nothing is ever sent on it.
        let waited = interruptible(py, deadline, |until| self.done.recv_deadline(until))?;
        if matches!(waited, Err(RecvTimeoutError::Timeout)) {
            return Err(self.flush_timeout(timeout));
        }
        if self.stopped() || self.shared.stats.lost() > 0 {
            return Err(self.stopped_error());
        }
        Ok(())
    }

    fn flush_timeout(&self, timeout: Option<Duration>) -> Error {
        let last = self.shared.stats.last_error.lock().clone();
        Error::Timeout(format!(
            "flush of {:?} did not complete within {} s{}",
            self.shared.path,
            timeout.map_or(0.0, |t| t.as_secs_f64()),
            last.map(|e| format!(" (last storage error: {e})")).unwrap_or_default()
        ))
    }

    /// Runs a purge on the writer thread, after everything queued before it.
    /// The wait lets Python handle signals (see [`interruptible`]).
    pub fn purge(&self, py: Python<'_>, before: DateTime<Utc>, user: Option<String>) -> Result<u64> {
        self.check_not_writer("purge()")?;
        let (reply, answer) = bounded(1);
        self.shared.stats.purges.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.send(py, Msg::Purge(before, user, reply), None) {
            self.shared.stats.purges.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        // A Ctrl-C ends the wait, not the purge: it runs once the rows before it are written.
        interruptible(py, None, |until| self.reply(&answer, Some(until)))?
            .map_err(|_| self.stopped_error())?
            .map_err(|e| Error::Storage(format!("purge of {:?} failed: {e}", self.shared.path)))
    }

    /// From `deadline` on, a batch that fails is given up instead of kept
    /// (interpreter exit). Set on every service before any is closed, so
    /// the exit waits for one limit, not one per service.
    pub fn give_up_after(&self, deadline: Instant) {
        *self.shared.stop_deadline.lock() = Some(deadline);
    }

    /// Queues `last` (the stop row) and `Stop`, then waits for the thread. Idempotent.
    /// The program's close lets Python handle signals in the wait (see
    /// [`interruptible`]): a Ctrl-C ends it with the writer closed to new
    /// records and still writing what was queued; a later `close()`, or the
    /// exit, waits again. The at-exit close, bounded by its own limit, does not.
    pub fn close(&self, py: Python<'_>, last: Option<AuditRecord>, by: ClosedBy) -> Result<()> {
        let interruptible = by == ClosedBy::Program;
        if self.forked() {
            // The thread to stop and join lives in the parent only.
            self.closed.store(true, Ordering::Release);
            return Ok(());
        }
        self.check_not_writer("close()")?;
        py.detach(|| {
            // Held only while senders finish a slice: the stop is queued after it is shut.
            let mut gate = self.shared.gate.write();
            if !*gate {
                *gate = true;
                self.closed_at_exit.store(by == ClosedBy::Exit, Ordering::Release);
                self.closed.store(true, Ordering::Release);
                if let Some(record) = last.filter(|_| !self.shared.refused.load(Ordering::Acquire)) {
                    self.shared.stats.enqueue();
                    self.closing.lock().row = Some(Box::new(record));
                }
            }
        });
        // Not interruptible (the exit), it waits until queued: past the exit's limit the thread drains.
        // Not bounded either: a thread still running past that limit is writing, or held by a
        // handler of the logger, and rows it can still write are not given up. It is said, though.
        let notice_at = match by {
            ClosedBy::Exit => self.shared.stop_deadline.lock().map(|d| d + EXIT_NOTICE_AFTER),
            ClosedBy::Program => None,
        };
        let mut noticed = false;
        if notice_at.is_some() && !self.queue_stop(py, notice_at, false)? {
            self.notice_exit_wait();
            noticed = true;
        }
        self.queue_stop(py, None, interruptible)?;
        if interruptible {
            // Nothing is sent on `done`: it disconnects when the thread is done writing.
            self::interruptible(py, None, |until| self.done.recv_deadline(until))?.ok();
        } else if let Some(at) = notice_at.filter(|_| !noticed) {
            if py.detach(|| self.finished.recv_deadline(at)) == Err(RecvTimeoutError::Timeout) {
                self.notice_exit_wait();
            }
        }
        py.detach(|| {
            let mut thread = self.thread.lock();
            // Still logging its last warnings, the thread is left to the exit to join (see
            // [`Writer::is_finished`]): the program's close does not wait for a log handler.
            if !interruptible || thread.as_ref().is_some_and(JoinHandle::is_finished) {
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        });
        Ok(())
    }

    /// Says, on stderr (the logger may be what holds the thread), that the
    /// interpreter's exit still waits for this writer past its limit.
    fn notice_exit_wait(&self) {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "auditbus: the interpreter exit still waits for the audit writer of {:?}, past its limit: the writer \
             is still writing, or a handler of the \"auditbus\" logger it called has not returned (the exit \
             waits for that handler; logging's own exit would too)",
            crate::values::masked(&self.shared.path)
        );
    }

    /// Queues what a close left to queue (the stop row, then `Stop`) once the
    /// gate is shut, waiting for room until `deadline` in slices, between
    /// which Python handles signals when `interruptible`. Only this sends
    /// now, one caller at a time (under `closing`), and under the gate
    /// shared, so the thread's last drain (see [`Shared::gate`]) sees it.
    /// False when the deadline passed first.
    fn queue_stop(&self, py: Python<'_>, deadline: Option<Instant>, interruptible: bool) -> PyResult<bool> {
        loop {
            let slice = Instant::now() + SIGNAL_POLL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            if py.detach(|| self.try_queue_stop(until)) {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            if interruptible {
                py.check_signals()?;
            }
        }
    }

    /// One slice of [`Writer::queue_stop`], up to `until`: true once the stop is queued.
    fn try_queue_stop(&self, until: Instant) -> bool {
        let Some(_gate) = self.shared.gate.try_read_until(until) else { return false };
        let Some(mut closing) = self.closing.try_lock_until(until) else { return false };
        if closing.stop_queued {
            return true;
        }
        if self.shared.refused.load(Ordering::Acquire) {
            // The thread stopped and drained for good: nothing reads these.
            if closing.row.take().is_some() {
                self.shared.stats.unqueue();
            }
            closing.stop_queued = true;
            return true;
        }
        if let Some(row) = closing.row.take() {
            match self.tx.send_deadline(Msg::Row(row, None), until) {
                Ok(()) => {}
                Err(SendTimeoutError::Timeout(back)) => {
                    if let Msg::Row(row, _) = back {
                        closing.row = Some(row);
                    }
                    return false;
                }
                Err(SendTimeoutError::Disconnected(_)) => self.shared.stats.unqueue(),
            }
        }
        match self.tx.send_deadline(Msg::Stop, until) {
            Ok(()) | Err(SendTimeoutError::Disconnected(_)) => {
                self.shared.urge();
                closing.stop_queued = true;
                true
            }
            Err(SendTimeoutError::Timeout(_)) => false,
        }
    }

    /// The at-exit close once Python has shut down (see `service.rs`): no
    /// signal to handle, no Python to call. Queues `last` unless a stop
    /// (a drop's, say) already is, and waits for the thread to end.
    pub fn close_unattached(&self, last: Option<AuditRecord>) {
        if self.forked() || self.on_writer_thread() {
            return;
        }
        {
            let mut gate = self.shared.gate.write();
            if !*gate {
                *gate = true;
                self.closed_at_exit.store(true, Ordering::Release);
                self.closed.store(true, Ordering::Release);
                let mut closing = self.closing.lock();
                if let Some(record) = last.filter(|_| !self.shared.refused.load(Ordering::Acquire)) {
                    if !closing.stop_queued {
                        self.shared.stats.enqueue();
                        closing.row = Some(Box::new(record));
                    }
                }
            }
        }
        while !self.try_queue_stop(Instant::now() + SIGNAL_POLL) {}
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Asks the thread to stop without waiting (for `Drop`, which must not block).
    /// Also after a `close()` that a Ctrl-C interrupted before the stop was queued.
    pub fn close_nowait(&self, last: Option<AuditRecord>) {
        if self.forked() {
            return;
        }
        let Some(mut gate) = self.shared.gate.try_write() else { return };
        let Some(mut closing) = self.closing.try_lock() else { return };
        if closing.stop_queued {
            return;
        }
        if !*gate {
            *gate = true;
            self.closed.store(true, Ordering::Release);
            if let Some(record) = last.filter(|_| !self.shared.refused.load(Ordering::Acquire)) {
                self.shared.stats.enqueue();
                closing.row = Some(Box::new(record));
            }
        }
        closing.stop_queued = true;
        let row = closing.row.take();
        // Nothing else sends while the gate is held: the room seen stays.
        if self.tx.len() + usize::from(row.is_some()) < self.capacity {
            if let Some(row) = row {
                if self.tx.try_send(Msg::Row(row, None)).is_err() {
                    self.shared.stats.unqueue();
                }
            }
            let _ = self.tx.try_send(Msg::Stop);
        } else {
            // No room for them: the thread takes them from here once it has drained
            // the queue. A flush nobody waits for wakes a thread waiting on an empty
            // queue; a full one keeps it busy until it looks here.
            *self.shared.parting.lock() = row;
            self.shared.stop_when_drained.store(true, Ordering::SeqCst);
            let _ = self.tx.try_send(Msg::Flush(bounded(1).0));
        }
        self.shared.urge();
    }

    /// The service is gone (dropped, its stop asked for): true when the
    /// thread has already ended, and the caller lets go of the writer;
    /// else the thread does as it ends. Until then the writer is kept for
    /// the at-exit hook, which waits for what it still has to write.
    pub fn dropped(&self) -> bool {
        let mut lifetime = self.shared.lifetime.lock();
        if *lifetime == Lifetime::Ended {
            return true;
        }
        *lifetime = Lifetime::Dropped;
        false
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn is_finished(&self) -> bool {
        self.thread.lock().as_ref().is_none_or(JoinHandle::is_finished)
    }

    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }
}

/// Sends a line, secret shapes masked, to `logging.getLogger("auditbus")`, or to stderr when the
/// interpreter is gone (at exit) or a handler raised — never a panic: not
/// `eprintln!`, which panics when stderr is a pipe nobody reads any more, and
/// would stop the writer thread, the rows in its hands with it.
pub fn log(level: &str, message: &str) {
    // A path or an SQLite error may hold a secret (a token in a folder name): masked as the CLI masks them.
    let message = crate::values::masked(message);
    let message = message.as_str();
    let logged = Python::try_attach(|py| -> PyResult<()> {
        py.import("logging")?.call_method1("getLogger", ("auditbus",))?.call_method1(level, (message,))?;
        Ok(())
    });
    if !matches!(logged, Some(Ok(()))) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "auditbus {level}: {message}");
    }
}

/// One queued row and who waits for it.
type Pending = (Box<AuditRecord>, Option<RowReply>);

/// What one turn of the thread collected: rows for one transaction, the
/// flushes answered after it, and at most one control message, last.
#[derive(Default)]
struct Batch {
    rows: Vec<Pending>,
    durable: usize,
    flushes: Vec<Sender<()>>,
    control: Option<Msg>,
}

impl Batch {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Row(record, reply) => {
                self.durable += usize::from(reply.is_some());
                self.rows.push((record, reply));
            }
            Msg::Flush(reply) => self.flushes.push(reply),
            other => self.control = Some(other),
        }
    }

    /// Someone waits for this batch's commit: a durable row, a flush, or a
    /// control message (a purge's caller, a close).
    fn waited_on(&self) -> bool {
        self.durable > 0 || !self.flushes.is_empty() || self.control.is_some()
    }

    /// Nothing more may join: a control message ends the batch, a full one too.
    fn closed(&self) -> bool {
        self.control.is_some() || self.rows.len() >= MAX_BATCH
    }
}

/// Why [`Thread::gather`] ended, for the tests to tell a waiter heard at
/// once from one the burst's pause or time limit happened to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gathered {
    /// The batch holds a message someone waits on (or a control message).
    Waiter,
    /// The batch holds [`MAX_BATCH`] rows.
    Full,
    /// [`COMMIT_ROWS`] rows are queued or taken.
    Enough,
    /// `urgent` moved on: a message someone waits on is queued.
    Urged,
    /// No row came for [`GATHER_GAP`].
    Paused,
    /// [`MAX_GATHER`] passed.
    TimeUp,
}

/// The write connection and what goes with it. The thread holds it while
/// it writes; a lone durable caller finding nothing queued commits its own
/// row on it (see [`Writer::commit_here`]). The thread takes it out (closing
/// the connection) as it ends.
pub struct Core {
    conn: Connection,
    source: String,
    /// The chain head after the last commit on this connection (see [`write_batch`]).
    head: Option<Head>,
    /// The database file the connection opened, to notice it removed or replaced.
    file: Option<FileId>,
    /// The `-wal` file beside it that the connection commits to, likewise.
    wal: Option<WalWatch>,
    /// The `-shm` file beside it, through which the connection and other
    /// processes' take turns writing to the `-wal` file, likewise.
    shm: Option<FileId>,
}

/// What a commit on a [`Core`] now would be lost with.
enum Gone {
    /// The database file is no longer the one opened.
    Database,
    /// The file beside it named `suffix` is no longer the one the connection
    /// uses. The `-wal` file: commits would be in a file in no directory (or
    /// not at its path) until the connection closes, and lost with the
    /// process. The `-shm` file: a process opening the trail now makes
    /// another, and the two would write to the `-wal` file at once, each
    /// unaware of the other's rows.
    Companion { suffix: &'static str, path: std::path::PathBuf },
}

impl Core {
    /// Whether the files this connection writes are still the ones at their paths.
    fn gone(&mut self) -> Option<Gone> {
        let file = self.file.as_ref()?;
        if !file.still_there() {
            return Some(Gone::Database);
        }
        // SQLite makes both files with the first read: each is known once it exists.
        if self.wal.is_none() {
            self.wal = WalWatch::of(&file.beside("-wal"));
        }
        if self.shm.is_none() {
            self.shm = FileId::of(&file.beside("-shm"));
        }
        if let Some(wal) = self.wal.as_ref().filter(|wal| !wal.still_there()) {
            return Some(Gone::Companion { suffix: "-wal", path: wal.path().to_owned() });
        }
        if let Some(shm) = self.shm.as_ref().filter(|shm| !shm.still_there()) {
            return Some(Gone::Companion { suffix: "-shm", path: shm.path.clone() });
        }
        None
    }
}

type CoreCell = Arc<Mutex<Option<Core>>>;

struct Thread {
    core: CoreCell,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    /// Smoothed duration of a successful commit: the linger's bound.
    commit_cost: Duration,
    /// Frames in the WAL after the last commit, set by the WAL hook.
    wal_frames: Arc<AtomicI64>,
    /// While checkpoints fail.
    checkpoint_fault: Option<CheckpointFault>,
    /// Warnings of the last commit, logged once its waiters have their
    /// answers: a log handler may wait on a lock a waiting caller holds.
    warnings: Vec<String>,
}

/// Checkpoints failing since `since`, `attempts` times; `logged` is when it was last logged.
struct CheckpointFault {
    since: Instant,
    attempts: u64,
    logged: Option<Instant>,
}

impl CheckpointFault {
    /// Whether a failure at `now` is to be logged (and is then noted as logged). A
    /// fault is logged at once and again every [`RELOG_EVERY`]. Another connection
    /// running a checkpoint (`busy`) is no fault, only routine among processes
    /// sharing a trail, unless it lasts: it is logged once checkpoints have failed
    /// for [`RELOG_EVERY`], as the WAL then keeps growing.
    fn due(&mut self, now: Instant, busy: bool) -> bool {
        let due = match self.logged {
            Some(at) => now.duration_since(at) >= RELOG_EVERY,
            None => !busy || now.duration_since(self.since) >= RELOG_EVERY,
        };
        if due {
            self.logged = Some(now);
        }
        due
    }
}

/// Closing `conn` leaves the `-wal` file as it is: no checkpoint through a
/// `-shm` file that is no longer the one other processes use, which could
/// copy stale pages into the database file and delete rows they committed.
pub fn keep_wal_on_close(conn: &Connection) {
    if let Err(e) = conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true) {
        log("warning", &format!("cannot turn off the checkpoint at close ({e})"));
    }
}

/// Where a file lives and which one it is (device and inode).
#[derive(Clone, PartialEq, Eq)]
struct FileId {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file at `path` now; None when there is none.
    #[cfg(unix)]
    fn of(path: &std::path::Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| Self { path: path.to_owned(), dev: m.dev(), ino: m.ino() })
    }

    /// Elsewhere an open file cannot be removed or replaced: nothing to watch.
    #[cfg(not(unix))]
    fn of(_path: &std::path::Path) -> Option<Self> {
        None
    }

    /// Whether the file at the path is still the one opened.
    fn still_there(&self) -> bool {
        Self::of(&self.path).is_some_and(|now| now == *self)
    }

    /// One of the files SQLite keeps beside this database (`-wal`, `-shm`).
    fn beside(&self, suffix: &str) -> std::path::PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(suffix);
        name.into()
    }
}

/// The `-wal` file a connection commits to, watched before each commit.
/// Reading its attributes (`stat()`) between two commits makes the next
/// one's fsync slower on ext4, by about 60 µs (a third of a durable
/// commit). On Linux the file is therefore held open instead and asked
/// where it is: the kernel names a file removed from its folder, or renamed
/// away, differently, and reading that name leaves the file alone.
enum WalWatch {
    /// Where `/proc/self/fd/<held>` pointed when the file was first seen.
    Held { path: std::path::PathBuf, held: std::fs::File, name: std::path::PathBuf },
    /// Without `/proc`: the file's device and inode, read again each time.
    Identity(FileId),
}

impl WalWatch {
    /// The file at `path` now, watched; None when there is none.
    fn of(path: &std::path::Path) -> Option<Self> {
        if let Ok(held) = std::fs::File::open(path) {
            if let Ok(name) = std::fs::read_link(Self::link(&held)) {
                return Some(Self::Held { path: path.to_owned(), held, name });
            }
        }
        FileId::of(path).map(Self::Identity)
    }

    #[cfg(unix)]
    fn link(held: &std::fs::File) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", held.as_raw_fd())
    }

    /// No `/proc/self/fd` elsewhere: the identity is read instead.
    #[cfg(not(unix))]
    fn link(_held: &std::fs::File) -> String {
        String::new()
    }

    fn path(&self) -> &std::path::Path {
        match self {
            Self::Held { path, .. } => path,
            Self::Identity(id) => &id.path,
        }
    }

    /// Whether the file at the path is still the one watched.
    fn still_there(&self) -> bool {
        match self {
            // Removed (or renamed over), the held file is named `<name> (deleted)`; moved, by its new place.
            Self::Held { held, name, .. } => std::fs::read_link(Self::link(held)).is_ok_and(|now| now == *name),
            Self::Identity(id) => id.still_there(),
        }
    }
}

impl Thread {
    fn new(mut conn: Connection, rx: Receiver<Msg>, shared: Arc<Shared>, source: String) -> Self {
        // Our own WAL hook replaces SQLite's automatic checkpoint, which runs
        // inside COMMIT and so would hold back the replies of that commit.
        let wal_frames = Arc::new(AtomicI64::new(0));
        let seen = wal_frames.clone();
        let hooked = conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: std::ffi::c_int| {
            seen.store(i64::from(frames), Ordering::Relaxed);
            Ok(())
        }));
        if let Err(e) = hooked {
            // SQLite's automatic checkpoint stays in place: slower replies, nothing else.
            log("warning", &format!("audit writer for {:?}: WAL hook not installed ({e})", shared.path));
        }
        // SQLite names the file by its absolute path: a later chdir() does not change it.
        let file = conn.path().filter(|p| !p.is_empty()).and_then(|p| FileId::of(std::path::Path::new(p)));
        let wal = file.as_ref().and_then(|f| WalWatch::of(&f.beside("-wal")));
        let shm = file.as_ref().and_then(|f| FileId::of(&f.beside("-shm")));
        let core = Arc::new(Mutex::new(Some(Core { conn, source, head: None, file, wal, shm })));
        Self { core, rx, shared, commit_cost: MIN_LINGER, wal_frames, checkpoint_fault: None, warnings: Vec::new() }
    }

    /// Copies the WAL back into the database once it holds
    /// [`CHECKPOINT_FRAMES`] frames (SQLite's own default threshold), after
    /// the waiters of the last commit have their replies. `PASSIVE`: it never
    /// waits for readers or other writers; what it cannot copy now is copied
    /// by a later one.
    fn checkpoint_if_due(&mut self) {
        if self.wal_frames.load(Ordering::Relaxed) < CHECKPOINT_FRAMES {
            return;
        }
        self.wal_frames.store(0, Ordering::Relaxed);
        let done = match self.core.lock().as_mut() {
            Some(core) => {
                let _sqlite = in_sqlite();
                core.conn.wal_checkpoint_v2(Some("main"), rusqlite::wal::CheckpointMode::PASSIVE)
            }
            None => return,
        };
        match done {
            Ok(_) => {
                if let Some(CheckpointFault { since, attempts, logged: Some(_) }) = self.checkpoint_fault.take() {
                    log(
                        "warning",
                        &format!(
                            "audit writer for {:?}: WAL checkpoint succeeded again after {attempts} failed \
                             attempts over {:.1} s",
                            self.shared.path,
                            since.elapsed().as_secs_f64()
                        ),
                    );
                }
            }
            // Busy (another process checkpoints) or I/O: committed rows are safe in the WAL.
            Err(e) => {
                let busy = schema::is_busy(&e);
                let e = describe(&Error::Sqlite(e));
                let now = Instant::now();
                let fault =
                    self.checkpoint_fault.get_or_insert(CheckpointFault { since: now, attempts: 0, logged: None });
                fault.attempts += 1;
                // Logged, not only counted: the WAL grows for as long as the database file cannot be written.
                let relog = fault.due(now, busy);
                if relog || !busy {
                    self.shared.note_error(&format!("checkpoint: {e}"));
                }
                if relog {
                    log(
                        "warning",
                        &format!(
                            "audit writer for {:?}: WAL checkpoint into the database file failed ({e}); the rows \
                             are committed in the -wal file and the checkpoint is tried again after later commits",
                            self.shared.path
                        ),
                    );
                }
            }
        }
    }

    /// Once the `-wal` or `-shm` file at the path is another one, the
    /// connections' view of the `-wal` file may be stale: a checkpoint at
    /// close could copy old pages over another process's rows.
    fn keep_wal_on_close(&self) {
        self.shared.keep_wal.store(true, Ordering::Release);
        if let Some(core) = self.core.lock().as_ref() {
            keep_wal_on_close(&core.conn);
        }
    }

    /// The rows committed before the `-wal` file went are in the one this
    /// connection still has open, in no directory: copied into the database
    /// file now, they outlive the process instead of lasting until it ends.
    fn save_wal(&self, message: &str) {
        let copied = match self.core.lock().as_ref() {
            Some(core) => {
                let _sqlite = in_sqlite();
                core.conn.wal_checkpoint_v2(Some("main"), rusqlite::wal::CheckpointMode::PASSIVE)
            }
            None => return,
        };
        match copied {
            Ok((frames, done)) if done >= frames => {}
            Ok(_) => log(
                "critical",
                &format!(
                    "{message}; a reader held back copying every committed row into the database file: the \
                     rest is written there when the service closes, and lost if the process is killed first"
                ),
            ),
            Err(e) => log(
                "critical",
                &format!(
                    "{message}; copying the committed rows into the database file failed ({}): they are written \
                     there when the service closes, and lost if the process is killed first",
                    describe(&Error::Sqlite(e))
                ),
            ),
        }
    }

    /// Ends with the warnings of its last commit, for the thread to log once
    /// the closer waiting for it has its answer (see [`Writer::start`]).
    fn run(mut self) -> Vec<String> {
        let mut answered_durable = false;
        loop {
            let Some(first) = self.next_message(answered_durable) else { return std::mem::take(&mut self.warnings) };
            let (mut batch, urgent) = self.begin_turn(first);
            self.gather(&mut batch, urgent);
            self.linger(&mut batch);
            answered_durable = batch.durable > 0;
            let Batch { rows, flushes, control, .. } = batch;
            match self.commit(rows) {
                Landing::Landed => {
                    for reply in flushes {
                        let _ = reply.send(());
                    }
                    // A purge's or a close's caller waits on this commit too: answered first.
                    if control.is_none() {
                        self.log_warnings();
                    }
                }
                // Given up at exit: a flush waiting on these rows must not hear "done".
                Landing::GivenUp => drop(flushes),
                Landing::Refused => {
                    // Retrying cannot help: stop, so that every waiter gets an error
                    // (flush waiters see the channel close) instead of waiting forever.
                    drop(flushes);
                    if matches!(control, Some(Msg::Purge(..))) {
                        self.shared.stats.purges.fetch_sub(1, Ordering::AcqRel);
                    }
                    // Under the exclusive gate: a sender that queued before this drain is
                    // counted in it, one after it sees `refused` (see `Shared::gate`).
                    let _gate = self.shared.gate.write();
                    self.refuse_queued();
                    return std::mem::take(&mut self.warnings);
                }
            }
            self.checkpoint_if_due();
            match control {
                Some(Msg::Purge(before, user, reply)) => {
                    let result = self.purge(&before, user).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        self.shared.note_error(e);
                    }
                    self.shared.stats.purges.fetch_sub(1, Ordering::AcqRel);
                    let _ = reply.send(result);
                    self.log_warnings();
                }
                Some(Msg::Stop) => return std::mem::take(&mut self.warnings),
                _ => {}
            }
        }
    }

    fn log_warnings(&mut self) {
        for warning in std::mem::take(&mut self.warnings) {
            log("warning", &warning);
        }
    }

    /// The next message; None once every sender is gone. Right after
    /// answering durable callers the thread polls for a while before it
    /// blocks: such a caller is usually back within tens of microseconds
    /// with its next row, and finding the thread still awake spares both
    /// sides a wake-up, which costs more than this poll on a virtual machine.
    fn next_message(&self, answered_durable: bool) -> Option<Msg> {
        if answered_durable {
            let until = Instant::now() + DURABLE_POLL;
            while Instant::now() < until {
                match self.rx.try_recv() {
                    Ok(msg) => return Some(msg),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                }
            }
        }
        if self.shared.stop_when_drained.load(Ordering::SeqCst) {
            return match self.rx.try_recv() {
                Ok(msg) => Some(msg),
                Err(TryRecvError::Disconnected) => None,
                // Drained, and the gate is shut: the stop row, then the stop.
                Err(TryRecvError::Empty) => {
                    Some(self.shared.parting.lock().take().map_or(Msg::Stop, |row| Msg::Row(row, None)))
                }
            };
        }
        self.rx.recv().ok()
    }

    /// A turn's batch, from `first` and what is queued, with the `urgent`
    /// count [`Thread::gather`] watches, read before the queue: whatever
    /// was urged before it is in the queue read here.
    fn begin_turn(&self, first: Msg) -> (Batch, u64) {
        let urgent = self.shared.urgent.load(Ordering::Acquire);
        let mut batch = Batch::default();
        batch.take(first);
        self.take_queued(&mut batch);
        (batch, urgent)
    }

    /// While write-behind rows keep arriving (each within [`GATHER_GAP`] of
    /// the last), leaves them queued until [`COMMIT_ROWS`] are, rather than
    /// committing each few: fewer commits sync less often and write each
    /// index page fewer times. Those rows are then committed while the burst
    /// goes on, and the next commit takes what queued meanwhile, up to
    /// [`MAX_BATCH`] rows, so a caller's `flush()` at the burst's end waits
    /// for the rows it handed over during the last commit, not for the whole
    /// burst. Once the queue is half full, the rows are taken into the batch
    /// so that emitters do not wait for room while this thread idles. Ends at
    /// once when someone waits (a flush, a durable row, a control message:
    /// `urgent` moved on since the queue was read), and after [`MAX_GATHER`]
    /// in all: once the commit before is done, no row waits longer for its
    /// commit to start (a row queued while that commit ran, or left over by a
    /// full batch, waited for it too and is gathered again). Polled, not
    /// waited for: a receiver blocked on the channel makes every send a
    /// wake-up system call on the emitting thread.
    fn gather(&self, batch: &mut Batch, urgent: u64) -> Gathered {
        let limit = Instant::now() + MAX_GATHER;
        let half = self.rx.capacity().map_or(usize::MAX, |c| c.div_ceil(2));
        let mut quiet = Duration::ZERO;
        let mut queued = self.rx.len();
        let end = loop {
            if batch.waited_on() {
                break Gathered::Waiter;
            }
            if batch.closed() {
                break Gathered::Full;
            }
            if self.shared.urgent.load(Ordering::Acquire) != urgent {
                break Gathered::Urged;
            }
            if quiet >= GATHER_GAP {
                break Gathered::Paused;
            }
            if Instant::now() >= limit {
                break Gathered::TimeUp;
            }
            if queued + batch.rows.len() >= COMMIT_ROWS {
                break Gathered::Enough;
            }
            if queued >= half {
                self.take_queued(batch);
                queued = self.rx.len();
                continue;
            }
            std::thread::sleep(GATHER_POLL);
            let now = self.rx.len();
            quiet = if now > queued { Duration::ZERO } else { quiet + GATHER_POLL };
            queued = now;
        };
        self.take_queued(batch);
        end
    }

    /// Takes what is queued into the batch, until it is closed.
    fn take_queued(&self, batch: &mut Batch) {
        while !batch.closed() {
            match self.rx.try_recv() {
                Ok(msg) => batch.take(msg),
                Err(_) => break,
            }
        }
    }

    /// Waits for the rows of durable callers already inside `record()`, so
    /// they share this commit instead of each paying the next one. Each wait
    /// for the next durable row is bounded by about one commit's duration
    /// (a row later than that is cheaper in the next commit), the whole
    /// linger by [`MAX_LINGER`]. Only delays: every row taken is committed
    /// with the batch before any reply goes out. Never for a lone durable
    /// caller, a write-behind-only batch, or once a flush or a control
    /// message is waiting (those callers asked for now).
    fn linger(&self, batch: &mut Batch) {
        let expected = || self.shared.durable_callers.load(Ordering::Acquire);
        if batch.durable == 0 || batch.durable >= expected() {
            return;
        }
        let gap = self.commit_cost.clamp(MIN_LINGER, MAX_LINGER);
        let start = Instant::now();
        let mut deadline = start + gap;
        let limit = start + MAX_LINGER;
        while !batch.closed() && batch.flushes.is_empty() && batch.durable < expected() {
            match self.rx.recv_deadline(deadline.min(limit)) {
                Ok(msg) => {
                    let durable = batch.durable;
                    batch.take(msg);
                    if batch.durable > durable {
                        deadline = Instant::now() + gap;
                    }
                }
                Err(_) => return, // no durable row in time, or every sender is gone
            }
        }
    }

    /// Everything still queued once the writer has stopped on a damaged
    /// file: durable callers get the error, the rest is counted as lost.
    fn refuse_queued(&self) {
        let message = self.shared.stats.last_error.lock().clone().unwrap_or_default();
        let mut lost = 0_u64;
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Row(_, Some(reply)) => {
                    lost += 1;
                    let _ = reply.send(Err(message.clone()));
                }
                Msg::Row(_, None) => lost += 1,
                Msg::Purge(_, _, reply) => {
                    self.shared.stats.purges.fetch_sub(1, Ordering::AcqRel);
                    let _ = reply.send(Err(message.clone()));
                }
                Msg::Flush(_) | Msg::Stop => {}
            }
        }
        // The stop row of a service dropped with a full queue, never sent.
        lost += u64::from(self.shared.parting.lock().take().is_some());
        self.shared.stats.lost.fetch_add(lost, Ordering::Relaxed);
    }

    /// Gives `rows` up for good: durable callers get `message`, the rest is
    /// counted lost, and the writer stops (the caller returns `Refused`).
    fn refuse(&self, rows: Vec<Pending>, message: &str) -> Landing {
        self.shared.refused.store(true, Ordering::Release);
        self.shared.note_error(message);
        // Durable rows too: their callers get the error, and the rows are still not written.
        self.shared.stats.lost.fetch_add(rows.len() as u64, Ordering::Relaxed);
        log(
            "critical",
            &format!(
                "{message}; the audit writer stopped: {} records were NOT written. Repair or restore the \
                 file, or open the service on a new file",
                rows.len()
            ),
        );
        for (_, reply) in rows {
            if let Some(reply) = reply {
                let _ = reply.send(Err(message.to_owned()));
            }
        }
        Landing::Refused
    }

    /// Counts a committed batch and answers its durable callers.
    fn landed(&mut self, rows: Vec<Pending>, ids: Vec<Option<Committed>>) {
        self.shared.count_landed(&ids);
        for ((record, reply), id) in rows.into_iter().zip(ids) {
            if let Some(kept_as) = id.as_ref().and_then(|c| c.kept_as.as_deref()) {
                self.warnings.push(self.shared.kept_warning(&record, kept_as));
            }
            if let Some(reply) = reply {
                let _ = reply.send(Ok(id));
            }
        }
    }

    /// Writes `rows`, retrying the same batch while the fault is one that
    /// clears (busy, locked, disk full, I/O). A damaged file (SQLITE_CORRUPT,
    /// SQLITE_NOTADB) at once, or any other fault still there after
    /// [`PERMANENT_ATTEMPTS`] tries (a constraint or trigger, an edited
    /// schema), refuses the batch loudly instead: waiting would hang every
    /// durable `record()` and `close()` for good.
    fn commit(&mut self, mut rows: Vec<Pending>) -> Landing {
        // Checked with no row too: a purge or a flush after it goes through the same files.
        let gone = self.core.lock().as_mut().and_then(Core::gone);
        match gone {
            // Rows committed now would go to a file that is in no directory (or
            // not at its path): acknowledged, and then in no trail anyone reads.
            Some(Gone::Database) => {
                let message = format!(
                    "audit database {:?} was removed or replaced while the service had it open",
                    self.shared.path
                );
                return self.refuse(rows, &message);
            }
            Some(Gone::Companion { suffix, path }) => {
                let message = format!(
                    "audit database {:?}: its {suffix} file {path:?} was removed or replaced while the service had it open",
                    self.shared.path
                );
                // No -wal file at the path: no process has opened the trail since,
                // and the frames the -shm file lists are this connection's own.
                if suffix == "-wal" && std::fs::symlink_metadata(&path).is_err() {
                    self.save_wal(&message);
                }
                self.keep_wal_on_close();
                return self.refuse(rows, &message);
            }
            None => {}
        }
        if rows.is_empty() {
            return Landing::Landed;
        }
        let mut backoff = FIRST_BACKOFF;
        let mut fault: Option<(Instant, Instant, u64)> = None; // (since, last logged, attempts)

        // A lone caller's commit failed before handing its row here: that was the first try.
        let lone_fault = self.shared.lone_fault.lock().take();
        if let Some(message) = lone_fault {
            if self.shared.stop_deadline.lock().is_none_or(|d| Instant::now() < d) {
                let now = Instant::now();
                fault = Some((now, now, 1));
                self.hold(&mut rows, &message);
            }
        }
        loop {
            let stop_deadline = *self.shared.stop_deadline.lock();
            let records: Vec<&AuditRecord> = rows.iter().map(|(r, _)| r.as_ref()).collect();
            let started = Instant::now();
            let (written, unreadable) = {
                let mut core = self.core.lock();
                let Some(core) = core.as_mut() else {
                    return self
                        .refuse(rows, &format!("the audit writer for {:?} has no connection", self.shared.path));
                };
                if let Some(deadline) = stop_deadline {
                    // At exit, SQLite's own wait for a lock ends at the deadline too; past
                    // it, each batch left gets one try (it lands if the lock has gone).
                    let _ = core.conn.busy_timeout(deadline.saturating_duration_since(Instant::now()));
                }
                let written = write_batch(&mut core.conn, &records, &core.source, &mut core.head);
                // A read that failed in the operating system is reported as damage
                // by SQLite: kept and retried like any I/O error, not refused.
                let unreadable = match &written {
                    Err(err) if is_damaged(err) => core.conn.path().and_then(schema::unreadable),
                    _ => None,
                };
                (written, unreadable)
            };
            match written {
                Ok(ids) => {
                    self.commit_cost =
                        (self.commit_cost.saturating_mul(3).saturating_add(started.elapsed()) / 4).min(MAX_LINGER);
                    self.landed(rows, ids);
                    if let Some((since, _, attempts)) = fault {
                        self.warnings.push(format!(
                            "audit writer for {:?} recovered after {attempts} failed attempts over {:.1} s; no record \
                             was lost",
                            self.shared.path,
                            since.elapsed().as_secs_f64()
                        ));
                    }
                    return Landing::Landed;
                }
                Err(err) => {
                    let io = unreadable;
                    if io.is_none()
                        && (is_damaged(&err) || (!clears(&err) && fault.is_some_and(|f| f.2 >= PERMANENT_ATTEMPTS)))
                    {
                        let message = if is_damaged(&err) {
                            format!("audit database {:?} is damaged: {err}", self.shared.path)
                        } else {
                            format!("audit database {:?} refuses the records: {err}", self.shared.path)
                        };
                        return self.refuse(rows, &message);
                    }
                    let message = match io {
                        Some(io) => format!("I/O error, {io} (SQLite reports it as: {err})"),
                        None => describe(&err),
                    };
                    self.shared.note_error(&message);
                    let now = Instant::now();
                    let deadline = *self.shared.stop_deadline.lock();
                    let giving_up = deadline.is_some_and(|d| now >= d);
                    match &mut fault {
                        // Past the exit's limit the batch is given up below, not kept:
                        // no retry to announce, and no failure row that would only be
                        // counted among the records NOT written.
                        None if giving_up => {}
                        None => {
                            fault = Some((now, now, 1));
                            self.hold(&mut rows, &message);
                        }
                        Some((_, logged, attempts)) => {
                            *attempts += 1;
                            if now.duration_since(*logged) >= RELOG_EVERY {
                                *logged = now;
                                log(
                                    "error",
                                    &format!(
                                        "audit writer for {:?} still failing after {attempts} attempts ({message})",
                                        self.shared.path
                                    ),
                                );
                            }
                        }
                    }
                    if giving_up {
                        let lost = rows.len() as u64;
                        self.shared.stats.lost.fetch_add(lost, Ordering::Relaxed);
                        // A commit whose fsync failed has its rows in the -wal file all the
                        // same; SQLite may find them there when it next opens the file.
                        let note = if !fsync_failed(&err) {
                            ""
                        } else {
                            "; the fsync of their last commit failed, so they may still turn up in the trail once the \
                             file is opened again"
                        };
                        log(
                            "critical",
                            &format!(
                                "audit writer for {:?} gave up at interpreter exit: {lost} records were NOT written ({message}){note}",
                                self.shared.path
                            ),
                        );
                        for (_, reply) in rows {
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(message.clone()));
                            }
                        }
                        return Landing::GivenUp;
                    }
                    let pause = deadline.map_or(backoff, |d| backoff.min(d.saturating_duration_since(now)));
                    std::thread::sleep(pause);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    self.shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Logs the first failure of a batch kept for retrying, and adds the
    /// `audit_failure` row that records it, written with the batch once it lands.
    fn hold(&self, rows: &mut Vec<Pending>, message: &str) {
        log(
            "error",
            &format!(
                "audit writer for {:?} could not commit {} records ({message}); keeping them and retrying",
                self.shared.path,
                rows.len()
            ),
        );
        let mut details = Map::new();
        details.insert("error".into(), Value::String(message.to_owned()));
        details.insert("records_waiting".into(), Value::from(rows.len()));
        rows.push((Box::new(AuditRecord::lifecycle(lifecycle::FAILURE, details)), None));
        self.shared.stats.queued.fetch_add(1, Ordering::Relaxed);
    }

    fn purge(&mut self, before: &DateTime<Utc>, user: Option<String>) -> Result<u64> {
        let mut core = self.core.lock();
        let Some(core) = core.as_mut() else {
            return Err(Error::Storage(format!("the audit writer for {:?} has no connection", self.shared.path)));
        };
        let _sqlite = in_sqlite();
        // The purge moves the anchor on this connection, unseen by data_version.
        core.head = None;
        let tx = core.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = purge_in(&tx, before)?;
        let mut details = Map::new();
        details.insert("before".into(), Value::String(timestamp::isoformat(before)));
        details.insert("deleted".into(), Value::from(deleted.0));
        details.insert("through_id".into(), Value::from(deleted.1));
        let record = AuditRecord::lifecycle_by(lifecycle::PURGED, details, user);
        let (next_id, running) = read_head(&tx)?;
        insert_rows(&tx, &[&record], &core.source, next_id, running)?;
        tx.commit()?;
        self.shared.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.written.fetch_add(1, Ordering::Release);
        Ok(deleted.0)
    }
}

/// How a batch left [`Thread::commit`].
enum Landing {
    Landed,
    /// Given up at interpreter exit; its rows are counted as lost.
    GivenUp,
    /// Refused: the writer stops.
    Refused,
}

/// Tries before a fault that does not clear by itself refuses the batch (the
/// first retries read the chain head afresh, which settles a stale one).
const PERMANENT_ATTEMPTS: u64 = 4;

/// A fault that clears once its cause does (another writer, a full disk,
/// a failing device, permissions): the batch is kept and retried.
fn clears(err: &Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        err,
        Error::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::SystemIoFailure
                    | C::DiskFull
                    | C::CannotOpen
                    | C::FileLockingProtocolFailed
                    | C::ReadOnly
                    | C::OutOfMemory
                    | C::OperationInterrupted
                    | C::SchemaChanged
                    | C::PermissionDenied
            )
    )
}

/// `err` as the writer reports it: SQLite's "disk I/O error" says nothing of
/// what failed, its extended code does (a write, an fsync, a read...), and an
/// operator needs that to tell a failing disk from a full one or a lock.
fn describe(err: &Error) -> String {
    use rusqlite::ffi;
    let Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = err else { return err.to_string() };
    let what = match e.extended_code {
        ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ => "a read of the database files failed",
        ffi::SQLITE_IOERR_WRITE => "a write to the database files failed",
        ffi::SQLITE_IOERR_FSYNC | ffi::SQLITE_IOERR_DIR_FSYNC => "an fsync of the database files failed",
        ffi::SQLITE_IOERR_TRUNCATE => "a truncate of the database files failed",
        ffi::SQLITE_IOERR_FSTAT => "an fstat of the database files failed",
        ffi::SQLITE_IOERR_SHMOPEN | ffi::SQLITE_IOERR_SHMSIZE | ffi::SQLITE_IOERR_SHMMAP => {
            "the -shm file could not be opened, grown or mapped"
        }
        ffi::SQLITE_IOERR_LOCK | ffi::SQLITE_IOERR_RDLOCK | ffi::SQLITE_IOERR_UNLOCK => "a file lock failed",
        _ => return err.to_string(),
    };
    format!("{err} ({what})")
}

/// Whether `err` is a failed fsync: the commit's rows were written to the
/// -wal file, only not forced to the disk.
fn fsync_failed(err: &Error) -> bool {
    use rusqlite::ffi;
    matches!(err, Error::Sqlite(rusqlite::Error::SqliteFailure(e, _))
        if matches!(e.extended_code, ffi::SQLITE_IOERR_FSYNC | ffi::SQLITE_IOERR_DIR_FSYNC))
}

/// A failure that retrying cannot fix: the file itself is damaged or not a database.
fn is_damaged(err: &Error) -> bool {
    matches!(
        err,
        Error::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Only a repeated `event_id` is skipped (a duplicate, counted); any other
/// conflict, such as an id already taken, is an error, never a silent skip.
const INSERT: &str = "INSERT INTO audit_log (id, timestamp, event_type, plan_id, user_identity, details, \
                      event_id, actor_name, project_name, session_id, outcome, source, recorded_at, prev_hash, chain_hash) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                      ON CONFLICT(event_id) DO NOTHING";

/// The id after `id`; an error at the end of the id space, never a wrap.
fn next_after(id: i64) -> Result<i64> {
    id.checked_add(1).ok_or_else(|| Error::Storage(format!("no row id after {id} is left in audit_log")))
}

/// The chain head as this connection left it after its last commit, with
/// the `PRAGMA data_version` it was read under.
#[derive(Debug, Clone)]
pub struct Head {
    data_version: i64,
    next_id: i64,
    running: String,
}

/// One batch in one write transaction; the id of each row, None for a duplicate.
///
/// `cached` is the head this connection left after its last commit. It is
/// reused when `PRAGMA data_version`, read once the write lock is held, says
/// no other connection committed since (this connection's own commits do
/// not change it), which saves the 4-5 head queries per batch. It is taken
/// out first, so any failure (and the rollback that follows) leaves it empty.
pub fn write_batch(
    conn: &mut Connection,
    rows: &[&AuditRecord],
    source: &str,
    cached: &mut Option<Head>,
) -> Result<Vec<Option<Committed>>> {
    let known = cached.take();
    let _sqlite = in_sqlite();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let data_version: i64 = tx.query_row("PRAGMA data_version", [], |row| row.get(0))?;
    let (next_id, running) = match known {
        Some(head) if head.data_version == data_version => (head.next_id, head.running),
        _ => read_head(&tx)?,
    };
    let (ids, next_id, running) = insert_rows(&tx, rows, source, next_id, running)?;
    tx.commit()?;
    *cached = Some(Head { data_version, next_id, running });
    Ok(ids)
}

/// The next id and the running chain value, read inside the write
/// transaction, so they are the same for every process appending. The id
/// comes after the anchor too: a table made without AUTOINCREMENT has no
/// `sqlite_sequence`, and once a purge has deleted every row, its largest
/// id left would be none, and ids the purge removed would be handed out
/// again, at or before the anchor, where no chained row may lie.
fn read_head(tx: &Connection) -> Result<(i64, String)> {
    let (anchor_id, anchor_hash) = schema::anchor(tx)?;
    let running = running_at(tx, anchor_id, &anchor_hash, None)?;
    Ok((next_after(schema::last_id(tx)?.max(anchor_id))?, running))
}

/// Inserts with explicit ids from `next_id`, each chained to the one
/// before, starting from `running`. Returns the ids, then the next id and
/// the running value after the batch.
fn insert_rows(
    tx: &Transaction<'_>,
    rows: &[&AuditRecord],
    source: &str,
    mut next_id: i64,
    mut running: String,
) -> Result<(Vec<Option<Committed>>, i64, String)> {
    let recorded_at = timestamp::isoformat(&Utc::now());
    let mut stmt = tx.prepare_cached(INSERT)?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut ignored = false;
    for record in rows {
        let timestamp_text = timestamp::isoformat(&record.timestamp);
        let mut event_id = std::borrow::Cow::Borrowed(record.event_id.as_str());
        let mut copy = 1_u32;
        let stored = loop {
            let content = RowContent {
                id: next_id,
                timestamp: &timestamp_text,
                event_type: record.event_type,
                plan_id: record.plan_id.as_deref(),
                user_identity: record.user_identity.as_deref(),
                details: &record.details,
                event_id: Some(&event_id),
                actor_name: record.actor_name.as_deref(),
                project_name: record.project_name.as_deref(),
                session_id: record.session_id.as_deref(),
                outcome: record.outcome.as_deref(),
                source: Some(source),
                recorded_at: Some(&recorded_at),
            };
            let hash = chain::link(&running, &content);
            let changed = stmt.execute(rusqlite::params![
                next_id,
                timestamp_text,
                record.event_type,
                record.plan_id,
                record.user_identity,
                record.details,
                event_id,
                record.actor_name,
                record.project_name,
                record.session_id,
                record.outcome,
                source,
                recorded_at,
                running,
                hash,
            ])?;
            if changed == 1 {
                break Some(hash);
            }
            ignored = true;
            // The event_id is taken. The same event handed over twice (a bus
            // and a subscriber both wired) is a duplicate; a different event
            // reusing the id (a `model_copy()` of a stored one) is a row of
            // its own, kept under `<event_id>.2`, `.3`, ...: it was accepted.
            match stored_alike(tx, &event_id, &content)? {
                Some(true) => break None,
                Some(false) => {}
                // Nothing conflicts, yet the row was not stored: something in the file
                // (a trigger's RAISE(IGNORE)) drops it. Another event_id would be dropped alike.
                None => {
                    return Err(Error::Storage(format!(
                        "audit_log ignored the insert of row {next_id} (event_id {event_id}), and no row holds that \
                         event_id: a trigger on the table drops rows"
                    )));
                }
            }
            // Its copies are read in one range of the index, not tried one
            // number at a time: with many, each try cost a failed insert and
            // a read, and past the last number every copy paid for them all.
            copy = if copy == 1 {
                match next_copy(tx, &record.event_id, &content)? {
                    Some(number) => number,
                    None => break None,
                }
            } else {
                copy + 1
            };
            event_id = std::borrow::Cow::Owned(match copy {
                ..=MAX_COPY_SUFFIX => format!("{}.{copy}", record.event_id),
                // Held by the same copy (a duplicate) or, against all odds, by another.
                NAMED_BY_CONTENT => format!("{}.h{}", record.event_id, chain::copy_suffix(&content)),
                _ => format!("{}.{}", record.event_id, new_event_id()),
            });
        };
        match stored {
            Some(hash) => {
                ids.push(Some(Committed {
                    id: next_id,
                    recorded_at: recorded_at.clone(),
                    prev_hash: std::mem::take(&mut running),
                    chain_hash: hash.clone(),
                    kept_as: (copy > 1).then(|| event_id.into_owned()),
                }));
                running = hash;
                next_id = next_after(next_id)?;
            }
            None => ids.push(None),
        }
    }
    // An ignored INSERT with an explicit id still raises sqlite_sequence to
    // that id; put it back to the last id written, so the sequence keeps
    // naming the newest row and `verify()` sees no removed tail. A table made
    // without AUTOINCREMENT has no sqlite_sequence to put back.
    if ignored && schema::sequence(tx)?.is_some() {
        tx.prepare_cached("UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'audit_log' AND seq > ?1")?
            .execute([next_id - 1])?;
    }
    Ok((ids, next_id, running))
}

/// Copies of one event_id numbered `.2` to this; further ones are named by
/// their content (`.h` and [`chain::copy_suffix`]), so that finding one
/// handed over again is one lookup rather than a read of every copy.
const MAX_COPY_SUFFIX: u32 = 1000;
const NAMED_BY_CONTENT: u32 = MAX_COPY_SUFFIX + 1;

/// The number the next copy of `base` takes (above [`MAX_COPY_SUFFIX`]:
/// none is free, it is named by its content), or None when one of its
/// numbered copies already holds the same event as `row`: the same copy
/// handed over twice.
fn next_copy(tx: &Connection, base: &str, row: &RowContent<'_>) -> Result<Option<u32>> {
    // The ids `<base>.` followed by a digit (`:` sorts just after `9`): at
    // most the numbered copies (and, in a trail written before copies were
    // named by content, copies with a UUID suffix that begins with a digit).
    let mut stmt = tx.prepare_cached(
        "SELECT event_id, (timestamp IS ?3 AND event_type IS ?4 AND plan_id IS ?5 AND user_identity IS ?6 \
         AND details IS ?7 AND actor_name IS ?8 AND project_name IS ?9 AND session_id IS ?10 AND outcome IS ?11) \
         FROM audit_log WHERE event_id > ?1 AND event_id < ?2",
    )?;
    let mut rows = stmt.query(rusqlite::params![
        format!("{base}."),
        format!("{base}.:"),
        row.timestamp,
        row.event_type,
        row.plan_id,
        row.user_identity,
        row.details,
        row.actor_name,
        row.project_name,
        row.session_id,
        row.outcome,
    ])?;
    let mut taken = std::collections::HashSet::new();
    while let Some(stored) = rows.next()? {
        if stored.get::<_, Option<bool>>(1)?.unwrap_or(false) {
            return Ok(None);
        }
        let id: Option<String> = stored.get(0)?;
        let number = id.as_deref().and_then(|id| id.get(base.len() + 1..)).and_then(|n| n.parse::<u32>().ok());
        // `.02` is not the `.2` this writer makes: that one stays free.
        if let Some(number) = number.filter(|n| id.as_deref().is_some_and(|id| id.ends_with(&format!(".{n}")))) {
            taken.insert(number);
        }
    }
    Ok(Some((2..=MAX_COPY_SUFFIX).find(|n| !taken.contains(n)).unwrap_or(MAX_COPY_SUFFIX + 1)))
}

/// Whether the row stored under `event_id` holds the same event as `row`
/// (the columns the event itself gives; the id, `source` and times of
/// writing may differ); None when no row holds `event_id`.
fn stored_alike(tx: &Connection, event_id: &str, row: &RowContent<'_>) -> Result<Option<bool>> {
    let stored: Option<RowData> = tx
        .prepare_cached(&format!("SELECT {} FROM audit_log WHERE event_id = ?1", schema::ROW_COLUMNS))?
        .query_row([event_id], RowData::read)
        .optional()?;
    // The stored row, with the columns of its writing (not of the event) taken from `row`.
    Ok(stored.map(|stored| {
        let content = stored.content();
        RowContent { id: row.id, event_id: row.event_id, source: row.source, recorded_at: row.recorded_at, ..content }
            == *row
    }))
}

/// The chain value after row `upto` (None: after the last row): the last
/// chained row's hash, with the unchained rows after it folded in.
fn running_at(tx: &Connection, anchor_id: i64, anchor_hash: &str, upto: Option<i64>) -> Result<String> {
    let upto = upto.unwrap_or(i64::MAX);
    let last: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT id, chain_hash FROM audit_log WHERE id > ?1 AND id <= ?2 AND chain_hash IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
        )?
        // The hash read leniently: an edited head row of another type still
        // chains (and `verify()` reports it), instead of failing every batch.
        .query_row((anchor_id, upto), |row| Ok((row.get(0)?, query::text(row, 1)?.unwrap_or_default())))
        .optional()?;
    let (base_id, mut running) = last.unwrap_or((anchor_id, anchor_hash.to_owned()));
    let unchained: Vec<RowData> = query::rows_between(tx, base_id, upto)?;
    for row in &unchained {
        running = chain::fold(&running, &row.content());
    }
    Ok(running)
}

/// The last id `purge(before)` deletes: the longest run of oldest rows (by
/// id) whose timestamps are all before `before`. Timestamps are compared as
/// instants (a row stored in another offset is not judged by its digits); a
/// row whose timestamp cannot be read is kept, and so is every row after it.
fn purge_cutoff(conn: &Connection, before: &DateTime<Utc>) -> Result<i64> {
    let utc = crate::audit::query::UTC_FN;
    let first_kept: Option<i64> = conn
        .query_row(
            &format!("SELECT id FROM audit_log WHERE coalesce({utc}(timestamp) >= ?1, 1) ORDER BY id LIMIT 1"),
            [crate::audit::query::bound_text(before)],
            |row| row.get(0),
        )
        .optional()?;
    match first_kept {
        Some(id) => id.checked_sub(1).ok_or_else(|| Error::Storage(format!("row id {id} cannot be purged before"))),
        None => Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM audit_log", [], |row| row.get(0))?),
    }
}

/// How many rows `purge(before)` would delete now (`purge(dry_run=True)`):
/// the same cut, counted, on any connection.
/// Refused as the purge itself would be (see [`purge_in`]), in one read:
/// a count of rows a purge would not delete would tell the caller otherwise.
pub fn purgeable(conn: &Connection, before: &DateTime<Utc>) -> Result<u64> {
    let tx = conn.unchecked_transaction()?;
    let cutoff = purge_cutoff(&tx, before)?;
    refuse_past_an_edit(&tx, cutoff)?;
    let rows: i64 = tx.query_row("SELECT count(*) FROM audit_log WHERE id <= ?1", [cutoff], |row| row.get(0))?;
    Ok(rows.unsigned_abs())
}

/// Deleting an edited or removed row's neighbours would take the evidence
/// with them, and the re-anchored rest would verify.
fn refuse_past_an_edit(conn: &Connection, cutoff: i64) -> Result<()> {
    match query::first_bad_upto(conn, cutoff)? {
        Some((id, reason)) => Err(Error::Storage(format!(
            "refused: the rows it would delete do not verify, and are kept as evidence: row {id}: {reason}"
        ))),
        None => Ok(()),
    }
}

/// Deletes the rows up to [`purge_cutoff`] and re-anchors the chain at the
/// last deleted row. Returns (rows deleted, last deleted id).
fn purge_in(tx: &Transaction<'_>, before: &DateTime<Utc>) -> Result<(u64, i64)> {
    let cutoff = purge_cutoff(tx, before)?;
    let (anchor_id, anchor_hash) = schema::anchor(tx)?;
    refuse_past_an_edit(tx, cutoff)?;
    if cutoff > anchor_id {
        let running = running_at(tx, anchor_id, &anchor_hash, Some(cutoff))?;
        schema::set_anchor(tx, cutoff, &running)?;
    }
    let deleted = tx.execute("DELETE FROM audit_log WHERE id <= ?1", [cutoff])?;
    Ok((deleted as u64, cutoff))
}

/// `1234567` as `1,234,567`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Who;

    #[test]
    fn a_checkpoint_held_back_by_another_is_logged_only_once_it_lasts() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut busy = CheckpointFault { since: start, attempts: 1, logged: None };
        assert!(!busy.due(at(0), true));
        assert!(!busy.due(at(9), true));
        assert!(busy.due(at(10), true));
        assert!(!busy.due(at(19), true));
        assert!(busy.due(at(20), true));
        // A fault of the disk is logged at once, even after a while of busy ones.
        let mut failing = CheckpointFault { since: start, attempts: 1, logged: None };
        assert!(!failing.due(at(1), true));
        assert!(failing.due(at(2), false));
        assert!(!failing.due(at(3), false));
        assert!(failing.due(at(12), false));
    }

    #[test]
    fn a_watched_wal_file_removed_replaced_or_moved_is_no_longer_there() {
        let folder = std::env::temp_dir().join(format!("auditbus-wal-watch-{}", new_event_id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("a.db-wal");
        let watch = |how: &dyn Fn()| {
            std::fs::write(&path, b"frames").unwrap();
            let watched = WalWatch::of(&path).unwrap();
            assert!(matches!(watched, WalWatch::Held { .. }) || !cfg!(target_os = "linux"));
            assert!(watched.still_there());
            how();
            watched.still_there()
        };
        assert!(watch(&|| {}));
        assert!(!watch(&|| std::fs::remove_file(&path).unwrap()));
        let other = folder.join("other");
        assert!(!watch(&|| {
            std::fs::write(&other, b"another").unwrap();
            std::fs::rename(&other, &path).unwrap();
        }));
        assert!(!watch(&|| std::fs::rename(&path, &other).unwrap()));
        // Removed, then made again at the path (another process opening the trail).
        assert!(!watch(&|| {
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, b"").unwrap();
        }));
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_row_past_the_room_for_text_is_refused_naming_its_largest_field_and_never_counted() {
        Python::attach(|py| {
            let (mut writer, rx, _ended) = writer_without_thread(4);
            writer.row_limit = 5000;
            writer.text_room = 5000 - ROW_OVERHEAD;
            let rules = crate::redact::Rules::default();
            let row = |details: usize| {
                let mut map = Map::new();
                map.insert("k".into(), Value::String("x".repeat(details)));
                let who = Who { plan_id: Some("p".repeat(400)), ..Who::default() };
                AuditRecord::new("plan_applied", Utc::now(), new_event_id(), who, map, &rules)
            };
            let text = |record: &AuditRecord| record.text_sizes().iter().map(|&(_, size)| size).sum::<usize>();
            let room = writer.text_room - text(&row(300));
            // Exactly the room: taken.
            writer.submit(py, row(300 + room), None).unwrap();
            // One byte more, by either call: refused, naming the largest field, before it is counted.
            let refused = writer.submit(py, row(301 + room), None).unwrap_err().to_string();
            assert!(
                refused.starts_with("details: the row's text would take 905 bytes, more than the 904 "),
                "{refused}"
            );
            assert!(refused.contains("at most 5,000 bytes in a row"), "{refused}");
            let refused = writer.record(py, row(301 + room), None).map(|_| ()).unwrap_err().to_string();
            assert!(refused.starts_with("details: "), "{refused}");
            assert_eq!(rx.len(), 1);
            assert_eq!(writer.shared.stats.queued.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn rows_wait_for_room_in_the_queue_bytes_and_give_it_back_however_they_leave() {
        Python::attach(|py| {
            let (mut writer, rx, _ended) = writer_without_thread(16);
            writer.queue_bytes = 3000;
            let rules = crate::redact::Rules::default();
            let row = |size: usize| {
                let mut map = Map::new();
                map.insert("k".into(), Value::String("x".repeat(size)));
                AuditRecord::new("plan_applied", Utc::now(), new_event_id(), Who::default(), map, &rules)
            };
            let now = Some(Duration::ZERO);
            // Larger than the whole budget, with nothing held: taken.
            writer.submit(py, row(5000), now).unwrap();
            // Anything more waits; with no wait allowed, refused and counted as rejected.
            let refused = writer.submit(py, row(10), now).unwrap_err();
            assert!(matches!(refused, Error::QueueFull(_)), "{refused}");
            assert!(refused.to_string().contains("held over 3,000 bytes"), "{refused}");
            assert!(writer.record(py, row(10), now).is_err());
            assert_eq!(writer.shared.stats.rejected.load(Ordering::Relaxed), 2);
            assert_eq!(writer.shared.stats.queued.load(Ordering::Relaxed), 1);
            // The big row leaves (here: dropped, as when written): room again.
            drop(rx.try_recv().unwrap());
            assert_eq!(*writer.held.bytes.lock(), 0);
            writer.submit(py, row(1000), now).unwrap();
            writer.submit(py, row(1000), now).unwrap();
            assert!(writer.submit(py, row(1000), now).is_err());
            // A clone (what record() keeps to build its answer) holds no share.
            let mut kept = row(10);
            kept.held.0 = Some(Held { of: writer.held.clone(), bytes: 10 });
            let held = *writer.held.bytes.lock();
            drop(kept.clone());
            assert_eq!(*writer.held.bytes.lock(), held);
            drop(kept);
            assert_eq!(*writer.held.bytes.lock(), held - 10);
        });
    }

    #[test]
    fn grouped_puts_a_comma_every_three_digits() {
        let cases = [(0, "0"), (999, "999"), (1000, "1,000"), (123_456, "123,456"), (1_000_000_011, "1,000,000,011")];
        for (n, text) in cases {
            assert_eq!(grouped(n), text);
        }
    }

    #[test]
    fn a_forked_child_does_not_wait_for_a_last_error_lock_held_at_the_fork() {
        let stats = Arc::new(Stats::default());
        *stats.last_error.lock() = Some("disk I/O error".to_owned());
        // Held for good, as a fork copies a lock some writer thread held at that instant.
        let held = stats.last_error.lock();
        let (tx, rx) = bounded(1);
        let reader = stats.clone();
        std::thread::spawn(move || tx.send(reader.last_error_text(true)));
        let read = rx.recv_timeout(Duration::from_secs(10)).expect("stats() waited for a lock no thread will release");
        assert_eq!(read, None);
        drop(held);
        assert_eq!(stats.last_error_text(false).as_deref(), Some("disk I/O error"));
        assert_eq!(stats.last_error_text(true).as_deref(), Some("disk I/O error"));
    }

    fn trail(rows: usize) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::audit::query::register_functions(&conn).unwrap();
        schema::migrate(&mut conn).unwrap();
        let records: Vec<AuditRecord> =
            (0..rows).map(|_| AuditRecord::lifecycle(lifecycle::STARTED, Map::new())).collect();
        let refs: Vec<&AuditRecord> = records.iter().collect();
        write_batch(&mut conn, &refs, "test", &mut None).unwrap();
        conn
    }

    fn sequence(conn: &Connection) -> i64 {
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'", [], |r| r.get(0)).unwrap()
    }

    /// A writer thread's state, not running: each test plays its turn by hand.
    fn idle_thread(capacity: usize) -> (Thread, Sender<Msg>) {
        let (tx, rx) = bounded(capacity);
        let thread = Thread::new(trail(0), rx, Arc::new(Shared::new(":memory:".into())), "test".into());
        (thread, tx)
    }

    fn row() -> Msg {
        Msg::Row(Box::new(AuditRecord::lifecycle(lifecycle::STARTED, Map::new())), None)
    }

    /// The start of a turn as `Thread::run` plays it.
    fn begin_turn(thread: &Thread) -> (Batch, u64) {
        thread.begin_turn(thread.rx.recv().unwrap())
    }

    /// Each message someone waits on, as its sender queues it (then urges).
    fn waiters() -> Vec<(&'static str, Msg)> {
        vec![
            ("flush", Msg::Flush(bounded(1).0)),
            ("record", Msg::Row(Box::new(AuditRecord::lifecycle(lifecycle::STARTED, Map::new())), Some(bounded(1).0))),
            ("purge", Msg::Purge(DateTime::UNIX_EPOCH, None, bounded(1).0)),
            ("stop", Msg::Stop),
        ]
    }

    /// A writer whose queue the test reads itself, with no thread behind it;
    /// keep the sender returned alive (it says the thread has not ended).
    fn writer_without_thread(capacity: usize) -> (Writer, Receiver<Msg>, Sender<()>) {
        let (tx, rx) = bounded(capacity);
        let (ended, done) = bounded(0);
        let elsewhere = std::thread::spawn(|| {});
        let thread_id = elsewhere.thread().id();
        elsewhere.join().unwrap();
        let writer = Writer {
            tx,
            closed: AtomicBool::new(false),
            closed_at_exit: AtomicBool::new(false),
            closing: Mutex::new(Closing::default()),
            thread: Mutex::new(None),
            thread_id,
            abandoned: Mutex::new(None),
            done,
            finished: bounded(0).1,
            shared: Arc::new(Shared::new(":memory:".into())),
            capacity,
            owner_pid: std::process::id(),
            forks_at_start: FORKS.load(Ordering::Relaxed),
            row_limit: 1_000_000_000,
            text_room: 1_000_000_000 - ROW_OVERHEAD,
            held: Arc::new(HeldBytes::default()),
            queue_bytes: QUEUE_BYTES,
            // No connection: every row goes through the queue the test reads.
            core: Arc::new(Mutex::new(None)),
            wal_frames: Arc::new(AtomicI64::new(0)),
        };
        (writer, rx, ended)
    }

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            if Instant::now() > deadline {
                eprintln!("gave up waiting for {what}");
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_waiter_that_waited_for_room_is_urged_before_its_sender_holds_the_gil_again() {
        // The gathering thread learns of a waiter from `urgent` only. A sender
        // that waited for room sends with the GIL released; urged only once it
        // held the GIL again, its waiter was left to a burst the threads
        // holding the GIL keep going, up to MAX_GATHER.
        for (name, waiter) in waiters() {
            let mut waiter = Some(waiter);
            // An attempt whose sender gave up its slice of waiting before the room came
            // (it then needs the GIL to go on) tells nothing: tried again.
            let landed_and_urged = (0..5).find_map(|_| {
                let (writer, rx, _ended) = writer_without_thread(1);
                Python::attach(|py| writer.send(py, row(), None)).unwrap(); // the queue is full
                let (attached, on_gil) = std::sync::mpsc::channel();
                let msg = waiter.take().unwrap_or_else(|| waiters().into_iter().find(|(n, _)| *n == name).unwrap().1);
                std::thread::scope(|scope| {
                    let sender = scope.spawn(|| {
                        Python::attach(|py| {
                            attached.send(()).unwrap();
                            writer.send(py, msg, None)
                        })
                    });
                    on_gil.recv().unwrap();
                    // Attached once the sender releases the GIL: as it waits for room.
                    let outcome = Python::attach(|_py| {
                        let before = writer.shared.urgent.load(Ordering::Acquire);
                        rx.recv().unwrap(); // room
                        if !wait_for("the waiter to be queued", || rx.len() == 1) {
                            return None;
                        }
                        // Its sender cannot take the GIL back while this thread holds it.
                        Some(wait_for("the waiter to be urged", || {
                            writer.shared.urgent.load(Ordering::Acquire) != before
                        }))
                    });
                    sender.join().unwrap().unwrap();
                    outcome
                })
            });
            assert_eq!(landed_and_urged, Some(true), "{name}");
        }
    }

    #[test]
    fn a_flush_after_a_purge_handed_over_does_not_report_done_before_it_ran() {
        // A purge whose caller stopped waiting (Ctrl-C) still runs: a flush
        // after it, with no row queued, once said "done" at once.
        let (writer, rx, _ended) = writer_without_thread(4);
        std::thread::scope(|scope| {
            let purger = scope.spawn(|| Python::attach(|py| writer.purge(py, DateTime::UNIX_EPOCH, None)));
            let Ok(Msg::Purge(_, _, reply)) = rx.recv() else { panic!("the purge was not queued") };
            let flushed = Python::attach(|py| writer.flush(py, Some(Duration::ZERO)));
            assert!(matches!(flushed, Err(Error::Timeout(_))), "{:?}", flushed.err());
            reply.send(Ok(0)).unwrap();
            assert_eq!(purger.join().unwrap().unwrap(), 0);
        });
    }

    #[test]
    fn the_thread_counts_a_purge_done_once_it_ran() {
        let (thread, tx) = idle_thread(4);
        let shared = Arc::clone(&thread.shared);
        shared.stats.purges.store(1, Ordering::Release); // as `Writer::purge` counts it
        let (reply, answer) = bounded(1);
        tx.send(Msg::Purge(DateTime::UNIX_EPOCH, None, reply)).unwrap();
        tx.send(Msg::Stop).unwrap();
        thread.run();
        assert_eq!(answer.recv().unwrap(), Ok(0));
        assert_eq!(shared.stats.purges.load(Ordering::Acquire), 0);
        assert!(shared.stats.settled());
    }

    #[test]
    fn a_waiter_queued_after_the_queue_was_read_ends_the_gather_at_once() {
        // The waiter comes between the thread's read of the queue and its
        // gather: only `urgent` tells it, and it must not wait for a pause.
        for (name, waiter) in waiters() {
            let (thread, tx) = idle_thread(64);
            tx.send(row()).unwrap();
            tx.send(row()).unwrap();
            let (mut batch, urgent) = begin_turn(&thread);
            tx.send(waiter).unwrap();
            thread.shared.urge();
            assert_eq!(thread.gather(&mut batch, urgent), Gathered::Urged, "{name}");
            assert!(batch.waited_on(), "{name}: the waiter is taken with the batch");
            assert_eq!(batch.rows.len(), 2 + usize::from(name == "record"), "{name}");
        }
    }

    #[test]
    fn a_waiter_urged_before_the_snapshot_is_in_the_queue_the_thread_reads() {
        // Urged (or only queued, its sender not yet past the urge) before
        // the thread's snapshot: the read of the queue that follows finds it.
        for urged in [true, false] {
            for (name, waiter) in waiters() {
                let (thread, tx) = idle_thread(64);
                tx.send(row()).unwrap();
                tx.send(waiter).unwrap();
                if urged {
                    thread.shared.urge();
                }
                let (mut batch, urgent) = begin_turn(&thread);
                if !urged {
                    thread.shared.urge();
                }
                assert_eq!(thread.gather(&mut batch, urgent), Gathered::Waiter, "{name}");
                assert!(batch.waited_on(), "{name}");
            }
        }
    }

    #[test]
    fn an_urge_with_no_message_ends_the_gather() {
        // A service dropped with no room in its queue urges with no message
        // of its own (see `Writer::close_nowait`).
        let (thread, tx) = idle_thread(64);
        tx.send(row()).unwrap();
        let (mut batch, urgent) = begin_turn(&thread);
        thread.shared.urge();
        assert_eq!(thread.gather(&mut batch, urgent), Gathered::Urged);
    }

    #[test]
    fn a_waiter_behind_more_than_a_batch_is_taken_by_a_later_turn_with_no_gather() {
        let (thread, tx) = idle_thread(4 * MAX_BATCH);
        for _ in 0..MAX_BATCH + 10 {
            tx.send(row()).unwrap();
        }
        tx.send(Msg::Flush(bounded(1).0)).unwrap();
        thread.shared.urge();
        let (mut batch, urgent) = begin_turn(&thread);
        assert_eq!(thread.gather(&mut batch, urgent), Gathered::Full);
        assert_eq!(batch.rows.len(), MAX_BATCH);
        let (mut batch, urgent) = begin_turn(&thread);
        assert_eq!(thread.gather(&mut batch, urgent), Gathered::Waiter);
        assert_eq!((batch.rows.len(), batch.flushes.len()), (10, 1));
    }

    #[test]
    fn a_burst_that_stops_is_committed_once_it_pauses_whole() {
        let (thread, tx) = idle_thread(64);
        for _ in 0..5 {
            tx.send(row()).unwrap();
        }
        let (mut batch, urgent) = begin_turn(&thread);
        let end = thread.gather(&mut batch, urgent);
        assert!(matches!(end, Gathered::Paused | Gathered::TimeUp), "{end:?}");
        assert_eq!(batch.rows.len(), 5);
    }

    #[test]
    fn a_burst_is_committed_once_it_holds_commit_rows_without_waiting_for_its_pause() {
        let (thread, tx) = idle_thread(1 << 16);
        for _ in 0..COMMIT_ROWS + 3 {
            tx.send(row()).unwrap();
        }
        let (mut batch, urgent) = begin_turn(&thread);
        assert_eq!(thread.gather(&mut batch, urgent), Gathered::Enough);
        assert_eq!(batch.rows.len(), COMMIT_ROWS + 3);
    }

    #[test]
    fn a_burst_that_never_pauses_is_committed_after_the_gather_limit() {
        // A steady emitter that never leaves a GATHER_GAP must not hold its
        // rows back until it stops or fills half the queue (at one row
        // every 100 µs, 3 s for the default queue).
        let every = Duration::from_micros(100);
        // A feeder descheduled for a GATHER_GAP ends the gather by a pause,
        // which tells nothing about the limit: tried again.
        let time_up = (0..20).any(|_| {
            let (thread, tx) = idle_thread(1 << 16);
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Acquire) && tx.send(row()).is_ok() {
                        next += every;
                        while Instant::now() < next {
                            std::hint::spin_loop();
                        }
                    }
                });
                let (mut batch, urgent) = begin_turn(&thread);
                let end = thread.gather(&mut batch, urgent);
                stop.store(true, Ordering::Release);
                end == Gathered::TimeUp
            })
        });
        assert!(time_up, "no gather of a steady burst ended at the limit");
    }

    #[test]
    fn an_ignored_duplicate_leaves_the_sequence_at_the_last_row() {
        let mut conn = trail(2);
        let record = AuditRecord::lifecycle(lifecycle::STARTED, Map::new());
        let ids = write_batch(&mut conn, &[&record, &record], "test", &mut None).unwrap();
        assert!(ids[0].is_some() && ids[1].is_none());
        assert_eq!(sequence(&conn), 3);
        // A later batch reads the head afresh and continues without a gap.
        let next = AuditRecord::lifecycle(lifecycle::STOPPED, Map::new());
        let ids = write_batch(&mut conn, &[&next], "test", &mut None).unwrap();
        assert_eq!(ids[0].as_ref().map(|c| c.id), Some(4));
        let verdict = query::verify(&conn, &[]).unwrap();
        assert_eq!((verdict.checked, verdict.first_bad_id, verdict.head.map(|h| h.0)), (4, None, Some(4)));
    }

    #[test]
    fn verify_finds_a_cut_tail_before_and_after_the_next_write() {
        let mut conn = trail(5);
        conn.execute("DELETE FROM audit_log WHERE id >= 4", []).unwrap();
        let verdict = query::verify(&conn, &[]).unwrap();
        assert_eq!(verdict.first_bad_id, Some(4));
        assert!(verdict.reason.unwrap().contains("ids 4..5"));
        let next = AuditRecord::lifecycle(lifecycle::STARTED, Map::new());
        write_batch(&mut conn, &[&next], "test", &mut None).unwrap();
        let verdict = query::verify(&conn, &[]).unwrap();
        assert_eq!(verdict.first_bad_id, Some(4));
        assert!(verdict.reason.unwrap().contains("ids 4..5) were removed; row 6 was written after the cut"));
    }

    #[test]
    fn verify_stays_ok_after_a_purge_of_every_row() {
        let mut conn = trail(3);
        let tx = conn.transaction().unwrap();
        let (deleted, through) = purge_in(&tx, &DateTime::<Utc>::MAX_UTC).unwrap();
        let (next_id, running) = read_head(&tx).unwrap();
        let purged = AuditRecord::lifecycle(lifecycle::PURGED, Map::new());
        insert_rows(&tx, &[&purged], "test", next_id, running).unwrap();
        tx.commit().unwrap();
        assert_eq!((deleted, through), (3, 3));
        let verdict = query::verify(&conn, &[]).unwrap();
        assert_eq!((verdict.checked, verdict.first_bad_id, verdict.head.map(|h| h.0)), (1, None, Some(4)));
    }
}

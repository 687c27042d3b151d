//! `auditbus.AuditService`: the Python face of the audit trail.
//!
//! Records are built and redacted on the caller's thread (the writer and
//! the disk never see a raw secret), then handed to the [`Writer`]. Reads
//! use a second connection, with the GIL released, so queries run while the
//! writer commits (WAL readers do not block the writer). With
//! `read_only=True` there is no writer at all: the reader connection alone,
//! opened so that nothing in the file changes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyMapping, PyString, PyTuple};
use rusqlite::Connection;
use serde_json::{Map, Value};

use crate::audit::entry::{AuditEntry, VerifyReport};
use crate::audit::query::{self, Filter, Order, RowData};
use crate::audit::record::{lifecycle, new_event_id, AuditRecord, Who};
use crate::audit::schema::{self, Durability, SCHEMA_VERSION};
use crate::audit::writer::{self, ClosedBy, Committed, Stats, Writer};
use crate::errors::{Error, Result};
use crate::event::{DomainEvent, EventKind, EVENT_TYPES};
use crate::redact::{Redactor, Rules};
use crate::timestamp;
use crate::values::{short_repr, short_text, type_name};

/// How long a read waits for records still queued before it.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// How long the at-exit close keeps retrying a failing batch before it
/// gives the rows up (and logs how many).
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Writers still to be closed at interpreter exit, with the temporary file
/// behind a `":memory:"` service. A `std` mutex, not `parking_lot`'s: it is
/// held across `fork()` (see [`_hold_services_for_fork`]), and the child
/// lets go of it with no other thread left; `parking_lot` may hand a lock
/// let go of straight to a thread that waited for it, which in the child
/// does not exist, and the lock would stay held for good.
static LIVE: std::sync::Mutex<LiveServices> = std::sync::Mutex::new(Vec::new());

/// [`LIVE`], locked. Its holders change it in steps that cannot panic, so a
/// poisoned lock's contents are whole.
fn live() -> std::sync::MutexGuard<'static, LiveServices> {
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Each open service's writer, with its temporary file.
type LiveServices = Vec<(Arc<Writer>, Option<PathBuf>)>;

/// The at-exit close has run: what opens from now on is closed by the
/// last step of the exit (see [`ExitGuard`]).
static EXITED: AtomicBool = AtomicBool::new(false);

/// That last step has run: nothing closes a service opened now. Set and
/// read under [`LIVE`]'s lock, so a service either is in the list that
/// step closes or refuses to open.
static FINISHED: AtomicBool = AtomicBool::new(false);

/// Closes every service still open (the `atexit` hook): a normal exit flushes.
/// A signal that came during the wait (Ctrl-C) is handled here, once every
/// service is closed: raised in the next exit hook, `logging`'s, it would
/// skip that hook, and with it the flush and close of every log handler.
#[pyfunction]
fn _close_audit_services_at_exit(py: Python<'_>) -> PyResult<()> {
    close_services_at_exit(py);
    py.check_signals()
}

fn close_services_at_exit(py: Python<'_>) {
    close_at_exit(py, take_at_exit(&EXITED));
}

/// The services open now, under one limit for the whole exit, `step` set as
/// they are taken (under [`LIVE`]'s lock, so that a service opening meanwhile
/// is either taken or sees it).
fn take_at_exit(step: &AtomicBool) -> LiveServices {
    let live = {
        let mut live = live();
        step.store(true, Ordering::Release);
        std::mem::take(&mut *live)
    };
    // A fork child leaves the parent's services (and their files) to the parent.
    let live: LiveServices = live.into_iter().filter(|(writer, _)| !writer.forked()).collect();
    let deadline = Instant::now() + EXIT_LIMIT;
    for (writer, _) in &live {
        writer.give_up_after(deadline);
    }
    live
}

/// Closes `live` as the exit does: the GIL released while each writer drains.
fn close_at_exit(py: Python<'_>, live: LiveServices) {
    for (writer, temp) in live {
        // Bounded by the exit's limit, not by a signal; it fails only on the writer thread, never this hook's.
        let _ = writer.close(py, Some(stop_record("interpreter exit", None)), ClosedBy::Exit);
        remove_temp(temp.as_ref());
    }
}

/// Closes the services opened after the at-exit close, when the
/// interpreter frees `auditbus._native` as it shuts down. An exit hook
/// registered while `atexit` runs is never run, so a service that an exit
/// hook registered before `auditbus` was imported opens (it runs after the
/// at-exit close), or that a daemon thread opens meanwhile, has nothing else
/// to close it: left running, its writer would end with the process before
/// the rows it took are written. By then daemon threads run no more Python
/// code, and the writers log to stderr.
#[pyclass(module = "auditbus._native", name = "_ExitGuard")]
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // Freed before the at-exit close ran: not the interpreter's shutdown.
        if !EXITED.load(Ordering::Acquire) {
            return;
        }
        let live = take_at_exit(&FINISHED);
        if live.is_empty() {
            return;
        }
        // Let go of while Python still runs (deleted by hand, not freed by the shutdown): the
        // writers still log through Python, which needs the GIL, so they are waited for without it.
        let mut live = Some(live);
        Python::try_attach(|py| {
            if !interpreter_finalizing(py) {
                close_at_exit(py, live.take().unwrap_or_default());
            }
        });
        let Some(live) = live else { return };
        // With the GIL held: a daemon thread given it now would end in the middle of
        // native code (CPython ends such threads as they take it back while it shuts down).
        // The writers no longer take it: from here on they log to stderr.
        for (writer, temp) in live {
            writer.close_unattached(Some(stop_record("interpreter exit", None)));
            remove_temp(temp.as_ref());
        }
    }
}

/// `sys.is_finalizing`, kept from the import: it is still there to call as
/// the interpreter frees the modules.
static IS_FINALIZING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether the interpreter is shutting down; anything but a plain "no"
/// counts as yes (the close that keeps the GIL is the safe one then).
fn interpreter_finalizing(py: Python<'_>) -> bool {
    let answer = IS_FINALIZING.get(py).and_then(|f| f.call0(py).ok()).and_then(|v| v.extract::<bool>(py).ok());
    answer != Some(false)
}

/// The at-exit close as one of `multiprocessing`'s finalizers (see
/// [`register_worker_hook`]), in a child it started only. In the main
/// process those finalizers run in one more `atexit` hook, registered when
/// `multiprocessing` was imported, maybe after the application's own exit
/// hooks and so before them: the services' own hook closes them there, after
/// every exit hook registered once `auditbus` was imported.
#[pyfunction]
fn _close_audit_services_in_worker(py: Python<'_>) {
    let parent = py.import("multiprocessing").and_then(|m| m.call_method0("parent_process"));
    if parent.is_ok_and(|p| p.is_none()) {
        return;
    }
    close_services_at_exit(py);
}

/// Lets go of the writer of a service dropped without `close()` once its
/// thread has ended: its queue and its `":memory:"` file are not kept until
/// another service opens or the interpreter exits. Called on the writer
/// thread as it ends, or by the drop when the thread had ended before.
///
/// Without attaching to the interpreter: a thread that attaches creates its
/// thread state under a lock of CPython's own, without the GIL, and a
/// `fork()` made by another thread at that moment copies that lock held
/// into the child, which then hangs in `os.fork()` (CPython 3.11). [`LIVE`]
/// is held across every fork instead (see [`_hold_services_for_fork`]).
fn retire(shared: &Arc<writer::Shared>) {
    let gone: Vec<_> = {
        let mut live = live();
        let (gone, kept) = std::mem::take(&mut *live).into_iter().partition(|(w, _)| Arc::ptr_eq(&w.shared, shared));
        *live = kept;
        gone
    };
    // Outside the lock: the last reference to the writer may go here.
    for (_, temp) in gone {
        remove_temp(temp.as_ref());
    }
}

thread_local! {
    /// [`LIVE`] as the forking thread holds it, from the `before` fork hook
    /// to the `after` one of the same fork, on the same thread.
    static HELD_FOR_FORK: RefCell<Option<std::sync::MutexGuard<'static, LiveServices>>> = const { RefCell::new(None) };
    /// Every use of SQLite held back by the forking thread, likewise (see [`writer::in_sqlite`]).
    static SQLITE_HELD_FOR_FORK: RefCell<Option<std::sync::RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// The `before` fork hook: waits for the uses of SQLite in progress (a
/// commit, a read) to end and holds back new ones, so that the child's
/// SQLite holds no lock on a trail that no thread of the child would let
/// go of; then takes [`LIVE`], so that no writer thread holds it,
/// half-changed, when the child is copied. Both waited for with the GIL
/// held: their holders never wait for anything, the GIL included, while
/// they hold them, and none that holds the GIL lets go of them meanwhile.
#[pyfunction]
fn _hold_services_for_fork() {
    let sqlite = writer::hold_sqlite_for_fork();
    SQLITE_HELD_FOR_FORK.with(|held| *held.borrow_mut() = Some(sqlite));
    let guard = live();
    HELD_FOR_FORK.with(|held| *held.borrow_mut() = Some(guard));
}

/// Lets go of [`LIVE`] and of SQLite after a fork, in the parent and in the child.
fn release_services_after_fork() {
    let guard = HELD_FOR_FORK.with(|held| held.borrow_mut().take());
    drop(guard);
    let sqlite = SQLITE_HELD_FOR_FORK.with(|held| held.borrow_mut().take());
    drop(sqlite);
}

/// The `after_in_parent` fork hook.
#[pyfunction]
fn _release_services_after_fork() {
    release_services_after_fork();
}

/// Counts a fork in the child (the `os.register_at_fork` hook), so the
/// parent's services refuse to be used there, and draws the child's event ids
/// from a generator of its own.
#[pyfunction]
fn _note_fork_in_child() {
    crate::audit::writer::note_fork();
    // The child's only thread has a copy of the parent thread's generator: every
    // child of one parent would draw the same event ids (apart from the time in
    // them), and two that record in the same millisecond the same one. A failed
    // reseed leaves the copy, and ids that share only the parent's draws.
    let _ = rand::rng().reseed();
    release_services_after_fork();
}

/// The at-exit and at-fork hooks, registered when `auditbus` is imported:
/// `atexit` runs its hooks last registered first, so the services close
/// after every hook the application registers once it has imported
/// `auditbus` (as `logging` shuts down after them), and those hooks may
/// still write to a service opened later than they were registered.
pub(crate) fn register_hooks(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    // Freed with the module's namespace, once `atexit` is done (see [`ExitGuard`]).
    module.add("_exit_guard", ExitGuard)?;
    IS_FINALIZING.get_or_try_init(py, || py.import("sys")?.getattr("is_finalizing").map(Bound::unbind))?;
    static REGISTERED: PyOnceLock<()> = PyOnceLock::new();
    REGISTERED
        .get_or_try_init(py, || {
            // `logging` first: it closes its handlers in an exit hook of its own, which
            // must run after this one, so the writers' last log lines find them open.
            py.import("logging")?;
            let hook = wrap_pyfunction!(_close_audit_services_at_exit, py)?;
            py.import("atexit")?.call_method1("register", (hook,))?;
            // Only where fork() exists.
            if let Ok(register) = py.import("os")?.getattr("register_at_fork") {
                let kwargs = PyDict::new(py);
                kwargs.set_item("before", wrap_pyfunction!(_hold_services_for_fork, py)?)?;
                kwargs.set_item("after_in_parent", wrap_pyfunction!(_release_services_after_fork, py)?)?;
                kwargs.set_item("after_in_child", wrap_pyfunction!(_note_fork_in_child, py)?)?;
                register.call((), Some(&kwargs))?;
            }
            Ok::<(), PyErr>(())
        })
        .map(|_| ())
}

/// Closes a service's reader; without a checkpoint when the writer found
/// the `-wal` or `-shm` file gone (its view of the `-wal` file may be stale).
fn close_reader(reader: Option<schema::Reader>, writer: Option<&Arc<Writer>>) {
    let _sqlite = writer::in_sqlite();
    match reader {
        Some(reader) if writer.is_some_and(|w| w.shared.keep_wal.load(Ordering::Acquire)) => {
            reader.close_keeping_wal();
        }
        reader => drop(reader),
    }
}

/// A `multiprocessing` worker started by fork or forkserver ends with
/// `os._exit()`, which skips `atexit`: the at-exit close is also one of the
/// finalizers `multiprocessing` runs before that. Once per process (a forked
/// worker starts with its parent's finalizers cleared), and only where
/// `multiprocessing` is already imported.
fn register_worker_hook(py: Python<'_>) -> PyResult<()> {
    static REGISTERED_IN: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    if REGISTERED_IN.load(Ordering::Relaxed) == pid
        || !py.import("sys")?.getattr("modules")?.contains("multiprocessing")?
    {
        return Ok(());
    }
    let kwargs = PyDict::new(py);
    // 0: after the pools' and queues' own finalizers, which may still hand rows over.
    kwargs.set_item("exitpriority", 0)?;
    let hook = wrap_pyfunction!(_close_audit_services_in_worker, py)?;
    py.import("multiprocessing.util")?.getattr("Finalize")?.call((py.None(), hook), Some(&kwargs))?;
    REGISTERED_IN.store(pid, Ordering::Relaxed);
    Ok(())
}

fn remove_temp(temp: Option<&PathBuf>) {
    if let Some(path) = temp {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

fn stop_record(reason: &str, user: Option<String>) -> AuditRecord {
    let mut details = Map::new();
    details.insert("reason".into(), Value::String(reason.to_owned()));
    AuditRecord::lifecycle_by(lifecycle::STOPPED, details, user)
}

/// The identity in force for the calling thread or task (`auditbus.identity()`):
/// who made the call that writes one of the service's own rows.
fn acting(py: Python<'_>) -> Result<Option<String>> {
    Ok(crate::identity::current(py)?.map(|name| name.bind(py).to_string_lossy().into_owned()))
}

fn seconds(field: &str, value: Option<f64>) -> Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) => Ok(Some(duration(field, s, "a number of seconds >= 0 or None")?)),
    }
}

/// Seconds that must be given (`None` is not accepted, and the message says so).
fn duration(field: &str, s: f64, expected: &str) -> Result<Duration> {
    if s.is_finite() && s >= 0.0 {
        Ok(Duration::from_secs_f64(s.min(1e9)))
    } else {
        Err(Error::invalid(field, format!("expected {expected}, got {s}")))
    }
}

/// A keyword argument of `AuditService(...)` as given: a value of the wrong
/// type is reported with the keyword's name and what it accepts, which
/// pyo3's own extraction message ("must be real number, not str") does not.
struct Given<T>(std::result::Result<T, String>);

impl<'a, 'py, T: FromPyObject<'a, 'py>> FromPyObject<'a, 'py> for Given<T> {
    type Error = Error;

    fn extract(value: Borrowed<'a, 'py, PyAny>) -> Result<Self> {
        Ok(Self(value.extract::<T>().map_err(|_| type_name(&value))))
    }
}

impl<T> Given<T> {
    fn get(self, field: &str, expected: &str) -> Result<T> {
        self.0.map_err(|got| Error::Type(format!("{field}: expected {expected}, got {got}")))
    }
}

/// A row count or position (`limit`, `offset`, `batch_size`) as given: an
/// int beyond SQLite's 64 bits, or a value of another type, is reported with
/// the parameter's name (pyo3's own message names neither).
enum Count {
    Int(i64),
    TooLarge(String),
    NotInt(String),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Count {
    type Error = Error;

    fn extract(value: Borrowed<'a, 'py, PyAny>) -> Result<Self> {
        Ok(match value.extract::<i64>() {
            Ok(n) => Self::Int(n),
            Err(_) if value.is_instance_of::<pyo3::types::PyInt>() => Self::TooLarge(short_repr(&value)),
            Err(_) => Self::NotInt(type_name(&value)),
        })
    }
}

impl Count {
    /// The count, at least `min`.
    fn get(self, field: &str, min: i64, expected: &str) -> Result<i64> {
        match self {
            Self::Int(n) if n >= min => Ok(n),
            Self::Int(n) => Err(Error::invalid(field, format!("expected {expected}, got {n}"))),
            Self::TooLarge(shown) => {
                Err(Error::invalid(field, format!("expected {expected}, got {shown}, which is beyond 2**63-1")))
            }
            Self::NotInt(got) => Err(Error::Type(format!("{field}: expected {expected}, got {got}"))),
        }
    }
}

/// `queue_size`: an `int >= 1` (not a bool); a huge one is capped later.
struct QueueSize(i64);

impl<'a, 'py> FromPyObject<'a, 'py> for QueueSize {
    type Error = Error;

    fn extract(value: Borrowed<'a, 'py, PyAny>) -> Result<Self> {
        let expected = "an int >= 1";
        if value.is_instance_of::<pyo3::types::PyBool>() || !value.is_instance_of::<pyo3::types::PyInt>() {
            return Err(Error::Type(format!("queue_size: expected {expected}, got {}", type_name(&value))));
        }
        match value.extract::<i64>() {
            Ok(n) if n >= 1 => Ok(Self(n)),
            Ok(n) => Err(Error::invalid("queue_size", format!("expected {expected}, got {n}"))),
            Err(_) => match value.extract::<i128>() {
                // Beyond 64 bits but positive: as good as any large bound.
                Ok(n) if n >= 1 => Ok(Self(i64::MAX)),
                _ => Err(Error::invalid("queue_size", format!("expected {expected}, got {}", short_repr(&value)))),
            },
        }
    }
}

/// A text argument or filter: str (or a str subclass such as an enum) or None.
fn opt_text(field: &str, value: Option<&Bound<'_, PyAny>>) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => match v.cast::<PyString>() {
            Ok(s) => Ok(Some(s.to_string_lossy().into_owned())),
            Err(_) => {
                Err(Error::Type(format!("{field}: expected str or None, got {} {}", type_name(v), short_repr(v))))
            }
        },
    }
}

fn known_type(field: &str, text: &str) -> Result<String> {
    if EVENT_TYPES.contains(&text) || lifecycle::ALL.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{} is not an audit event type; accepted: {}, and the service's own {}",
                short_text(text),
                EVENT_TYPES.join(", "),
                lifecycle::ALL.join(", ")
            ),
        ))
    }
}

fn event_types(value: Option<&Bound<'_, PyAny>>) -> Result<Option<Vec<String>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Some(vec![known_type("event_type", &text.to_string_lossy())?]));
    }
    let items = value.try_iter().map_err(|_| {
        Error::Type(format!("event_type: expected a str, an iterable of str or None, got {}", type_name(value)))
    })?;
    let mut types = Vec::new();
    for item in items {
        let item = item?;
        let text = item.cast::<PyString>().map_err(|_| {
            Error::Type(format!("event_type: expected str items, got {} {}", type_name(&item), short_repr(&item)))
        })?;
        types.push(known_type("event_type", &text.to_string_lossy())?);
    }
    if types.is_empty() {
        return Err(Error::invalid("event_type", "an empty collection matches nothing; pass None for every type"));
    }
    Ok(Some(types))
}

fn time_filter(field: &str, value: Option<&Bound<'_, PyAny>>) -> Result<Option<chrono::DateTime<Utc>>> {
    match value {
        Some(v) if !v.is_none() => Ok(Some(timestamp::from_py(field, v)?)),
        _ => Ok(None),
    }
}

/// `verify(heads=...)`: `(row id, chain hash)` pairs (tuples or lists), as a report's `head_id` and `head_hash`.
fn kept_heads(value: Option<&Bound<'_, PyAny>>) -> Result<Vec<(i64, String)>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(Vec::new()) };
    let accepted = "expected an iterable of (head_id, head_hash) pairs: an int >= 1 and 64 lowercase hex digits";
    if value.is_instance_of::<PyString>() {
        return Err(Error::Type(format!("heads: {accepted}, got a str")));
    }
    let items = value.try_iter().map_err(|_| Error::Type(format!("heads: {accepted}, got {}", type_name(value))))?;
    let mut heads = Vec::new();
    for item in items {
        let item = item?;
        // A list pair too: heads kept as JSON come back from `json.load` as lists.
        let pair: Option<(i64, String)> = match item.cast::<PyList>() {
            Ok(list) => list.to_tuple().extract().ok(),
            Err(_) => item.extract().ok(),
        };
        match pair {
            Some((id, hash))
                if id >= 1
                    && hash.len() == 64
                    && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                heads.push((id, hash));
            }
            _ => return Err(Error::invalid("heads", format!("{accepted}, got {}", short_repr(&item)))),
        }
    }
    Ok(heads)
}

fn parse_order(order: &str) -> Result<Order> {
    match order {
        "desc" => Ok(Order::Desc),
        "asc" => Ok(Order::Asc),
        other => Err(Error::invalid("order", format!("{} is not accepted; use 'desc' or 'asc'", short_text(other)))),
    }
}

/// The filter arguments shared by `query`, `count` and `iter_entries`.
#[allow(clippy::too_many_arguments)]
/// The filters `query`, `count` and `iter_entries` share, by keyword.
const FILTERS: [&str; 10] = [
    "event_type",
    "plan_id",
    "user_identity",
    "actor_name",
    "session_id",
    "project_name",
    "outcome",
    "since",
    "until",
    "after_id",
];

/// Reads the filter keywords of `method`; an unknown one names the accepted ones.
fn filter(method: &str, filters: Option<&Bound<'_, PyDict>>) -> Result<Filter> {
    let mut filter = Filter::default();
    let Some(filters) = filters else { return Ok(filter) };
    for (key, value) in filters.iter() {
        // `str()` runs a pending signal's handler first: its exception (Ctrl-C, SIGTERM) is raised as
        // itself, not swallowed as an unprintable name and reported as an unknown keyword.
        let name = key.str()?.to_cow()?.into_owned();
        let value = Some(&value).filter(|v| !v.is_none());
        match name.as_str() {
            "event_type" => filter.event_types = event_types(value)?,
            "plan_id" => filter.plan_id = opt_text("plan_id", value)?,
            "user_identity" => filter.user_identity = opt_text("user_identity", value)?,
            "actor_name" => filter.actor_name = opt_text("actor_name", value)?,
            "session_id" => filter.session_id = opt_text("session_id", value)?,
            "project_name" => filter.project_name = opt_text("project_name", value)?,
            "outcome" => filter.outcome = opt_text("outcome", value)?,
            "since" => filter.since = time_filter("since", value)?,
            "until" => filter.until = time_filter("until", value)?,
            "after_id" => {
                filter.after_id = value
                    .map(|v| {
                        v.extract::<i64>().map_err(|_| {
                            Error::Type(format!(
                                "after_id: expected an int or None, got {} {}",
                                type_name(v),
                                short_repr(v)
                            ))
                        })
                    })
                    .transpose()?;
            }
            other => {
                return Err(Error::Type(format!(
                    "{method}() got an unexpected keyword argument '{other}'; accepted filters: {}",
                    FILTERS.join(", ")
                )))
            }
        }
    }
    Ok(filter)
}

/// `_summary()`: rows, rows of each type asked for, first and last row.
type TrailSummary = (u64, Vec<(String, u64)>, Option<AuditEntry>, Option<AuditEntry>);

/// Reads one of the writer's counters.
type Counter = fn(&Stats) -> u64;

/// `auditbus.AuditService`: the durable, redacted, tamper-evident audit trail.
#[pyclass(frozen, weakref, dict, subclass, module = "auditbus", name = "AuditService")]
pub struct AuditService {
    /// As the caller gave it (`":memory:"` stays `":memory:"`).
    db_path: String,
    durability: Durability,
    /// As given (`redactor=`): a bus logs its handlers' failures masked by it too.
    redactor: Option<Py<Redactor>>,
    rules: Arc<Rules>,
    put_timeout: Option<Duration>,
    /// None for a read-only service.
    writer: Option<Arc<Writer>>,
    reader: Mutex<Option<schema::Reader>>,
    /// The temporary file standing in for `":memory:"`.
    temp: Option<PathBuf>,
    source: String,
}

impl AuditService {
    /// Write-behind entry for the bus: redacts on the caller's thread,
    /// queues the owned record and returns without touching the disk.
    pub fn submit_event(&self, py: Python<'_>, event: &DomainEvent) -> Result<()> {
        let writer = self.writer("record_event()")?;
        let record = AuditRecord::from_event(py, event, &self.rules)?;
        writer.submit(py, record, self.put_timeout)
    }

    /// Whether events handed over now would be accepted: the error `what`
    /// (a bus being wired to this service) would otherwise meet on every emit.
    pub fn check_accepting(&self, what: &str) -> Result<()> {
        let writer = self.writer(what)?;
        writer.check_process()?;
        if writer.is_closed() {
            return Err(Error::Closed(format!("{what}: AuditService({:?}) is closed", self.db_path)));
        }
        Ok(())
    }

    /// The writer, or the error a read-only service gives to `what`.
    fn writer(&self, what: &str) -> Result<&Writer> {
        self.writer.as_deref().ok_or_else(|| {
            Error::Storage(format!(
                "AuditService({:?}) was opened with read_only=True; {what} needs a writable service",
                self.db_path
            ))
        })
    }

    fn read<T: Send>(&self, py: Python<'_>, f: impl Fn(&Connection) -> Result<T> + Send) -> Result<T> {
        // Read-your-writes: a read sees every record handed to this service
        // before it. A failing disk bounds the wait; the read then shows what
        // is committed, and the records stay queued.
        if let Some(writer) = &self.writer {
            // SQLite connections must not be used across fork(): refuse in a child.
            writer.check_process()?;
            // Only an exception of a signal handler (Ctrl-C) that ran during
            // the wait ends the read: swallowed, the signal would be lost.
            if let Err(Error::Python(interrupted)) = writer.flush(py, Some(SETTLE_LIMIT)) {
                return Err(Error::Python(interrupted));
            }
        }
        py.detach(move || {
            let mut guard = self.reader.lock();
            let reader =
                guard.as_mut().ok_or_else(|| Error::Closed(format!("AuditService({:?}) is closed", self.db_path)))?;
            let _sqlite = writer::in_sqlite();
            // A damaged page is found by the read that touches it: say which file, and
            // whether it is damage or a read the operating system failed.
            reader.read(move |conn| f(conn).map_err(|e| schema::read_error(&self.db_path, conn, e)))
        })
    }

    fn page(
        &self,
        py: Python<'_>,
        filter: &Filter,
        order: Order,
        limit: Option<u64>,
        offset: u64,
    ) -> Result<Vec<RowData>> {
        self.read(py, |conn| query::fetch(conn, filter, order, limit, offset))
    }
}

#[pymethods]
impl AuditService {
    /// Python subclasses (the legacy AuditService is a plain class) call
    /// `super().__init__(...)` with their arguments: accepted and ignored,
    /// `__new__` has built the object from the same arguments.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    #[new]
    #[pyo3(signature = (db_path, *, durability = Given(Ok("full".to_owned())), redactor = None, queue_size = QueueSize(65536), put_timeout = Some(Given(Ok(5.0))), busy_timeout = Given(Ok(5.0)), app_name = None, read_only = Given(Ok(false))),
           text_signature = "(db_path, *, durability='full', redactor=None, queue_size=65536, put_timeout=5.0, busy_timeout=5.0, app_name=None, read_only=False)")]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        db_path: &Bound<'_, PyAny>,
        durability: Given<String>,
        redactor: Option<&Bound<'_, PyAny>>,
        queue_size: QueueSize,
        put_timeout: Option<Given<f64>>,
        busy_timeout: Given<f64>,
        app_name: Option<Given<String>>,
        read_only: Given<bool>,
    ) -> Result<Self> {
        let fspath =
            py.import("os")?.getattr("fspath")?.call1((db_path,)).map_err(|_| {
                Error::Type(format!("db_path: expected a str or os.PathLike, got {}", type_name(db_path)))
            })?;
        let db_path = fspath
            .cast::<PyString>()
            .map_err(|_| Error::Type(format!("db_path: expected a str path, got {}", type_name(&fspath))))?;
        // A name `os.fsdecode()` made from bytes that are not UTF-8 holds lone
        // surrogates: a lossy copy would open (and write) a file of another name.
        let db_path: String = match db_path.to_str() {
            Ok(text) => text.to_owned(),
            Err(_) => {
                // Masked as every quoted value is; whole, since it names the file to rename.
                let shown = crate::values::masked(
                    &db_path.repr().map(|r| r.to_string_lossy().into_owned()).unwrap_or_default(),
                );
                return Err(Error::invalid(
                    "db_path",
                    format!("{shown} is not valid UTF-8 (it holds bytes the file system encoding could not decode); rename the file or pick a UTF-8 path"),
                ));
            }
        };
        let durability = Durability::parse(&durability.get("durability", "'full' or 'normal'")?)?;
        let read_only = read_only.get("read_only", "a bool")?;
        let app_name = app_name.map(|a| a.get("app_name", "str or None")).transpose()?;
        let put_timeout = put_timeout.map(|t| t.get("put_timeout", "a number of seconds >= 0 or None")).transpose()?;
        let busy_timeout = busy_timeout.get("busy_timeout", "a number of seconds >= 0")?;
        let redactor = match redactor.filter(|r| !r.is_none()) {
            None => None,
            Some(r) => Some(
                r.cast::<Redactor>()
                    .map_err(|_| {
                        Error::Type(format!("redactor: expected an auditbus.Redactor or None, got {}", type_name(r)))
                    })?
                    .clone()
                    .unbind(),
            ),
        };
        let rules = redactor.as_ref().map_or_else(Rules::shared_default, |r| r.get().rules());
        let capacity = usize::try_from(queue_size.0).unwrap_or(usize::MAX).min(1 << 26);
        let put_timeout = seconds("put_timeout", put_timeout)?;
        let busy = duration("busy_timeout", busy_timeout, "a number of seconds >= 0")?;
        if read_only {
            if db_path == ":memory:" || db_path.is_empty() {
                return Err(Error::invalid(
                    "db_path",
                    format!("{db_path:?} with read_only=True: expected the path of an existing audit database"),
                ));
            }
            // A reader only: no writer thread, no lifecycle rows, nothing written.
            let reader = py.detach(|| schema::open_read_only(&db_path, busy))?;
            return Ok(Self {
                db_path,
                durability,
                redactor,
                rules,
                put_timeout,
                writer: None,
                reader: Mutex::new(Some(reader)),
                temp: None,
                source: String::new(),
            });
        }

        // ":memory:" (and "") keep working as for the legacy service, on a
        // private temporary file so the writer and reader see one database.
        if db_path.is_empty() {
            // Asked for by name, ":memory:" is a choice; "" is more often an unset setting.
            crate::audit::writer::log(
                "warning",
                "AuditService(\"\"): an empty path opens a private temporary trail, removed on close, as \
                 \":memory:\" does; pass a file path to keep the trail",
            );
        }
        let temp = (db_path == ":memory:" || db_path.is_empty())
            .then(|| std::env::temp_dir().join(format!("auditbus-memory-{}.sqlite3", new_event_id())));
        let file = temp.as_ref().map_or_else(|| db_path.clone(), |p| p.to_string_lossy().into_owned());

        let sys = py.import("sys")?;
        let app = match app_name {
            Some(name) => name,
            None => sys
                .getattr("argv")
                .and_then(|argv| argv.get_item(0))
                .and_then(|arg0| arg0.extract::<String>())
                .ok()
                .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "python".to_owned()),
        };
        let host: String = py.import("socket")?.getattr("gethostname")?.call0()?.extract()?;
        // Who opens the trail: its start row names them.
        let opener = acting(py)?;
        let source = serde_json::json!({"host": host, "pid": std::process::id(), "app": app}).to_string();

        let opened = py.detach(|| -> Result<(Connection, Connection)> {
            let writer = schema::open_writer(&file, busy, durability)?;
            let reader = schema::open(&file, busy)?;
            reader.pragma_update(None, "query_only", true)?;
            Ok((writer, reader))
        });
        let (write_conn, read_conn) = match opened {
            Ok(conns) => conns,
            Err(e) => {
                remove_temp(temp.as_ref());
                return Err(e);
            }
        };
        let writer = match Writer::start(write_conn, db_path.clone(), source.clone(), capacity, retire) {
            Ok(writer) => writer,
            Err(e) => {
                // No thread (the process's thread limit, say): the file made for ":memory:" goes too.
                drop(read_conn);
                py.detach(|| remove_temp(temp.as_ref()));
                return Err(e);
            }
        };
        register_worker_hook(py)?;
        let ended: Vec<_> = {
            let mut live = live();
            if FINISHED.load(Ordering::Acquire) {
                drop(live);
                py.detach(|| {
                    writer.close_unattached(None);
                    drop(read_conn);
                    remove_temp(temp.as_ref());
                });
                return Err(Error::Closed(format!(
                    "AuditService({db_path:?}) cannot open: the interpreter has shut down, and auditbus closed \
                     its services for the last time; nothing would close this one and write what it takes"
                )));
            }
            let (ended, running) = std::mem::take(&mut *live).into_iter().partition(|(w, _)| w.is_finished());
            *live = running;
            live.push((writer.clone(), temp.clone()));
            ended
        };
        // Services dropped without close(): their writers have ended; their temporary files go too.
        py.detach(|| ended.iter().for_each(|(_, temp)| remove_temp(temp.as_ref())));

        let mut details = Map::new();
        details.insert("durability".into(), Value::String(durability.name().to_owned()));
        details.insert("schema_version".into(), Value::from(SCHEMA_VERSION));
        details.insert("queue_size".into(), Value::from(capacity));
        writer.submit(py, AuditRecord::lifecycle_by(lifecycle::STARTED, details, opener), None)?;
        Ok(Self {
            db_path,
            durability,
            redactor,
            rules,
            put_timeout,
            writer: Some(writer),
            reader: Mutex::new(Some(schema::Reader::new(read_conn))),
            temp,
            source,
        })
    }

    /// The `Redactor` given as `redactor=`, or None for the default rules.
    #[getter]
    pub fn redactor(&self, py: Python<'_>) -> Option<Py<Redactor>> {
        self.redactor.as_ref().map(|r| r.clone_ref(py))
    }

    #[getter]
    fn db_path(&self) -> &str {
        &self.db_path
    }

    #[getter]
    fn durability(&self) -> &'static str {
        self.durability.name()
    }

    /// Raises the error that `what` (a subscriber being wired to this
    /// service) would otherwise log for every event: closed, read-only, or
    /// inherited across `fork()`.
    fn _check_accepting(&self, what: &str) -> Result<()> {
        self.check_accepting(what)
    }

    /// The legacy call: validates, redacts, and returns once the row is
    /// committed (concurrent callers share one commit). The returned entry
    /// shows what was stored: the redacted details.
    #[pyo3(signature = (event_type, *, plan_id = None, user_identity = None, details = None))]
    fn record(
        &self,
        py: Python<'_>,
        event_type: &Bound<'_, PyAny>,
        plan_id: Option<&Bound<'_, PyAny>>,
        user_identity: Option<&Bound<'_, PyAny>>,
        details: Option<&Bound<'_, PyAny>>,
    ) -> Result<AuditEntry> {
        // Counted from before redaction, so the writer can hold a commit open for this row.
        let writer = self.writer("record()")?;
        let _caller = writer.durable_caller();
        let kind = EventKind::from_py("event_type", event_type)?;
        let who = Who {
            plan_id: opt_text("plan_id", plan_id)?,
            user_identity: opt_text("user_identity", user_identity)?,
            ..Who::default()
        };
        let details = match details.filter(|d| !d.is_none()) {
            None => PyDict::new(py),
            Some(d) => match d.cast::<PyDict>() {
                Ok(dict) => dict.clone(),
                Err(_) => {
                    let mapping = d.cast::<PyMapping>().map_err(|_| {
                        Error::invalid("details", format!("expected a dict or None, got {}", type_name(d)))
                    })?;
                    let dict = PyDict::new(py);
                    dict.update(mapping)?;
                    dict
                }
            },
        };
        let record =
            AuditRecord::from_dict(kind.value(), timestamp::now(py)?, new_event_id(), who, &details, &[], &self.rules)?;
        let stored = record.clone();
        let committed = writer.record(py, record, self.put_timeout)?;
        let Some(Committed { id, recorded_at, prev_hash, chain_hash, .. }) = committed else {
            return Err(Error::Storage("record(): the row was not stored (duplicate event_id)".into()));
        };
        let row = RowData {
            id,
            timestamp: timestamp::isoformat(&stored.timestamp),
            event_type: stored.event_type.to_owned(),
            plan_id: stored.plan_id,
            user_identity: stored.user_identity,
            details: stored.details,
            event_id: Some(stored.event_id),
            actor_name: None,
            project_name: None,
            session_id: None,
            outcome: stored.outcome,
            source: Some(self.source.clone()),
            recorded_at: Some(recorded_at),
            prev_hash: Some(prev_hash),
            chain_hash: Some(chain_hash),
            not_utf8: Vec::new(),
        };
        AuditEntry::from_row(row)
    }

    /// Write-behind: redacts here, queues, returns; never touches the disk.
    fn record_event(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> Result<()> {
        let event = event.cast::<DomainEvent>().map_err(|_| {
            Error::Type(format!("record_event: expected an auditbus.DomainEvent, got {}", type_name(event)))
        })?;
        self.submit_event(py, event.get())
    }

    /// Returns once everything handed over before the call is committed;
    /// raises `TimeoutError` if `timeout` seconds pass first (`0`: unless
    /// it already is). Ctrl-C interrupts the wait; the rows stay queued.
    #[pyo3(signature = (timeout = None))]
    fn flush(&self, py: Python<'_>, timeout: Option<Given<f64>>) -> Result<()> {
        let timeout = timeout.map(|t| t.get("timeout", "a number of seconds >= 0 or None")).transpose()?;
        let timeout = seconds("timeout", timeout)?;
        // A read-only service was handed nothing.
        self.writer.as_ref().map_or(Ok(()), |writer| writer.flush(py, timeout))
    }

    /// Matching entries, newest first by default. Filters (all optional, all
    /// must match): `event_type` (one or several), `plan_id`, `user_identity`,
    /// `actor_name`, `session_id`, `project_name`, `outcome`, `since`, `until`,
    /// `after_id` (keyset cursor: the rows after that id in the call's
    /// order, so the smaller ids when newest first).
    #[pyo3(signature = (*, limit = Some(Count::Int(100)), offset = Count::Int(0), order = "desc", **filters),
           text_signature = "($self, *, event_type=None, plan_id=None, user_identity=None, actor_name=None, session_id=None, project_name=None, outcome=None, since=None, until=None, limit=100, offset=0, after_id=None, order='desc')")]
    fn query(
        &self,
        py: Python<'_>,
        limit: Option<Count>,
        offset: Count,
        order: &str,
        filters: Option<&Bound<'_, PyDict>>,
    ) -> Result<Vec<AuditEntry>> {
        let filter = filter("query", filters)?;
        let order = parse_order(order)?;
        let limit = limit.map(|l| l.get("limit", 0, "an int >= 0 or None")).transpose()?;
        let offset = offset.get("offset", 0, "an int >= 0")?;
        // Checked >= 0 above.
        let (limit, offset) = (limit.map(i64::unsigned_abs), offset.unsigned_abs());
        let rows = self.page(py, &filter, order, limit, offset)?;
        rows.into_iter().map(AuditEntry::from_row).collect()
    }

    /// How many rows match (the filters of `query`): with `after_id`, the
    /// rows `query` would read in the same `order` (the ids above it with
    /// "asc", the default, below it with "desc"), so a page's count is
    /// that of the query that reads it.
    #[pyo3(signature = (*, order = "asc", **filters),
           text_signature = "($self, *, event_type=None, plan_id=None, user_identity=None, actor_name=None, session_id=None, project_name=None, outcome=None, since=None, until=None, after_id=None, order='asc')")]
    fn count(&self, py: Python<'_>, order: &str, filters: Option<&Bound<'_, PyDict>>) -> Result<u64> {
        let filter = filter("count", filters)?;
        let order = parse_order(order)?;
        self.read(py, |conn| query::count(conn, &filter, order))
    }

    /// Every matching row, streamed in pages of `batch_size` by id (keyset
    /// pagination: rows appended during the walk are seen, none twice).
    #[pyo3(signature = (*, order = "asc", batch_size = Count::Int(1000), **filters),
           text_signature = "($self, *, event_type=None, plan_id=None, user_identity=None, actor_name=None, session_id=None, project_name=None, outcome=None, since=None, until=None, after_id=None, order='asc', batch_size=1000)")]
    fn iter_entries(
        slf: &Bound<'_, Self>,
        order: &str,
        batch_size: Count,
        filters: Option<&Bound<'_, PyDict>>,
    ) -> Result<AuditEntryIterator> {
        let filter = filter("iter_entries", filters)?;
        let order = parse_order(order)?;
        let batch_size = batch_size.get("batch_size", 1, "an int >= 1")?;
        Ok(AuditEntryIterator {
            service: slf.clone().unbind(),
            filter,
            order,
            batch_size: batch_size.unsigned_abs(),
            buffer: VecDeque::new(),
            done: false,
        })
    }

    /// What `auditbus stats` shows, in one read: `(rows, [(type, rows of it)
    /// for each of event_types], first row, last row)`, rows of every type.
    fn _summary(&self, py: Python<'_>, event_types: Vec<String>) -> Result<TrailSummary> {
        let summary = self.read(py, |conn| query::summary(conn, &event_types))?;
        let first = summary.first.map(AuditEntry::from_row).transpose()?;
        let last = summary.last.map(AuditEntry::from_row).transpose()?;
        Ok((summary.rows, summary.by_type, first, last))
    }

    /// Walks the hash chain; reports the first edited, deleted or inserted
    /// row. `heads`: `(head_id, head_hash)` pairs an earlier report gave,
    /// kept outside the file; each row must still carry that hash.
    #[pyo3(signature = (*, heads = None))]
    fn verify(&self, py: Python<'_>, heads: Option<&Bound<'_, PyAny>>) -> Result<VerifyReport> {
        let heads = kept_heads(heads)?;
        Ok(self.read(py, |conn| query::verify(conn, &heads))?.into())
    }

    /// Writer counters and where the trail lives.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        use std::sync::atomic::Ordering::Relaxed;
        let out = PyDict::new(py);
        let counters: [(&str, Counter); 8] = [
            ("queued", |s| s.queued.load(Relaxed)),
            ("written", |s| s.written.load(Relaxed)),
            ("duplicates", |s| s.duplicates.load(Relaxed)),
            ("batches", |s| s.batches.load(Relaxed)),
            ("retries", |s| s.retries.load(Relaxed)),
            ("errors", |s| s.errors.load(Relaxed)),
            ("rejected", |s| s.rejected.load(Relaxed)),
            ("lost", |s| s.lost()),
        ];
        let stats = self.writer.as_ref().map(|w| &w.shared.stats);
        for (name, read) in counters {
            out.set_item(name, stats.map_or(0, read))?;
        }
        let last_error = self.writer.as_ref().and_then(|w| w.shared.stats.last_error_text(w.forked()));
        out.set_item("last_error", last_error)?;
        out.set_item("queue_depth", self.writer.as_ref().map_or(0, |w| w.queue_depth()))?;
        out.set_item("db_path", &self.db_path)?;
        out.set_item("durability", self.durability.name())?;
        out.set_item("read_only", self.writer.is_none())?;
        out.set_item("stopped", self.writer.as_ref().is_some_and(|w| w.stopped()))?;
        let closed = match &self.writer {
            Some(writer) => writer.is_closed(),
            None => py.detach(|| self.reader.lock().is_none()),
        };
        out.set_item("closed", closed)?;
        Ok(out)
    }

    /// Deletes the oldest rows whose timestamps are before `before` — the
    /// only deletion there is. Records itself as an `audit_purged` row and
    /// re-anchors the chain, so `verify()` stays ok. Returns rows deleted.
    /// Ctrl-C interrupts the wait, not the purge, which still runs.
    /// `dry_run=True` only counts the rows it would delete now (read-only
    /// services too): the same cut, nothing deleted, nothing recorded.
    #[pyo3(signature = (before, *, dry_run = false))]
    fn purge(&self, py: Python<'_>, before: &Bound<'_, PyAny>, dry_run: bool) -> Result<u64> {
        let before = timestamp::from_py("before", before)?;
        if dry_run {
            return self.read(py, |conn| writer::purgeable(conn, &before)).map_err(|e| match e {
                Error::Storage(why) => Error::Storage(format!("purge of {:?} (dry run): {why}", self.db_path)),
                other => other,
            });
        }
        self.writer("purge()")?.purge(py, before, acting(py)?)
    }

    /// Flushes, records the stop, stops the writer. Idempotent. Ctrl-C
    /// interrupts the wait: the service stays closed to new records and the
    /// writer keeps writing what was queued; a later `close()` waits again.
    /// After a writer stopped on a fault it closes too, then raises that
    /// fault's `AuditError` (each time), as `flush()` does.
    fn close(&self, py: Python<'_>) -> Result<()> {
        if let Some(writer) = &self.writer {
            writer.close(py, Some(stop_record("close()", acting(py)?)), ClosedBy::Program)?;
            if writer.forked() {
                // The parent's connections and ":memory:" file are the parent's to close. A
                // reader lock held at the fork belongs to a thread the child does not have.
                if let Some(mut reader) = self.reader.try_lock() {
                    std::mem::forget(reader.take());
                }
                return Ok(());
            }
        }
        // The reader may be busy with a long query on another thread: wait for it without the GIL.
        py.detach(|| close_reader(self.reader.lock().take(), self.writer.as_ref()));
        // A writer thread still logging its last warnings stays for the exit to join.
        if let Some(writer) = self.writer.as_ref().filter(|w| w.is_finished()) {
            live().retain(|(w, _)| !Arc::ptr_eq(w, writer));
        }
        py.detach(|| remove_temp(self.temp.as_ref()));
        // Closed all the same; a writer stopped on a fault left what was handed over unwritten.
        match &self.writer {
            Some(writer) if writer.stopped() => Err(writer.stopped_error()),
            _ => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> Result<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.writer {
            Some(_) => format!("AuditService({:?}, durability={:?})", self.db_path, self.durability.name()),
            None => format!("AuditService({:?}, read_only=True)", self.db_path),
        }
    }
}

impl Drop for AuditService {
    /// Dropped without `close()`: ask the writer to finish on its own (a
    /// destructor must not block); the at-exit hook still waits for it.
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            if writer.forked() {
                // Closing the parent's connection here could checkpoint the parent's WAL under it.
                std::mem::forget(self.reader.get_mut().take());
                return;
            }
            writer.close_nowait(Some(stop_record("garbage collected without close()", None)));
            if writer.dropped() {
                // The thread has ended: the reader goes before the files it reads.
                close_reader(self.reader.get_mut().take(), Some(writer));
                retire(&writer.shared);
            }
        }
    }
}

/// The iterator `iter_entries()` returns.
#[pyclass(module = "auditbus", name = "AuditEntryIterator")]
pub struct AuditEntryIterator {
    service: Py<AuditService>,
    filter: Filter,
    order: Order,
    batch_size: u64,
    buffer: VecDeque<RowData>,
    done: bool,
}

#[pymethods]
impl AuditEntryIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> Result<Option<AuditEntry>> {
        if self.buffer.is_empty() && !self.done {
            let page = self.service.get().page(py, &self.filter, self.order, Some(self.batch_size), 0)?;
            self.done = (page.len() as u64) < self.batch_size;
            if let Some(last) = page.last() {
                self.filter.after_id = Some(last.id);
            }
            self.buffer.extend(page);
        }
        match self.buffer.pop_front() {
            Some(row) => Ok(Some(AuditEntry::from_row(row)?)),
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

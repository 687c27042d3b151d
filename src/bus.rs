//! `ReactiveEventBus`: the in-process domain event bus.
//!
//! `emit()` runs on the caller's thread, in this order: persistence (with
//! `audit=`: the redacted record is handed to the audit writer's queue; the
//! only step that can refuse the event, so it comes before anyone sees it),
//! stream observers, the bounded in-memory log, then the handlers of the
//! event's type in subscription order. Handler and observer exceptions are
//! isolated: logged on the `auditbus` logger with the event type and the
//! traceback (secret shapes in its text masked), counted, and the next
//! callable runs.
//!
//! Locking: handler lists are copy-on-write (`Arc<[..]>` per event type, one
//! snapshot per emit), so an emit never holds a lock while it calls Python and
//! handlers may subscribe, unsubscribe or emit again from inside a handler.
//! Each subscription carries an `active` flag that an emit checks right before
//! the call, so a removal takes effect even in the emit under way. Python
//! objects evicted from a list or the log are dropped after the guard is
//! released, because a dealloc can run arbitrary Python code.
//!
//! Re-entrancy: a nested emit (from a handler or observer) raises
//! `RecursionError` when the thread's stack runs low (`Nesting`), and a
//! failure too deep to log is raised to the emitting handler, for the emit
//! one level up to log: an endless re-entrant emit ends in one logged
//! `RecursionError`, never in a stack overflow.

use std::cell::Cell;
use std::collections::HashSet;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};
use pyo3::exceptions::{PyBaseException, PyException, PyRecursionError};
use pyo3::prelude::*;
use pyo3::sync::{MutexExt, PyOnceLock, RwLockExt};
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::audit::AuditService;
use crate::errors::{Error, Result};
use crate::event::{DomainEvent, EventKind, EVENT_TYPES};
use crate::redact::Redactor;
use crate::values::{short_repr, type_name};

/// One `subscribe()`/`subscribe_all()` call.
struct Subscription {
    handler: Py<PyAny>,
    /// `None`: every event type (`subscribe_all`).
    kind: Option<EventKind>,
    /// Decided once at subscribe time: a coroutine function is scheduled on a
    /// loop rather than called.
    mode: Mode,
    /// Cleared by unsubscribe/dispose; checked right before each call.
    active: AtomicBool,
    /// For log lines: the handler's qualified name, never its repr.
    name: String,
}

enum Mode {
    Sync,
    /// The loop that was running where `subscribe()` was called, if any: the
    /// fallback when the emitting thread runs no loop.
    Coroutine {
        home_loop: Option<Py<PyAny>>,
    },
}

/// One reactive observer of `stream`.
struct Observer {
    on_next: Py<PyAny>,
    observer: Py<PyAny>,
    active: AtomicBool,
}

type Snapshot = Arc<[Arc<Subscription>]>;

/// `EventKind` hashes as one byte; spreading it over the word is all a
/// 14-entry table needs (SipHash would be most of a lookup's cost).
#[derive(Default)]
struct KindHasher(u64);

impl Hasher for KindHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u8(*byte);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Routes = HashMap<EventKind, Snapshot, BuildHasherDefault<KindHasher>>;

fn all_kinds() -> impl Iterator<Item = EventKind> {
    EVENT_TYPES.iter().filter_map(|value| EventKind::from_value(value))
}

fn kinds_of(sub: &Subscription) -> Vec<EventKind> {
    match sub.kind {
        Some(kind) => vec![kind],
        None => all_kinds().collect(),
    }
}

/// The name a log line uses for a handler: its `__qualname__`, else its type's.
fn handler_name(handler: &Bound<'_, PyAny>) -> String {
    handler.getattr("__qualname__").ok().and_then(|n| n.extract::<String>().ok()).unwrap_or_else(|| type_name(handler))
}

fn py_bool(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

fn closed(what: &str) -> Error {
    Error::Closed(format!("ReactiveEventBus.{what}: the bus was disposed; create a new ReactiveEventBus"))
}

/// C stack a nested `emit()` leaves for what runs after it refuses to nest
/// deeper: the handler it was called from unwinding, and the emit one level
/// up logging the `RecursionError` (`traceback`, `logging`, the redaction
/// patterns compiled on first use). At most half the stack there was at the
/// first nested emit, so that a thread with a small stack still nests a few
/// levels.
const STACK_RESERVE: usize = 256 * 1024;

thread_local! {
    /// This thread's `emit()`s under way, and the stack left at the first
    /// nested one (`None` until then): the outermost emit pays no stack check.
    static NESTING: Cell<(u32, Option<usize>)> = const { Cell::new((0, None)) };
}

/// One `emit()` under way on this thread, counted in `NESTING` until dropped.
struct Nesting;

impl Nesting {
    /// Each nested `emit()` (a handler emitting again) takes C stack, several
    /// KiB per level, that Python's recursion limit does not count: with a
    /// raised limit, or a thread started with a small `threading.stack_size()`,
    /// an endless re-entrant emit would overflow the stack and kill the
    /// process. A nested emit refuses, as Python does at its recursion limit,
    /// while there is still room to log the failure.
    fn enter() -> Result<Self> {
        let (depth, mut base) = NESTING.with(Cell::get);
        if depth > 0 {
            if let Some(left) = stacker::remaining_stack() {
                let first = *base.get_or_insert(left);
                if left < STACK_RESERVE.min(first / 2) {
                    return Err(Error::Python(PyRecursionError::new_err(format!(
                        "ReactiveEventBus.emit(): nested too deeply, {left} bytes of this thread's stack left \
                         (a handler or observer that emits again without end?)"
                    ))));
                }
            }
        }
        NESTING.with(|nesting| nesting.set((depth.saturating_add(1), base)));
        Ok(Self)
    }
}

impl Drop for Nesting {
    fn drop(&mut self) {
        NESTING.with(|nesting| {
            let (depth, base) = nesting.get();
            let depth = depth.saturating_sub(1);
            nesting.set((depth, if depth == 0 { None } else { base }));
        });
    }
}

/// Compiles the redaction patterns a failure's log line is masked with, at
/// subscribe time: compiled on first use instead, inside a failure deep in
/// nested emits, they would take more stack than a refused emit leaves.
fn warm_failure_logging() {
    static WARM: AtomicBool = AtomicBool::new(false);
    if !WARM.swap(true, Ordering::Relaxed) {
        // A text that wakes the value shapes and the key matcher, both compiled on first use.
        let _ = crate::redact::Rules::shared_default().scan_text("password=hunter2 Authorization: Bearer abc.def");
    }
}

/// The helpers for coroutine-function handlers (`auditbus._aio`).
fn aio(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static AIO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(AIO.get_or_try_init(py, || py.import("auditbus._aio").map(|m| m.into_any().unbind()))?.bind(py))
}

/// `max_log_size`: an `int >= 0`, or `None` for no bound (as `deque(maxlen=)`).
/// Extracted by hand so that the error names the argument, the value and what
/// is accepted, instead of pyo3's "cannot be interpreted as an integer".
struct LogBound(Option<usize>);

impl<'a, 'py> FromPyObject<'a, 'py> for LogBound {
    type Error = Error;

    fn extract(value: Borrowed<'a, 'py, PyAny>) -> Result<Self> {
        if value.is_none() {
            return Ok(Self(None));
        }
        let accepted = "accepted: an int >= 0, or None for no bound";
        let Ok(n) = value.extract::<i128>() else {
            return Err(Error::Type(format!(
                "max_log_size: expected an int >= 0 or None, got {} {}; {accepted}",
                type_name(&value),
                short_repr(&value)
            )));
        };
        usize::try_from(n)
            .map(|n| Self(Some(n)))
            .map_err(|_| Error::invalid("max_log_size", format!("got {n}; {accepted}")))
    }
}

/// The in-process domain event bus (see the module docs for the semantics).
#[pyclass(frozen, weakref, dict, subclass, module = "auditbus", name = "ReactiveEventBus")]
pub struct ReactiveEventBus {
    handlers: RwLock<Routes>,
    observers: RwLock<Arc<[Arc<Observer>]>>,
    /// Fast path: emit skips the stream entirely while nobody observes it.
    observed: AtomicBool,
    log: Mutex<VecDeque<Py<PyAny>>>,
    /// `None`: unbounded, as `deque(maxlen=None)`.
    max_log_size: Option<usize>,
    closed: AtomicBool,
    handler_errors: AtomicU64,
    observer_errors: AtomicU64,
    /// std `OnceLock`, not `PyOnceLock`: `__traverse__` must read it without `py`.
    stream: OnceLock<Py<PyAny>>,
    /// Where every emitted event is persisted, if anywhere.
    audit: Option<Py<AuditService>>,
    /// The custom redactors of the services wired to this bus (`audit=`,
    /// `AuditEventSubscriber`): what they mask is masked in failure log
    /// lines too. A `Redactor` holds no Python object, so no cycle runs
    /// through it and `__traverse__` leaves it out.
    redactors: RwLock<Arc<[Py<Redactor>]>>,
}

/// Which kind of callable failed, for the log line and the counter.
#[derive(Clone, Copy)]
enum Failure {
    Handler,
    Observer,
}

impl ReactiveEventBus {
    /// Logs a failure on the `auditbus` logger at ERROR, with the traceback;
    /// `auditbus._log` masks secrets in the traceback text, which is the
    /// handler's own text and may quote a token or a URL password, or a secret
    /// value of `event`, the event being delivered: secret by the default rules
    /// or by the redactor of a service wired to this bus.
    ///
    /// `Err` only when logging itself hit the recursion limit: the failure
    /// happened too deep to be logged there (an endless re-entrant emit), and
    /// the caller hands it up to a shallower frame, as the legacy bus's
    /// `logger.exception` did. Any other logging failure is unraisable; so is
    /// that one where there is no caller to hand it to (dispose, a coroutine
    /// handler's task).
    fn log_failure(
        &self,
        py: Python<'_>,
        template: &str,
        args: (&str, &str),
        err: &PyErr,
        event: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        static FAILURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let redactors = self.redactors.read_py_attached(py).clone();
        let logged = (|| -> PyResult<()> {
            let failure =
                FAILURE.get_or_try_init(py, || py.import("auditbus._log")?.getattr("failure").map(Bound::unbind))?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("event", event)?;
            kwargs.set_item("redactors", PyTuple::new(py, redactors.iter())?)?;
            failure
                .bind(py)
                .call((template, args, err.get_type(py), err.value(py), err.traceback(py)), Some(&kwargs))?;
            Ok(())
        })();
        match logged {
            Err(log_err) if log_err.is_instance_of::<PyRecursionError>(py) => Err(log_err),
            Err(log_err) => {
                log_err.write_unraisable(py, None);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Logs and counts an `Exception` from a handler or observer; anything
    /// else (`KeyboardInterrupt`, `SystemExit`) propagates, as in the legacy bus.
    fn isolate(
        &self,
        py: Python<'_>,
        err: PyErr,
        failure: Failure,
        event: &Bound<'_, PyAny>,
        kind: EventKind,
        name: &str,
    ) -> PyResult<()> {
        if !err.is_instance_of::<PyException>(py) {
            return Err(err);
        }
        let (template, counter) = match failure {
            Failure::Handler => ("event handler %s failed for %s", &self.handler_errors),
            Failure::Observer => ("stream observer %s failed for %s", &self.observer_errors),
        };
        if self.log_failure(py, template, (name, kind.value()), &err, Some(event)).is_err() {
            // Too deep to log here: raised to the handler that emitted this
            // event, the emit one level up logs and counts it.
            return Err(err);
        }
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn push_to_stream(
        &self,
        py: Python<'_>,
        event: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kind: EventKind,
    ) -> PyResult<()> {
        let observers = self.observers.read_py_attached(py).clone();
        for observer in observers.iter() {
            if !observer.active.load(Ordering::Acquire) {
                continue;
            }
            if let Err(err) = observer.on_next.bind(py).call1(args) {
                let name = handler_name(observer.observer.bind(py));
                self.isolate(py, err, Failure::Observer, event, kind, &name)?;
            }
        }
        Ok(())
    }

    fn append_to_log(&self, py: Python<'_>, event: &Bound<'_, PyAny>) {
        let limit = self.max_log_size.unwrap_or(usize::MAX);
        if limit == 0 {
            return;
        }
        let entry = event.clone().unbind();
        let evicted = {
            let mut log = self.log.lock_py_attached(py);
            log.push_back(entry);
            if log.len() > limit {
                log.pop_front()
            } else {
                None
            }
        };
        drop(evicted);
    }

    fn call_handlers(
        bus: &Bound<'_, Self>,
        event: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kind: EventKind,
        subscriptions: &[Arc<Subscription>],
    ) -> PyResult<()> {
        let py = bus.py();
        let this = bus.get();
        for sub in subscriptions {
            if !sub.active.load(Ordering::Acquire) {
                continue;
            }
            let outcome = match &sub.mode {
                Mode::Sync => sub.handler.bind(py).call1(args).and_then(|result| {
                    // None is the common answer; anything else may be a
                    // coroutine (`lambda e: service.on_event(e)`) to start.
                    if result.is_none() {
                        Ok(())
                    } else {
                        Self::schedule_result(bus, sub, event, &result)
                    }
                }),
                Mode::Coroutine { home_loop } => Self::schedule(bus, sub, event, home_loop.as_ref()),
            };
            if let Err(err) = outcome {
                this.isolate(py, err, Failure::Handler, event, kind, &sub.name)?;
            }
        }
        Ok(())
    }

    /// Hands a coroutine handler to `auditbus._aio.schedule`, which picks the loop.
    fn schedule(
        bus: &Bound<'_, Self>,
        sub: &Subscription,
        event: &Bound<'_, PyAny>,
        home_loop: Option<&Py<PyAny>>,
    ) -> PyResult<()> {
        let py = bus.py();
        aio(py)?.call_method1("schedule", (bus, sub.handler.bind(py), event, home_loop)).map(drop)
    }

    /// Hands a plain handler's non-None result to `auditbus._aio.schedule_result`,
    /// which starts it if it is a coroutine.
    fn schedule_result(
        bus: &Bound<'_, Self>,
        sub: &Subscription,
        event: &Bound<'_, PyAny>,
        result: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = bus.py();
        aio(py)?.call_method1("schedule_result", (bus, sub.handler.bind(py), event, result)).map(drop)
    }

    fn add_subscription(&self, py: Python<'_>, sub: &Arc<Subscription>) -> Result<()> {
        let mut replaced = Vec::new();
        {
            let mut routes = self.handlers.write_py_attached(py);
            if self.closed.load(Ordering::Acquire) {
                return Err(closed(if sub.kind.is_some() { "subscribe" } else { "subscribe_all" }));
            }
            for kind in kinds_of(sub) {
                let mut list = routes.get(&kind).map_or_else(Vec::new, |s| s.to_vec());
                list.push(Arc::clone(sub));
                if let Some(previous) = routes.insert(kind, list.into()) {
                    replaced.push(previous);
                }
            }
        }
        drop(replaced);
        Ok(())
    }

    /// Deactivates `sub` and takes it out of every list; false if it was already gone.
    fn remove_subscription(&self, py: Python<'_>, sub: &Arc<Subscription>) -> bool {
        if !sub.active.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut replaced = Vec::new();
        {
            let mut routes = self.handlers.write_py_attached(py);
            for kind in kinds_of(sub) {
                let Some(list) = routes.get(&kind) else { continue };
                if !list.iter().any(|s| Arc::ptr_eq(s, sub)) {
                    continue;
                }
                let kept: Vec<_> = list.iter().filter(|s| !Arc::ptr_eq(s, sub)).cloned().collect();
                let previous = if kept.is_empty() { routes.remove(&kind) } else { routes.insert(kind, kept.into()) };
                replaced.extend(previous);
            }
        }
        drop(replaced);
        true
    }

    fn remove_observer(&self, py: Python<'_>, observer: &Arc<Observer>) -> bool {
        if !observer.active.swap(false, Ordering::AcqRel) {
            return false;
        }
        let previous = {
            let mut observers = self.observers.write_py_attached(py);
            let kept: Vec<_> = observers.iter().filter(|o| !Arc::ptr_eq(o, observer)).cloned().collect();
            self.observed.store(!kept.is_empty(), Ordering::Release);
            std::mem::replace(&mut *observers, kept.into())
        };
        drop(previous);
        true
    }

    fn subscription(
        &self,
        handler: &Bound<'_, PyAny>,
        kind: Option<EventKind>,
        what: &str,
    ) -> PyResult<Arc<Subscription>> {
        let py = handler.py();
        if !handler.is_callable() {
            return Err(Error::Type(format!(
                "ReactiveEventBus.{what}: handler must be callable (a function taking the event), got {} {}",
                type_name(handler),
                short_repr(handler)
            ))
            .into());
        }
        warm_failure_logging();
        let aio = aio(py)?;
        let mode = if aio.call_method1("is_coroutine_handler", (handler,))?.is_truthy()? {
            let home_loop = aio.call_method0("running_loop")?;
            Mode::Coroutine { home_loop: (!home_loop.is_none()).then(|| home_loop.unbind()) }
        } else {
            Mode::Sync
        };
        Ok(Arc::new(Subscription {
            handler: handler.clone().unbind(),
            kind,
            mode,
            active: AtomicBool::new(true),
            name: handler_name(handler),
        }))
    }
}

#[pymethods]
impl ReactiveEventBus {
    /// `max_log_size` bounds the in-memory log (None: unbounded). With
    /// `audit=service`, every emitted event, whatever its type, is handed to
    /// `service` (redacted, write-behind) before the stream and the handlers see it.
    /// Python subclasses (the legacy ReactiveEventBus is a plain class) call
    /// `super().__init__(...)` with their arguments: accepted and ignored,
    /// `__new__` has built the object from the same arguments.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    #[new]
    #[pyo3(signature = (max_log_size = LogBound(Some(10_000)), *, audit = None), text_signature = "(max_log_size=10000, *, audit=None)")]
    fn py_new(max_log_size: LogBound, audit: Option<&Bound<'_, PyAny>>) -> Result<Self> {
        let audit = match audit {
            Some(service) if !service.is_none() => {
                let service = service.cast::<AuditService>().map_err(|_| {
                    Error::Type(format!("audit= takes an auditbus.AuditService or None, got {}", type_name(service)))
                })?;
                // A closed or read-only service would make every emit() raise: say so now.
                service.get().check_accepting("ReactiveEventBus(audit=)")?;
                Some(service)
            }
            _ => None,
        };
        let redactors: Vec<Py<Redactor>> = audit.iter().filter_map(|a| a.get().redactor(a.py())).collect();
        let audit = audit.map(|service| service.clone().unbind());
        let LogBound(max_log_size) = max_log_size;
        Ok(Self {
            handlers: RwLock::new(Routes::default()),
            observers: RwLock::new(Arc::from(Vec::new())),
            observed: AtomicBool::new(false),
            log: Mutex::new(VecDeque::with_capacity(max_log_size.unwrap_or(1024).min(1024))),
            max_log_size,
            closed: AtomicBool::new(false),
            handler_errors: AtomicU64::new(0),
            observer_errors: AtomicU64::new(0),
            stream: OnceLock::new(),
            audit,
            redactors: RwLock::new(redactors.into()),
        })
    }

    /// Hands `event` to the audit service (with `audit=`; a refusal raises
    /// before anyone sees it), then pushes it to the stream, the log and its
    /// type's handlers, in that order.
    fn emit(slf: &Bound<'_, Self>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Ok(domain_event) = event.cast::<DomainEvent>() else {
            return Err(Error::Type(format!(
                "ReactiveEventBus.emit() takes an auditbus.DomainEvent, got {} {}",
                type_name(event),
                short_repr(event)
            ))
            .into());
        };
        if this.closed.load(Ordering::Acquire) {
            return Err(closed("emit").into());
        }
        // Before persistence: a refused event is seen by no one.
        let _nesting = Nesting::enter()?;
        let kind = domain_event.get().kind();
        if let Some(audit) = &this.audit {
            // First, before anyone sees the event: a closed service or a full
            // queue past its wait raises here, and the caller learns the
            // event was not accepted, nor seen by an observer it would see
            // again on a retry.
            audit.get().submit_event(py, domain_event.get())?;
        }
        let mut args: Option<Bound<'_, PyTuple>> = None;
        if this.observed.load(Ordering::Acquire) {
            let tuple = args.insert(PyTuple::new(py, [event])?);
            this.push_to_stream(py, event, tuple, kind)?;
        }
        this.append_to_log(py, event);
        let snapshot = this.handlers.read_py_attached(py).get(&kind).cloned();
        if let Some(subscriptions) = snapshot {
            let args = match args {
                Some(args) => args,
                None => PyTuple::new(py, [event])?,
            };
            Self::call_handlers(slf, event, &args, kind, &subscriptions)?;
        }
        Ok(())
    }

    /// Calls `handler(event)` for every event of `event_type`; returns a
    /// callable that unsubscribes this subscription (True the first time).
    /// An `async def` handler runs as a task on the emitting thread's running
    /// loop, else on the loop it was subscribed from; a coroutine a plain
    /// handler returns runs on the emitting thread's running loop. With no
    /// loop, the handler error is logged.
    fn subscribe(
        slf: &Bound<'_, Self>,
        event_type: &Bound<'_, PyAny>,
        handler: &Bound<'_, PyAny>,
    ) -> PyResult<Unsubscribe> {
        let kind = EventKind::from_py("event_type", event_type)?;
        let this = slf.get();
        let sub = this.subscription(handler, Some(kind), "subscribe")?;
        this.add_subscription(slf.py(), &sub)?;
        Ok(Unsubscribe { bus: slf.clone().unbind(), target: Target::Handler(Arc::downgrade(&sub)) })
    }

    /// Calls `handler(event)` for every event of every type, in subscription
    /// order with the per-type handlers; each event reaches it once.
    fn subscribe_all(slf: &Bound<'_, Self>, handler: &Bound<'_, PyAny>) -> PyResult<Unsubscribe> {
        let this = slf.get();
        let sub = this.subscription(handler, None, "subscribe_all")?;
        this.add_subscription(slf.py(), &sub)?;
        Ok(Unsubscribe { bus: slf.clone().unbind(), target: Target::Handler(Arc::downgrade(&sub)) })
    }

    /// Removes the earliest subscription of `handler` (compared with `==`, so a
    /// fresh bound method matches) to `event_type`; False if there is none.
    fn unsubscribe(&self, event_type: &Bound<'_, PyAny>, handler: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = handler.py();
        let kind = EventKind::from_py("event_type", event_type)?;
        loop {
            let snapshot = self.handlers.read_py_attached(py).get(&kind).cloned();
            let Some(list) = snapshot else { return Ok(false) };
            let mut found = None;
            for sub in list.iter() {
                if sub.kind != Some(kind) || !sub.active.load(Ordering::Acquire) {
                    continue;
                }
                let candidate = sub.handler.bind(py);
                if candidate.is(handler) || candidate.eq(handler)? {
                    found = Some(Arc::clone(sub));
                    break;
                }
            }
            let Some(sub) = found else { return Ok(false) };
            if self.remove_subscription(py, &sub) {
                return Ok(true);
            }
            // Another thread removed that one first: look again.
        }
    }

    /// Every emitted event as a `reactivex.Observable` (needs `auditbus[rx]`).
    #[getter]
    fn stream(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let cell = &slf.get().stream;
        if let Some(stream) = cell.get() {
            return Ok(stream.clone_ref(py));
        }
        let created = py.import("auditbus.stream")?.getattr("BusStream")?.call1((slf,))?.unbind();
        // Two threads may race here; both return the one that was stored.
        let _ = cell.set(created);
        cell.get().map(|s| s.clone_ref(py)).ok_or_else(|| Error::Type("stream unavailable".into()).into())
    }

    /// A copy of the recent events, oldest first.
    #[getter]
    fn audit_log<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let entries: Vec<Py<PyAny>> = self.log.lock_py_attached(py).iter().map(|e| e.clone_ref(py)).collect();
        PyList::new(py, entries)
    }

    fn clear_audit_log(&self, py: Python<'_>) {
        let old = std::mem::take(&mut *self.log.lock_py_attached(py));
        drop(old);
    }

    /// Completes the stream, drops every handler and observer; later `emit()`
    /// and `subscribe()` raise `ClosedError`. A second call does nothing.
    fn dispose(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let routes = std::mem::take(&mut *self.handlers.write_py_attached(py));
        for list in routes.values() {
            for sub in list.iter() {
                sub.active.store(false, Ordering::Release);
            }
        }
        drop(routes);
        let observers = {
            let mut guard = self.observers.write_py_attached(py);
            self.observed.store(false, Ordering::Release);
            std::mem::replace(&mut *guard, Arc::from(Vec::new()))
        };
        let mut first_error = None;
        for observer in observers.iter() {
            if !observer.active.swap(false, Ordering::AcqRel) {
                continue;
            }
            if let Err(err) = observer.observer.bind(py).call_method0("on_completed") {
                if err.is_instance_of::<PyException>(py) {
                    self.observer_errors.fetch_add(1, Ordering::Relaxed);
                    let name = handler_name(observer.observer.bind(py));
                    let template = "stream observer %s failed for %s";
                    if let Err(log_err) = self.log_failure(py, template, (&name, "on_completed"), &err, None) {
                        log_err.write_unraisable(py, None);
                    }
                } else if first_error.is_none() {
                    first_error = Some(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// True once `dispose()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Handler exceptions logged and swallowed so far (coroutine handlers included).
    #[getter]
    fn handler_errors(&self) -> u64 {
        self.handler_errors.load(Ordering::Relaxed)
    }

    /// Stream observer exceptions logged and swallowed so far.
    #[getter]
    fn observer_errors(&self) -> u64 {
        self.observer_errors.load(Ordering::Relaxed)
    }

    /// The audit service every emitted event is persisted to, or None.
    #[getter]
    fn audit(&self, py: Python<'_>) -> Option<Py<AuditService>> {
        self.audit.as_ref().map(|a| a.clone_ref(py))
    }

    /// Counts for monitoring: subscriptions, observers, logged events, errors.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let handlers = {
            let routes = self.handlers.read_py_attached(py);
            let specific: usize = routes.values().map(|l| l.iter().filter(|s| s.kind.is_some()).count()).sum();
            let wildcard = routes.values().next().map_or(0, |l| l.iter().filter(|s| s.kind.is_none()).count());
            specific + wildcard
        };
        let observers = self.observers.read_py_attached(py).len();
        let logged = self.log.lock_py_attached(py).len();
        let stats = PyDict::new(py);
        stats.set_item("handlers", handlers)?;
        stats.set_item("observers", observers)?;
        stats.set_item("logged", logged)?;
        stats.set_item("handler_errors", self.handler_errors())?;
        stats.set_item("observer_errors", self.observer_errors())?;
        Ok(stats)
    }

    /// Registers a reactivex observer; `None` when the bus is already disposed
    /// (the caller completes the observer).
    fn _add_observer(slf: &Bound<'_, Self>, observer: &Bound<'_, PyAny>) -> PyResult<Option<Unsubscribe>> {
        let py = slf.py();
        let this = slf.get();
        warm_failure_logging();
        let entry = Arc::new(Observer {
            on_next: observer.getattr("on_next")?.unbind(),
            observer: observer.clone().unbind(),
            active: AtomicBool::new(true),
        });
        let previous = {
            let mut observers = this.observers.write_py_attached(py);
            if this.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            let mut list = observers.to_vec();
            list.push(Arc::clone(&entry));
            this.observed.store(true, Ordering::Release);
            std::mem::replace(&mut *observers, list.into())
        };
        drop(previous);
        Ok(Some(Unsubscribe { bus: slf.clone().unbind(), target: Target::Observer(Arc::downgrade(&entry)) }))
    }

    /// Logs and counts a coroutine handler's exception (called from `auditbus._aio`).
    fn _handler_failed(
        &self,
        py: Python<'_>,
        event: &Bound<'_, DomainEvent>,
        handler: &Bound<'_, PyAny>,
        error: &Bound<'_, PyBaseException>,
    ) {
        self.handler_errors.fetch_add(1, Ordering::Relaxed);
        let err = PyErr::from_value(error.clone().into_any());
        let args = (handler_name(handler), event.get().kind().value());
        if let Err(log_err) =
            self.log_failure(py, "event handler %s failed for %s", (&args.0, args.1), &err, Some(event.as_any()))
        {
            log_err.write_unraisable(py, None);
        }
    }

    /// Masks failure log lines with `redactor` too (called by
    /// `AuditEventSubscriber` for its service's custom redactor).
    fn _mask_failures_with(&self, py: Python<'_>, redactor: &Bound<'_, Redactor>) {
        let mut guard = self.redactors.write_py_attached(py);
        if !guard.iter().any(|r| r.is(redactor)) {
            let mut list: Vec<Py<Redactor>> = guard.iter().map(|r| r.clone_ref(py)).collect();
            list.push(redactor.clone().unbind());
            let previous = std::mem::replace(&mut *guard, list.into());
            drop(guard);
            drop(previous);
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.dispose(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.max_log_size {
            Some(n) => format!("ReactiveEventBus(max_log_size={n})"),
            None => "ReactiveEventBus(max_log_size=None)".to_owned(),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> std::result::Result<(), PyTraverseError> {
        // try_*: the collector must never block; a skipped edge only keeps
        // objects alive one more collection.
        if let Some(routes) = self.handlers.try_read() {
            // A subscribe_all subscription sits in every list but owns one
            // reference to its handler: report it once.
            let mut seen = HashSet::new();
            for sub in routes.values().flat_map(|list| list.iter()) {
                if seen.insert(Arc::as_ptr(sub)) {
                    sub.traverse(&visit)?;
                }
            }
        }
        if let Some(observers) = self.observers.try_read() {
            for observer in observers.iter() {
                visit.call(&observer.on_next)?;
                visit.call(&observer.observer)?;
            }
        }
        if let Some(log) = self.log.try_lock() {
            for entry in log.iter() {
                visit.call(entry)?;
            }
        }
        visit.call(self.stream.get())?;
        visit.call(&self.audit)?;
        Ok(())
    }

    fn __clear__(&self) {
        let routes = self.handlers.try_write().map(|mut r| std::mem::take(&mut *r));
        let observers = self.observers.try_write().map(|mut o| std::mem::replace(&mut *o, Arc::from(Vec::new())));
        let log = self.log.try_lock().map(|mut l| std::mem::take(&mut *l));
        self.observed.store(false, Ordering::Release);
        drop((routes, observers, log));
    }
}

impl Subscription {
    fn traverse(&self, visit: &PyVisit<'_>) -> std::result::Result<(), PyTraverseError> {
        visit.call(&self.handler)?;
        if let Mode::Coroutine { home_loop } = &self.mode {
            visit.call(home_loop)?;
        }
        Ok(())
    }
}

/// Weak: the bus owns subscriptions (and reports them to the garbage
/// collector); a token only finds its own while it is still registered.
enum Target {
    Handler(Weak<Subscription>),
    Observer(Weak<Observer>),
}

/// Returned by `subscribe()`: calling it (or `dispose()`) removes exactly that
/// subscription. True the first time, False after; never raises.
#[pyclass(frozen, module = "auditbus", name = "Unsubscribe")]
pub struct Unsubscribe {
    bus: Py<ReactiveEventBus>,
    target: Target,
}

#[pymethods]
impl Unsubscribe {
    fn __call__(&self, py: Python<'_>) -> bool {
        let bus = self.bus.get();
        match &self.target {
            Target::Handler(sub) => sub.upgrade().is_some_and(|sub| bus.remove_subscription(py, &sub)),
            Target::Observer(observer) => observer.upgrade().is_some_and(|o| bus.remove_observer(py, &o)),
        }
    }

    /// The same as calling it, for code that expects an Rx `Disposable`.
    fn dispose(&self, py: Python<'_>) {
        self.__call__(py);
    }

    /// True until unsubscribed (or the bus disposed).
    #[getter]
    fn active(&self) -> bool {
        match &self.target {
            Target::Handler(sub) => sub.upgrade().is_some_and(|s| s.active.load(Ordering::Acquire)),
            Target::Observer(observer) => observer.upgrade().is_some_and(|o| o.active.load(Ordering::Acquire)),
        }
    }

    fn __repr__(&self) -> String {
        match &self.target {
            Target::Handler(sub) => match sub.upgrade() {
                Some(sub) => {
                    let kind = sub.kind.map_or("*", EventKind::value);
                    format!(
                        "<Unsubscribe {} from {kind} active={}>",
                        sub.name,
                        py_bool(sub.active.load(Ordering::Acquire))
                    )
                }
                None => "<Unsubscribe active=False>".to_owned(),
            },
            Target::Observer(_) => format!("<Unsubscribe stream observer active={}>", py_bool(self.active())),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> std::result::Result<(), PyTraverseError> {
        visit.call(&self.bus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn every_kind_is_routable_and_hashes_apart() {
        let kinds: Vec<EventKind> = all_kinds().collect();
        assert_eq!(kinds.len(), EVENT_TYPES.len());
        let build = BuildHasherDefault::<KindHasher>::default();
        let hashes: HashSet<u64> = kinds.iter().map(|kind| build.hash_one(kind)).collect();
        assert_eq!(hashes.len(), kinds.len());
        // the top 7 bits pick hashbrown's control byte: they must differ too
        let tops: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(tops.len() > kinds.len() / 2);
    }

    #[test]
    fn the_nesting_is_counted_and_its_stack_base_kept_until_the_outermost_emit_ends() {
        let outer = Nesting::enter().unwrap();
        assert_eq!(NESTING.with(Cell::get), (1, None));
        let inner = Nesting::enter().unwrap();
        let (depth, base) = NESTING.with(Cell::get);
        assert_eq!(depth, 2);
        assert!(base.is_some());
        drop(inner);
        assert_eq!(NESTING.with(Cell::get), (1, base));
        drop(outer);
        assert_eq!(NESTING.with(Cell::get), (0, None));
    }

    /// Nests "emits" of 4 KiB frames until one is refused: in a 1 MiB thread,
    /// that must come before the stack overflows, with the reserve still left.
    #[test]
    fn a_nested_emit_is_refused_while_the_reserve_is_left() {
        fn nest(depth: usize) -> (usize, usize) {
            let frame = std::hint::black_box([0u8; 4096]);
            match Nesting::enter() {
                Err(_) => (depth, stacker::remaining_stack().unwrap_or(0)),
                Ok(nesting) => {
                    let found = nest(depth + 1);
                    drop(nesting);
                    (found.0 + usize::from(frame[0]), found.1)
                }
            }
        }
        let outcome = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let _outer = Nesting::enter().unwrap();
                nest(0)
            })
            .unwrap()
            .join()
            .unwrap();
        let (depth, left) = outcome;
        assert!(depth > 20, "refused after {depth} levels");
        assert!(left >= STACK_RESERVE / 2, "{left} bytes left when refused");
    }

    #[test]
    fn a_wildcard_subscription_is_routed_to_every_kind() {
        Python::attach(|py| {
            let sub = Arc::new(Subscription {
                handler: py.None(),
                kind: None,
                mode: Mode::Sync,
                active: AtomicBool::new(true),
                name: "h".into(),
            });
            assert_eq!(kinds_of(&sub).len(), EVENT_TYPES.len());
            let bus = ReactiveEventBus::py_new(LogBound(Some(2)), None).unwrap();
            bus.add_subscription(py, &sub).unwrap();
            assert_eq!(bus.handlers.read().len(), EVENT_TYPES.len());
            assert!(bus.remove_subscription(py, &sub));
            assert!(bus.handlers.read().is_empty());
            assert!(!bus.remove_subscription(py, &sub));
        });
    }
}

//! Benchmark-only reference, compiled only with the cargo feature `bench`
//! (off by default, so the shipped module carries none of it): the same rows
//! inserted straight into the same schema, indexes and `synchronous` with
//! rusqlite, in batched `BEGIN IMMEDIATE … COMMIT` transactions — no queue,
//! no redaction, no chain. `benchmarks/bench_audit.py` measures the audit
//! writer against it as "the limit on this disk".

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use pyo3::prelude::*;
use rusqlite::{Connection, TransactionBehavior};

use crate::audit::record::new_event_id;
use crate::audit::schema::{self, Durability};
use crate::errors::{Error, Result};
use crate::timestamp;

/// A placeholder of a chain hash's size, so rows weigh the same.
const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const INSERT: &str = "INSERT INTO audit_log (timestamp, event_type, plan_id, user_identity, details, event_id, \
                      actor_name, project_name, session_id, outcome, source, recorded_at, prev_hash, chain_hash) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, NULL, NULL, ?7, ?8, ?9, ?9)";

/// `(event_type, plan_id, user_identity, details_json)`, extracted once.
type Row = (String, Option<String>, Option<String>, String);

/// `_BenchRawInsert(path, rows, durability="full")`; `insert(batch)` writes every row once more.
/// Checkpoints follow the audit writer's policy: not inside COMMIT (SQLite's
/// automatic one is replaced by a WAL hook) but after it, at the same
/// threshold, when the benchmark calls `checkpoint()` between timed calls.
#[pyclass(frozen, module = "auditbus._native", name = "_BenchRawInsert")]
pub struct BenchRawInsert {
    conn: Mutex<Connection>,
    rows: Vec<Row>,
    wal_frames: Arc<AtomicI64>,
}

#[pymethods]
impl BenchRawInsert {
    /// `"release"` or `"debug"`: `benchmarks/run.py` refuses to time a debug build.
    #[classattr]
    fn profile() -> &'static str {
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    }

    /// The bundled SQLite's version, printed beside the one Python's `sqlite3` (the legacy side) uses.
    #[classattr]
    fn sqlite_version() -> &'static str {
        rusqlite::version()
    }

    #[new]
    #[pyo3(signature = (path, rows, durability = "full"))]
    fn new(py: Python<'_>, path: String, rows: Vec<Row>, durability: &str) -> Result<Self> {
        let durability = Durability::parse(durability)?;
        let mut conn = py.detach(|| schema::open_writer(&path, Duration::from_secs(5), durability))?;
        let wal_frames = Arc::new(AtomicI64::new(0));
        let seen = wal_frames.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: std::ffi::c_int| {
            seen.store(i64::from(frames), Ordering::Relaxed);
            Ok(())
        }))?;
        Ok(Self { conn: Mutex::new(conn), rows, wal_frames })
    }

    /// Inserts all rows, `batch` per transaction, with the GIL released.
    fn insert(&self, py: Python<'_>, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(Error::invalid("batch", "expected an int >= 1"));
        }
        py.detach(|| {
            let mut conn = self.conn.lock();
            let source = r#"{"host":"bench","pid":0,"app":"raw"}"#;
            for chunk in self.rows.chunks(batch) {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let now = timestamp::isoformat(&Utc::now());
                    let mut stmt = tx.prepare_cached(INSERT)?;
                    for (event_type, plan_id, user_identity, details) in chunk {
                        stmt.execute(rusqlite::params![
                            now,
                            event_type,
                            plan_id,
                            user_identity,
                            details,
                            new_event_id(),
                            source,
                            now,
                            HASH
                        ])?;
                    }
                }
                tx.commit()?;
            }
            Ok(())
        })
    }

    /// Copies the WAL into the database once it holds as many frames as the
    /// writer's threshold (as the writer does after answering a commit).
    fn checkpoint(&self, py: Python<'_>) -> Result<()> {
        py.detach(|| {
            if self.wal_frames.swap(0, Ordering::Relaxed) >= crate::audit::writer::CHECKPOINT_FRAMES {
                self.conn.lock().wal_checkpoint_v2(Some("main"), rusqlite::wal::CheckpointMode::PASSIVE)?;
            }
            Ok(())
        })
    }
}

//! The durable audit trail: SQLite `audit_log`, written behind the caller by
//! one thread per database, hash-chained, redacted before it is queued.

#[cfg(feature = "bench")]
pub mod bench;
pub mod chain;
pub mod entry;
pub mod query;
pub mod record;
pub mod schema;
pub mod service;
pub mod writer;

pub use entry::{_restore_audit_entry, AuditEntry, VerifyReport};
pub use service::{AuditEntryIterator, AuditService};

//! auditbus native core. This file only declares modules and registers the
//! Python-visible names of `auditbus._native`; each concept lives in its own
//! module.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod bus;
pub mod errors;
pub mod event;
pub mod identity;
pub mod redact;
pub mod timestamp;
pub mod values;

#[pyo3::pymodule(gil_used = false)]
mod _native {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::audit::_restore_audit_entry;
    #[cfg(feature = "bench")]
    #[pymodule_export]
    use super::audit::bench::BenchRawInsert;
    #[pymodule_export]
    use super::audit::{AuditEntry, AuditEntryIterator, AuditService, VerifyReport};
    #[pymodule_export]
    use super::bus::{ReactiveEventBus, Unsubscribe};
    #[pymodule_export]
    use super::errors::{AuditError, ClosedError, QueueFullError, ValidationError};
    #[pymodule_export]
    use super::event::{_restore_event, DomainEvent};
    #[pymodule_export]
    use super::identity::_identity_var;
    #[pymodule_export]
    use super::redact::{redact, redact_dict, Redactor};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("EVENT_TYPE_VALUES", super::event::EVENT_TYPES.to_vec())?;
        m.add("REDACTED", super::redact::REDACTED)?;
        super::audit::service::register_hooks(m)
    }
}

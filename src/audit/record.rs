//! `AuditRecord`: one row as it leaves the caller's thread — owned, Python-free
//! and already redacted, so the writer thread and the disk never see a raw
//! secret and never need the GIL.

use chrono::{DateTime, SubsecRound, Utc};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::{Map, Value};

use crate::errors::Result;
use crate::event::DomainEvent;
use crate::redact::{self, Rules};

/// The service's own lifecycle rows. Their types are not `EventType`
/// values, so they never collide with domain events; `record()` refuses them.
pub mod lifecycle {
    pub const STARTED: &str = "audit_started";
    pub const STOPPED: &str = "audit_stopped";
    pub const FAILURE: &str = "audit_failure";
    pub const PURGED: &str = "audit_purged";
    pub const ALL: [&str; 4] = [STARTED, STOPPED, FAILURE, PURGED];
}

/// One audit row, minus the columns the writer fills in (`id`, `source`,
/// `recorded_at`, the hashes).
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub event_id: String,
    /// The event's own time; formatted on the writer thread, off the emitter's path.
    pub timestamp: DateTime<Utc>,
    pub event_type: &'static str,
    pub plan_id: Option<String>,
    pub user_identity: Option<String>,
    pub actor_name: Option<String>,
    pub project_name: Option<String>,
    pub session_id: Option<String>,
    pub outcome: Option<String>,
    /// Redacted details as JSON object text.
    pub details: String,
    /// The record's share of the bytes handed to the writer, given back when
    /// the record is dropped (see [`Held`]).
    pub held: Share,
}

/// A record's [`Held`] share, if it was handed to the writer. A clone holds
/// none: only the record handed over gives its bytes back.
#[derive(Debug, Default)]
pub struct Share(pub Option<Held>);

impl Clone for Share {
    fn clone(&self) -> Self {
        Self(None)
    }
}

/// Bytes of row text handed to the writer and not yet written, refused or
/// given up: what the queue holds in memory besides its slots.
#[derive(Debug, Default)]
pub struct HeldBytes {
    pub bytes: parking_lot::Mutex<usize>,
    /// Notified whenever bytes are given back.
    pub freed: parking_lot::Condvar,
}

/// A record's share of [`HeldBytes`]. Given back on drop, so every way a
/// record leaves the writer (committed, a duplicate, refused, lost at exit)
/// makes room.
#[derive(Debug)]
pub struct Held {
    pub of: std::sync::Arc<HeldBytes>,
    pub bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.of.bytes.lock();
        *held = held.saturating_sub(self.bytes);
        drop(held);
        self.of.freed.notify_all();
    }
}

/// The text fields of a row besides the event type.
#[derive(Debug, Default, Clone)]
pub struct Who {
    pub plan_id: Option<String>,
    pub user_identity: Option<String>,
    pub actor_name: Option<String>,
    pub project_name: Option<String>,
    pub session_id: Option<String>,
}

impl Who {
    /// The fields with value-shaped secrets masked, as in the details: they
    /// are stored and indexed too (a bearer token passed as `session_id` or
    /// a credentialed URL as `plan_id` must not reach the disk either).
    fn redacted(self, rules: &Rules) -> Self {
        let clean = |field: Option<String>| field.map(|text| rules.redact_text(&text, 0).unwrap_or(text));
        Self {
            plan_id: clean(self.plan_id),
            user_identity: clean(self.user_identity),
            actor_name: clean(self.actor_name),
            project_name: clean(self.project_name),
            session_id: clean(self.session_id),
        }
    }
}

impl AuditRecord {
    /// The text columns with their sizes in bytes.
    pub fn text_sizes(&self) -> [(&'static str, usize); 8] {
        let len = |field: &Option<String>| field.as_ref().map_or(0, String::len);
        [
            ("details", self.details.len()),
            ("plan_id", len(&self.plan_id)),
            ("user_identity", len(&self.user_identity)),
            ("actor_name", len(&self.actor_name)),
            ("project_name", len(&self.project_name)),
            ("session_id", len(&self.session_id)),
            ("outcome", len(&self.outcome)),
            ("event_id", self.event_id.len()),
        ]
    }

    /// Builds a record from a JSON object built in Rust (the service's own
    /// rows); `details` is redacted here.
    pub fn new(
        event_type: &'static str,
        at: DateTime<Utc>,
        event_id: String,
        who: Who,
        details: Map<String, Value>,
        rules: &Rules,
    ) -> Self {
        let explicit = match details.get("outcome") {
            Some(Value::String(text)) => Some(text.clone()),
            _ => None,
        };
        let mut value = Value::Object(details);
        rules.redact_json(&mut value);
        let outcome = outcome_of(event_type, explicit, rules);
        Self::with_details(event_type, at, event_id, who, value.to_string(), outcome, rules)
    }

    fn with_details(
        event_type: &'static str,
        at: DateTime<Utc>,
        event_id: String,
        who: Who,
        details: String,
        outcome: Option<String>,
        rules: &Rules,
    ) -> Self {
        let who = who.redacted(rules);
        // A caller-given id is stored and logged like the other text columns;
        // the ids auditbus makes (UUIDs) hold no secret and skip the scan.
        let event_id = if is_uuid(&event_id) { event_id } else { rules.redact_text(&event_id, 0).unwrap_or(event_id) };
        Self {
            event_id,
            timestamp: at.trunc_subsecs(6),
            event_type,
            plan_id: who.plan_id,
            user_identity: who.user_identity,
            actor_name: who.actor_name,
            project_name: who.project_name,
            session_id: who.session_id,
            outcome,
            details,
            held: Share::default(),
        }
    }

    /// The record for a domain event: its own timestamp and `event_id`, and,
    /// as the legacy subscriber did, `actor_name`/`project_name`/`session_id`
    /// copied into `details` when absent there (so a legacy reader sees them).
    /// The details go from Python objects to redacted JSON text in one walk.
    pub fn from_event(py: Python<'_>, event: &DomainEvent, rules: &Rules) -> Result<Self> {
        let details = event.details_dict(py);
        let who = Who {
            plan_id: event.text(py, "plan_id"),
            user_identity: event.text(py, "user_identity"),
            actor_name: event.text(py, "actor_name"),
            project_name: event.text(py, "project_name"),
            session_id: event.text(py, "session_id"),
        };
        let mut extra = Vec::new();
        for (name, value) in [
            (intern!(py, "actor_name"), &who.actor_name),
            (intern!(py, "project_name"), &who.project_name),
            (intern!(py, "session_id"), &who.session_id),
        ] {
            if let Some(value) = value {
                if !details.contains(name)? {
                    extra.push((name.clone().into_any(), PyString::new(py, value).into_any()));
                }
            }
        }
        Self::from_dict(event.kind().value(), event.timestamp_utc(), event.id().to_owned(), who, details, &extra, rules)
    }

    /// A record whose `details` (plus `extra` entries) go from Python objects
    /// to redacted JSON text in one walk.
    pub fn from_dict<'py>(
        event_type: &'static str,
        at: DateTime<Utc>,
        event_id: String,
        who: Who,
        details: &Bound<'py, PyDict>,
        extra: &redact::walker::Extra<'py>,
        rules: &Rules,
    ) -> Result<Self> {
        let explicit = match details.get_item(intern!(details.py(), "outcome"))? {
            Some(outcome) => match crate::values::to_json(&outcome) {
                Value::String(text) => Some(text),
                _ => None,
            },
            None => None,
        };
        let text = redact::text::details_json(rules, details, extra)?;
        let outcome = outcome_of(event_type, explicit, rules);
        Ok(Self::with_details(event_type, at, event_id, who, text, outcome, rules))
    }

    /// A lifecycle row of the service itself, stamped now.
    pub fn lifecycle(event_type: &'static str, details: Map<String, Value>) -> Self {
        Self::lifecycle_by(event_type, details, None)
    }

    /// A lifecycle row written by a caller's call (opening, `close()`,
    /// `purge()`): `user` is the identity in force there, who acted.
    pub fn lifecycle_by(event_type: &'static str, details: Map<String, Value>, user: Option<String>) -> Self {
        let who = Who { user_identity: user, ..Who::default() };
        Self::new(event_type, Utc::now(), new_event_id(), who, details, &Rules::shared_default())
    }
}

/// Whether `text` is a hyphenated UUID (36 characters of hex digits and dashes).
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(
            |(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            },
        )
}

pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Success or failure, as AU-3(e) / PCI 10.2.2 ask: an explicit
/// `details["outcome"]` string wins; otherwise the event type decides where
/// it says it (`auth_failure`, `plan_failed` fail; `auth_success`,
/// `plan_applied`, `step_completed`, `correction_applied` succeed); else NULL.
/// The explicit text is redacted as it is in the details: it is stored too.
pub fn outcome_of(event_type: &str, explicit: Option<String>, rules: &Rules) -> Option<String> {
    if let Some(text) = explicit {
        return Some(rules.redact_text(&text, 0).unwrap_or(text));
    }
    match event_type {
        "auth_failure" | "plan_failed" => Some("failure".to_owned()),
        "auth_success" | "plan_applied" | "step_completed" | "correction_applied" => Some("success".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_redacted_before_they_are_text() {
        let mut details = Map::new();
        details.insert("password".into(), Value::String("hunter2".into()));
        let record = AuditRecord::new(
            "auth_failure",
            Utc::now(),
            new_event_id(),
            Who::default(),
            details,
            &Rules::shared_default(),
        );
        assert!(!record.details.contains("hunter2"));
        assert_eq!(record.outcome.as_deref(), Some("failure"));
    }

    #[test]
    fn explicit_outcome_wins() {
        let rules = Rules::default();
        assert_eq!(outcome_of("auth_success", Some("denied".into()), &rules).as_deref(), Some("denied"));
        assert_eq!(outcome_of("auth_success", None, &rules).as_deref(), Some("success"));
        assert_eq!(outcome_of("config_changed", None, &rules), None);
        let leaked = outcome_of("auth_failure", Some("password=hunter2".into()), &rules).unwrap_or_default();
        assert!(!leaked.contains("hunter2"), "{leaked}");
    }
}

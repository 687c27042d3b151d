//! `AuditRecord`: one row as it leaves the caller's thread — owned, Python-free
//! and already redacted, so the writer thread and the disk never see a raw
//! secret and never need the GIL.

use chrono::{DateTime, SubsecRound, Utc};
use pyo3::prelude::*;
use serde_json::{Map, Value};

use crate::event::DomainEvent;
use crate::redact::Rules;
use crate::timestamp;

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
    pub timestamp: String,
    pub event_type: &'static str,
    pub plan_id: Option<String>,
    pub user_identity: Option<String>,
    pub actor_name: Option<String>,
    pub project_name: Option<String>,
    pub session_id: Option<String>,
    pub outcome: Option<String>,
    /// Redacted details as JSON object text.
    pub details: String,
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

impl AuditRecord {
    /// Builds a record from parts; `details` is redacted here.
    pub fn new(
        event_type: &'static str,
        at: DateTime<Utc>,
        event_id: String,
        who: Who,
        mut details: Map<String, Value>,
        rules: &Rules,
    ) -> Self {
        let outcome = outcome_of(event_type, &details);
        let mut value = Value::Object(std::mem::take(&mut details));
        rules.redact_json(&mut value);
        Self {
            event_id,
            timestamp: timestamp::isoformat(&at.trunc_subsecs(6)),
            event_type,
            plan_id: who.plan_id,
            user_identity: who.user_identity,
            actor_name: who.actor_name,
            project_name: who.project_name,
            session_id: who.session_id,
            outcome,
            details: value.to_string(),
        }
    }

    /// The record for a domain event: its own timestamp and `event_id`, and,
    /// as the legacy subscriber did, `actor_name`/`project_name`/`session_id`
    /// copied into `details` when absent there (so a legacy reader sees them).
    pub fn from_event(py: Python<'_>, event: &DomainEvent, rules: &Rules) -> Self {
        let mut details = crate::values::dict_to_json(event.details_dict(py));
        let who = Who {
            plan_id: event.text(py, "plan_id"),
            user_identity: event.text(py, "user_identity"),
            actor_name: event.text(py, "actor_name"),
            project_name: event.text(py, "project_name"),
            session_id: event.text(py, "session_id"),
        };
        for (name, value) in
            [("actor_name", &who.actor_name), ("project_name", &who.project_name), ("session_id", &who.session_id)]
        {
            if let Some(value) = value {
                details.entry(name).or_insert_with(|| Value::String(value.clone()));
            }
        }
        Self::new(event.kind().value(), event.timestamp_utc(), event.id().to_owned(), who, details, rules)
    }

    /// A lifecycle row of the service itself, stamped now.
    pub fn lifecycle(event_type: &'static str, details: Map<String, Value>) -> Self {
        Self::new(event_type, Utc::now(), new_event_id(), Who::default(), details, &Rules::shared_default())
    }
}

pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Success or failure, as AU-3(e) / PCI 10.2.2 ask: an explicit
/// `details["outcome"]` string wins; otherwise the event type decides where
/// it says it (`auth_failure`, `plan_failed` fail; `auth_success`,
/// `plan_applied`, `step_completed`, `correction_applied` succeed); else NULL.
pub fn outcome_of(event_type: &str, details: &Map<String, Value>) -> Option<String> {
    if let Some(Value::String(text)) = details.get("outcome") {
        return Some(text.clone());
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
        let mut details = Map::new();
        details.insert("outcome".into(), Value::String("denied".into()));
        assert_eq!(outcome_of("auth_success", &details).as_deref(), Some("denied"));
        assert_eq!(outcome_of("config_changed", &Map::new()), None);
    }
}

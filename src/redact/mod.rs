//! Secret redaction. Interface placeholder: the full engine (key rules,
//! sibling rule, value patterns) replaces the body of [`Rules`]; the
//! signatures below are what the audit writer and the bindings use.

use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use serde_json::Value;

/// The fixed-length mask that replaces a secret.
pub const REDACTED: &str = "***REDACTED***";

/// A redaction rule set, Python-free so that it can be fuzzed and shared
/// with the writer thread.
#[derive(Debug, Default)]
pub struct Rules {}

impl Rules {
    /// The default, best-practice rule set, shared.
    pub fn shared_default() -> Arc<Rules> {
        static DEFAULT: OnceLock<Arc<Rules>> = OnceLock::new();
        DEFAULT.get_or_init(|| Arc::new(Rules::default())).clone()
    }

    /// Masks every secret in `value`, in place.
    pub fn redact_json(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    let lowered = key.to_lowercase();
                    if [
                        "password",
                        "secret",
                        "token",
                        "api_key",
                        "apikey",
                        "authorization",
                        "credential",
                        "private_key",
                        "passwd",
                    ]
                    .iter()
                    .any(|p| lowered.contains(p))
                    {
                        *item = Value::String(REDACTED.to_owned());
                    } else {
                        self.redact_json(item);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_json(i)),
            _ => {}
        }
    }
}

/// `auditbus.Redactor`: a configured rule set.
#[pyclass(frozen, module = "auditbus", name = "Redactor")]
pub struct Redactor {
    rules: Arc<Rules>,
}

impl Redactor {
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.clone()
    }
}

#[pymethods]
impl Redactor {
    #[new]
    fn py_new() -> Self {
        Self { rules: Rules::shared_default() }
    }
}

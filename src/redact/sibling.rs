//! Secrets named by a sibling: the record shapes no key scrubber catches.
//!
//! `config_changed` details carry the secret's *name* in a value:
//! `{"key": "llm.api_key", "old_value": "sk-...", "new_value": "sk-..."}`;
//! Kubernetes env lists and HAR headers do the same
//! (`{"name": "Authorization", "value": "Bearer ..."}`), and header or env
//! lists come as `[name, value]` pairs. Both walkers use these helpers, so
//! the Python and JSON paths agree.

use super::keys::KeyInfo;
use super::Rules;

/// Collects, while one mapping is walked, whether a name field names a
/// secret and which entries carry the value. `K` is the walker's key type.
#[derive(Debug)]
pub struct Record<K> {
    secret_name: bool,
    value_keys: Vec<K>,
}

impl<K> Default for Record<K> {
    fn default() -> Self {
        Self { secret_name: false, value_keys: Vec::new() }
    }
}

impl<K> Record<K> {
    /// Notes one entry: `name_text` is the entry's value when it is text.
    pub fn note(&mut self, rules: &Rules, info: KeyInfo, key: impl FnOnce() -> K, name_text: Option<&str>) {
        if info.name_field && !self.secret_name {
            if let Some(name) = name_text {
                self.secret_name = rules.key_is_secret(name);
            }
        }
        if info.value_field {
            self.value_keys.push(key());
        }
    }

    /// The entries to mask: those carrying the value, when the record names a secret.
    pub fn finish(self) -> Vec<K> {
        if self.secret_name {
            self.value_keys
        } else {
            Vec::new()
        }
    }
}

/// Whether a two-element `[name, value]` item has a secret name.
pub fn pair_is_secret(rules: &Rules, name: &str) -> bool {
    rules.key_is_secret(name)
}

/// Whether an argument-list item is a flag with a secret name (`--password`,
/// `-storepass`, `--api-key`): the item after it is its value, as in the
/// text shape `--password pw`. An item that does not start with `-` costs
/// one byte's check.
pub fn flag_is_secret(rules: &Rules, item: &str) -> bool {
    let Some(name) = item.strip_prefix("--").or_else(|| item.strip_prefix('-')) else { return false };
    let b = name.as_bytes();
    // The text shape's flag name: a letter or digit, then word characters, `.` and `-`.
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && rules.key_is_secret(name)
}

/// Whether the item after a secret flag is its value: not another flag,
/// and not a placeholder or a null word (see the text shape's values).
pub fn flag_value_is_secret(value: &str) -> bool {
    !value.starts_with('-') && !super::patterns::keep_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::keys::Normalized;

    fn record(entries: &[(&str, &str)]) -> Vec<String> {
        let rules = Rules::default();
        let mut n = Normalized::default();
        let mut rec = Record::default();
        for (k, v) in entries {
            let info = rules.classify(k, &mut n);
            rec.note(&rules, info, || (*k).to_owned(), Some(v));
        }
        rec.finish()
    }

    #[test]
    fn a_secret_name_masks_every_value_field() {
        assert_eq!(
            record(&[("key", "llm.api_key"), ("old_value", "a"), ("new_value", "b")]),
            ["old_value", "new_value"]
        );
        assert_eq!(record(&[("old", "a"), ("field", "smtp_password"), ("new", "b")]), ["old", "new"]);
        assert_eq!(record(&[("name", "Authorization"), ("value", "Bearer x")]), ["value"]);
        assert_eq!(record(&[("name", "DB_PASSWORD"), ("value", "x")]), ["value"]);
        assert_eq!(record(&[("ParameterKey", "DBPassword"), ("ParameterValue", "x")]), ["ParameterValue"]);
        assert_eq!(record(&[("ParameterName", "master_password"), ("ParameterValue", "x")]), ["ParameterValue"]);
        assert_eq!(
            record(&[
                ("Namespace", "aws:elasticbeanstalk:application:environment"),
                ("OptionName", "API_TOKEN"),
                ("Value", "x")
            ]),
            ["Value"]
        );
    }

    #[test]
    fn a_plain_name_masks_nothing() {
        assert!(record(&[("key", "llm.max_tokens"), ("old_value", "1"), ("new_value", "2")]).is_empty());
        assert!(record(&[("field", "retries"), ("old", "1"), ("new", "2")]).is_empty());
        assert!(record(&[("value", "x")]).is_empty());
        assert!(record(&[("ParameterKey", "Region"), ("ParameterValue", "eu-west-1")]).is_empty());
    }

    #[test]
    fn argument_flags_are_judged_by_their_name() {
        let rules = Rules::default();
        for flag in ["--password", "-password", "--db-password", "--api-key", "--client_secret", "-storepass"] {
            assert!(flag_is_secret(&rules, flag), "{flag}");
        }
        for item in [
            "password",
            "--password-file",
            "--password-stdin",
            "--max-tokens",
            "--verbose",
            "--",
            "-",
            "--password=x",
            "---password",
        ] {
            assert!(!flag_is_secret(&rules, item), "{item}");
        }
        assert!(flag_value_is_secret("hunter2"));
        for value in ["--verbose", "", "$DB_PASSWORD", "${DB_PASSWORD}", "env:DB_PASSWORD"] {
            assert!(!flag_value_is_secret(value), "{value}");
        }
    }

    #[test]
    fn pairs_are_judged_by_their_name() {
        let rules = Rules::default();
        assert!(pair_is_secret(&rules, "Authorization"));
        assert!(pair_is_secret(&rules, "X-Api-Key"));
        assert!(!pair_is_secret(&rules, "Content-Type"));
    }
}

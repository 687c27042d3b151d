//! The JSON walker (the audit path, after `values::to_json`) and the text
//! entry point shared with the Python walker.

use serde_json::{Map, Value};

use super::sibling::{self, Record};
use super::{keys, patterns, Rules};
use crate::values::{DEPTH_MARKER, MAX_DEPTH};

/// JSON documents inside strings are parsed up to this size; larger ones
/// are scanned as text (their `"key": "value"` pairs still match).
pub const MAX_JSON_IN_STRING: usize = 4 << 20;

/// A JSON document none of whose objects holds a key twice (the parse fails
/// on one).
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value whose objects hold each key once")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("the key {key:?} twice")));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

impl Rules {
    /// Masks every secret in `value`, in place.
    pub fn redact_json(&self, value: &mut Value) {
        self.json(value, 0);
    }

    /// The redacted form of a text value, or `None` when it holds no secret.
    /// JSON inside the text is parsed and walked; otherwise value shapes are
    /// scanned. `depth` is the text's nesting depth, so JSON in JSON in a
    /// string stays bounded.
    pub fn redact_text(&self, text: &str, depth: usize) -> Option<String> {
        // The shortest secret-bearing text is `k=v`, a one-character key
        // named secret by a user rule; shorter text cannot hold one.
        if text.len() < 3 {
            return None;
        }
        let head = text.trim_start().as_bytes().first().copied();
        if matches!(head, Some(b'{' | b'[')) && text.len() <= MAX_JSON_IN_STRING && depth < MAX_DEPTH {
            // A key held twice keeps one value once parsed: the other, secret or not, would stay
            // in the text unseen. Such a document is scanned as text, as any other.
            if let Ok(Unique(mut doc)) = serde_json::from_str::<Unique>(text) {
                if !self.json(&mut doc, depth + 1) {
                    return None;
                }
                // Serialising a `Value` cannot fail; if it ever did, mask it all.
                return Some(serde_json::to_string(&doc).unwrap_or_else(|_| self.mask().to_owned()));
            }
        }
        if !self.patterns() {
            return None;
        }
        self.scan_text(text)
    }

    /// Value shapes only (no JSON parsing): the masked text, or `None`.
    pub fn scan_text(&self, text: &str) -> Option<String> {
        self.scan_text_in(text, false)
    }

    /// [`Rules::scan_text`]; `nested` inside the scan of a key's own text
    /// (see [`Rules::pair_info`]).
    pub fn scan_text_in(&self, text: &str, nested: bool) -> Option<String> {
        let mut spans = Vec::new();
        let mut key_info = |k: &str| self.pair_info(k, nested);
        patterns::find_spans(text, &mut key_info, &mut spans);
        patterns::apply(text, &mut spans, self.mask())
    }

    /// Replaces a value under a secret name by the mask. `null` and booleans
    /// stay (`"password_set": true` tells an auditor something and discloses nothing).
    fn mask_json(&self, value: &mut Value) -> bool {
        match value {
            Value::Null | Value::Bool(_) => false,
            Value::String(s) if s == self.mask() => false,
            _ => {
                *value = Value::String(self.mask().to_owned());
                true
            }
        }
    }

    /// Walks one value; returns whether anything changed.
    fn json(&self, value: &mut Value, depth: usize) -> bool {
        match value {
            Value::Object(map) => {
                if depth >= MAX_DEPTH {
                    *value = Value::String(DEPTH_MARKER.to_owned());
                    return true;
                }
                self.json_object(map, depth)
            }
            Value::Array(items) => {
                if depth >= MAX_DEPTH {
                    *value = Value::String(DEPTH_MARKER.to_owned());
                    return true;
                }
                let mut changed = false;
                // A secret flag's value (`["--password", "pw"]`, `["sshpass", "-p", "pw"]`).
                let mut args = sibling::ArgList::default();
                // A command the text shapes know, read as its command line.
                let line = match items.first() {
                    Some(Value::String(first)) if sibling::names_text_command(first) => {
                        let words: Vec<&str> = items.iter().map(|v| v.as_str().unwrap_or_default()).collect();
                        sibling::command_line_spans(self, &words)
                    }
                    _ => None,
                };
                for (i, item) in items.iter_mut().enumerate() {
                    let line_spans = line.as_ref().and_then(|l| l.get(i)).filter(|spans| !spans.is_empty());
                    changed |= match item {
                        Value::String(s) => match (args.item(self, s), line_spans) {
                            (sibling::ArgItem::Secret, _) => self.mask_json(item),
                            (sibling::ArgItem::SecretFrom(at), _) => {
                                // The flag or the user stays readable; the rest is the secret.
                                let kept = s.get(..at).unwrap_or_default();
                                *s = format!("{kept}{}", self.mask());
                                true
                            }
                            // The command line's scan read this item too.
                            (sibling::ArgItem::Plain, Some(spans)) => {
                                match patterns::apply(s, &mut spans.clone(), self.mask()) {
                                    Some(masked) => {
                                        *s = masked;
                                        true
                                    }
                                    None => self.json(item, depth + 1),
                                }
                            }
                            (sibling::ArgItem::Plain, None) => self.json(item, depth + 1),
                        },
                        Value::Array(pair) if pair.len() == 2 && self.json_pair_is_secret(&pair[0]) => {
                            args.other();
                            let masked = self.mask_json(&mut pair[1]);
                            self.json(&mut pair[0], depth + 2) | masked
                        }
                        _ => {
                            args.other();
                            self.json(item, depth + 1)
                        }
                    };
                }
                changed
            }
            Value::String(s) => match self.redact_text(s, depth) {
                Some(new) => {
                    *s = new;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    fn json_pair_is_secret(&self, name: &Value) -> bool {
        matches!(name, Value::String(s) if sibling::pair_is_secret(self, s))
    }

    fn json_object(&self, map: &mut Map<String, Value>, depth: usize) -> bool {
        let mut changed = false;
        let mut record = Record::default();
        let mut renamed = false;
        // A JSON Web Key's private members, masked once a `kty` member is seen.
        let mut jwk = false;
        let mut jwk_members = Vec::new();
        // A Kubernetes Secret's `data` and `stringData`, masked once `kind: Secret` is seen.
        let mut secret_manifest = false;
        let mut manifest_data = Vec::new();
        for (key, item) in map.iter_mut() {
            let verdict = self.verdict(key);
            let info = verdict.info;
            changed |= if info.secret { self.mask_json(item) } else { self.json(item, depth + 1) };
            jwk |= info.jwk_type;
            if info.jwk_private {
                jwk_members.push(key.clone());
            }
            secret_manifest |= info.manifest_kind && matches!(&*item, Value::String(s) if keys::secret_kind(s));
            if info.manifest_data {
                manifest_data.push(key.clone());
            }
            let name_text = match &*item {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            };
            record.note(self, info, || key.clone(), name_text);
            renamed |= verdict.rewrite;
        }
        let jwk_members = if jwk { jwk_members } else { Vec::new() };
        let manifest_data = if secret_manifest { manifest_data } else { Vec::new() };
        for key in record.finish().into_iter().chain(jwk_members).chain(manifest_data) {
            if let Some(item) = map.get_mut(&key) {
                changed |= self.mask_json(item);
            }
        }
        if renamed {
            // A key can hold a secret itself (`{"password=hunter2": 1}`).
            let old = std::mem::take(map);
            for (key, item) in old {
                let key = self.scan_text(&key).unwrap_or(key);
                let key = unique_key(key, |k| map.contains_key(k));
                map.insert(key, item);
            }
            changed = true;
        }
        changed
    }
}

/// `key`, or `key #2`, `key #3`, ... when redaction made two keys equal:
/// merging them would lose an entry.
pub fn unique_key(key: String, taken: impl Fn(&str) -> bool) -> String {
    if !taken(&key) {
        return key;
    }
    (2..).map(|i| format!("{key} #{i}")).find(|k| !taken(k)).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::REDACTED;
    use serde_json::json;

    fn redacted(mut v: Value) -> Value {
        Rules::default().redact_json(&mut v);
        v
    }

    #[test]
    fn json_text_holding_a_key_twice_is_scanned_as_text() {
        let rules = Rules::default();
        let text = r#"{"note": "sk-proj-A1b2C3d4A1b2C3d4A1b2C3d4A1b2C3d4", "note": "again"}"#;
        let out = rules.redact_text(text, 0).unwrap_or_default();
        assert!(!out.contains("A1b2C3d4") && out.contains(REDACTED), "{out}");
        assert_eq!(
            serde_json::from_str::<Unique>(r#"{"a": {"b": 1, "c": [1.5, null, true]}}"#).ok().map(|u| u.0),
            Some(json!({"a": {"b": 1, "c": [1.5, null, true]}}))
        );
    }

    #[test]
    fn secret_keys_mask_values_but_keep_null_and_booleans() {
        let out = redacted(json!({
            "password": "hunter2", "pin": 1234, "token": {"a": 1}, "secrets": ["x"],
            "password_set": true, "api_key": null, "max_tokens": 300, "author": "alice",
        }));
        assert_eq!(
            out,
            json!({
                "password": REDACTED, "pin": REDACTED, "token": REDACTED, "secrets": REDACTED,
                "password_set": true, "api_key": null, "max_tokens": 300, "author": "alice",
            })
        );
    }

    #[test]
    fn sibling_records_and_pair_lists() {
        let out = redacted(json!({
            "changes": [
                {"key": "llm.api_key", "old_value": "sk-old", "new_value": "sk-new"},
                {"field": "retries", "old": 1, "new": 2},
            ],
            "env": [{"name": "DB_PASSWORD", "value": "x"}, {"name": "HOME", "value": "/root"}],
            "headers": [["Authorization", "Bearer x"], ["Accept", "json"]],
        }));
        assert_eq!(
            out,
            json!({
                "changes": [
                    {"key": "llm.api_key", "old_value": REDACTED, "new_value": REDACTED},
                    {"field": "retries", "old": 1, "new": 2},
                ],
                "env": [{"name": "DB_PASSWORD", "value": REDACTED}, {"name": "HOME", "value": "/root"}],
                "headers": [["Authorization", REDACTED], ["Accept", "json"]],
            })
        );
    }

    #[test]
    fn argument_lists_mask_the_value_after_a_secret_flag() {
        let out = redacted(json!({
            "argv": ["pg_dump", "--password", "hunter2", "--host", "db", "-storepass", "pw2", "--password-file", "/run/pw"],
            "flags": ["--password", "--verbose", "--token", "$TOKEN", "--max-tokens", "100", "--api-key", 7],
        }));
        assert_eq!(
            out,
            json!({
                "argv": ["pg_dump", "--password", REDACTED, "--host", "db", "-storepass", REDACTED, "--password-file", "/run/pw"],
                "flags": ["--password", "--verbose", "--token", "$TOKEN", "--max-tokens", "100", "--api-key", 7],
            })
        );
    }

    #[test]
    fn a_kubernetes_secret_has_its_data_masked() {
        // kubectl's JSON sorts `data` before `kind`.
        let out = redacted(json!({
            "items": [
                {"apiVersion": "v1", "data": {"url": "cG9zdGdyZXM6Ly91OnBAaC9k"}, "kind": "Secret", "stringData": {"license": "abc"}},
                {"apiVersion": "v1", "data": {"theme": "dark"}, "kind": "ConfigMap"},
            ],
            "export": {"kind": "csv", "data": "a,b"},
        }));
        assert_eq!(
            out,
            json!({
                "items": [
                    {"apiVersion": "v1", "data": REDACTED, "kind": "Secret", "stringData": REDACTED},
                    {"apiVersion": "v1", "data": {"theme": "dark"}, "kind": "ConfigMap"},
                ],
                "export": {"kind": "csv", "data": "a,b"},
            })
        );
    }

    #[test]
    fn json_inside_strings_is_walked() {
        let out = redacted(json!({"body": "{\"user\": \"bob\", \"\\u0070assword\": \"x\"}"}));
        assert_eq!(out, json!({"body": format!("{{\"user\":\"bob\",\"password\":\"{REDACTED}\"}}")}));
        let twice = json!({"body": json!({"inner": json!({"token": "t"}).to_string()}).to_string()});
        assert!(!redacted(twice).to_string().contains("\\\\\\\"t\\\\\\\""));
        let plain = json!({"body": "[1, 2, 3]"});
        assert_eq!(redacted(plain.clone()), plain);
    }

    #[test]
    fn keys_holding_secrets_are_rewritten_without_losing_entries() {
        let out = redacted(json!({"password=a": 1, "password=b": 2}));
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, [&format!("password={REDACTED}"), &format!("password={REDACTED} #2")]);
    }

    #[test]
    fn text_too_short_for_a_secret_is_not_scanned() {
        let rules = Rules::new(&["k".into()], &[], true, REDACTED).unwrap();
        assert_eq!(rules.redact_text("k=v", 0).as_deref(), Some(format!("k={REDACTED}").as_str()));
        for short in ["", "k", "k=", "=v", "{}", "[]", "é"] {
            assert_eq!(rules.redact_text(short, 0), None, "{short}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = json!("leaf");
        for _ in 0..(MAX_DEPTH * 2) {
            v = json!([v]);
        }
        assert!(redacted(v).to_string().contains(DEPTH_MARKER));
    }

    #[test]
    fn redaction_is_idempotent() {
        let once = redacted(json!({
            "a": "password=x https://u:p@h", "b": "{\"token\": \"t\", \"x\": 1.5}",
            "password=a": 1, "c": [["cookie", "sid=1"]],
        }));
        assert_eq!(redacted(once.clone()), once);
    }
}

//! Secret redaction: no secret reaches the audit trail, by key name, by the
//! name a sibling entry carries, or by the shape of the value.
//!
//! - [`keys`]: key normalisation and the key-name rules;
//! - [`sibling`]: `{"key": "llm.api_key", "new_value": ...}` records and
//!   `[name, value]` pair lists;
//! - [`patterns`]: value shapes (tokens, private keys, URL passwords, ...);
//!   [`cards`]: payment card numbers;
//! - [`walker`]: the one walker over Python values, with two sinks:
//!   [`py`] builds Python objects (`redact_dict`, `redact`, `Redactor`),
//!   [`text`] writes the JSON text of an audit row;
//! - [`walk`]: the walker over parsed JSON (JSON inside strings) and the
//!   text entry points; it calls the same rule functions, so there is one rule set.
//!
//! [`Rules`] is Python-free and `Send + Sync`, so the audit writer can share
//! it across threads and the scanner can be fuzzed without an interpreter.

mod cards;
#[cfg(test)]
mod fuzz;
pub mod keys;
pub mod patterns;
pub mod py;
pub mod sibling;
pub mod text;
pub mod walk;
pub mod walker;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use aho_corasick::AhoCorasick;

use crate::errors::{Error, Result};
use keys::{KeyInfo, Normalized};

pub use py::{redact, redact_dict, Redactor};

/// The fixed-length mask that replaces a secret (the legacy mask: a fixed
/// length does not disclose how long the secret was).
pub const REDACTED: &str = "***REDACTED***";

/// Longest mask a caller may configure.
const MAX_MASK_CHARS: usize = 256;

/// Keys up to this length are remembered per thread (see [`Verdict`]).
const CACHED_KEY_MAX: usize = 96;
/// Slots of the per-thread key cache: `1 << CACHE_BITS`.
const CACHE_BITS: u32 = 12;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;

/// Everything the walkers need to know about a key, computed once per
/// distinct key text and remembered: audit payloads repeat the same few
/// hundred key names, so the per-key cost drops to one slot probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    pub info: KeyInfo,
    /// The key's own text holds a secret (`"password=hunter2"`); see [`Rules::redact_text`].
    pub rewrite: bool,
    /// A mapping holding this key takes the walker's general path: the key
    /// is rewritten, or it is a JSON Web Key's `kty` (whose private members
    /// may come before it). One flag, so the fast path pays one test.
    pub general: bool,
    /// The key is JSON string content as it is (nothing to escape), so the
    /// text sink copies it without looking at its bytes again.
    pub plain: bool,
}

/// One remembered key: the rule set's id, the key's hash, its text, its verdict.
type Slot = Option<(u64, u64, Box<str>, Verdict)>;

thread_local! {
    /// Direct-mapped and per thread: no lock, no eviction policy; a
    /// collision only costs a recomputation, never a wrong answer, because
    /// a hit needs the same rule set and the same text.
    /// Allocated on the first miss: a constant initialiser needs no lazy
    /// state check on every probe.
    static VERDICTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Byte equality without a call into libc for the short texts keys are.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if (8..=16).contains(&n) {
        // Two overlapping words cover the whole text.
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    a == b
}

/// The eight bytes at `at` as one little-endian word (the scans read text a word at a time).
#[inline]
pub(crate) fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A fast hash of a key's bytes, for the JSON path (the Python path uses
/// the hash Python already cached in the str object).
pub fn text_hash(text: &str) -> u64 {
    let mut h = 0u64;
    for chunk in text.as_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Ids for rule sets, so that a cache filled under one never serves another.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A redaction rule set.
#[derive(Debug)]
pub struct Rules {
    id: u64,
    mask: String,
    /// The mask as a JSON string literal, quotes included (the audit text sink writes it).
    mask_literal: String,
    patterns: bool,
    /// User-added key names, matched as substrings of the compact key.
    extra: Option<AhoCorasick>,
    extra_terms: Vec<String>,
    /// User safe names (compact forms), matched like the default safe list.
    safe: Vec<String>,
    safe_max: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            mask: REDACTED.to_owned(),
            mask_literal: json_string(REDACTED),
            patterns: true,
            extra: None,
            extra_terms: Vec::new(),
            safe: Vec::new(),
            safe_max: 0,
        }
    }
}

impl Rules {
    /// The default, best-practice rule set, shared.
    pub fn shared_default() -> Arc<Rules> {
        static DEFAULT: OnceLock<Arc<Rules>> = OnceLock::new();
        DEFAULT.get_or_init(|| Arc::new(Rules::default())).clone()
    }

    /// A rule set with user additions. `extra_keys` are secret key names
    /// (matched anywhere in the normalised key), `safe_keys` are never
    /// masked (they win over everything), `patterns` turns value-shape
    /// scanning on or off, `mask` replaces each secret.
    pub fn new(extra_keys: &[String], safe_keys: &[String], patterns: bool, mask: &str) -> Result<Self> {
        if mask.is_empty() || mask.chars().count() > MAX_MASK_CHARS {
            return Err(Error::invalid(
                "mask",
                format!(
                    "must be a non-empty string of at most {MAX_MASK_CHARS} characters, got one of {} characters",
                    mask.chars().count()
                ),
            ));
        }
        let compact = |field: &str, list: &[String]| -> Result<Vec<String>> {
            list.iter()
                .map(|term| {
                    keys::compact_term(term).ok_or_else(|| {
                        Error::invalid(
                            field,
                            format!("'{term}' has no letters or digits; give key names such as 'employee_ssn'"),
                        )
                    })
                })
                .collect()
        };
        let extra_terms = compact("extra_keys", extra_keys)?;
        let safe = compact("safe_keys", safe_keys)?;
        // The same name in both lists is a contradiction: letting the safe
        // list win would store a value the caller asked to mask.
        let secret_at: std::collections::HashMap<&str, usize> =
            extra_terms.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
        for (term, given) in safe.iter().zip(safe_keys) {
            if let Some(&at) = secret_at.get(term.as_str()) {
                return Err(Error::invalid(
                    "safe_keys",
                    format!(
                        "'{given}' is also in extra_keys as '{}'; a key name is either secret or safe",
                        extra_keys[at]
                    ),
                ));
            }
        }
        let extra = if extra_terms.is_empty() {
            None
        } else {
            // Aho-Corasick, not one big regex: a long user list cannot hit a
            // compiled-size limit (getsentry/relay#1481).
            Some(AhoCorasick::new(&extra_terms).map_err(|e| Error::invalid("extra_keys", e.to_string()))?)
        };
        let safe_max = safe.iter().map(String::len).max().unwrap_or(0);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            mask: mask.to_owned(),
            mask_literal: json_string(mask),
            patterns,
            extra,
            extra_terms,
            safe,
            safe_max,
        })
    }

    /// The string that replaces a secret.
    pub fn mask(&self) -> &str {
        &self.mask
    }

    /// The mask as a JSON string, quotes included.
    pub fn mask_literal(&self) -> &str {
        &self.mask_literal
    }

    /// Whether value shapes are scanned.
    pub fn patterns(&self) -> bool {
        self.patterns
    }

    /// The user-added secret names, in compact form.
    pub fn extra_terms(&self) -> &[String] {
        &self.extra_terms
    }

    /// The user safe names, in compact form.
    pub fn safe_terms(&self) -> &[String] {
        &self.safe
    }

    /// Classifies a key; `n` is a scratch buffer reused across keys.
    pub fn classify(&self, key: &str, n: &mut Normalized) -> KeyInfo {
        keys::normalize(key, n);
        let (name_field, value_field) = keys::roles(n);
        let (jwk_private, jwk_type) = keys::jwk_roles(key);
        let (manifest_data, manifest_kind) = keys::manifest_roles(key);
        // A user safe name keeps a JWK member, or a Secret's data, readable too.
        let jwk_private = jwk_private && !keys::in_set(n, &self.safe, self.safe_max);
        let manifest_data = manifest_data && !keys::in_set(n, &self.safe, self.safe_max);
        let secret = self.secret_normalized(n)
            || (keys::bundler_credentials(key) && !keys::in_set(n, &self.safe, self.safe_max));
        KeyInfo { secret, name_field, value_field, jwk_private, jwk_type, manifest_kind, manifest_data }
    }

    /// Whether a value stored under `key` is a secret.
    pub fn key_is_secret(&self, key: &str) -> bool {
        self.verdict(key).info.secret
    }

    /// The key's verdict, from the per-thread cache when it has been seen.
    pub fn verdict(&self, key: &str) -> Verdict {
        self.verdict_hashed(key, text_hash(key))
    }

    /// [`Rules::verdict`] with the key's hash supplied by the caller
    /// (any hash of the text: it only picks the cache slot).
    #[inline(always)]
    pub fn verdict_hashed(&self, key: &str, hash: u64) -> Verdict {
        if key.len() > CACHED_KEY_MAX {
            return self.compute_verdict(key);
        }
        if let Some(v) = self.cached_verdict(key, hash) {
            return v;
        }
        // Computed with the cache released: scanning the key for value shapes
        // judges `key=value` pairs inside it, which asks this cache again.
        let v = self.compute_verdict(key);
        let first = self.cache_pair(hash);
        VERDICTS.with(|cell| {
            let mut slots = cell.borrow_mut();
            if slots.is_empty() {
                slots.resize(CACHE_SLOTS, None);
            }
            if let Some(pair) = slots.get_mut(first..first + 2) {
                // The newest entry goes first, the older one moves to second.
                pair.swap(0, 1);
                pair[0] = Some((self.id, hash, key.into(), v));
            }
        });
        v
    }

    /// The first of the two cache slots a key with this hash may take.
    fn cache_pair(&self, hash: u64) -> usize {
        // The slot comes from the product's high bits: the low bits of a
        // product depend only on the low bits of its factors, and for
        // `text_hash` those are the key's first characters, so `counts` and
        // `config` would share a slot and evict each other on every row.
        let index = ((hash ^ self.id).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS)) as usize;
        // Two ways: slots `2i` and `2i + 1`, so two keys landing on the same
        // pair (likely among a payload's few dozen keys) do not evict each other.
        index & !1
    }

    /// This thread's cached verdict of `key`, if it has one.
    #[inline(always)]
    fn cached_verdict(&self, key: &str, hash: u64) -> Option<Verdict> {
        let first = self.cache_pair(hash);
        VERDICTS.with(|cell| {
            let slots = cell.borrow();
            slots.get(first..first + 2).and_then(|pair| {
                pair.iter().find_map(|slot| match slot {
                    // The hash first: the text is compared only where it will match.
                    Some((id, h, text, v))
                        if *h == hash && *id == self.id && same_bytes(text.as_bytes(), key.as_bytes()) =>
                    {
                        Some(*v)
                    }
                    _ => None,
                })
            })
        })
    }

    /// What the `key=value` pairs inside a text need to know of a key: its
    /// classification. A verdict also scans the key's own text, so inside
    /// that scan (`nested`) only a verdict already cached is used: a key
    /// made of pairs (`key=key=key=…`) would otherwise judge each of its
    /// suffixes by a scan of its own, in time exponential in its length.
    /// Keys too long to cache are only classified, for the same reason.
    pub fn pair_info(&self, key: &str, nested: bool) -> KeyInfo {
        if key.len() > CACHED_KEY_MAX {
            return self.classify(key, &mut Normalized::default());
        }
        if !nested {
            return self.verdict(key).info;
        }
        match self.cached_verdict(key, text_hash(key)) {
            Some(v) => v.info,
            None => self.classify(key, &mut Normalized::default()),
        }
    }

    fn compute_verdict(&self, key: &str) -> Verdict {
        let mut n = Normalized::default();
        let info = self.classify(key, &mut n);
        let rewrite = self.patterns && self.scan_text_in(key, true).is_some();
        Verdict { info, rewrite, general: rewrite || info.jwk_type, plain: !text::needs_escape(key.as_bytes()) }
    }

    /// Precedence: user safe names, then user secret names, then the
    /// default safe list, then the default secret rules.
    fn secret_normalized(&self, n: &Normalized) -> bool {
        if keys::in_set(n, &self.safe, self.safe_max) {
            return false;
        }
        if self.extra.as_ref().is_some_and(|ac| ac.is_match(n.compact.as_str())) {
            return true;
        }
        keys::default_secret(n) && !keys::default_safe(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_compares_every_byte_of_every_length() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_bytes(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone();
                b[at] = b'#';
                assert!(!same_bytes(&a, &b), "length {n}, differing at {at}");
            }
            let mut longer = a.clone();
            longer.push(b'a');
            assert!(!same_bytes(&a, &longer));
        }
    }

    #[test]
    fn user_lists_take_precedence() {
        let rules = Rules::new(&["employee_no".into()], &["session_id".into()], true, "[x]").unwrap();
        assert!(rules.key_is_secret("EmployeeNo"));
        assert!(rules.key_is_secret("hr.employee-no"));
        assert!(!rules.key_is_secret("session_id"));
        assert!(rules.key_is_secret("password"));
        assert_eq!(rules.mask(), "[x]");
    }

    #[test]
    fn bad_configuration_is_rejected_with_the_field_named() {
        let err = Rules::new(&["--".into()], &[], true, REDACTED).unwrap_err().to_string();
        assert!(err.starts_with("extra_keys:"), "{err}");
        let err = Rules::new(&["api_no".into()], &["ApiNo".into()], true, REDACTED).unwrap_err().to_string();
        assert!(err.starts_with("safe_keys: 'ApiNo' is also in extra_keys as 'api_no'"), "{err}");
        let err = Rules::new(&[], &[], true, "").unwrap_err().to_string();
        assert!(err.starts_with("mask:"), "{err}");
    }

    #[test]
    fn many_user_terms_build() {
        let terms: Vec<String> = (0..20_000).map(|i| format!("custom_field_{i}")).collect();
        let rules = Rules::new(&terms, &[], true, REDACTED).unwrap();
        assert!(rules.key_is_secret("x.custom_field_19999"));
    }

    #[test]
    fn cached_verdicts_tell_keys_apart_at_every_length() {
        // Keys that share a long prefix, or differ only in length, must each
        // get their own verdict, cached or not.
        let rules = Rules::default();
        let long_plain = format!("{}_count", "x".repeat(40));
        let long_secret = format!("{}_password", "x".repeat(40));
        for _ in 0..2 {
            assert!(!rules.key_is_secret(&long_plain));
            assert!(rules.key_is_secret(&long_secret));
            assert!(rules.key_is_secret("token"));
            assert!(!rules.key_is_secret("toke"));
            assert!(!rules.key_is_secret(""));
            assert!(rules.key_is_secret("pin"));
            assert!(!rules.key_is_secret("pine"));
        }
    }

    #[test]
    fn rules_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Rules>();
    }
}

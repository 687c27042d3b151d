//! SHA-256 hash chain over `audit_log` rows.
//!
//! Each row auditbus writes carries `prev_hash` (the chain value before it)
//! and `chain_hash = H("auditbus-chain-v1" || prev_hash || row)`. `row` is
//! every stored column except the two hash columns, each framed as a presence
//! byte and a little-endian u64 length before its bytes, so no two different
//! rows encode alike. Rows written without a hash after the chain began (the
//! legacy service appending to a shared file) are folded into the running
//! value with `H("auditbus-fold-v1" || running || row)`: the next chained row
//! then covers them, so they cannot be edited, removed or slipped in unseen.
//!
//! The chain is anchored in `audit_meta` (`chain_anchor_id`,
//! `chain_anchor_hash`): rows at or before the anchor id are outside the
//! chain (written before the migration, or removed by `purge()`, which moves
//! the anchor to the running value at the last removed row).

use sha2::{Digest, Sha256};

/// The anchor of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const CHAIN_DOMAIN: &[u8] = b"auditbus-chain-v1";
const FOLD_DOMAIN: &[u8] = b"auditbus-fold-v1";

/// The hashed content of one row, in column order.
#[derive(Debug, Clone, Copy)]
pub struct RowContent<'a> {
    pub id: i64,
    pub timestamp: &'a str,
    pub event_type: &'a str,
    pub plan_id: Option<&'a str>,
    pub user_identity: Option<&'a str>,
    pub details: &'a str,
    pub event_id: Option<&'a str>,
    pub actor_name: Option<&'a str>,
    pub project_name: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub source: Option<&'a str>,
    pub recorded_at: Option<&'a str>,
}

impl RowContent<'_> {
    fn feed(&self, hasher: &mut Sha256) {
        hasher.update(self.id.to_le_bytes());
        field(hasher, Some(self.timestamp));
        field(hasher, Some(self.event_type));
        field(hasher, self.plan_id);
        field(hasher, self.user_identity);
        field(hasher, Some(self.details));
        field(hasher, self.event_id);
        field(hasher, self.actor_name);
        field(hasher, self.project_name);
        field(hasher, self.session_id);
        field(hasher, self.outcome);
        field(hasher, self.source);
        field(hasher, self.recorded_at);
    }
}

fn field(hasher: &mut Sha256, value: Option<&str>) {
    match value {
        None => hasher.update([0u8]),
        Some(text) => {
            hasher.update([1u8]);
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
    }
}

fn digest(domain: &[u8], prev: &str, row: &RowContent<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(prev.as_bytes());
    row.feed(&mut hasher);
    hex::encode(hasher.finalize())
}

/// The `chain_hash` of a row written after `prev`.
pub fn link(prev: &str, row: &RowContent<'_>) -> String {
    digest(CHAIN_DOMAIN, prev, row)
}

/// The running value after an unchained row.
pub fn fold(running: &str, row: &RowContent<'_>) -> String {
    digest(FOLD_DOMAIN, running, row)
}

/// What `verify()` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub checked: u64,
    pub unchained: u64,
    pub first_bad_id: Option<i64>,
    pub reason: Option<String>,
}

/// A stored row as the verifier sees it.
pub struct StoredRow<'a> {
    pub content: RowContent<'a>,
    pub prev_hash: Option<&'a str>,
    pub chain_hash: Option<&'a str>,
}

/// Walks rows in id order; stops at the first bad row.
pub struct Verifier {
    anchor_id: i64,
    running: String,
    /// Unchained rows after the anchor that no chained row covers yet.
    pending: u64,
    verdict: Verdict,
}

impl Verifier {
    pub fn new(anchor_id: i64, anchor_hash: &str) -> Self {
        Self { anchor_id, running: anchor_hash.to_owned(), pending: 0, verdict: Verdict::default() }
    }

    /// Feeds the next row; returns false once a bad row was found.
    pub fn push(&mut self, row: &StoredRow<'_>) -> bool {
        if self.verdict.first_bad_id.is_some() {
            return false;
        }
        let id = row.content.id;
        let Some(chain_hash) = row.chain_hash else {
            if id <= self.anchor_id {
                self.verdict.unchained += 1;
            } else {
                self.running = fold(&self.running, &row.content);
                self.pending += 1;
            }
            return true;
        };
        if id <= self.anchor_id {
            return self.bad(id, "row carries a chain hash but lies before the chain anchor (inserted)");
        }
        let prev = row.prev_hash.unwrap_or("");
        if link(prev, &row.content) != chain_hash {
            return self.bad(id, "row content does not match its chain hash (edited)");
        }
        if prev != self.running {
            return self.bad(id, "row does not follow the row before it (a row before it was deleted or inserted)");
        }
        self.running = chain_hash.to_owned();
        self.verdict.checked += 1 + self.pending;
        self.pending = 0;
        true
    }

    fn bad(&mut self, id: i64, reason: &str) -> bool {
        self.verdict.first_bad_id = Some(id);
        self.verdict.reason = Some(reason.to_owned());
        false
    }

    /// Trailing unchained rows count as unchained: nothing covers them yet.
    pub fn finish(mut self) -> Verdict {
        self.verdict.unchained += self.pending;
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, details: &str) -> RowContent<'_> {
        RowContent {
            id,
            timestamp: "2026-01-01T00:00:00+00:00",
            event_type: "plan_applied",
            plan_id: Some("p"),
            user_identity: None,
            details,
            event_id: None,
            actor_name: None,
            project_name: None,
            session_id: None,
            outcome: None,
            source: None,
            recorded_at: None,
        }
    }

    #[test]
    fn framing_keeps_fields_apart() {
        let a = RowContent { plan_id: Some("ab"), user_identity: Some("c"), ..row(1, "{}") };
        let b = RowContent { plan_id: Some("a"), user_identity: Some("bc"), ..row(1, "{}") };
        let c = RowContent { plan_id: None, user_identity: Some(""), ..row(1, "{}") };
        let d = RowContent { plan_id: Some(""), user_identity: None, ..row(1, "{}") };
        assert_ne!(link(GENESIS, &a), link(GENESIS, &b));
        assert_ne!(link(GENESIS, &c), link(GENESIS, &d));
    }

    #[test]
    fn verifier_finds_edit_and_gap() {
        let r1 = row(1, "{}");
        let h1 = link(GENESIS, &r1);
        let r2 = row(2, "{\"a\":1}");
        let h2 = link(&h1, &r2);
        let r3 = row(3, "{}");
        let h3 = link(&h2, &r3);
        let good = [(r1, GENESIS, h1.as_str()), (r2, h1.as_str(), h2.as_str()), (r3, h2.as_str(), h3.as_str())];
        let mut v = Verifier::new(0, GENESIS);
        for (content, prev, hash) in &good {
            assert!(v.push(&StoredRow { content: *content, prev_hash: Some(prev), chain_hash: Some(hash) }));
        }
        assert_eq!(v.finish(), Verdict { checked: 3, ..Verdict::default() });

        let mut v = Verifier::new(0, GENESIS);
        let (c1, p1, x1) = &good[0];
        let (c3, p3, x3) = &good[2];
        v.push(&StoredRow { content: *c1, prev_hash: Some(p1), chain_hash: Some(x1) });
        assert!(!v.push(&StoredRow { content: *c3, prev_hash: Some(p3), chain_hash: Some(x3) }));
        assert_eq!(v.finish().first_bad_id, Some(3));

        let mut v = Verifier::new(0, GENESIS);
        let edited = row(1, "{\"x\":1}");
        assert!(!v.push(&StoredRow { content: edited, prev_hash: Some(GENESIS), chain_hash: Some(x1) }));
    }

    #[test]
    fn unchained_rows_are_folded_into_the_next_link() {
        let legacy = row(2, "{}");
        let r1 = row(1, "{}");
        let h1 = link(GENESIS, &r1);
        let running = fold(&h1, &legacy);
        let r3 = row(3, "{}");
        let h3 = link(&running, &r3);
        let mut v = Verifier::new(0, GENESIS);
        v.push(&StoredRow { content: r1, prev_hash: Some(GENESIS), chain_hash: Some(&h1) });
        v.push(&StoredRow { content: legacy, prev_hash: None, chain_hash: None });
        assert!(v.push(&StoredRow { content: r3, prev_hash: Some(&running), chain_hash: Some(&h3) }));
        assert_eq!(v.finish(), Verdict { checked: 3, ..Verdict::default() });

        // Dropping the legacy row breaks the link of the row after it.
        let mut v = Verifier::new(0, GENESIS);
        v.push(&StoredRow { content: r1, prev_hash: Some(GENESIS), chain_hash: Some(&h1) });
        assert!(!v.push(&StoredRow { content: r3, prev_hash: Some(&running), chain_hash: Some(&h3) }));
    }
}

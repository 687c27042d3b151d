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
//! The hash reads a value's bytes, not its storage class, so the verifier is
//! also told which column of a chained row is not UTF-8 text (auditbus
//! writes nothing else): a blob of the same bytes, which a query filter no
//! longer matches, is an edit too.
//!
//! The chain is anchored in `audit_meta` (`chain_anchor_id`,
//! `chain_anchor_hash`): rows at or before the anchor id are outside the
//! chain (written before the migration, or removed by `purge()`, which moves
//! the anchor to the running value at the last removed row).
//!
//! A hash chain cannot see rows cut from its end: what is left still links.
//! Ids close that hole. After the anchor they run without a gap (auditbus
//! takes the largest id ever handed out + 1, the legacy service lets
//! AUTOINCREMENT do the same, and only `purge()` deletes, oldest first), so
//! a row whose id skips past its predecessor follows removed rows even when
//! its link is intact (auditbus went on writing after the cut), and
//! `sqlite_sequence` (the largest id ever handed out) above the last id
//! means the newest rows were removed and nothing was written since. Both
//! hold only while `sqlite_sequence` is left alone: lowered to the last id,
//! or deleted (SQLite then restarts from the largest id), the cut is
//! invisible.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// The anchor of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const CHAIN_DOMAIN: &[u8] = b"auditbus-chain-v1";
const FOLD_DOMAIN: &[u8] = b"auditbus-fold-v1";
const COPY_DOMAIN: &[u8] = b"auditbus-copy-v1";

/// The hashed content of one row, in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A copy's event_id suffix past the numbered ones: 32 hex digits of a hash
/// of what the event gives (not the id, source or times of writing), so the
/// same copy handed over again gets the same id, wherever it is written.
pub fn copy_suffix(row: &RowContent<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(COPY_DOMAIN);
    for value in [
        Some(row.timestamp),
        Some(row.event_type),
        row.plan_id,
        row.user_identity,
        Some(row.details),
        row.actor_name,
        row.project_name,
        row.session_id,
        row.outcome,
    ] {
        field(&mut hasher, value);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The running value after an unchained row.
pub fn fold(running: &str, row: &RowContent<'_>) -> String {
    digest(FOLD_DOMAIN, running, row)
}

/// What `verify()` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Rows whose place in the chain was checked (folded rows included).
    pub checked: u64,
    /// Rows no chained row covers: before the anchor, or after the last chained row.
    pub unchained: u64,
    /// Of `unchained`, those after the anchor and the last chained row:
    /// appended without a hash, so not history from before the chain.
    pub appended: u64,
    /// Rows after the anchor written without a hash and covered by the next
    /// chained row: protected from then on, but nothing says who wrote them.
    pub folded: u64,
    pub first_bad_id: Option<i64>,
    pub reason: Option<String>,
    /// The newest chained row that checked out: its id and chain hash, the
    /// value to keep outside the file (see [`Verifier::expect_heads`]).
    pub head: Option<(i64, String)>,
}

/// A stored row as the verifier sees it.
pub struct StoredRow<'a> {
    pub content: RowContent<'a>,
    pub prev_hash: Option<&'a str>,
    pub chain_hash: Option<&'a str>,
    /// The first content column not stored as UTF-8 text, and what it holds
    /// instead. The hash reads its bytes alike, so only this tells a blob
    /// from the text it replaced, or invalid UTF-8 from the U+FFFD it reads as.
    pub stored_as: Option<(&'static str, &'static str)>,
}

/// Walks rows in id order; stops at the first bad row.
pub struct Verifier {
    anchor_id: i64,
    /// The anchor was moved by `purge()`, which deleted every row up to it:
    /// only the migration's anchor (at [`GENESIS`]) has rows at or before it.
    anchor_moved: bool,
    running: String,
    /// The id the next row after the anchor must carry.
    next_id: i64,
    /// The largest id seen so far.
    last_id: Option<i64>,
    /// Unchained rows after the anchor that no chained row covers yet.
    pending: u64,
    /// The id of the first of them.
    pending_from: i64,
    /// Heads kept outside the file: row id -> the chain hashes kept for it
    /// (more than one only when the heads given disagree; then none matches).
    expected: BTreeMap<i64, BTreeSet<String>>,
    verdict: Verdict,
}

/// Only a table made again holds an id twice, or one that is not an integer.
const REBUILT: &str = "audit_log was rebuilt without its INTEGER PRIMARY KEY";

/// `id 6` or `ids 6..9`.
fn span(first: i64, last: i64) -> String {
    if first == last {
        format!("id {first}")
    } else {
        format!("ids {first}..{last}")
    }
}

impl Verifier {
    pub fn new(anchor_id: i64, anchor_hash: &str) -> Self {
        Self {
            anchor_id,
            anchor_moved: anchor_hash != GENESIS,
            running: anchor_hash.to_owned(),
            next_id: anchor_id.saturating_add(1),
            last_id: None,
            pending: 0,
            pending_from: 0,
            expected: BTreeMap::new(),
            verdict: Verdict::default(),
        }
    }

    /// Heads an earlier `verify()` reported, kept where the trail's writers
    /// cannot change them. Each row must still be there with the same chain
    /// hash: a trail rewritten wholesale (every hash computed again) still
    /// links, but not to a hash kept outside.
    #[must_use]
    pub fn expect_heads(mut self, heads: impl IntoIterator<Item = (i64, String)>) -> Self {
        for (id, hash) in heads {
            self.expected.entry(id).or_default().insert(hash);
        }
        self
    }

    /// Whether row `id` carries every hash kept for it; a mismatch is the verdict.
    fn matches_kept(&mut self, id: i64, found: Option<&str>) -> bool {
        let Some(kept) = self.expected.remove(&id) else { return true };
        let Some(kept) = kept.into_iter().find(|k| found != Some(k.as_str())) else { return true };
        let found = found.map_or_else(|| "no chain hash".to_owned(), |h| format!("chain hash {h}"));
        self.bad(id, format!("row {id} carries {found}, not the {kept} kept for it (the trail was rewritten)"))
    }

    /// Feeds the next row; returns false once a bad row was found.
    pub fn push(&mut self, row: &StoredRow<'_>) -> bool {
        if self.verdict.first_bad_id.is_some() {
            return false;
        }
        let id = row.content.id;
        if self.last_id.is_some_and(|last| id <= last) {
            return self.bad(id, format!("row id {id} appears twice ({REBUILT})"));
        }
        self.last_id = Some(id);
        let Some(chain_hash) = row.chain_hash else {
            if !self.matches_kept(id, None) {
                return false;
            }
            if id <= self.anchor_id {
                if self.anchor_moved {
                    // A purge deleted every row up to the anchor it moved. A row
                    // left there had its hash taken away, and the anchor moved
                    // past it, so that the rows after it still link.
                    return self.bad(
                        id,
                        format!(
                            "row lies at or before the chain anchor (id {}), which only a purge moves, deleting every \
                             row up to it (rewritten and re-anchored, or inserted)",
                            self.anchor_id
                        ),
                    );
                }
                self.verdict.unchained += 1;
            } else {
                if row.prev_hash.is_some() {
                    // auditbus writes both hashes in one INSERT, other writers neither.
                    return self.bad(id, "row keeps its prev_hash, but its chain_hash was removed (edited)".to_owned());
                }
                if id != self.next_id {
                    let missing = span(self.next_id, id - 1);
                    // Without a hash, nothing tells a deletion from an insert at a skipped id.
                    return self.bad(
                        self.next_id,
                        format!("{missing} missing before row {id} (deleted, or row {id} was inserted past them)"),
                    );
                }
                self.running = fold(&self.running, &row.content);
                if self.pending == 0 {
                    self.pending_from = id;
                }
                self.pending += 1;
                self.next_id = id.saturating_add(1);
            }
            return true;
        };
        if id <= self.anchor_id {
            return self.bad(
                id,
                format!(
                    "row carries a chain hash but lies at or before the chain anchor (id {}): inserted, or the chain \
                     anchor was moved past it",
                    self.anchor_id
                ),
            );
        }
        let prev = row.prev_hash.unwrap_or("");
        if link(prev, &row.content) != chain_hash {
            return self.bad(id, "row content does not match its chain hash (edited)".to_owned());
        }
        if let Some((column, what)) = row.stored_as {
            // auditbus writes only UTF-8 text; a filter on the column no longer finds the row.
            return self.bad(
                id,
                format!("row stores {column} as {what}, where auditbus wrote text with the same bytes (edited)"),
            );
        }
        if prev != self.running {
            if self.pending > 0 && id == self.next_id {
                // No row is missing: the rows without a hash just before it are
                // not the ones it was chained after.
                let (first, rows) = (self.pending_from, span(self.pending_from, id - 1));
                let verb = if self.pending == 1 { "is" } else { "are" };
                return self.bad(
                    first,
                    format!(
                        "{rows}, without a chain hash, {verb} not what row {id} was chained after (edited, its chain \
                         hash removed, or slipped in)"
                    ),
                );
            }
            if self.at_anchor() {
                return self.bad(
                    id,
                    format!(
                        "row does not follow the chain anchor in audit_meta (id {}): rows before it were deleted, or \
                         the anchor was edited",
                        self.anchor_id
                    ),
                );
            }
            return self
                .bad(id, "row does not follow the row before it (a row before it was deleted or inserted)".to_owned());
        }
        if id != self.next_id {
            // The link holds, so the row was written after the rows before it were gone.
            let missing = span(self.next_id, id - 1);
            // Right after the anchor, a lowered anchor id leaves the same gap.
            let lowered = if self.at_anchor() {
                format!(", or the chain anchor in audit_meta (id {}) was lowered", self.anchor_id)
            } else {
                String::new()
            };
            return self.bad(
                self.next_id,
                format!("the newest rows ({missing}) were removed; row {id} was written after the cut{lowered}"),
            );
        }
        if !self.matches_kept(id, Some(chain_hash)) {
            return false;
        }
        self.running = chain_hash.to_owned();
        self.next_id = id.saturating_add(1);
        self.verdict.checked += 1 + self.pending;
        self.verdict.folded += self.pending;
        self.pending = 0;
        self.verdict.head = Some((id, chain_hash.to_owned()));
        true
    }

    /// A row whose id is not an integer, `shown` as SQL shows it: named at
    /// the id expected next.
    pub fn not_an_id(&mut self, shown: &str) {
        if self.verdict.first_bad_id.is_none() {
            let at = self.last_id.map_or(self.next_id, |last| last.saturating_add(1)).max(self.next_id);
            self.bad(at, format!("a row has id {shown}, not an integer ({REBUILT})"));
        }
    }

    /// Whether no row after the anchor was walked yet: the anchor is what
    /// the next row must follow.
    fn at_anchor(&self) -> bool {
        self.pending == 0 && self.next_id == self.anchor_id.saturating_add(1)
    }

    /// Whether no bad row was found so far.
    pub fn intact(&self) -> bool {
        self.verdict.first_bad_id.is_none()
    }

    /// The table lacks columns the chain covers (`what` says which): no
    /// row can be checked, the first after the anchor (`first`) is named.
    pub fn columns_missing(&mut self, what: &str, first: Option<i64>) {
        if self.intact() {
            self.bad(
                first.unwrap_or(self.next_id),
                format!("{what}: the chain hashes every column, so no row can be checked"),
            );
        }
    }

    /// The anchor the chain starts after.
    pub fn anchor_id(&self) -> i64 {
        self.anchor_id
    }

    /// SQLite's integrity check found the table's rows, indexes or declared
    /// types disagree: `found` is its first message, naming `row` when it
    /// does (else the newest row is named).
    pub fn index_damaged(&mut self, found: &str, row: Option<i64>) {
        if self.intact() {
            let at = row.or(self.last_id).unwrap_or(self.next_id);
            // Page-level messages begin "*** in database main ***" and a line break: one line.
            let found = found.replace('\n', " ");
            self.bad(
                at,
                format!("{found}: the file was edited below SQL (a query filtering on a column may miss rows)"),
            );
        }
    }

    /// Compares the last id with `sqlite_sequence` (the largest id ever
    /// handed out; None when it has no entry). Call after the last row.
    ///
    /// A sequence at or before the anchor is left from before the chain
    /// began. A missing entry, or one below the last id, is not a finding:
    /// SQLite rewrites it on the next insert (every service writes its start
    /// row), so it says nothing that lasts; the chain alone decides then.
    pub fn check_sequence(&mut self, sequence: Option<i64>) {
        if self.verdict.first_bad_id.is_some() {
            return;
        }
        let Some(sequence) = sequence else {
            return;
        };
        let last = self.last_id.unwrap_or(0).max(self.anchor_id);
        if sequence > last {
            let first = last + 1;
            let after =
                self.last_id.map_or_else(|| "the table is empty".to_owned(), |id| format!("the last row is {id}"));
            self.bad(
                first,
                format!(
                    "the newest rows ({}) were removed: sqlite_sequence says id {sequence} was handed out, {after}",
                    span(first, sequence)
                ),
            );
        }
    }

    fn bad(&mut self, id: i64, reason: String) -> bool {
        self.verdict.first_bad_id = Some(id);
        self.verdict.reason = Some(reason);
        false
    }

    /// Trailing unchained rows count as unchained: nothing covers them yet.
    /// A kept head whose row never came is reported here.
    pub fn finish(mut self) -> Verdict {
        // After a bad row, the rows without a hash before it were not "appended": the walk stopped.
        if self.verdict.first_bad_id.is_none() {
            self.verdict.unchained += self.pending;
            self.verdict.appended = self.pending;
        }
        let missing = self.expected.iter().find_map(|(&id, kept)| {
            let kept = kept.first()?;
            Some(if id <= self.anchor_id {
                (
                    id,
                    format!(
                        "row {id}, whose chain hash {kept} was kept, is no longer in the chain (purged, or removed \
                         with the chain re-anchored after it): keep a newer head"
                    ),
                )
            } else {
                (id, format!("row {id}, whose chain hash {kept} was kept, is missing (the newest rows were removed)"))
            })
        });
        if let Some((id, reason)) = missing.filter(|_| self.verdict.first_bad_id.is_none()) {
            self.bad(id, reason);
        }
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
            assert!(v.push(&StoredRow {
                content: *content,
                prev_hash: Some(prev),
                chain_hash: Some(hash),
                stored_as: None
            }));
        }
        assert_eq!(v.finish(), Verdict { checked: 3, head: Some((3, h3.clone())), ..Verdict::default() });

        let mut v = Verifier::new(0, GENESIS);
        let (c1, p1, x1) = &good[0];
        let (c3, p3, x3) = &good[2];
        v.push(&StoredRow { content: *c1, prev_hash: Some(p1), chain_hash: Some(x1), stored_as: None });
        assert!(!v.push(&StoredRow { content: *c3, prev_hash: Some(p3), chain_hash: Some(x3), stored_as: None }));
        assert_eq!(v.finish().first_bad_id, Some(3));

        let mut v = Verifier::new(0, GENESIS);
        let edited = row(1, "{\"x\":1}");
        assert!(!v.push(&StoredRow {
            content: edited,
            prev_hash: Some(GENESIS),
            chain_hash: Some(x1),
            stored_as: None
        }));
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
        v.push(&StoredRow { content: r1, prev_hash: Some(GENESIS), chain_hash: Some(&h1), stored_as: None });
        v.push(&StoredRow { content: legacy, prev_hash: None, chain_hash: None, stored_as: None });
        assert!(v.push(&StoredRow { content: r3, prev_hash: Some(&running), chain_hash: Some(&h3), stored_as: None }));
        assert_eq!(v.finish(), Verdict { checked: 3, folded: 1, head: Some((3, h3.clone())), ..Verdict::default() });

        // Dropping the legacy row breaks the link of the row after it.
        let mut v = Verifier::new(0, GENESIS);
        v.push(&StoredRow { content: r1, prev_hash: Some(GENESIS), chain_hash: Some(&h1), stored_as: None });
        assert!(!v.push(&StoredRow { content: r3, prev_hash: Some(&running), chain_hash: Some(&h3), stored_as: None }));
    }

    /// Rows 1..=n chained from GENESIS, as (content, prev, hash).
    fn chain(details: &[&'static str]) -> Vec<(RowContent<'static>, String, String)> {
        let mut prev = GENESIS.to_owned();
        let mut out = Vec::new();
        for (i, d) in details.iter().enumerate() {
            let content = row(i as i64 + 1, d);
            let hash = link(&prev, &content);
            out.push((content, prev.clone(), hash.clone()));
            prev = hash;
        }
        out
    }

    fn walk(anchor_id: i64, rows: &[(RowContent<'_>, String, String)], sequence: Option<i64>) -> Verdict {
        let mut v = Verifier::new(anchor_id, GENESIS);
        for (content, prev, hash) in rows {
            v.push(&StoredRow { content: *content, prev_hash: Some(prev), chain_hash: Some(hash), stored_as: None });
        }
        v.check_sequence(sequence);
        v.finish()
    }

    #[test]
    fn a_cut_tail_is_found_by_the_sequence() {
        let rows = chain(&["{}", "{}", "{}", "{}", "{}"]);
        assert!(walk(0, &rows, Some(5)).first_bad_id.is_none());
        let cut = walk(0, &rows[..3], Some(5));
        assert_eq!(cut.first_bad_id, Some(4));
        assert_eq!(cut.checked, 3);
        let reason = cut.reason.unwrap();
        assert!(reason.contains("newest rows (ids 4..5) were removed"), "{reason}");
        assert!(reason.contains("the last row is 3"), "{reason}");
        let one = walk(0, &rows[..4], Some(5));
        assert_eq!(one.first_bad_id, Some(5));
        assert!(one.reason.unwrap().contains("(id 5)"));
        let all = walk(0, &[], Some(5));
        assert_eq!(all.first_bad_id, Some(1));
        assert!(all.reason.unwrap().contains("the table is empty"));
    }

    fn walk_kept(anchor_id: i64, rows: &[(RowContent<'_>, String, String)], kept: &[(i64, &str)]) -> Verdict {
        let mut v =
            Verifier::new(anchor_id, GENESIS).expect_heads(kept.iter().map(|(id, hash)| (*id, (*hash).to_owned())));
        for (content, prev, hash) in rows {
            v.push(&StoredRow { content: *content, prev_hash: Some(prev), chain_hash: Some(hash), stored_as: None });
        }
        v.finish()
    }

    #[test]
    fn a_kept_head_finds_a_trail_rewritten_wholesale() {
        let rows = chain(&["{}", "{\"amount\":10}", "{}"]);
        let verdict = walk(0, &rows, Some(3));
        let (head_id, head_hash) = verdict.head.clone().unwrap();
        assert_eq!((head_id, head_hash.as_str()), (3, rows[2].2.as_str()));
        // The same trail, and one row appended since: the kept head still matches.
        assert!(walk_kept(0, &rows, &[(3, &head_hash)]).first_bad_id.is_none());
        assert!(walk_kept(0, &rows, &[(2, &rows[1].2), (3, &head_hash)]).first_bad_id.is_none());
        // Row 2 edited and every hash from it on computed again: the chain links, the kept head does not.
        let rewritten = chain(&["{}", "{\"amount\":99}", "{}"]);
        assert!(walk(0, &rewritten, Some(3)).first_bad_id.is_none());
        let caught = walk_kept(0, &rewritten, &[(3, &head_hash)]);
        assert_eq!(caught.first_bad_id, Some(3));
        assert!(caught.reason.unwrap().contains("(the trail was rewritten)"));
        // The kept row cut away, or before the chain anchor (purged).
        let cut = walk_kept(0, &rows[..2], &[(3, &head_hash)]);
        assert_eq!(cut.first_bad_id, Some(3));
        assert!(cut.reason.unwrap().contains("is missing"));
        let purged = walk_kept(5, &[], &[(3, &head_hash)]);
        assert_eq!(purged.first_bad_id, Some(3));
        assert!(purged.reason.unwrap().contains("no longer in the chain"));
        // A row without a hash where a hash was kept.
        let mut v = Verifier::new(0, GENESIS).expect_heads([(1, rows[0].2.clone())]);
        assert!(!v.push(&StoredRow { content: rows[0].0, prev_hash: None, chain_hash: None, stored_as: None }));
        assert!(v.finish().reason.unwrap().contains("carries no chain hash"));
    }

    #[test]
    fn rows_before_the_head_stripped_of_hashes_and_re_anchored_are_found() {
        let rows = chain(&["{}", "{\"amount\":10}", "{}"]);
        let (head_id, head_hash) = (3, rows[2].2.clone());
        // Rows 1 and 2 rewritten without hashes, the anchor moved to row 2 with
        // row 3's prev_hash: row 3 still links, and matches the kept head.
        let forged = row(2, "{\"amount\":99}");
        let mut v = Verifier::new(2, &rows[2].1).expect_heads([(head_id, head_hash.clone())]);
        let first = StoredRow { content: rows[0].0, prev_hash: None, chain_hash: None, stored_as: None };
        assert!(!v.push(&first));
        assert!(!v.push(&StoredRow { content: forged, prev_hash: None, chain_hash: None, stored_as: None }));
        let verdict = v.finish();
        assert_eq!(verdict.first_bad_id, Some(1));
        let reason = verdict.reason.unwrap();
        assert!(reason.contains("at or before the chain anchor (id 2), which only a purge moves"), "{reason}");
        // Rows before the migration's anchor are legacy rows: unchained, not a finding.
        let mut v = Verifier::new(1, GENESIS);
        assert!(v.push(&StoredRow { content: rows[0].0, prev_hash: None, chain_hash: None, stored_as: None }));
        assert_eq!(v.finish(), Verdict { unchained: 1, ..Verdict::default() });
    }

    #[test]
    fn kept_heads_that_disagree_cannot_both_match() {
        let rows = chain(&["{}", "{}", "{}"]);
        let (real, other) = (rows[2].2.as_str(), GENESIS);
        for kept in [[(3, real), (3, other)], [(3, other), (3, real)]] {
            let verdict = walk_kept(0, &rows, &kept);
            assert_eq!(verdict.first_bad_id, Some(3));
            assert!(verdict.reason.unwrap().contains(&format!("not the {other} kept for it")));
        }
        // The same head given twice is one head.
        assert!(walk_kept(0, &rows, &[(3, real), (3, real)]).first_bad_id.is_none());
        // Disagreeing heads for a row that is gone name one of them.
        let cut = walk_kept(0, &rows[..2], &[(3, real), (3, other)]);
        assert_eq!(cut.first_bad_id, Some(3));
        assert!(cut.reason.unwrap().contains("is missing"));
    }

    #[test]
    fn a_sequence_left_alone_only_is_a_witness() {
        let rows = chain(&["{}", "{}", "{}"]);
        // No entry, or one lowered to (or below) the last id: the chain alone decides.
        assert!(walk(0, &rows[..2], None).first_bad_id.is_none());
        assert!(walk(0, &rows[..2], Some(2)).first_bad_id.is_none());
        assert!(walk(0, &rows[..2], Some(1)).first_bad_id.is_none());
        // A sequence at or before the anchor was left from before the chain began.
        let mut v = Verifier::new(7, GENESIS);
        v.push(&StoredRow { content: row(3, "{}"), prev_hash: None, chain_hash: None, stored_as: None });
        v.check_sequence(Some(7));
        assert_eq!(v.finish(), Verdict { unchained: 1, ..Verdict::default() });
        let mut v = Verifier::new(7, GENESIS);
        v.push(&StoredRow { content: row(3, "{}"), prev_hash: None, chain_hash: None, stored_as: None });
        v.check_sequence(Some(9));
        assert_eq!(v.finish().first_bad_id, Some(8));
    }

    #[test]
    fn rows_written_on_after_a_cut_are_found_at_the_first_missing_id() {
        let rows = chain(&["{}", "{}"]);
        // Rows 3 and 4 were removed, then row 5 was chained to row 2: the link holds.
        let r5 = row(5, "{}");
        let h5 = link(&rows[1].2, &r5);
        let mut tail = rows.clone();
        tail.push((r5, rows[1].2.clone(), h5));
        let v = walk(0, &tail, Some(5));
        assert_eq!(v.first_bad_id, Some(3));
        let reason = v.reason.unwrap();
        assert!(reason.contains("newest rows (ids 3..4) were removed; row 5 was written after the cut"), "{reason}");
        // The first row after an anchor must follow it too.
        let r9 = row(9, "{}");
        let h9 = link(GENESIS, &r9);
        let v = walk(7, &[(r9, GENESIS.to_owned(), h9)], Some(9));
        assert_eq!(v.first_bad_id, Some(8));
    }

    #[test]
    fn only_covered_unchained_rows_count_as_folded() {
        let r1 = row(1, "{}");
        let h1 = link(GENESIS, &r1);
        let legacy = row(2, "{}");
        let r3 = row(3, "{}");
        let running = fold(&h1, &legacy);
        let h3 = link(&running, &r3);
        let trailing = row(4, "{}");
        let mut v = Verifier::new(0, GENESIS);
        v.push(&StoredRow { content: r1, prev_hash: Some(GENESIS), chain_hash: Some(&h1), stored_as: None });
        v.push(&StoredRow { content: legacy, prev_hash: None, chain_hash: None, stored_as: None });
        v.push(&StoredRow { content: r3, prev_hash: Some(&running), chain_hash: Some(&h3), stored_as: None });
        v.push(&StoredRow { content: trailing, prev_hash: None, chain_hash: None, stored_as: None });
        v.check_sequence(Some(4));
        assert_eq!(
            v.finish(),
            Verdict {
                checked: 3,
                unchained: 1,
                appended: 1,
                folded: 1,
                head: Some((3, h3.clone())),
                ..Verdict::default()
            }
        );
        // An unchained row after skipped ids names them.
        let mut v = Verifier::new(0, GENESIS);
        v.push(&StoredRow { content: r1, prev_hash: Some(GENESIS), chain_hash: Some(&h1), stored_as: None });
        assert!(!v.push(&StoredRow { content: trailing, prev_hash: None, chain_hash: None, stored_as: None }));
        let v = v.finish();
        assert_eq!(v.first_bad_id, Some(2));
        assert!(v.reason.unwrap().contains("ids 2..3 missing before row 4"));
    }
}

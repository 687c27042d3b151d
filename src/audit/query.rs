//! Reading the trail: filters, counting, keyset pages and the chain walk.
//!
//! Every filter value is a bound parameter; the SQL text is built only from
//! fixed column names, so a filter value that looks like SQL matches nothing.
//! All functions here are Python-free and run with the GIL released.

use chrono::{DateTime, Datelike, Days, Utc};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::audit::chain::{RowContent, StoredRow, Verdict, Verifier};
use crate::audit::record::lifecycle;
use crate::audit::schema::{self, ROW_COLUMNS};
use crate::errors::Result;
use crate::timestamp;

/// The SQL function that reads a stored timestamp as an instant: the text
/// in the trail's own form (`isoformat()` of a UTC time), or NULL when it is
/// not a timestamp. Rows other writers added may hold another offset, `Z`, a
/// space or no offset at all; compared as text with a bound, they would be
/// ordered by their digits instead of by when they happened.
pub const UTC_FN: &str = "auditbus_utc";

/// Registers [`UTC_FN`] on a connection (every connection the trail opens).
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function(UTC_FN, 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok().and_then(|text| {
                if is_own_form(text) {
                    Some(text.to_owned())
                } else {
                    timestamp::parse_stored(text).map(|t| timestamp::isoformat(&t))
                }
            }),
            _ => None,
        })
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, the form auditbus and the legacy
/// service write, naming a day and time that exist: already its own
/// instant's text, no parse needed. Not with a fraction of `000000`, which
/// `isoformat()` leaves out: that text sorts after the bound of its own
/// instant. Any other text goes through [`timestamp::parse_stored`], as the
/// read of the row does.
fn is_own_form(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let shape = |n: usize| {
        b.len() == n
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && b.ends_with(b"+00:00")
    };
    if !(shape(25) || (shape(32) && b[19] == b'.' && digits(20..26) && &b[20..26] != b"000000")) {
        return false;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().ok();
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let exists = i32::try_from(year).ok().and_then(|y| chrono::NaiveDate::from_ymd_opt(y, month, day)).is_some();
    exists && year >= 1 && number(11..13) < Some(24) && number(14..16) < Some(60) && number(17..19) < Some(60)
}

/// Text every stored form of an instant at or after `since` sorts at or
/// after: the date a day before (an offset is less than a day). It keeps a
/// `timestamp` index usable ahead of the exact [`UTC_FN`] comparison.
fn since_floor(since: &DateTime<Utc>) -> Option<String> {
    since.checked_sub_days(Days::new(1)).map(|d| d.format("%Y-%m-%d").to_string())
}

/// Text every stored form of an instant at or before `until` sorts before:
/// the date two days after. None past year 9999, whose text (`+10000-...`)
/// would sort before every stored one.
fn until_ceiling(until: &DateTime<Utc>) -> Option<String> {
    until.checked_add_days(Days::new(2)).filter(|d| d.year() <= 9999).map(|d| d.format("%Y-%m-%d").to_string())
}

/// A bound as text to compare with [`UTC_FN`]'s: `isoformat()`, whose text
/// order is time order for the years 1 to 9999 every placed row is in (and
/// earlier instants' `0000-`/`-0001-` sort before them all). A later
/// instant's `+10000-...` would sort first: it is given a text after every
/// row's instead.
pub fn bound_text(bound: &DateTime<Utc>) -> String {
    if bound.year() > 9999 {
        "~".to_owned()
    } else {
        timestamp::isoformat(bound)
    }
}

/// One stored row, owned.
#[derive(Debug, Clone)]
pub struct RowData {
    pub id: i64,
    pub timestamp: String,
    pub event_type: String,
    pub plan_id: Option<String>,
    pub user_identity: Option<String>,
    pub details: String,
    pub event_id: Option<String>,
    pub actor_name: Option<String>,
    pub project_name: Option<String>,
    pub session_id: Option<String>,
    pub outcome: Option<String>,
    pub source: Option<String>,
    pub recorded_at: Option<String>,
    pub prev_hash: Option<String>,
    pub chain_hash: Option<String>,
    /// The columns whose stored bytes are not UTF-8 (text so stored, or a
    /// blob): read with U+FFFD in place of each bad sequence.
    pub not_utf8: Vec<&'static str>,
}

/// A column as text whatever its storage class (the legacy service bound
/// whatever it was given; an edited row may hold anything), None for NULL.
pub fn text(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<String>> {
    Ok(text_checked(row, index)?.0)
}

/// [`text`], and whether its stored bytes were not UTF-8 (text so stored,
/// or a blob), read with U+FFFD in place of each bad sequence.
fn text_checked(row: &Row<'_>, index: usize) -> rusqlite::Result<(Option<String>, bool)> {
    Ok(match row.get_ref(index)? {
        ValueRef::Null => (None, false),
        ValueRef::Integer(i) => (Some(i.to_string()), false),
        ValueRef::Real(f) => (Some(f.to_string()), false),
        // Valid UTF-8 (every row auditbus writes) takes the word-at-a-time check;
        // only invalid bytes pay for the lossy walk.
        ValueRef::Text(t) | ValueRef::Blob(t) => match std::str::from_utf8(t) {
            Ok(text) => (Some(text.to_owned()), false),
            Err(_) => (Some(String::from_utf8_lossy(t).into_owned()), true),
        },
    })
}

/// The first column of a row selected with [`ROW_COLUMNS`] (the id aside)
/// that is neither NULL nor UTF-8 text, and what it holds instead.
fn stored_as(row: &Row<'_>) -> rusqlite::Result<Option<(&'static str, &'static str)>> {
    let columns = schema::row_column_names().enumerate();
    for (index, column) in columns.filter(|(_, c)| *c != "id") {
        let what = match row.get_ref(index)? {
            ValueRef::Null => continue,
            ValueRef::Text(t) if std::str::from_utf8(t).is_ok() => continue,
            ValueRef::Text(_) => "text that is not valid UTF-8",
            ValueRef::Integer(_) => "an integer",
            ValueRef::Real(_) => "a real number",
            ValueRef::Blob(_) => "a blob",
        };
        return Ok(Some((column, what)));
    }
    Ok(None)
}

impl RowData {
    /// Reads a row selected with [`ROW_COLUMNS`].
    pub fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        let mut not_utf8 = Vec::new();
        let mut column = |index: usize| -> rusqlite::Result<Option<String>> {
            let (value, lossy) = text_checked(row, index)?;
            if lossy {
                not_utf8.extend(schema::row_column_names().nth(index));
            }
            Ok(value)
        };
        Ok(Self {
            id: row.get(0)?,
            timestamp: column(1)?.unwrap_or_default(),
            event_type: column(2)?.unwrap_or_default(),
            plan_id: column(3)?,
            user_identity: column(4)?,
            details: column(5)?.unwrap_or_default(),
            event_id: column(6)?,
            actor_name: column(7)?,
            project_name: column(8)?,
            session_id: column(9)?,
            outcome: column(10)?,
            source: column(11)?,
            recorded_at: column(12)?,
            prev_hash: column(13)?,
            chain_hash: column(14)?,
            not_utf8,
        })
    }

    pub fn content(&self) -> RowContent<'_> {
        RowContent {
            id: self.id,
            timestamp: &self.timestamp,
            event_type: &self.event_type,
            plan_id: self.plan_id.as_deref(),
            user_identity: self.user_identity.as_deref(),
            details: &self.details,
            event_id: self.event_id.as_deref(),
            actor_name: self.actor_name.as_deref(),
            project_name: self.project_name.as_deref(),
            session_id: self.session_id.as_deref(),
            outcome: self.outcome.as_deref(),
            source: self.source.as_deref(),
            recorded_at: self.recorded_at.as_deref(),
        }
    }
}

/// Rows with `after < id <= upto`, in id order.
pub fn rows_between(conn: &Connection, after: i64, upto: i64) -> Result<Vec<RowData>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM audit_log WHERE id > ?1 AND id <= ?2 ORDER BY id"))?;
    let rows = stmt.query_map((after, upto), RowData::read)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Which rows a query, count or export selects. Text filters are exact matches.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// None: every type except the service's own lifecycle rows.
    pub event_types: Option<Vec<String>>,
    pub plan_id: Option<String>,
    pub user_identity: Option<String>,
    pub actor_name: Option<String>,
    pub session_id: Option<String>,
    pub project_name: Option<String>,
    pub outcome: Option<String>,
    /// Bounds (inclusive) on each row's instant, whatever text it stores.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Keyset cursor: rows after this id in the chosen order.
    pub after_id: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Filter {
    fn where_clause(&self, order: Order, params: &mut Vec<rusqlite::types::Value>) -> String {
        use rusqlite::types::Value;
        let mut clauses: Vec<String> = Vec::new();
        match &self.event_types {
            Some(types) => {
                let marks = vec!["?"; types.len()].join(", ");
                clauses.push(format!("event_type IN ({marks})"));
                params.extend(types.iter().cloned().map(Value::Text));
            }
            None => {
                let marks = vec!["?"; lifecycle::ALL.len()].join(", ");
                clauses.push(format!("event_type NOT IN ({marks})"));
                params.extend(lifecycle::ALL.iter().map(|t| Value::Text((*t).to_owned())));
            }
        }
        for (column, value) in [
            ("plan_id", &self.plan_id),
            ("user_identity", &self.user_identity),
            ("actor_name", &self.actor_name),
            ("session_id", &self.session_id),
            ("project_name", &self.project_name),
            ("outcome", &self.outcome),
        ] {
            if let Some(value) = value {
                clauses.push(format!("{column} = ?"));
                params.push(Value::Text(value.clone()));
            }
        }
        if let Some(since) = &self.since {
            if let Some(floor) = since_floor(since) {
                clauses.push("timestamp >= ?".into());
                params.push(Value::Text(floor));
            }
            clauses.push(format!("{UTC_FN}(timestamp) >= ?"));
            params.push(Value::Text(bound_text(since)));
        }
        if let Some(until) = &self.until {
            if let Some(ceiling) = until_ceiling(until) {
                clauses.push("timestamp < ?".into());
                params.push(Value::Text(ceiling));
            }
            clauses.push(format!("{UTC_FN}(timestamp) <= ?"));
            params.push(Value::Text(bound_text(until)));
        }
        if let Some(after) = self.after_id {
            clauses.push(if order == Order::Asc { "id > ?".into() } else { "id < ?".into() });
            params.push(Value::Integer(after));
        }
        format!(" WHERE {}", clauses.join(" AND "))
    }
}

/// A page of matching rows.
pub fn fetch(
    conn: &Connection,
    filter: &Filter,
    order: Order,
    limit: Option<u64>,
    offset: u64,
) -> Result<Vec<RowData>> {
    let mut params = Vec::new();
    let where_clause = filter.where_clause(order, &mut params);
    let direction = if order == Order::Asc { "ASC" } else { "DESC" };
    let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    params.push(rusqlite::types::Value::Integer(limit));
    params.push(rusqlite::types::Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
    let sql = format!("SELECT {ROW_COLUMNS} FROM audit_log{where_clause} ORDER BY id {direction} LIMIT ? OFFSET ?");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), RowData::read)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many rows match; `order` is the direction `after_id` keeps, as in [`fetch`].
pub fn count(conn: &Connection, filter: &Filter, order: Order) -> Result<u64> {
    let mut params = Vec::new();
    let where_clause = filter.where_clause(order, &mut params);
    let mut stmt = conn.prepare_cached(&format!("SELECT count(*) FROM audit_log{where_clause}"))?;
    let n: i64 = stmt.query_row(rusqlite::params_from_iter(params), |row| row.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// What the trail holds, read in one snapshot so that rows committed or purged
/// meanwhile cannot make one figure disagree with another: every row, the rows
/// of each of `types`, and the first and the last row (of any type).
pub struct Summary {
    pub rows: u64,
    pub by_type: Vec<(String, u64)>,
    pub first: Option<RowData>,
    pub last: Option<RowData>,
}

pub fn summary(conn: &Connection, types: &[String]) -> Result<Summary> {
    let tx = conn.unchecked_transaction()?;
    let rows: i64 = tx.query_row("SELECT count(*) FROM audit_log", [], |row| row.get(0))?;
    let mut by_type = Vec::with_capacity(types.len());
    for name in types {
        let filter = Filter { event_types: Some(vec![name.clone()]), ..Filter::default() };
        by_type.push((name.clone(), count(&tx, &filter, Order::Asc)?));
    }
    let end = |direction: &str| -> Result<Option<RowData>> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM audit_log ORDER BY id {direction} LIMIT 1");
        Ok(tx.query_row(&sql, [], RowData::read).optional()?)
    };
    let (first, last) = (end("ASC")?, end("DESC")?);
    tx.commit()?;
    Ok(Summary { rows: u64::try_from(rows).unwrap_or(0), by_type, first, last })
}

/// The row an integrity-check message names (`row 5 missing from index ...`).
fn named_row(message: &str) -> Option<i64> {
    message.strip_prefix("row ")?.split(' ').next()?.parse().ok()
}

/// Feeds `verifier` the rows up to `upto` (every row when None) in id
/// order; stops at the first bad one.
fn walk(conn: &Connection, verifier: &mut Verifier, upto: Option<i64>) -> Result<()> {
    let missing = schema::missing_columns(conn)?;
    if !missing.is_empty() {
        let first = conn
            .query_row("SELECT id FROM audit_log WHERE id > ?1 ORDER BY id LIMIT 1", [verifier.anchor_id()], |row| {
                row.get::<_, i64>(0)
            })
            .optional()
            .ok()
            .flatten();
        verifier.columns_missing(&schema::altered(&missing), first);
        return Ok(());
    }
    let bound = if upto.is_some() { " WHERE id <= ?1" } else { "" };
    let mut stmt = conn.prepare(&format!("SELECT {ROW_COLUMNS} FROM audit_log{bound} ORDER BY id"))?;
    let mut rows = match upto {
        Some(upto) => stmt.query([upto])?,
        None => stmt.query([])?,
    };
    while let Some(row) = rows.next()? {
        let shown = match row.get_ref(0)? {
            ValueRef::Integer(_) => None,
            ValueRef::Null => Some("NULL".to_owned()),
            ValueRef::Real(f) => Some(f.to_string()),
            ValueRef::Text(t) => Some(crate::values::short_text(&String::from_utf8_lossy(t))),
            ValueRef::Blob(_) => Some("a blob".to_owned()),
        };
        if let Some(shown) = shown {
            verifier.not_an_id(&shown);
            break;
        }
        let data = RowData::read(row)?;
        let stored = StoredRow {
            content: data.content(),
            prev_hash: data.prev_hash.as_deref(),
            chain_hash: data.chain_hash.as_deref(),
            stored_as: if data.chain_hash.is_some() { stored_as(row)? } else { None },
        };
        if !verifier.push(&stored) {
            break;
        }
    }
    Ok(())
}

/// The first bad row among those up to `upto`, and why: what a purge
/// through `upto` would delete, with the evidence, when set.
pub fn first_bad_upto(conn: &Connection, upto: i64) -> Result<Option<(i64, String)>> {
    let (anchor_id, anchor_hash) = schema::anchor(conn)?;
    let mut verifier = Verifier::new(anchor_id, &anchor_hash);
    walk(conn, &mut verifier, Some(upto))?;
    let verdict = verifier.finish();
    Ok(verdict.first_bad_id.zip(verdict.reason))
}

/// Walks the whole table in id order inside one read transaction (a
/// consistent snapshot even while other processes append), then checks the
/// last id against `sqlite_sequence` in the same snapshot.
pub fn verify(conn: &Connection, heads: &[(i64, String)]) -> Result<Verdict> {
    let tx = conn.unchecked_transaction()?;
    let (anchor_id, anchor_hash) = schema::anchor(&tx)?;
    let mut verifier = Verifier::new(anchor_id, &anchor_hash).expect_heads(heads.iter().cloned());
    walk(&tx, &mut verifier, None)?;
    verifier.check_sequence(schema::sequence(&tx)?);
    // The walk reads the table; a query filtering on a column reads its index.
    // An index edited in the file to lack a row hides that row from such
    // queries while every row still links.
    if verifier.intact() {
        let mut stmt = tx.prepare("PRAGMA main.integrity_check(audit_log)")?;
        let found: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
        if found.first().is_some_and(|first| first != "ok") {
            // The smallest row a message names, else the first message.
            match found.iter().filter_map(|message| Some((named_row(message)?, message))).min_by_key(|(id, _)| *id) {
                Some((id, message)) => verifier.index_damaged(message, Some(id)),
                None => verifier.index_damaged(&found[0], None),
            }
        }
    }
    tx.commit()?;
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn
    }

    fn utc(conn: &Connection, text: &str) -> Option<String> {
        conn.query_row(&format!("SELECT {UTC_FN}(?1)"), [text], |row| row.get(0)).unwrap()
    }

    #[test]
    fn stored_text_reads_as_its_instant() {
        let conn = trail();
        for (stored, instant) in [
            ("2026-01-01T10:00:00+00:00", "2026-01-01T10:00:00+00:00"),
            ("2026-01-01T10:00:00.000006+00:00", "2026-01-01T10:00:00.000006+00:00"),
            ("2026-01-01T10:00:00.000000+00:00", "2026-01-01T10:00:00+00:00"),
            ("2026-01-01T12:45:00+02:00", "2026-01-01T10:45:00+00:00"),
            ("2026-01-01 10:00:00.5Z", "2026-01-01T10:00:00.500000+00:00"),
            ("2026-01-01T10:00:00", "2026-01-01T10:00:00+00:00"),
            ("2026-01-01", "2026-01-01T00:00:00+00:00"),
        ] {
            assert_eq!(utc(&conn, stored).as_deref(), Some(instant), "{stored}");
        }
        assert_eq!(utc(&conn, "yesterday"), None);
        // Shaped like an instant, but none a datetime holds: the read of the row cannot place it either.
        for stored in ["2026-02-30T10:00:00+00:00", "2026-01-01T24:00:00+00:00", "0000-12-31T10:00:00+00:00"] {
            assert_eq!(utc(&conn, stored), None, "{stored}");
        }
        assert_eq!(utc(&conn, "9999-12-31T23:00:00-02:00"), None);
        for stored in [
            " 2026-01-01T10:00:00+00:00",
            "+2026-01-01T10:00:00+00:00",
            "2026-1-1T10:00:00+00:00",
            "2016-12-31T23:59:60+00:00",
            "2016-12-31T23:59:60Z",
        ] {
            assert_eq!(utc(&conn, stored), None, "{stored}");
        }
        assert!(is_own_form("2026-01-01T10:00:00.000006+00:00"));
        assert!(!is_own_form("2026-01-01T10:00:00.5+00:00"));
        assert!(!is_own_form("2026-01-01T10:00:00.000000+00:00"));
        assert!(!is_own_form("2026-01-01 10:00:00+00:00"));
    }

    #[test]
    fn a_time_bound_reads_the_timestamp_index() {
        let conn = trail();
        let since = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let filter = Filter { since: Some(since), until: Some(since), ..Filter::default() };
        let mut params = Vec::new();
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM audit_log{}",
            filter.where_clause(Order::Asc, &mut params)
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params), |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("ix_audit_log_timestamp") && step.contains("timestamp>?")),
            "{plan:?}"
        );
    }
}

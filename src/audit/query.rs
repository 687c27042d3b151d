//! Reading the trail: filters, counting, keyset pages and the chain walk.
//!
//! Every filter value is a bound parameter; the SQL text is built only from
//! fixed column names, so a filter value that looks like SQL matches nothing.
//! All functions here are Python-free and run with the GIL released.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};

use crate::audit::chain::{RowContent, StoredRow, Verdict, Verifier};
use crate::audit::record::lifecycle;
use crate::audit::schema::{self, ROW_COLUMNS};
use crate::errors::Result;

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
}

/// A column as text whatever its storage class (the legacy service bound
/// whatever it was given; an edited row may hold anything), None for NULL.
pub fn text(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(index)? {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    })
}

impl RowData {
    /// Reads a row selected with [`ROW_COLUMNS`].
    pub fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            timestamp: text(row, 1)?.unwrap_or_default(),
            event_type: text(row, 2)?.unwrap_or_default(),
            plan_id: text(row, 3)?,
            user_identity: text(row, 4)?,
            details: text(row, 5)?.unwrap_or_default(),
            event_id: text(row, 6)?,
            actor_name: text(row, 7)?,
            project_name: text(row, 8)?,
            session_id: text(row, 9)?,
            outcome: text(row, 10)?,
            source: text(row, 11)?,
            recorded_at: text(row, 12)?,
            prev_hash: text(row, 13)?,
            chain_hash: text(row, 14)?,
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
    /// ISO text in the table's form, compared as text like the legacy query.
    pub since: Option<String>,
    pub until: Option<String>,
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
            clauses.push("timestamp >= ?".into());
            params.push(Value::Text(since.clone()));
        }
        if let Some(until) = &self.until {
            clauses.push("timestamp <= ?".into());
            params.push(Value::Text(until.clone()));
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

/// How many rows match.
pub fn count(conn: &Connection, filter: &Filter) -> Result<u64> {
    let mut params = Vec::new();
    let where_clause = filter.where_clause(Order::Asc, &mut params);
    let mut stmt = conn.prepare_cached(&format!("SELECT count(*) FROM audit_log{where_clause}"))?;
    let n: i64 = stmt.query_row(rusqlite::params_from_iter(params), |row| row.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Walks the whole table in id order inside one read transaction (a
/// consistent snapshot even while other processes append), then checks the
/// last id against `sqlite_sequence` in the same snapshot.
pub fn verify(conn: &Connection, heads: &[(i64, String)]) -> Result<Verdict> {
    let tx = conn.unchecked_transaction()?;
    let (anchor_id, anchor_hash) = schema::anchor(&tx)?;
    let mut verifier = Verifier::new(anchor_id, &anchor_hash).expect_heads(heads.iter().cloned());
    {
        let mut stmt = tx.prepare(&format!("SELECT {ROW_COLUMNS} FROM audit_log ORDER BY id"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let data = RowData::read(row)?;
            let stored = StoredRow {
                content: data.content(),
                prev_hash: data.prev_hash.as_deref(),
                chain_hash: data.chain_hash.as_deref(),
            };
            if !verifier.push(&stored) {
                break;
            }
        }
    }
    verifier.check_sequence(schema::sequence(&tx)?);
    tx.commit()?;
    Ok(verifier.finish())
}

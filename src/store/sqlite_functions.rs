//! The statistics' grouping on SQLite: two aggregate functions every SQLite connection gets.
//!
//! `COUNT(DISTINCT person)` cannot be added up from smaller cells, so without `GROUPING SETS` every
//! subset of the requested dimensions needed a sort of the whole window of its own: four sorts of
//! 10⁶ referrals for two dimensions, 5.7–7.9 s (bench/RESULTS.md). Sets of people do add up: the
//! statement groups the window once, at its finest grain, collecting each fine cell's people as a
//! set, and every coarser cell counts the union of its fine cells' sets. And that one grouping is
//! done in a hash table, not by SQLite's `GROUP BY`, which sorts all 10⁶ rows to find a few
//! thousand groups (1.2 s of a 1.7 s call).
//!
//! - `fine_cells(person, received, received_ok, started_ok, key…)`: the window grouped by its keys,
//!   each group with its row count, its sums and its people as a serialized Roaring bitmap, all as
//!   one JSON text that the statement turns back into rows with `json_each`.
//! - `person_count(set)`: how many people the union of a group's sets holds.
//!
//! A person is `referrals.person_id` (migration 0010): a small number, never the pseudonym. The
//! functions are `DIRECTONLY`: a trigger or view in the database file cannot call them.
//!
//! sqlx has no way to add functions to a connection; rusqlite has, and borrows sqlx's connection
//! handle (both use the same `libsqlite3-sys`) without taking it over.

use std::{collections::HashMap, ptr::NonNull};

use roaring::RoaringBitmap;
use rusqlite::{
    Error,
    functions::{Aggregate, Context, FunctionFlags},
    types::ValueRef,
};

/// Adds both functions to one connection.
pub(crate) fn register(db: NonNull<libsqlite3_sys::sqlite3>) -> rusqlite::Result<()> {
    // SAFETY: `db` is an open connection that sqlx has lent us alone (`LockedSqliteHandle`) for
    // this call. `from_handle` does not own it: dropping `connection` leaves it open. SQLite keeps
    // the functions (boxed, with their destructors) with the connection, not with `connection`.
    let connection = unsafe { rusqlite::Connection::from_handle(db.as_ptr()) }?;
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_DIRECTONLY;
    connection.create_aggregate_function("fine_cells", -1, flags, FineCells)?;
    connection.create_aggregate_function("person_count", 1, flags, PersonCount)?;
    Ok(())
}

fn misuse(message: &'static str) -> Error {
    Error::UserFunctionError(message.into())
}

/// A person's number, checked: NULL is no one.
fn person(value: Option<i64>) -> rusqlite::Result<Option<u32>> {
    value
        .map(|p| {
            u32::try_from(p)
                .map_err(|_| misuse("fine_cells: a person's number is from 0 to 2^32 - 1"))
        })
        .transpose()
}

/// A set of people as `person_count` reads it.
fn serialize(people: &RoaringBitmap) -> rusqlite::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(people.serialized_size());
    people
        .serialize_into(&mut bytes)
        .map_err(|e| Error::UserFunctionError(e.into()))?;
    Ok(bytes)
}

/// `fine_cells(person, received, received_ok, started_ok, key…) -> TEXT`: the rows grouped by
/// their keys in a hash table, as SQLite cannot (its `GROUP BY` sorts every row, 1.2 s of a call's
/// 1.7 s for 10⁶ referrals). The result is a JSON array with one element per group:
/// `[n, received, received_ok, started_ok, people, key…]`, the row count, the sums of the three
/// 0/1 columns, the group's people as the hex of a serialized set (for `person_count`, after
/// `unhex`), and the keys as they came (integer, text or null). A few thousand groups, which the
/// statement reads back with `json_each`.
struct FineCells;

/// One group of [`FineCells`].
struct Cell {
    keys: Vec<serde_json::Value>,
    n: i64,
    received: i64,
    received_ok: i64,
    started_ok: i64,
    people: RoaringBitmap,
}

/// The state of [`FineCells`]: the groups, found by their keys' bytes.
#[derive(Default)]
struct Cells {
    index: HashMap<Vec<u8>, usize>,
    cells: Vec<Cell>,
    /// The current row's keys as bytes, reused from row to row.
    key: Vec<u8>,
}

/// The leading arguments before the keys.
const FINE_CELLS_FIXED: usize = 4;

/// Appends one key to `bytes`, tagged by type, so that distinct values never share bytes.
fn key_bytes(bytes: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => bytes.push(0),
        ValueRef::Integer(i) => {
            bytes.push(1);
            bytes.extend_from_slice(&i.to_le_bytes());
        }
        ValueRef::Real(r) => {
            bytes.push(2);
            bytes.extend_from_slice(&r.to_bits().to_le_bytes());
        }
        ValueRef::Text(t) => tagged(bytes, 3, t),
        ValueRef::Blob(b) => tagged(bytes, 4, b),
    }
}

/// `tag`, the length of `value`, then `value`.
fn tagged(bytes: &mut Vec<u8>, tag: u8, value: &[u8]) {
    bytes.push(tag);
    bytes.extend_from_slice(&(value.len() as u64).to_le_bytes());
    bytes.extend_from_slice(value);
}

/// A key as JSON; `json_each` gives it back as the same SQL value (a blob is not a key here).
fn key_json(value: ValueRef<'_>) -> rusqlite::Result<serde_json::Value> {
    Ok(match value {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(r) => r.into(),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map_err(|_| misuse("fine_cells: a text key is not UTF-8"))?
            .into(),
        ValueRef::Blob(_) => return Err(misuse("fine_cells: a key is a blob")),
    })
}

impl Aggregate<Cells, String> for FineCells {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Cells> {
        Ok(Cells::default())
    }

    fn step(&self, context: &mut Context<'_>, cells: &mut Cells) -> rusqlite::Result<()> {
        let Cells { index, cells, key } = cells;
        key.clear();
        for i in FINE_CELLS_FIXED..context.len() {
            key_bytes(key, context.get_raw(i));
        }
        let at = match index.get(key.as_slice()) {
            Some(at) => *at,
            None => {
                let keys = (FINE_CELLS_FIXED..context.len())
                    .map(|i| key_json(context.get_raw(i)))
                    .collect::<rusqlite::Result<_>>()?;
                cells.push(Cell {
                    keys,
                    n: 0,
                    received: 0,
                    received_ok: 0,
                    started_ok: 0,
                    people: RoaringBitmap::new(),
                });
                index.insert(key.clone(), cells.len() - 1);
                cells.len() - 1
            }
        };
        let cell = &mut cells[at];
        cell.n += 1;
        if let Some(person) = person(context.get::<Option<i64>>(0)?)? {
            cell.people.insert(person);
        }
        cell.received += context.get::<i64>(1)?;
        cell.received_ok += context.get::<i64>(2)?;
        cell.started_ok += context.get::<i64>(3)?;
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, cells: Option<Cells>) -> rusqlite::Result<String> {
        let cells = cells.map(|c| c.cells).unwrap_or_default();
        let mut rows = Vec::with_capacity(cells.len());
        for cell in cells {
            let mut row = vec![
                cell.n.into(),
                cell.received.into(),
                cell.received_ok.into(),
                cell.started_ok.into(),
                hex::encode(serialize(&cell.people)?).into(),
            ];
            row.extend(cell.keys);
            rows.push(serde_json::Value::Array(row));
        }
        serde_json::to_string(&rows).map_err(|e| Error::UserFunctionError(e.into()))
    }
}

/// `person_count(set BLOB) -> INTEGER`.
struct PersonCount;

impl Aggregate<RoaringBitmap, i64> for PersonCount {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<RoaringBitmap> {
        Ok(RoaringBitmap::new())
    }

    fn step(&self, context: &mut Context<'_>, people: &mut RoaringBitmap) -> rusqlite::Result<()> {
        if let Some(bytes) = context.get_raw(0).as_blob_or_null()? {
            let set = RoaringBitmap::deserialize_from(bytes)
                .map_err(|_| misuse("person_count: not a set made by fine_cells"))?;
            *people |= set;
        }
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        people: Option<RoaringBitmap>,
    ) -> rusqlite::Result<i64> {
        Ok(people.map_or(0, |p| i64::try_from(p.len()).unwrap_or(i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::{
        Connection, Row,
        sqlite::{SqliteConnectOptions, SqliteConnection},
    };

    use super::*;

    async fn connection() -> SqliteConnection {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").expect("an in-memory URL");
        let mut connection = SqliteConnection::connect_with(&options)
            .await
            .expect("an in-memory database");
        let mut handle = connection.lock_handle().await.expect("the handle");
        register(handle.as_raw_handle()).expect("registered");
        drop(handle);
        connection
    }

    /// `k2` with its type: `GROUP BY` keeps the integer 1 and the text '1' apart.
    const K2: &str = "typeof(k2) || ':' || COALESCE(k2, '')";

    /// The fine cells of `w (person, received, received_ok, started_ok, k1, k2)`, read back.
    const FINE: &str = "f AS (SELECT c.value ->> 5 AS k1, c.value ->> 6 AS k2, c.value ->> 0 AS n, \
        c.value ->> 1 AS received, c.value ->> 2 AS received_ok, c.value ->> 3 AS started_ok, \
        unhex(c.value ->> 4) AS people \
        FROM json_each((SELECT fine_cells(person, received, received_ok, started_ok, k1, k2) \
        FROM w)) AS c)";

    /// Each group of the hash grouping holds what SQLite's own `GROUP BY` gives, keys of every type
    /// kept apart (the integer 1 and the text '1' are two groups, as they are to `GROUP BY`), and
    /// the union of fine groups' sets counts each coarse group's distinct people, a person in
    /// several fine groups once, as `COUNT(DISTINCT …)` does; NULL persons are no one.
    #[tokio::test]
    async fn fine_cells_group_as_group_by_does_and_their_sets_count_people_once() {
        let mut c = connection().await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH w (person, received, received_ok, started_ok, k1, k2) AS (VALUES \
               (7, 1, 1, 0, 'a', 1), (7, 0, 0, 0, 'a', 1), (7, 1, 0, 1, 'a', 2), \
               (8, 1, 1, 1, 'a', 2), (NULL, 0, 0, 0, 'a', 2), (9, 1, 1, 1, 'b', NULL), \
               (9, 0, 0, 0, 'b', '1'), (10, 1, 0, 0, 'b', 1), (11, 1, 1, 1, NULL, NULL)), \
             {FINE}, \
             g AS (SELECT k1, k2, COUNT(*) AS n, SUM(received) AS received, \
               SUM(received_ok) AS received_ok, SUM(started_ok) AS started_ok, \
               COUNT(DISTINCT person) AS people FROM w GROUP BY k1, k2) \
             SELECT 'fine', k1, {K2}, n, received, received_ok, started_ok, person_count(people) \
               FROM f GROUP BY k1, k2 \
             UNION ALL SELECT 'group by', k1, {K2}, n, received, received_ok, started_ok, people FROM g \
             UNION ALL SELECT 'coarse', k1, '', SUM(n), NULL, NULL, NULL, person_count(people) \
               FROM f GROUP BY k1 \
             UNION ALL SELECT 'distinct', k1, '', COUNT(*), NULL, NULL, NULL, \
               COUNT(DISTINCT person) FROM w GROUP BY k1"
        )))
        .fetch_all(&mut c)
        .await
        .expect("the statement");
        type Row = (
            Option<String>,
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            i64,
        );
        let mut by: HashMap<String, Vec<Row>> = HashMap::new();
        for r in &rows {
            by.entry(r.get(0)).or_default().push((
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            ));
        }
        for rows in by.values_mut() {
            rows.sort();
        }
        assert_eq!(by["fine"].len(), 6, "six groups: {:?}", by["fine"]);
        assert_eq!(
            by["fine"], by["group by"],
            "the hash grouping is GROUP BY's"
        );
        assert_eq!(by["coarse"], by["distinct"], "unions count distinct people");
        let a = by["coarse"]
            .iter()
            .find(|r| r.0.as_deref() == Some("a"))
            .expect("group a");
        assert_eq!((a.2, a.6), (5, 2), "a: five rows, persons 7 and 8");

        let empty: String =
            sqlx::query_scalar("SELECT fine_cells(1, 1, 1, 1, 'k') FROM (SELECT 1 WHERE 0)")
                .fetch_one(&mut c)
                .await
                .expect("no rows");
        assert_eq!(empty, "[]", "no rows, no groups");
    }

    /// A number outside a person's range, a blob as a key, or a blob that is not a set, fails the
    /// statement: never a wrong count.
    #[tokio::test]
    async fn refuses_what_is_not_a_person_or_a_set() {
        let mut c = connection().await;
        for statement in [
            "SELECT fine_cells(-1, 0, 0, 0, 'k')",
            "SELECT fine_cells(4294967296, 0, 0, 0, 'k')",
            "SELECT fine_cells(1, 0, 0, 0, x'00')",
            "SELECT person_count(x'00010203')",
        ] {
            let outcome = sqlx::query(statement).fetch_all(&mut c).await;
            assert!(outcome.is_err(), "{statement} must fail, got {outcome:?}");
        }
    }
}

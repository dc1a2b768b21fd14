//! Distinct people in SQLite's statistics: two aggregate functions every SQLite connection gets.
//!
//! `COUNT(DISTINCT person)` cannot be added up from smaller cells, so without `GROUPING SETS` every
//! subset of the requested dimensions needed a sort of the whole window of its own: four sorts of
//! 10⁶ referrals for two dimensions, 5.7–7.9 s (bench/RESULTS.md). Sets of people do add up: the
//! statement groups the window once, at its finest grain, collecting each fine cell's people as a
//! set, and every coarser cell counts the union of its fine cells' sets.
//!
//! - `person_set(person)`: the people of a group, as a serialized Roaring bitmap (a blob; NULL
//!   persons are left out, as `COUNT(DISTINCT …)` leaves them out).
//! - `person_count(set)`: how many people the union of a group's sets holds.
//!
//! A person is `referrals.person_id` (migration 0010): a small number, never the pseudonym. The
//! functions are `DIRECTONLY`: a trigger or view in the database file cannot call them.
//!
//! sqlx has no way to add functions to a connection; rusqlite has, and borrows sqlx's connection
//! handle (both use the same `libsqlite3-sys`) without taking it over.

use std::ptr::NonNull;

use roaring::RoaringBitmap;
use rusqlite::{
    Error,
    functions::{Aggregate, Context, FunctionFlags},
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
    connection.create_aggregate_function("person_set", 1, flags, PersonSet)?;
    connection.create_aggregate_function("person_count", 1, flags, PersonCount)?;
    Ok(())
}

fn misuse(message: &'static str) -> Error {
    Error::UserFunctionError(message.into())
}

/// `person_set(person INTEGER) -> BLOB`.
struct PersonSet;

impl Aggregate<RoaringBitmap, Vec<u8>> for PersonSet {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<RoaringBitmap> {
        Ok(RoaringBitmap::new())
    }

    fn step(&self, context: &mut Context<'_>, people: &mut RoaringBitmap) -> rusqlite::Result<()> {
        if let Some(person) = context.get::<Option<i64>>(0)? {
            let person = u32::try_from(person)
                .map_err(|_| misuse("person_set: a person's number is from 0 to 2^32 - 1"))?;
            people.insert(person);
        }
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        people: Option<RoaringBitmap>,
    ) -> rusqlite::Result<Vec<u8>> {
        let people = people.unwrap_or_default();
        let mut bytes = Vec::with_capacity(people.serialized_size());
        people
            .serialize_into(&mut bytes)
            .map_err(|e| Error::UserFunctionError(e.into()))?;
        Ok(bytes)
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
                .map_err(|_| misuse("person_count: not a set made by person_set"))?;
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

    /// The union of fine groups' sets counts each coarse group's distinct people, a person in
    /// several fine groups once, as `COUNT(DISTINCT …)` does; NULL persons are no one.
    #[tokio::test]
    async fn unions_of_fine_sets_count_each_person_once() {
        let mut c = connection().await;
        let rows = sqlx::query(
            "WITH w (coarse, fine, person) AS (VALUES \
               ('a', 1, 7), ('a', 1, 7), ('a', 2, 7), ('a', 2, 8), ('a', 2, NULL), \
               ('b', 3, 9), ('b', 4, 9), ('b', 4, 10)), \
             f AS (SELECT coarse, fine, person_set(person) AS people FROM w GROUP BY coarse, fine) \
             SELECT coarse, person_count(people) AS n, \
               (SELECT COUNT(DISTINCT person) FROM w AS x WHERE x.coarse = f.coarse) AS expected \
             FROM f GROUP BY coarse ORDER BY coarse",
        )
        .fetch_all(&mut c)
        .await
        .expect("the statement");
        let got: Vec<(String, i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            got,
            vec![("a".to_owned(), 2, 2), ("b".to_owned(), 2, 2)],
            "a: persons 7 and 8; b: persons 9 and 10"
        );
        let empty: i64 =
            sqlx::query_scalar("SELECT person_count(s) FROM (SELECT person_set(NULL) AS s)")
                .fetch_one(&mut c)
                .await
                .expect("an empty set");
        assert_eq!(empty, 0, "a group of unknown persons has no people");
    }

    /// A number outside a person's range, or a blob that is not a set, fails the statement:
    /// never a wrong count.
    #[tokio::test]
    async fn refuses_what_is_not_a_person_or_a_set() {
        let mut c = connection().await;
        for statement in [
            "SELECT person_set(-1)",
            "SELECT person_set(4294967296)",
            "SELECT person_count(x'00010203')",
        ] {
            let outcome = sqlx::query(statement).fetch_all(&mut c).await;
            assert!(outcome.is_err(), "{statement} must fail, got {outcome:?}");
        }
    }
}

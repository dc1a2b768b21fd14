//! What a run wrote to PostgreSQL, per completed operation (issue 19: the cost of a referral is what
//! it writes). Read from the database itself before the scenario starts and after the server has
//! stopped (a backend reports its counts when it ends):
//!
//! - rows: heap tuples inserted, updated and deleted in the run's database (`pg_stat_user_tables`;
//!   index entries are not rows here, they show in the bytes);
//! - statements: every statement the server sent, `BEGIN` and `COMMIT` included
//!   (`pg_stat_statements`, when the PostgreSQL server loads it: `shared_preload_libraries =
//!   'pg_stat_statements'`; otherwise not reported);
//! - WAL bytes: `pg_current_wal_lsn()` after minus before (the whole cluster's: run on a quiet one);
//! - table and index bytes: `pg_total_relation_size` of the database's tables, after minus before
//!   (whole pages, so coarse over a short run).

use serde::Serialize;
use sqlx::{Connection, PgConnection};

/// The counters at one moment.
pub struct Snapshot {
    /// Per table: inserted, updated, deleted.
    tables: Vec<(String, [i64; 3])>,
    statements: Option<i64>,
    /// The WAL's position, in bytes from its start.
    wal: f64,
    bytes: i64,
}

impl Snapshot {
    fn rows(&self) -> i64 {
        self.tables
            .iter()
            .map(|(_, counts)| counts.iter().sum::<i64>())
            .sum()
    }
}

/// Per completed operation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Footprint {
    pub rows: f64,
    /// Where the rows went: per table with any, inserted, updated and deleted per operation.
    pub tables: Vec<(String, [f64; 3])>,
    pub statements: Option<f64>,
    pub wal_bytes: f64,
    pub table_and_index_bytes: f64,
}

async fn statements(conn: &mut PgConnection) -> Option<i64> {
    // Fails when the library is not loaded; then the figure is left out.
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut *conn)
        .await
        .ok()?;
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT SUM(calls)::bigint FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut *conn)
    .await
    .ok()
    .map(|calls| calls.unwrap_or(0))
}

/// The counters of the database at `url` now.
pub async fn take(url: &str) -> anyhow::Result<Snapshot> {
    let mut conn = PgConnection::connect(url).await?;
    let (bytes, wal): (i64, f64) = sqlx::query_as(
        "SELECT COALESCE(SUM(pg_total_relation_size(relid)), 0)::bigint, \
           pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 \
         FROM pg_stat_user_tables",
    )
    .fetch_one(&mut conn)
    .await?;
    let tables: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables \
         ORDER BY relname",
    )
    .fetch_all(&mut conn)
    .await?;
    Ok(Snapshot {
        tables: tables
            .into_iter()
            .map(|(name, ins, upd, del)| (name, [ins, upd, del]))
            .collect(),
        statements: statements(&mut conn).await,
        wal,
        bytes,
    })
}

/// What was written between `before` and now, per one of `operations`.
pub async fn since(url: &str, before: &Snapshot, operations: usize) -> anyhow::Result<Footprint> {
    let after = take(url).await?;
    let n = operations.max(1) as f64;
    let tables = after
        .tables
        .iter()
        .filter_map(|(name, counts)| {
            let earlier = before
                .tables
                .iter()
                .find(|(b, _)| b == name)
                .map_or([0; 3], |(_, c)| *c);
            let per: [f64; 3] = std::array::from_fn(|i| (counts[i] - earlier[i]) as f64 / n);
            (per.iter().any(|x| *x >= 0.005)).then(|| (name.clone(), per))
        })
        .collect();
    Ok(Footprint {
        rows: (after.rows() - before.rows()) as f64 / n,
        tables,
        statements: match (after.statements, before.statements) {
            (Some(a), Some(b)) => Some((a - b) as f64 / n),
            _ => None,
        },
        wal_bytes: (after.wal - before.wal) / n,
        table_and_index_bytes: (after.bytes - before.bytes) as f64 / n,
    })
}

//! Referral statistics in SQL: one statement per table, grouped in the database.
//!
//! Neither engine's common ground has `GROUPING SETS` (SQLite has none) nor a median, so the
//! statement is a `UNION ALL` of one `GROUP BY` per subset of the requested dimensions (2^k of
//! them; the empty subset is the grand total), over the referrals created in the window, read once
//! into a materialised `WITH`. A dimension outside a subset is NULL in its rows: "all". The same
//! statement returns, per subset, a histogram of the working days to receipt, from which the domain
//! computes medians ([`crate::domain::statistics::assemble`]). Only the coded skeleton is read
//! (codes, the pseudonym for distinct people, the columns of migration 0008), never the content.
//!
//! REASON counts a referral once in each of its reasons: only the subsets that group by REASON
//! explode the JSON `reasons` array ([`Dialect::JSON_TEXTS`]); the others read each referral once.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{
    DbTime,
    deadlines::{Overdue, push_overdue},
    dialect::Dialect,
    sql::{Sql, SqlTx},
};
use crate::{
    domain::statistics::{Dimension, GroupRow, HistogramRow, MAX_DIMENSIONS, NO_OUTCOME},
    error::{Error, Result},
};

/// One table to compute.
#[derive(Debug, Clone)]
pub struct StatisticsQuery {
    /// Referrals created in `[start, end)`.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The day (Helsinki) on which "overdue" is judged.
    pub today: NaiveDate,
    /// At most [`MAX_DIMENSIONS`], no duplicates.
    pub dimensions: Vec<Dimension>,
}

/// One row of the statement: a grouped cell (`part` 0) or a histogram bucket (`part` 1). Keys
/// beyond the requested dimensions are NULL; so are the keys of dimensions a subset leaves out.
#[derive(sqlx::FromRow)]
pub(crate) struct StatisticsRow {
    part: i64,
    k0: Option<String>,
    k1: Option<String>,
    k2: Option<String>,
    k3: Option<String>,
    k4: Option<String>,
    k5: Option<String>,
    c0: i64,
    c1: i64,
    c2: i64,
    c3: i64,
    c4: i64,
    c5: i64,
}

#[async_trait]
pub trait Statistics {
    /// The grouped cells of every subset of `query.dimensions` (keys in the stored form), and the
    /// histograms of working days to receipt of the same cells.
    async fn referral_statistics(
        &mut self,
        query: &StatisticsQuery,
    ) -> Result<(Vec<GroupRow>, Vec<HistogramRow>)>;
}

/// The column of the window's row `b` (or of the exploded reason `rs`) a dimension groups by.
fn key(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Kind => "b.kind",
        Dimension::Reason => "rs.value",
        Dimension::Recipient => "b.recipient",
        Dimension::Month => "b.month",
        Dimension::Outcome => "b.outcome",
        Dimension::State => "b.state",
    }
}

/// `WITH b AS MATERIALIZED (…)`: the window's referrals as the coded columns the table needs, with
/// "overdue on `today`" decided once per referral by the one SQL statement of that rule.
fn push_window<A>(q: &mut Sql<A>, query: &StatisticsQuery)
where
    A: sqlx::Arguments + super::dialect::Bind<NaiveDate> + super::dialect::Bind<DbTime>,
{
    q.push(&format!(
        "WITH b AS MATERIALIZED (SELECT r.kind, r.recipient, \
           COALESCE(r.create_month, '?') AS month, COALESCE(r.outcome, '{NO_OUTCOME}') AS outcome, \
           r.state, r.reasons, r.subject_pseudonym AS person, \
           CASE WHEN r.receive_time IS NOT NULL THEN 1 ELSE 0 END AS received, \
           r.receipt_working_days AS working_days, \
           CASE WHEN r.received_within_deadline THEN 1 ELSE 0 END AS received_ok, \
           CASE WHEN r.assessment_started_within_deadline THEN 1 ELSE 0 END AS started_ok, \
           CASE WHEN "
    ));
    push_overdue(q, query.today, Overdue::Any);
    q.push(" THEN 1 ELSE 0 END AS overdue FROM referrals r WHERE r.create_time >= ")
        .bind(DbTime(query.start))
        .push(" AND r.create_time < ")
        .bind(DbTime(query.end))
        .push(")");
}

/// The statement's text after the window: per subset, its cells and its histogram.
fn subsets<D: Dialect>(dimensions: &[Dimension]) -> String {
    let mut text = String::new();
    for subset in 0u32..(1 << dimensions.len()) {
        let grouped: Vec<Dimension> = dimensions
            .iter()
            .enumerate()
            .filter(|(i, _)| subset & (1 << i) != 0)
            .map(|(_, d)| *d)
            .collect();
        let keys: Vec<String> = (0..MAX_DIMENSIONS)
            .map(|i| {
                let column = dimensions
                    .get(i)
                    .filter(|d| grouped.contains(d))
                    .map_or("CAST(NULL AS TEXT)", |d| key(*d));
                format!("{column} AS k{i}")
            })
            .collect();
        let keys = keys.join(", ");
        let from = if grouped.contains(&Dimension::Reason) {
            let (before, after) = D::JSON_TEXTS;
            format!("b CROSS JOIN {before}b.reasons{after} AS rs")
        } else {
            "b".to_owned()
        };
        let group_by: Vec<&str> = grouped.iter().map(|d| key(*d)).collect();
        let cells_group_by = if group_by.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", group_by.join(", "))
        };
        let mut histogram_group_by = group_by.clone();
        histogram_group_by.push("b.working_days");
        if !text.is_empty() {
            text.push_str(" UNION ALL ");
        }
        text.push_str(&format!(
            "SELECT CAST(0 AS BIGINT) AS part, {keys}, COUNT(*) AS c0, \
               COUNT(DISTINCT b.person) AS c1, COALESCE(SUM(b.received), 0) AS c2, \
               COALESCE(SUM(b.received_ok), 0) AS c3, COALESCE(SUM(b.started_ok), 0) AS c4, \
               COALESCE(SUM(b.overdue), 0) AS c5 \
             FROM {from}{cells_group_by} \
             UNION ALL \
             SELECT CAST(1 AS BIGINT) AS part, {keys}, CAST(b.working_days AS BIGINT) AS c0, \
               COUNT(*) AS c1, CAST(0 AS BIGINT) AS c2, CAST(0 AS BIGINT) AS c3, \
               CAST(0 AS BIGINT) AS c4, CAST(0 AS BIGINT) AS c5 \
             FROM {from} WHERE b.working_days IS NOT NULL GROUP BY {}",
            histogram_group_by.join(", ")
        ));
    }
    text
}

#[async_trait]
impl<D: Dialect> Statistics for SqlTx<D> {
    async fn referral_statistics(
        &mut self,
        query: &StatisticsQuery,
    ) -> Result<(Vec<GroupRow>, Vec<HistogramRow>)> {
        if query.dimensions.len() > MAX_DIMENSIONS {
            return Err(Error::internal("too many statistics dimensions"));
        }
        if let Some(setup) = D::BEFORE_LONG_READ {
            self.execute(Self::sql(setup)).await?;
        }
        let mut q = Self::sql("");
        push_window(&mut q, query);
        q.push(" ");
        q.push(&subsets::<D>(&query.dimensions));
        let rows: Vec<StatisticsRow> = self.fetch_all(q).await?;
        let width = query.dimensions.len();
        let mut cells = Vec::new();
        let mut histograms = Vec::new();
        for row in rows {
            let mut keys = vec![row.k0, row.k1, row.k2, row.k3, row.k4, row.k5];
            keys.truncate(width);
            if row.part == 0 {
                cells.push(GroupRow {
                    keys,
                    referrals: row.c0,
                    persons: row.c1,
                    received: row.c2,
                    received_within_deadline: row.c3,
                    assessment_started_within_deadline: row.c4,
                    overdue: row.c5,
                });
            } else {
                histograms.push(HistogramRow {
                    keys,
                    working_days: row.c0,
                    count: row.c1,
                });
            }
        }
        Ok((cells, histograms))
    }
}

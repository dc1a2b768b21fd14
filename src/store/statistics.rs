//! Referral statistics in SQL: one statement per table, grouped in the database.
//!
//! The costly figure is distinct people: it cannot be added up from smaller cells, so every subset
//! of the requested dimensions counts its own (the empty subset is the grand total). Everything
//! else adds up. So the statement reads the window's referrals (`w`, not materialised: each use
//! scans the table, cheaper than writing the window out and reading it back) as narrow columns,
//! the person and the reasons as integers (migration 0010: `person_id`, `reason_bits`), for two
//! parts:
//!
//! - `f`: the window grouped once at the finest grain (the requested dimensions, the reason bits,
//!   the working days to receipt), with the counts and sums that add up. A few thousand rows, from
//!   which every cell's referrals, received and deadline counts, and every cell's histogram of
//!   working days (the domain's medians, [`crate::domain::statistics::assemble`]), are summed.
//!   Overdue ones come from `o`, the same grain over the few overdue referrals only, which the
//!   partial indexes on the due dates find.
//! - distinct people per subset, which do not add up. PostgreSQL: `p`, `COUNT(DISTINCT person_id)`
//!   over integers in one `GROUP BY GROUPING SETS` (one sort per chain of subsets). SQLite has no
//!   grouping sets, and one sort of the window per subset was 5.7–7.9 s for 10⁶ referrals; there
//!   `f` also collects each fine cell's people as a set, and each cell counts the union of its fine
//!   cells' sets (`person_count`). SQLite's `GROUP BY` sorts: even the one grouping into `f` was
//!   1.2 s of a 1.7 s call, so there `f` is grouped in a hash table (`fine_cells`, returning JSON
//!   that `json_each` turns back into rows; [`super::sqlite_functions`]): no sort of the window at
//!   all. Which is [`Dialect::DISTINCT_PEOPLE`].
//!
//! REASON is not grouped by in `p`: a referral with several reasons counts once in each, and
//! exploding every referral into its reasons cost 1.1–1.3 s per 10⁶ referrals and a third more rows
//! for each subset to sort. Instead distinct people come in variants (`v`): all reasons, and each
//! reason as `COUNT(DISTINCT person) FILTER (WHERE bits & bit <> 0)`, one column each (a pivot),
//! turned back into rows at the end. The finest grain `f` keeps the bits and is exploded into
//! reasons itself (`fv`), a few thousand rows, with their sets of people on SQLite.
//!
//! MONTH and RECIPIENT are grouped and sorted as integers (migration 0011: `create_month_number`,
//! year × 100 + month, computed by the database from `create_month`; `recipient_id`, a number per
//! organisation in `recipients`, set by trigger like `person_id`). Sorting 10⁶ referrals by the
//! text keys was a third of `p` on PostgreSQL. They are turned back into the stored text keys
//! (`2027-03`, `hva-15`) only in the few thousand rows of the cells (`key_text`).
//!
//! A dimension outside a subset is NULL in its rows: "all". Only the coded skeleton is read (codes,
//! the person's number, the columns of migrations 0008, 0010 and 0011), never the content.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{
    DbTime,
    deadlines::{Overdue, push_overdue},
    dialect::{Dialect, DistinctPeople},
    sql::{Sql, SqlTx},
};
use crate::{
    domain::{
        referral::Reason,
        statistics::{Dimension, GroupRow, HistogramRow, MAX_DIMENSIONS, NO_OUTCOME, reason_bit},
    },
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

/// The window's column a dimension groups by (REASON is a variant, not a column: see the module).
fn column(dimension: Dimension) -> Option<String> {
    match dimension {
        Dimension::Kind => Some("r.kind".to_owned()),
        Dimension::Reason => None,
        Dimension::Recipient => Some("r.recipient_id".to_owned()),
        Dimension::Month => Some("COALESCE(r.create_month_number, 0)".to_owned()),
        Dimension::Outcome => Some(format!("COALESCE(r.outcome, '{NO_OUTCOME}')")),
        Dimension::State => Some("r.state".to_owned()),
    }
}

/// A grouped key `g` as the stored text of its dimension: MONTH and RECIPIENT are grouped as the
/// integers of migration 0011 (`create_month_number`, 0 when unknown: "?"; `recipient_id`) and
/// turned back into text only here, in the few thousand rows of the cells.
fn key_text(dimension: Dimension, g: &str) -> String {
    match dimension {
        Dimension::Recipient => {
            format!("(SELECT o.organization FROM recipients AS o WHERE o.id = {g})")
        }
        Dimension::Month => format!(
            "CASE WHEN {g} = 0 THEN '?' ELSE CAST({g} / 100 AS TEXT) || '-' || \
               CASE WHEN {g} % 100 < 10 THEN '0' ELSE '' END || CAST({g} % 100 AS TEXT) END"
        ),
        _ => g.to_owned(),
    }
}

/// `WITH w AS NOT MATERIALIZED (…), o AS (…)`: the window's referrals as the narrow columns the
/// statement reads, `g{i}` for the `i`-th requested dimension (not materialised: each use scans
/// the table itself, which is cheaper than writing the window out and reading it back), and the
/// window's overdue referrals on `today` at the finest grain.
fn push_window<D: Dialect>(
    q: &mut Sql<D::Arguments>,
    query: &StatisticsQuery,
    grouped: &[(usize, String)],
) {
    q.push("WITH w AS NOT MATERIALIZED (SELECT ");
    push_grouped(q, grouped);
    q.push(&format!(
        "r.person_id AS person, r.reason_bits AS bits, \
           CASE WHEN r.receive_time IS NOT NULL THEN 1 ELSE 0 END AS received, \
           r.receipt_working_days AS wd, \
           CASE WHEN r.received_within_deadline THEN 1 ELSE 0 END AS received_ok, \
           CASE WHEN r.assessment_started_within_deadline THEN 1 ELSE 0 END AS started_ok \
         FROM referrals AS r{} WHERE ",
        D::FULL_SCAN
    ));
    push_created_in::<D>(q, query, "");
    // `o`: the window's overdue referrals on `today`, grouped at the finest grain. Found through
    // the partial indexes on the due dates (the rule's own statement, `push_overdue`), not decided
    // for each referral of the window: evaluated per referral, that rule was a third of the whole
    // statement on SQLite, for the few referrals it is true of.
    q.push("), o AS MATERIALIZED (SELECT ");
    push_grouped(q, grouped);
    q.push("r.reason_bits AS bits, COUNT(*) AS n FROM referrals AS r WHERE ");
    push_created_in::<D>(q, query, D::NOT_BY_TIME);
    q.push(" AND ");
    push_overdue(q, query.today, Overdue::Any);
    q.push(" GROUP BY ");
    for (i, _) in grouped {
        q.push(&format!("g{i}, "));
    }
    q.push("bits)");
}

/// `{column} AS g{i}, ` for each grouped dimension.
fn push_grouped<A: sqlx::Arguments>(q: &mut Sql<A>, grouped: &[(usize, String)]) {
    for (i, column) in grouped {
        q.push(&format!("{column} AS g{i}, "));
    }
}

/// The condition that `r` was created in the query's window, each time term after `before`.
fn push_created_in<D: Dialect>(q: &mut Sql<D::Arguments>, query: &StatisticsQuery, before: &str) {
    q.push(&format!("{before}r.create_time >= "))
        .bind(DbTime(query.start))
        .push(&format!(" AND {before}r.create_time < "))
        .bind(DbTime(query.end));
}

/// The variants of every figure: `(0, 0, NULL)` for all reasons, then, when REASON is requested,
/// `(n, bit, code)` for each reason. Codes and bits are the program's constants.
fn variants(by_reason: bool) -> Vec<(usize, i32, Option<&'static str>)> {
    let mut variants = vec![(0, 0, None)];
    if by_reason {
        for (n, reason) in Reason::ALL.iter().enumerate() {
            variants.push((n + 1, reason_bit(*reason), Some(reason.as_str())));
        }
    }
    variants
}

/// The statement's text after the window.
fn rest<D: Dialect>(dimensions: &[Dimension], grouped: &[(usize, String)]) -> String {
    let by_reason = dimensions.contains(&Dimension::Reason);
    let variants = variants(by_reason);
    let values: Vec<String> = variants
        .iter()
        .map(|(i, bit, code)| match code {
            None => format!("({i}, {bit}, CAST(NULL AS TEXT))"),
            Some(code) => format!("({i}, {bit}, '{code}')"),
        })
        .collect();
    let g: Vec<String> = grouped.iter().map(|(i, _)| format!("g{i}")).collect();
    let g_list: String = g.iter().map(|g| format!("{g}, ")).collect();
    // The reason bits only matter to the finest grain when REASON is requested.
    let (bits, bits_grouped) = if by_reason {
        ("bits", "bits, ")
    } else {
        ("0", "")
    };
    let person_sets = D::DISTINCT_PEOPLE == DistinctPeople::PersonSets;
    // `f`, the finest grain: grouped by `GROUP BY` (PostgreSQL hashes), or in `fine_cells`'s hash
    // table, read back from its JSON (SQLite's `GROUP BY` would sort the whole window).
    let fine = if person_sets {
        // Each group is `[n, received, received_ok, started_ok, people, g…, bits, wd]`.
        let names = ["n", "received", "received_ok", "started_ok", "people"];
        let keys = g.iter().map(String::as_str).chain(["bits", "wd"]);
        let columns: Vec<String> = names
            .into_iter()
            .chain(keys)
            .enumerate()
            .map(|(j, name)| match name {
                "people" => format!("unhex(c.value ->> {j}) AS people"),
                _ => format!("c.value ->> {j} AS {name}"),
            })
            .collect();
        format!(
            "SELECT {} \
             FROM json_each((SELECT fine_cells(person, received, received_ok, started_ok, \
               {g_list}{bits}, wd) FROM w)) AS c",
            columns.join(", ")
        )
    } else {
        format!(
            "SELECT {g_list}{bits} AS bits, wd, COUNT(*) AS n, SUM(received) AS received, \
               SUM(received_ok) AS received_ok, SUM(started_ok) AS started_ok \
             FROM w GROUP BY {g_list}{bits_grouped}wd"
        )
    };
    let mut text = format!(
        ", v (i, bit, code) AS (VALUES {}), \
         f AS MATERIALIZED ({fine}), \
         fv AS MATERIALIZED (SELECT f.*, v.i, v.code FROM f JOIN v \
           ON v.bit = 0 OR f.bits & v.bit <> 0), \
         ov AS MATERIALIZED (SELECT o.*, v.i, v.code FROM o JOIN v \
           ON v.bit = 0 OR o.bits & v.bit <> 0)",
        values.join(", ")
    );
    let subsets: Vec<Vec<String>> = (0u32..(1 << g.len()))
        .map(|subset| {
            g.iter()
                .enumerate()
                .filter(|(j, _)| subset & (1 << j) != 0)
                .map(|(_, g)| g.clone())
                .collect()
        })
        .collect();
    // With `GROUPING SETS`, distinct people per subset of the grouped dimensions and variant (`p`).
    if !person_sets {
        let persons: Vec<String> = variants
            .iter()
            .map(|(i, bit, _)| {
                if *bit == 0 {
                    format!("COUNT(DISTINCT person) AS p{i}")
                } else {
                    format!("COUNT(DISTINCT person) FILTER (WHERE bits & {bit} <> 0) AS p{i}")
                }
            })
            .collect();
        let persons = persons.join(", ");
        if g.is_empty() {
            text.push_str(&format!(", p AS (SELECT {persons} FROM w)"));
        } else {
            let sets: Vec<String> = subsets
                .iter()
                .map(|s| format!("({})", s.join(", ")))
                .collect();
            text.push_str(&format!(
                ", p AS (SELECT {g_list}{persons} FROM w GROUP BY GROUPING SETS ({}))",
                sets.join(", ")
            ));
        }
    }
    // The keys k0…k5 of a row: the reason's code from `reason`, a grouped dimension from its
    // column when `in_subset` says so, NULL otherwise.
    let keys = |reason: &str, in_subset: &dyn Fn(usize) -> Option<String>| -> String {
        (0..MAX_DIMENSIONS)
            .map(|i| {
                let key = match dimensions.get(i) {
                    Some(Dimension::Reason) => Some(reason.to_owned()),
                    Some(d) => in_subset(i).map(|g| key_text(*d, &g)),
                    None => None,
                };
                format!("{} AS k{i}", key.as_deref().unwrap_or("CAST(NULL AS TEXT)"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let subset_keys = |subset: &[String]| {
        let subset = subset.to_vec();
        move |i: usize| {
            let g = format!("g{i}");
            subset.contains(&g).then_some(g)
        }
    };
    // The cells: the sums from `fv` per subset and variant, one row each, and their people: the
    // union of their fine cells' sets, or a row of `p`. A combination without referrals is no
    // cell, but the grand total always is (zeros in an empty window).
    let people = if person_sets {
        "person_count(people)"
    } else {
        "0"
    };
    let mut cells: Vec<String> = subsets
        .iter()
        .map(|subset| {
            let group_by: String = subset.iter().map(|g| format!("{g}, ")).collect();
            format!(
                "SELECT {keys}, i, SUM(n) AS c0, {people} AS c1, SUM(received) AS c2, \
                   SUM(received_ok) AS c3, SUM(started_ok) AS c4, 0 AS c5 \
                 FROM fv GROUP BY {group_by}i, code \
                 UNION ALL SELECT {keys}, i, 0, 0, 0, 0, 0, SUM(n) FROM ov GROUP BY {group_by}i, code",
                keys = keys("code", &subset_keys(subset))
            )
        })
        .collect();
    cells.push(format!(
        "SELECT {}, 0, 0, 0, 0, 0, 0, 0",
        keys("CAST(NULL AS TEXT)", &|_| None)
    ));
    if !person_sets {
        let pick: String = variants
            .iter()
            .map(|(i, _, _)| format!(" WHEN {i} THEN p.p{i}"))
            .collect();
        cells.push(format!(
            "SELECT {}, v.i, 0, CASE v.i{pick} END, 0, 0, 0, 0 FROM p CROSS JOIN v",
            keys("v.code", &|i| {
                grouped
                    .iter()
                    .any(|(j, _)| *j == i)
                    .then(|| format!("p.g{i}"))
            })
        ));
    }
    text.push_str(&format!(
        " SELECT CAST(0 AS BIGINT) AS part, k0, k1, k2, k3, k4, k5, \
           CAST(SUM(c0) AS BIGINT) AS c0, CAST(SUM(c1) AS BIGINT) AS c1, \
           CAST(SUM(c2) AS BIGINT) AS c2, CAST(SUM(c3) AS BIGINT) AS c3, \
           CAST(SUM(c4) AS BIGINT) AS c4, CAST(SUM(c5) AS BIGINT) AS c5 \
         FROM ({}) AS c GROUP BY k0, k1, k2, k3, k4, k5, i \
         HAVING SUM(c0) > 0 OR (i = 0 AND COALESCE(k0, k1, k2, k3, k4, k5) IS NULL)",
        cells.join(" UNION ALL ")
    ));
    // The histograms of working days to receipt, per cell.
    for subset in &subsets {
        let group_by: String = subset.iter().map(|g| format!("{g}, ")).collect();
        text.push_str(&format!(
            " UNION ALL SELECT CAST(1 AS BIGINT), {}, CAST(wd AS BIGINT), CAST(SUM(n) AS BIGINT), \
               CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT) \
             FROM fv WHERE wd IS NOT NULL GROUP BY {group_by}i, code, wd",
            keys("code", &subset_keys(subset))
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
        let grouped: Vec<(usize, String)> = query
            .dimensions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| column(*d).map(|c| (i, c)))
            .collect();
        let mut q = Self::sql("");
        push_window::<D>(&mut q, query, &grouped);
        q.push(&rest::<D>(&query.dimensions, &grouped));
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

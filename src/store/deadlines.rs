//! Deadlines in SQL: which referrals are overdue, and which passings have been told.
//!
//! `push_overdue` is the one SQL statement of the rule `Referral::overdue` (domain/referral.rs)
//! states in Rust: some deadline passed by `today` without the state it requires. Listing overdue
//! referrals, the deadline watch and the overdue gauges all use it.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{
    DbTime,
    dialect::Dialect,
    sql::{Sql, SqlTx},
};
use crate::{domain::referral::DeadlineKind, error::Result};

/// Which passed deadlines [`push_overdue`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overdue {
    /// Any deadline.
    Any,
    /// Deadlines of one kind.
    OfKind(DeadlineKind),
}

/// One deadline: its kind, the column holding its date, and when it is still open.
struct Deadline {
    kind: DeadlineKind,
    column: &'static str,
    /// The condition of the partial index on `column` (migration 0002), the first term of every
    /// query of the deadline: SQLite uses a partial index only when the query's terms contain its
    /// condition as written (`state IN ('RECEIVED', 'ACCEPTED')` alone does not), and otherwise
    /// counted overdue assessments by reading all 10⁶ referrals (0.6 s), on the one connection
    /// every call waits for.
    indexed: &'static str,
    /// Where the deadline is open in fewer states than the index holds: those.
    only: Option<&'static str>,
}

const ASSESSMENT_OR_COMPLETION_INDEX: &str = "r.state IN ('RECEIVED', 'ACCEPTED', 'IN_PROGRESS')";

const DEADLINES: [Deadline; 4] = [
    Deadline {
        kind: DeadlineKind::Receipt,
        column: "receive_due_date",
        indexed: "r.state = 'REQUESTED'",
        only: None,
    },
    Deadline {
        kind: DeadlineKind::AssessmentStart,
        column: "assessment_due_date",
        indexed: ASSESSMENT_OR_COMPLETION_INDEX,
        only: Some("r.state IN ('RECEIVED', 'ACCEPTED')"),
    },
    // A transferred application is due decided, not just started.
    Deadline {
        kind: DeadlineKind::AssessmentStart,
        column: "assessment_due_date",
        indexed: ASSESSMENT_OR_COMPLETION_INDEX,
        only: Some("r.state = 'IN_PROGRESS' AND r.kind = 'SUPPLEMENTARY_OR_PREVENTIVE_ASSISTANCE'"),
    },
    Deadline {
        kind: DeadlineKind::Completion,
        column: "completion_due_date",
        indexed: ASSESSMENT_OR_COMPLETION_INDEX,
        only: None,
    },
];

/// Appends the condition that `deadline` has passed by `today` for the referral `r`, in
/// parentheses; `unnoticed`: and its passing has not been told yet.
fn push_deadline<A>(q: &mut Sql<A>, today: NaiveDate, deadline: &Deadline, unnoticed: bool)
where
    A: sqlx::Arguments + super::dialect::Bind<NaiveDate>,
{
    let Deadline {
        kind,
        column,
        indexed,
        only,
    } = deadline;
    let only = only
        .map(|states| format!(" AND {states}"))
        .unwrap_or_default();
    q.push(&format!("({indexed}{only} AND r.{column} < "))
        .bind(today);
    if unnoticed {
        q.push(&format!(
            " AND NOT EXISTS (SELECT 1 FROM overdue_notices n WHERE n.referral_id = r.id \
             AND n.deadline_kind = '{}' AND n.due_date = r.{column})",
            kind.as_str()
        ));
    }
    q.push(")");
}

/// Appends the condition that the referral `r` is overdue on `today`, in parentheses.
pub(super) fn push_overdue<A>(q: &mut Sql<A>, today: NaiveDate, which: Overdue)
where
    A: sqlx::Arguments + super::dialect::Bind<NaiveDate>,
{
    q.push("(");
    let open = DEADLINES
        .iter()
        .filter(|d| !matches!(which, Overdue::OfKind(only) if only != d.kind));
    for (i, deadline) in open.enumerate() {
        if i > 0 {
            q.push(" OR ");
        }
        push_deadline(q, today, deadline, false);
    }
    q.push(")");
}

#[async_trait]
pub trait Deadlines {
    /// Referrals with a deadline passed by `today` (see `Referral::overdue`) not yet noticed.
    async fn unnoticed_overdue(&mut self, today: NaiveDate, limit: i64) -> Result<Vec<Uuid>>;
    /// Records that a deadline's passing was told; false if it already was.
    async fn insert_overdue_notice(
        &mut self,
        referral_id: Uuid,
        kind: DeadlineKind,
        due: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

#[async_trait]
impl<D: Dialect> Deadlines for SqlTx<D> {
    /// One query per deadline, each through its partial index, then the first `limit` ids: as one
    /// `… OR …` ordered by id, SQLite walked the whole table in id order (2.2–2.4 s for 10⁶
    /// referrals, every round of the watch, holding the one connection every call waits for).
    async fn unnoticed_overdue(&mut self, today: NaiveDate, limit: i64) -> Result<Vec<Uuid>> {
        let mut q = Self::sql("SELECT id FROM (");
        for (i, deadline) in DEADLINES.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ");
            }
            q.push("SELECT r.id AS id FROM referrals r WHERE ");
            push_deadline(&mut q, today, deadline, true);
        }
        q.push(") AS o ORDER BY id LIMIT ").bind(limit);
        let ids: Vec<(Uuid,)> = self.fetch_all(q).await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    async fn insert_overdue_notice(
        &mut self,
        referral_id: Uuid,
        kind: DeadlineKind,
        due: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let insert = Self::sql(
            "INSERT INTO overdue_notices (referral_id, deadline_kind, due_date, notice_time) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (referral_id, deadline_kind, due_date) DO NOTHING",
        )
        .arg(referral_id)
        .arg(kind.as_str())
        .arg(due)
        .arg(DbTime(now));
        Ok(self.execute(insert).await? == 1)
    }
}

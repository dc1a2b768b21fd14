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
    /// Deadlines whose passing has not been told yet (no `overdue_notices` row).
    Unnoticed,
    /// Deadlines of one kind.
    OfKind(DeadlineKind),
}

/// Each deadline: its kind, the column holding its date, and the states in which it is still
/// open.
const DEADLINES: [(DeadlineKind, &str, &str); 4] = [
    (
        DeadlineKind::Receipt,
        "receive_due_date",
        "r.state = 'REQUESTED'",
    ),
    (
        DeadlineKind::AssessmentStart,
        "assessment_due_date",
        "r.state IN ('RECEIVED', 'ACCEPTED')",
    ),
    // A transferred application is due decided, not just started.
    (
        DeadlineKind::AssessmentStart,
        "assessment_due_date",
        "r.state = 'IN_PROGRESS' AND r.kind = 'SUPPLEMENTARY_OR_PREVENTIVE_ASSISTANCE'",
    ),
    (
        DeadlineKind::Completion,
        "completion_due_date",
        "r.state IN ('RECEIVED', 'ACCEPTED', 'IN_PROGRESS')",
    ),
];

/// Appends the condition that the referral `r` is overdue on `today`, in parentheses.
pub(super) fn push_overdue<A>(q: &mut Sql<A>, today: NaiveDate, which: Overdue)
where
    A: sqlx::Arguments + super::dialect::Bind<NaiveDate>,
{
    q.push("(");
    let open = DEADLINES
        .iter()
        .filter(|(kind, _, _)| !matches!(which, Overdue::OfKind(only) if only != *kind));
    for (i, (kind, column, states)) in open.enumerate() {
        if i > 0 {
            q.push(" OR ");
        }
        q.push(&format!("({states} AND r.{column} < ")).bind(today);
        if which == Overdue::Unnoticed {
            q.push(&format!(
                " AND NOT EXISTS (SELECT 1 FROM overdue_notices n WHERE n.referral_id = r.id \
                 AND n.deadline_kind = '{}' AND n.due_date = r.{column})",
                kind.as_str()
            ));
        }
        q.push(")");
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
    async fn unnoticed_overdue(&mut self, today: NaiveDate, limit: i64) -> Result<Vec<Uuid>> {
        let mut q = Self::sql("SELECT r.id FROM referrals r WHERE ");
        push_overdue(&mut q, today, Overdue::Unnoticed);
        q.push(" ORDER BY r.id LIMIT ").bind(limit);
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

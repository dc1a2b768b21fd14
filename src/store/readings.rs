//! What the metric gauges read: per-mailbox counts, overdue referrals, the audit log's lag.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{
    DbTime,
    deadlines::{Overdue, push_overdue},
    dialect::Dialect,
    messages::{MailboxCounts, push_counts},
    sql::SqlTx,
};
use crate::{domain::referral::DeadlineKind, error::Result};

/// Readings behind the metric gauges.
#[derive(Debug, Clone, Default)]
pub struct GaugeReadings {
    pub mailboxes: Vec<(String, MailboxCounts)>,
    pub overdue: Vec<(DeadlineKind, i64)>,
    pub audit_pending: i64,
    pub oldest_audit_pending: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Readings {
    /// What the metric gauges report: per-mailbox counts, overdue referrals, audit log lag.
    async fn gauge_readings(
        &mut self,
        now: DateTime<Utc>,
        today: NaiveDate,
    ) -> Result<GaugeReadings>;
}

#[async_trait]
impl<D: Dialect> Readings for SqlTx<D> {
    async fn gauge_readings(
        &mut self,
        now: DateTime<Utc>,
        today: NaiveDate,
    ) -> Result<GaugeReadings> {
        let mut q = Self::sql("SELECT mailbox, ");
        push_counts(&mut q, now);
        q.push(" FROM messages WHERE ack_time IS NULL GROUP BY mailbox");
        let rows: Vec<(String, i64, i64, i64, Option<DbTime>)> = self.fetch_all(q).await?;
        let mailboxes = rows
            .into_iter()
            .map(|(mailbox, pending, leased, dead, oldest)| {
                let counts = MailboxCounts {
                    pending,
                    leased,
                    dead,
                    oldest_pending_publish_time: oldest.map(|t| t.0),
                };
                (mailbox, counts)
            })
            .collect();
        let mut overdue = Vec::new();
        for kind in DeadlineKind::ALL {
            let mut q = Self::sql("SELECT COUNT(*) FROM referrals r WHERE ");
            push_overdue(&mut q, today, Overdue::OfKind(*kind));
            let (count,) = self.fetch_one::<(i64,)>(q).await?;
            overdue.push((*kind, count));
        }
        let pending = Self::sql(
            "SELECT COUNT(*), MIN(e.time) FROM audit_pending p \
             JOIN audit_events e ON e.sequence = p.event_sequence",
        );
        let (audit_pending, oldest_audit) =
            self.fetch_one::<(i64, Option<DbTime>)>(pending).await?;
        Ok(GaugeReadings {
            mailboxes,
            overdue,
            audit_pending,
            oldest_audit_pending: oldest_audit.map(|t| t.0),
        })
    }
}

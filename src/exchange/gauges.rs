//! The telemetry round, a deployment-wide background job: reads what the metric gauges report
//! (per-mailbox counts and oldest pending age, overdue referrals, audit sequencer lag). It runs on the
//! leader only, so that replicas do not report the same mailboxes twice.

use std::sync::Arc;

use async_trait::async_trait;

use super::Exchange;
use crate::{background::Job, error::Result, telemetry};

pub const JOB_NAME: &str = "telemetry-gauges";

pub struct GaugeRefresh(pub Arc<Exchange>);

#[async_trait]
impl Job for GaugeRefresh {
    fn name(&self) -> &'static str {
        JOB_NAME
    }

    async fn run_once(&self) -> Result<()> {
        self.0.refresh_gauges().await
    }
}

impl Exchange {
    /// Reads the gauges' values. A read of counts only, so it writes no audit event.
    pub async fn refresh_gauges(&self) -> Result<()> {
        let now = self.clock.now();
        let mut tx = self.begin_background().await?;
        let readings = tx.gauge_readings(now, self.today()).await?;
        drop(tx);
        let seconds_since =
            |t: chrono::DateTime<chrono::Utc>| (now - t).num_milliseconds().max(0) as f64 / 1000.0;
        telemetry::metrics().set_gauges(telemetry::Gauges {
            oldest_pending_age: readings
                .mailboxes
                .iter()
                .map(|(mailbox, c)| {
                    (
                        mailbox.clone(),
                        c.oldest_pending_publish_time.map_or(0.0, seconds_since),
                    )
                })
                .collect(),
            mailboxes: readings.mailboxes.into_iter().collect(),
            overdue_referrals: readings
                .overdue
                .into_iter()
                .map(|(kind, n)| (kind.as_str().to_owned(), n))
                .collect(),
            audit_pending_events: readings.audit_pending,
            audit_sequencer_lag_seconds: readings.oldest_audit_pending.map_or(0.0, seconds_since),
        });
        Ok(())
    }
}

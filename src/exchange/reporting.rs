//! Reporting: statistics over referrals for planning and decision-making, with no one recognisable
//! (DOMAIN.md, "Statistics without disclosing anyone").

use chrono::{DateTime, Utc};

use super::{Exchange, Outbox};
use crate::{
    access::Call,
    domain::{
        calendar,
        statistics::{self, Cell, Dimension},
    },
    error::{Error, Result},
    store::StatisticsQuery,
};

/// The resource every statistics call is audited as reading.
pub const STATISTICS_RESOURCE: &str = "statistics/referrals";

/// A published table: its cells (suppressed ones without figures) and the threshold applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferralStatistics {
    pub dimensions: Vec<Dimension>,
    pub cells: Vec<Cell>,
    pub min_cell_size: u64,
}

impl Exchange {
    /// Referrals created in `[start, end)` grouped by every subset of `dimensions`, computed in the
    /// database by one statement, with small cells and the cells that would give them away
    /// suppressed. Kela, receivers and auditors; audited as a read of statistics, about no one.
    pub async fn referral_statistics(
        &self,
        call: &Call,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        dimensions: Vec<Dimension>,
    ) -> Result<ReferralStatistics> {
        call.authorize()?;
        call.touch_resource(STATISTICS_RESOURCE);
        statistics::check_request(start, end, &dimensions).map_err(Error::invalid)?;
        let today = calendar::helsinki_date(self.clock.now());
        let query = StatisticsQuery {
            start,
            end,
            today,
            dimensions,
        };
        // A long read, on a read-only transaction (on SQLite a connection of its own, so writes go
        // on meanwhile); then the audit event in a short one. Nothing is answered unless audited.
        let mut read = self.begin_read().await?;
        let (rows, histograms) = read.referral_statistics(&query).await?;
        read.commit().await?;
        self.commit(call, self.begin_solo().await?, Outbox::default())
            .await?;
        let shown = |keys: Vec<Option<String>>| -> Vec<Option<String>> {
            keys.into_iter()
                .zip(&query.dimensions)
                .map(|(key, d)| key.map(|k| d.shown_key(k)))
                .collect()
        };
        let rows = rows
            .into_iter()
            .map(|mut row| {
                row.keys = shown(std::mem::take(&mut row.keys));
                row
            })
            .collect();
        let histograms: Vec<_> = histograms
            .into_iter()
            .map(|mut h| {
                h.keys = shown(std::mem::take(&mut h.keys));
                h
            })
            .collect();
        Ok(ReferralStatistics {
            cells: statistics::assemble(rows, &histograms, self.min_cell_size),
            dimensions: query.dimensions,
            min_cell_size: self.min_cell_size,
        })
    }
}

//! Kept no longer than needed (GDPR Art. 5(1)(e)): a deployment-wide background job that erases the
//! personal content of referrals closed `--content-retention-days` ago and of consents that stopped
//! being ACTIVE that long ago, and forgets idempotency records of that age (they hold whole
//! responses). Kela and the receiver keep the case in their own systems; the exchange keeps the
//! coded skeleton that statistics and the audit trail need.
//!
//! Each erasure is one audit event of its own, acted by the service (as consent expiry is), naming
//! the referral or consent and the person's pseudonym: a person's subject access report shows when
//! their data left the exchange. A round works in batches, one transaction each, so a large backlog
//! (the first round after enabling retention) never holds the database for long, and a stopping
//! server ends its round after the batch in hand.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::{audit::AuditRecord, background::Job, error::Result, store::Tx};

use super::Exchange;

/// The default retention of personal content after a referral closes (`--content-retention-days`).
pub const DEFAULT_CONTENT_RETENTION_DAYS: i64 = 90;

/// Referrals or consents erased per transaction.
const BATCH: i64 = 100;

/// Idempotency records forgotten per transaction.
const FORGET_BATCH: i64 = 1000;

/// Idempotency records are kept at least this long, however short the content retention: a client's
/// retry after a lost answer must still get its first response.
pub const MIN_REQUEST_MEMORY: chrono::Duration = chrono::Duration::hours(24);

/// Who acts in the audit trail when content is erased.
pub const ERASURE_ACTOR: &str = "system:content-retention";
/// The method recorded for an erasure.
pub const ERASURE_METHOD: &str = "background/EraseContent";

pub const JOB_NAME: &str = "content-retention";

/// What one round erased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub referrals: u64,
    pub consents: u64,
    pub requests_forgotten: u64,
}

pub struct ContentRetention(pub Arc<Exchange>);

#[async_trait]
impl Job for ContentRetention {
    fn name(&self) -> &'static str {
        JOB_NAME
    }

    async fn run_once(&self) -> Result<()> {
        self.0.erase_expired_content().await.map(|_| ())
    }
}

impl Exchange {
    /// One retention round: everything due at the clock's now, batch by batch.
    pub async fn erase_expired_content(&self) -> Result<Erased> {
        let now = self.clock.now();
        let cutoff = now - self.content_retention;
        let forget_before = now - self.content_retention.max(MIN_REQUEST_MEMORY);
        let closing = self.closing();
        let erased = Erased {
            referrals: until_short(BATCH, &closing, || self.erase_referrals(cutoff, now)).await?,
            consents: until_short(BATCH, &closing, || self.erase_consents(cutoff, now)).await?,
            requests_forgotten: until_short(FORGET_BATCH, &closing, || {
                self.forget_requests(forget_before)
            })
            .await?,
        };
        if erased != Erased::default() {
            tracing::info!(
                referrals = erased.referrals,
                consents = erased.consents,
                requests = erased.requests_forgotten,
                "erased personal content kept past its retention"
            );
        }
        Ok(erased)
    }

    async fn forget_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_background().await?;
        let forgotten = tx.forget_requests(before, FORGET_BATCH).await?;
        tx.commit().await?;
        Ok(forgotten)
    }

    async fn erase_referrals(&self, closed_by: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_background().await?;
        let due = tx.referrals_to_erase(closed_by, BATCH).await?;
        let mut erased = 0;
        for id in due {
            // Read again under lock: the decision is the domain's, on the row as it is now.
            let Some(mut referral) = tx.get_referral(id, true).await? else {
                continue;
            };
            // Under the current key, while the identity code is still there.
            let pseudonym = self.referral_pseudonym(&referral);
            if referral.closed_since().is_none_or(|t| t > closed_by) || !referral.erase_content(now)
            {
                continue;
            }
            tx.erase_referral_content(&referral).await?;
            audit_erasure(tx.as_mut(), now, referral.name(), pseudonym).await?;
            erased += 1;
        }
        tx.commit().await?;
        Ok(erased)
    }

    async fn erase_consents(&self, inactive_by: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_background().await?;
        let due = tx.consents_to_erase(inactive_by, BATCH).await?;
        let mut erased = 0;
        for id in due {
            let Some(mut consent) = tx.get_consent(id, true).await? else {
                continue;
            };
            let pseudonym = self.consent_pseudonym(&consent);
            if consent.inactive_since(now).is_none_or(|t| t > inactive_by)
                || !consent.erase_content(now)
            {
                continue;
            }
            tx.erase_consent_content(&consent).await?;
            audit_erasure(tx.as_mut(), now, consent.name(), pseudonym).await?;
            erased += 1;
        }
        tx.commit().await?;
        Ok(erased)
    }
}

/// Runs `batch_round` until one does fewer than `batch`, or the server begins to stop (`closing`):
/// a backlog of hundreds of thousands (the first round after enabling retention, about 300 a
/// second) must not keep a stopping server up for minutes. What is left waits for the next round.
/// Returns what they did in all.
async fn until_short<F, Fut>(
    batch: i64,
    closing: &watch::Receiver<bool>,
    mut batch_round: F,
) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut total = 0;
    loop {
        let done = batch_round().await?;
        total += done;
        if i64::try_from(done).unwrap_or(i64::MAX) < batch || *closing.borrow() {
            return Ok(total);
        }
    }
}

/// One audit event per erasure, acted by the service.
async fn audit_erasure(
    tx: &mut dyn Tx,
    now: DateTime<Utc>,
    resource: String,
    pseudonym: String,
) -> Result<()> {
    tx.insert_audit_event(&AuditRecord {
        time: now,
        organization: String::new(),
        user_id: ERASURE_ACTOR.to_owned(),
        method: ERASURE_METHOD.to_owned(),
        resources: vec![resource],
        subject_pseudonyms: vec![pseudonym],
        status_code: tonic::Code::Ok as i32,
        correlation_id: String::new(),
        disclosures: Vec::new(),
    })
    .await
}

//! Retention: finding closed referrals and inactive consents whose personal content has been kept
//! long enough, erasing it (the sealed columns emptied, `content_erase_time` set, the coded skeleton
//! left as it was), and forgetting old idempotency records, which hold whole responses.
//!
//! The domain decides what erasing means (`Referral::erase_content`, `Consent::erase_content`); the
//! statements here write exactly that. The use case is `exchange::retention`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbTime, dialect::Dialect, sql::SqlTx};
use crate::{
    domain::{consent::Consent, referral::Referral},
    error::{Error, Result},
};

#[async_trait]
pub trait Retention {
    /// Up to `limit` referrals closed (COMPLETED, REJECTED, CANCELLED) at or before `closed_by`
    /// whose content is still there, oldest first.
    async fn referrals_to_erase(
        &mut self,
        closed_by: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>>;
    /// Writes the erasure of `referral`'s content (after `Referral::erase_content`).
    async fn erase_referral_content(&mut self, referral: &Referral) -> Result<()>;
    /// Up to `limit` consents no longer ACTIVE at or before `inactive_by` (withdrawn, used, expired
    /// — recorded or by the clock) whose content is still there.
    async fn consents_to_erase(
        &mut self,
        inactive_by: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>>;
    /// Writes the erasure of `consent`'s content (after `Consent::erase_content`).
    async fn erase_consent_content(&mut self, consent: &Consent) -> Result<()>;
    /// Deletes up to `limit` idempotency records created before `before`; how many.
    async fn forget_requests(&mut self, before: DateTime<Utc>, limit: i64) -> Result<u64>;
}

/// The erased content must really be gone from the row: anything else is a bug, not a state to write.
fn check_erased(erased: bool) -> Result<()> {
    if erased {
        Ok(())
    } else {
        Err(Error::internal(
            "content erasure written before it was decided",
        ))
    }
}

#[async_trait]
impl<D: Dialect> Retention for SqlTx<D> {
    async fn referrals_to_erase(
        &mut self,
        closed_by: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>> {
        let select = Self::sql(
            "SELECT id FROM referrals \
             WHERE content_erase_time IS NULL AND state IN ('COMPLETED', 'REJECTED', 'CANCELLED') \
               AND update_time <= $1 \
             ORDER BY update_time, id LIMIT $2",
        )
        .arg(DbTime(closed_by))
        .arg(limit);
        let ids: Vec<(Uuid,)> = self.fetch_all(select).await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    async fn erase_referral_content(&mut self, r: &Referral) -> Result<()> {
        check_erased(r.subject.is_none() && r.content_erase_time.is_some())?;
        let update = Self::sql(
            "UPDATE referrals SET subject_code = '', subject_name = NULL, subject_phone = NULL, \
               subject_language = NULL, reason_text = '', application_reference = NULL, \
               rejection_text = NULL, cancellation_text = NULL, content_erase_time = $2, \
               version = $3 \
             WHERE id = $1",
        )
        .arg(r.id)
        .arg(r.content_erase_time.map(DbTime))
        .arg(r.version);
        self.execute(update).await.map(drop)
    }

    async fn consents_to_erase(
        &mut self,
        inactive_by: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>> {
        let select = Self::sql(
            "SELECT id FROM consents \
             WHERE content_erase_time IS NULL \
               AND ((state <> 'ACTIVE' AND COALESCE(withdraw_time, update_time) <= $1) \
                 OR (state = 'ACTIVE' AND expire_time IS NOT NULL AND expire_time <= $1)) \
             ORDER BY update_time, id LIMIT $2",
        )
        .arg(DbTime(inactive_by))
        .arg(limit);
        let ids: Vec<(Uuid,)> = self.fetch_all(select).await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    async fn erase_consent_content(&mut self, c: &Consent) -> Result<()> {
        check_erased(c.subject.is_none() && c.content_erase_time.is_some())?;
        let update = Self::sql(
            "UPDATE consents SET subject_code = '', evidence_reference = '', \
               content_erase_time = $2, version = $3 \
             WHERE id = $1",
        )
        .arg(c.id)
        .arg(c.content_erase_time.map(DbTime))
        .arg(c.version);
        self.execute(update).await.map(drop)
    }

    async fn forget_requests(&mut self, before: DateTime<Utc>, limit: i64) -> Result<u64> {
        let delete = Self::sql(format!(
            "DELETE FROM idempotency_keys WHERE (organization, request_id) IN \
               (SELECT organization, request_id FROM idempotency_keys WHERE create_time < $1 \
                ORDER BY create_time LIMIT $2{})",
            D::SKIP_LOCKED
        ))
        .arg(DbTime(before))
        .arg(limit);
        self.execute(delete).await
    }
}

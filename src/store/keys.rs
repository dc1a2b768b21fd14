//! Key fingerprints (`key_fingerprints`): which key, per purpose, the database was written with. What
//! a fingerprint is and how the server decides on it: `crate::keys`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{DbTime, dialect::Dialect, sql::SqlTx};
use crate::error::Result;

#[async_trait]
pub trait Keys {
    /// The fingerprint recorded for `purpose`, its row locked until the transaction ends (so that
    /// replicas starting together decide one after the other).
    async fn key_fingerprint(&mut self, purpose: &str) -> Result<Option<String>>;
    /// Records the first fingerprint for `purpose`. False: another replica recorded one meanwhile;
    /// read it again and decide on that.
    async fn insert_key_fingerprint(
        &mut self,
        purpose: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Replaces the fingerprint `from` by `to` (a key rotation). False: `from` is no longer the one
    /// recorded.
    async fn replace_key_fingerprint(
        &mut self,
        purpose: &str,
        from: &str,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

#[async_trait]
impl<D: Dialect> Keys for SqlTx<D> {
    async fn key_fingerprint(&mut self, purpose: &str) -> Result<Option<String>> {
        let q = Self::sql(format!(
            "SELECT fingerprint FROM key_fingerprints WHERE purpose = $1{}",
            D::LOCK
        ))
        .arg(purpose);
        Ok(self.fetch_optional::<(String,)>(q).await?.map(|(f,)| f))
    }

    async fn insert_key_fingerprint(
        &mut self,
        purpose: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let q = Self::sql(
            "INSERT INTO key_fingerprints (purpose, fingerprint, record_time) VALUES ($1, $2, $3) \
             ON CONFLICT (purpose) DO NOTHING",
        )
        .arg(purpose)
        .arg(fingerprint)
        .arg(DbTime(now));
        Ok(self.execute(q).await? == 1)
    }

    async fn replace_key_fingerprint(
        &mut self,
        purpose: &str,
        from: &str,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let q = Self::sql(
            "UPDATE key_fingerprints SET fingerprint = $3, record_time = $4 \
             WHERE purpose = $1 AND fingerprint = $2",
        )
        .arg(purpose)
        .arg(from)
        .arg(to)
        .arg(DbTime(now));
        Ok(self.execute(q).await? == 1)
    }
}

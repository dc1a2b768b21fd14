//! The sealed columns (`crate::sealing`), and moving them to the current data key: what
//! `referral-exchange keys rewrap` does, in bounded batches while the service runs.
//!
//! A batch reads up to `limit` values of one column that are not sealed under the current key (older
//! keys, or plaintext from before sealing), in key order after where the last batch ended, and writes
//! each back sealed under the current key **only if it is still the value read** (compare and set).
//! So a batch takes no lock a call waits on: a value the service rewrote meanwhile was rewritten
//! under the current key anyway and is left alone. Each batch commits on its own; interrupted, a
//! rewrap loses nothing and the next run starts again from the beginning, finding only what is left.

use async_trait::async_trait;
use uuid::Uuid;

use super::{dialect::Dialect, sql::SqlTx};
use crate::{error::Result, sealing::Place};

/// How a sealed column's rows are keyed: the row key its values are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKey {
    /// `id UUID`: its 16 bytes.
    Id,
    /// `(organization, request_id)`: both, NUL-separated (`store::idempotency`).
    OrganizationRequest,
}

/// One sealed column, by the place name its values are sealed for: `table.column`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    pub place: &'static str,
    pub key: RowKey,
}

impl SealedColumn {
    pub fn table(&self) -> &'static str {
        self.place.split_once('.').map_or(self.place, |(t, _)| t)
    }

    pub fn column(&self) -> &'static str {
        self.place.split_once('.').map_or(self.place, |(_, c)| c)
    }
}

const fn by_id(place: &'static str) -> SealedColumn {
    SealedColumn {
        place,
        key: RowKey::Id,
    }
}

// The sealed columns. A store seals and opens a value under its column's constant, and [`SEALED`]
// lists them all for `keys rewrap`: a column sealed anywhere is one of these.
pub const REFERRAL_SUBJECT_CODE: SealedColumn = by_id("referrals.subject_code");
pub const REFERRAL_SUBJECT_NAME: SealedColumn = by_id("referrals.subject_name");
pub const REFERRAL_SUBJECT_PHONE: SealedColumn = by_id("referrals.subject_phone");
pub const REFERRAL_REASON_TEXT: SealedColumn = by_id("referrals.reason_text");
pub const REFERRAL_APPLICATION_REFERENCE: SealedColumn = by_id("referrals.application_reference");
pub const REFERRAL_REJECTION_TEXT: SealedColumn = by_id("referrals.rejection_text");
pub const REFERRAL_CANCELLATION_TEXT: SealedColumn = by_id("referrals.cancellation_text");
pub const CONSENT_SUBJECT_CODE: SealedColumn = by_id("consents.subject_code");
pub const CONSENT_EVIDENCE_REFERENCE: SealedColumn = by_id("consents.evidence_reference");
pub const IDEMPOTENCY_RESPONSE: SealedColumn = SealedColumn {
    place: "idempotency_keys.response",
    key: RowKey::OrganizationRequest,
};

/// Every sealed column.
pub const SEALED: &[SealedColumn] = &[
    REFERRAL_SUBJECT_CODE,
    REFERRAL_SUBJECT_NAME,
    REFERRAL_SUBJECT_PHONE,
    REFERRAL_REASON_TEXT,
    REFERRAL_APPLICATION_REFERENCE,
    REFERRAL_REJECTION_TEXT,
    REFERRAL_CANCELLATION_TEXT,
    CONSENT_SUBJECT_CODE,
    CONSENT_EVIDENCE_REFERENCE,
    IDEMPOTENCY_RESPONSE,
];

/// Where a batch ended: the next batch of the same column starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Start,
    Id(Uuid),
    OrganizationRequest(String, String),
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapBatch {
    /// Values read that were not under the current key.
    pub found: u64,
    /// Of those, written back under the current key (the rest had changed meanwhile).
    pub rewrapped: u64,
    /// Where the batch ended; `None`: the column has nothing more after it.
    pub next: Option<After>,
}

#[async_trait]
pub trait Sealed {
    /// How many values of `column` are not sealed under the current key, and how many it holds
    /// (empty strings of rows from before sealing count as values; NULLs do not).
    async fn count_not_current(&mut self, column: SealedColumn) -> Result<(u64, u64)>;
    /// Moves up to `limit` values of `column` after `after` to the current key.
    async fn rewrap_batch(
        &mut self,
        column: SealedColumn,
        after: &After,
        limit: i64,
    ) -> Result<RewrapBatch>;
}

impl<D: Dialect> SqlTx<D> {
    /// `column NOT LIKE 's1.<current key id>.%'`: a value not under the current key.
    fn not_current(&self, column: SealedColumn) -> Result<String> {
        Ok(format!(
            "{} IS NOT NULL AND {} NOT LIKE 's1.{}.%'",
            column.column(),
            column.column(),
            self.keys()?.current_id()
        ))
    }
}

#[async_trait]
impl<D: Dialect> Sealed for SqlTx<D> {
    async fn count_not_current(&mut self, column: SealedColumn) -> Result<(u64, u64)> {
        let q = Self::sql(format!(
            "SELECT COUNT(*) FILTER (WHERE {not_current}), COUNT({c}) FROM {t}",
            not_current = self.not_current(column)?,
            c = column.column(),
            t = column.table(),
        ));
        let (left, all): (i64, i64) = self.fetch_one(q).await?;
        Ok((
            u64::try_from(left).unwrap_or(0),
            u64::try_from(all).unwrap_or(0),
        ))
    }

    async fn rewrap_batch(
        &mut self,
        column: SealedColumn,
        after: &After,
        limit: i64,
    ) -> Result<RewrapBatch> {
        let not_current = self.not_current(column)?;
        let (c, t) = (column.column(), column.table());
        let place = column.place;
        // Read the batch: (row key bytes, the key to write back by, the stored value).
        let rows: Vec<(Vec<u8>, After, String)> = match column.key {
            RowKey::Id => {
                let mut q = Self::sql(format!("SELECT id, {c} FROM {t} WHERE {not_current}"));
                if let After::Id(id) = after {
                    q.push(" AND id > ").bind(*id);
                }
                q.push(" ORDER BY id LIMIT ").bind(limit);
                let rows: Vec<(Uuid, String)> = self.fetch_all(q).await?;
                rows.into_iter()
                    .map(|(id, v)| (id.as_bytes().to_vec(), After::Id(id), v))
                    .collect()
            }
            RowKey::OrganizationRequest => {
                let mut q = Self::sql(format!(
                    "SELECT organization, request_id, {c} FROM {t} WHERE {not_current}"
                ));
                if let After::OrganizationRequest(org, request) = after {
                    q.push(" AND (organization, request_id) > (")
                        .bind(org.clone())
                        .push(", ")
                        .bind(request.clone())
                        .push(")");
                }
                q.push(" ORDER BY organization, request_id LIMIT ")
                    .bind(limit);
                let rows: Vec<(String, String, String)> = self.fetch_all(q).await?;
                rows.into_iter()
                    .map(|(org, request, v)| {
                        (
                            [org.as_bytes(), b"\0", request.as_bytes()].concat(),
                            After::OrganizationRequest(org, request),
                            v,
                        )
                    })
                    .collect()
            }
        };
        let found = rows.len() as u64;
        let mut rewrapped = 0;
        let mut next = None;
        for (row, key, stored) in rows {
            let sealed = self
                .keys()?
                .rewrap(Place::new(place, &row), &stored)
                .map_err(|e| crate::error::Error::internal(format!("stored {place}: {e}")))?;
            if let Some(sealed) = sealed {
                let mut update = Self::sql(format!("UPDATE {t} SET {c} = "));
                update.bind(sealed);
                match &key {
                    After::Id(id) => {
                        update.push(" WHERE id = ").bind(*id);
                    }
                    After::OrganizationRequest(org, request) => {
                        update
                            .push(" WHERE organization = ")
                            .bind(org.clone())
                            .push(" AND request_id = ")
                            .bind(request.clone());
                    }
                    After::Start => {}
                }
                update.push(&format!(" AND {c} = ")).bind(stored);
                rewrapped += self.execute(update).await?;
            }
            next = Some(key);
        }
        if found < u64::try_from(limit).unwrap_or(0) {
            next = None;
        }
        Ok(RewrapBatch {
            found,
            rewrapped,
            next,
        })
    }
}

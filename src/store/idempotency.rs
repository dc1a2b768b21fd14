//! Request ids (AIP-155): a change claimed under a client's `request_id` runs once; its retries get
//! the first response back.

use super::sealed::IDEMPOTENCY_RESPONSE;
use super::{
    DbTime,
    dialect::{Bind, Dialect},
    sql::SqlTx,
};
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// The outcome of claiming a `request_id` (AIP-155).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time: go ahead, then [`Idempotency::complete_request`] with the result.
    New,
    /// Seen before (committed): the first request's fingerprint and stored response.
    Existing {
        fingerprint: String,
        response: String,
    },
}

#[async_trait]
pub trait Idempotency {
    /// Claims `request_id` for `organization`. A concurrent claim of the same id waits for this one.
    async fn claim_request(
        &mut self,
        organization: &str,
        request_id: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim>;
    /// Stores the response of a claimed request for its retries.
    async fn complete_request(
        &mut self,
        organization: &str,
        request_id: &str,
        response: &str,
    ) -> Result<()>;
}

/// The key of a row that its sealed response is bound to.
fn row_key(organization: &str, request_id: &str) -> Vec<u8> {
    [organization.as_bytes(), b"\0", request_id.as_bytes()].concat()
}

#[async_trait]
impl<D: Dialect> Idempotency for SqlTx<D> {
    async fn claim_request(
        &mut self,
        organization: &str,
        request_id: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim> {
        let claim = Self::sql(
            "INSERT INTO idempotency_keys \
               (organization, request_id, fingerprint, response, create_time) \
             VALUES ($1, $2, $3, '', $4) \
             ON CONFLICT (organization, request_id) DO NOTHING",
        )
        .arg(organization)
        .arg(request_id)
        .arg(fingerprint)
        .arg(DbTime(now));
        if self.execute(claim).await? == 1 {
            return Ok(Claim::New);
        }
        let first = Self::sql(
            "SELECT fingerprint, response FROM idempotency_keys \
             WHERE organization = $1 AND request_id = $2",
        )
        .arg(organization)
        .arg(request_id);
        let (fingerprint, response) = self.fetch_one::<(String, String)>(first).await?;
        let row = row_key(organization, request_id);
        Ok(Claim::Existing {
            fingerprint,
            response: super::rows::open(self.keys()?, IDEMPOTENCY_RESPONSE, &row, &response)?,
        })
    }

    async fn complete_request(
        &mut self,
        organization: &str,
        request_id: &str,
        response: &str,
    ) -> Result<()> {
        // The response is the complete view the caller got: personal content, sealed like the rest.
        let response = self.seal(
            IDEMPOTENCY_RESPONSE,
            &row_key(organization, request_id),
            response,
        )?;
        self.write(
            "UPDATE idempotency_keys SET response = $3 \
             WHERE organization = $1 AND request_id = $2",
            |args| {
                args.bind(organization)?;
                args.bind(request_id)?;
                args.bind(response)
            },
        )
        .await
    }
}

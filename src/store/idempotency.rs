//! Request ids (AIP-155): a change made under a client's `request_id` runs once; its retries get
//! the first response back.
//!
//! A call first looks for its id (a read), and records it with its response among its other
//! writes, at the end: one row written once. (It used to claim the id with an insert first and
//! fill in the response with an update: a second row version, and a statement, per call.) Two
//! first tries of one id at the same moment both find nothing; the unique key lets one record it,
//! the other fails ABORTED and is undone, and its retry finds the first.

use super::sealed::IDEMPOTENCY_RESPONSE;
use super::{
    DbTime,
    dialect::{Bind, Dialect},
    sql::SqlTx,
};
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A request recorded under its `request_id`: the first request's fingerprint and response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub fingerprint: String,
    pub response: String,
}

#[async_trait]
pub trait Idempotency {
    /// The request recorded under `request_id` for `organization`: committed, or earlier in this
    /// transaction (a batch-mate's).
    async fn find_request(
        &mut self,
        organization: &str,
        request_id: &str,
    ) -> Result<Option<Recorded>>;
    /// Records a request and its response for its retries, with the call's other writes: one row,
    /// written once. Should another call have recorded the same id meanwhile (two first tries at
    /// once, on PostgreSQL), this call fails ABORTED where the write is sent and is undone: its
    /// retry gets the other's response.
    async fn record_request(
        &mut self,
        organization: &str,
        request_id: &str,
        fingerprint: &str,
        response: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
}

/// The key of a row that its sealed response is bound to.
fn row_key(organization: &str, request_id: &str) -> Vec<u8> {
    [organization.as_bytes(), b"\0", request_id.as_bytes()].concat()
}

#[async_trait]
impl<D: Dialect> Idempotency for SqlTx<D> {
    async fn find_request(
        &mut self,
        organization: &str,
        request_id: &str,
    ) -> Result<Option<Recorded>> {
        let first = Self::sql(
            "SELECT fingerprint, response FROM idempotency_keys \
             WHERE organization = $1 AND request_id = $2",
        )
        .arg(organization)
        .arg(request_id);
        let Some((fingerprint, response)) = self.fetch_optional::<(String, String)>(first).await?
        else {
            return Ok(None);
        };
        let row = row_key(organization, request_id);
        Ok(Some(Recorded {
            fingerprint,
            response: super::rows::open(self.keys()?, IDEMPOTENCY_RESPONSE, &row, &response)?,
        }))
    }

    async fn record_request(
        &mut self,
        organization: &str,
        request_id: &str,
        fingerprint: &str,
        response: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        // The response is the complete view the caller got: personal content, sealed like the rest.
        let response = self.seal(
            IDEMPOTENCY_RESPONSE,
            &row_key(organization, request_id),
            response,
        )?;
        // No `ON CONFLICT`: a second record of the id must fail the call (see `crate::error`,
        // `Reason::RequestInProgress`), never commit its work twice.
        self.write(
            "INSERT INTO idempotency_keys \
               (organization, request_id, fingerprint, response, create_time) \
             VALUES ($1, $2, $3, $4, $5)",
            |args| {
                args.bind(organization)?;
                args.bind(request_id)?;
                args.bind(fingerprint)?;
                args.bind(response)?;
                args.bind(DbTime(now))
            },
        )
        .await
    }
}

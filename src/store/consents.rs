//! Consents and the consent log: who agreed to what, and every change to it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    DbTime,
    dialect::{Bind, Dialect},
    rows::{ConsentEventRow, ConsentRow},
    sealed,
    sql::SqlTx,
    to_json,
};
use crate::{
    domain::consent::{Consent, ConsentEvent, ConsentState},
    error::{Error, Result},
};

#[derive(Debug, Clone, Default)]
pub struct ConsentFilter {
    /// Any of these pseudonyms (one person under the current and previous keys); empty: anyone.
    pub subject_pseudonyms: Vec<String>,
    pub state: Option<ConsentState>,
    /// Needed to tell ACTIVE from EXPIRED.
    pub now: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ConsentEventFilter {
    /// Any of these pseudonyms (one person under the current and previous keys); empty: anyone.
    pub subject_pseudonyms: Vec<String>,
    pub consent_id: Option<Uuid>,
    pub organization: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Keyset cursor: events with a larger id.
    pub after_id: Option<i64>,
    pub limit: i64,
}

/// A consent event with its position in the consent log (for paging).
#[derive(Debug, Clone)]
pub struct StoredConsentEvent {
    pub id: i64,
    pub event: ConsentEvent,
}

#[async_trait]
pub trait Consents {
    async fn insert_consent(&mut self, consent: &Consent, subject_pseudonym: &str) -> Result<()>;
    /// With `lock`, other transactions that want to change the consent wait for this one.
    async fn get_consent(&mut self, id: Uuid, lock: bool) -> Result<Option<Consent>>;
    /// Those of `ids` that exist, unlocked, in no particular order.
    async fn get_consents(&mut self, ids: &[Uuid]) -> Result<Vec<Consent>>;
    async fn update_consent(&mut self, consent: &Consent) -> Result<()>;
    async fn list_consents(&mut self, filter: &ConsentFilter) -> Result<Vec<Consent>>;
    /// Up to `limit` ACTIVE consents whose `expire_time` is at or before `now`, locked, earliest
    /// first.
    async fn consents_to_expire(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Consent>>;
    async fn insert_consent_event(&mut self, event: &ConsentEvent) -> Result<()>;
    async fn list_consent_events(
        &mut self,
        filter: &ConsentEventFilter,
    ) -> Result<Vec<StoredConsentEvent>>;
}

#[async_trait]
impl<D: Dialect> Consents for SqlTx<D> {
    async fn insert_consent(&mut self, c: &Consent, subject_pseudonym: &str) -> Result<()> {
        let row = c.id.as_bytes();
        let subject = c
            .subject
            .as_ref()
            .ok_or_else(|| Error::internal("a consent is recorded with its subject"))?;
        let subject_code = self.seal(sealed::CONSENT_SUBJECT_CODE, row, subject.as_str())?;
        let evidence = self.seal(
            sealed::CONSENT_EVIDENCE_REFERENCE,
            row,
            &c.evidence_reference,
        )?;
        let insert = Self::sql(
            "INSERT INTO consents (id, subject_code, subject_pseudonym, purpose, recipients, form, \
               given_by, valid_from, expire_time, state, evidence_reference, create_time, \
               update_time, withdraw_time, used_by, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .arg(c.id)
        .arg(subject_code)
        .arg(subject_pseudonym)
        .arg(c.purpose.as_str())
        .arg(to_json(&c.recipients)?)
        .arg(c.form.as_str())
        .arg(c.given_by.as_str())
        .arg(DbTime(c.valid_from))
        .arg(c.expire_time.map(DbTime))
        .arg(c.state.as_str())
        .arg(evidence)
        .arg(DbTime(c.create_time))
        .arg(DbTime(c.update_time))
        .arg(c.withdraw_time.map(DbTime))
        .arg(c.used_by)
        .arg(c.version);
        self.execute(insert).await.map(drop)
    }

    async fn get_consent(&mut self, id: Uuid, lock: bool) -> Result<Option<Consent>> {
        let row: Option<ConsentRow> = self.by_id("consents", id, lock).await?;
        let keys = self.keys()?;
        row.map(|r| r.into_domain(keys)).transpose()
    }

    async fn get_consents(&mut self, ids: &[Uuid]) -> Result<Vec<Consent>> {
        let rows: Vec<ConsentRow> = self.by_ids("consents", ids).await?;
        let keys = self.keys()?;
        rows.into_iter().map(|r| r.into_domain(keys)).collect()
    }

    async fn update_consent(&mut self, c: &Consent) -> Result<()> {
        self.write(
            "UPDATE consents SET state = $2, update_time = $3, withdraw_time = $4, used_by = $5, \
               version = $6 \
             WHERE id = $1",
            |args| {
                args.bind(c.id)?;
                args.bind(c.state.as_str())?;
                args.bind(DbTime(c.update_time))?;
                args.bind(c.withdraw_time.map(DbTime))?;
                args.bind(c.used_by)?;
                args.bind(c.version)
            },
        )
        .await
    }

    async fn list_consents(&mut self, filter: &ConsentFilter) -> Result<Vec<Consent>> {
        let mut q = Self::sql("SELECT * FROM consents WHERE 1 = 1");
        if !filter.subject_pseudonyms.is_empty() {
            q.push(" AND subject_pseudonym IN ")
                .list(filter.subject_pseudonyms.iter().map(String::as_str));
        }
        let now = DbTime(filter.now.unwrap_or_else(Utc::now));
        match filter.state {
            None => {}
            Some(ConsentState::Active) => {
                q.push(" AND state = 'ACTIVE' AND (expire_time IS NULL OR expire_time > ")
                    .bind(now)
                    .push(")");
            }
            Some(ConsentState::Expired) => {
                q.push(" AND ((state = 'ACTIVE' AND expire_time <= ")
                    .bind(now)
                    .push(") OR state = 'EXPIRED')");
            }
            Some(state) => {
                q.push(" AND state = ").bind(state.as_str());
            }
        }
        if let Some((t, id)) = filter.after {
            q.push(" AND (create_time, id) > (")
                .bind(DbTime(t))
                .push(", ")
                .bind(id)
                .push(")");
        }
        q.push(" ORDER BY create_time, id LIMIT ")
            .bind(filter.limit);
        let rows: Vec<ConsentRow> = self.fetch_all(q).await?;
        let keys = self.keys()?;
        rows.into_iter().map(|r| r.into_domain(keys)).collect()
    }

    async fn consents_to_expire(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Consent>> {
        let select = Self::sql(format!(
            "SELECT * FROM consents \
             WHERE state = 'ACTIVE' AND expire_time IS NOT NULL AND expire_time <= $1 \
             ORDER BY expire_time, id LIMIT $2{}",
            D::LOCK
        ))
        .arg(DbTime(now))
        .arg(limit);
        let rows: Vec<ConsentRow> = self.fetch_all(select).await?;
        let keys = self.keys()?;
        rows.into_iter().map(|r| r.into_domain(keys)).collect()
    }

    async fn insert_consent_event(&mut self, e: &ConsentEvent) -> Result<()> {
        self.write(
            "INSERT INTO consent_events (consent_id, event_type, time, organization, user_id, \
               referral_id, consent_state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            |args| {
                args.bind(e.consent_id)?;
                args.bind(e.event_type.as_str())?;
                args.bind(DbTime(e.time))?;
                args.bind(e.organization.as_ref().map_or("", |o| o.as_str()))?;
                args.bind(e.user_id.as_str())?;
                args.bind(e.referral_id)?;
                args.bind(e.consent_state.as_str())
            },
        )
        .await
    }

    async fn list_consent_events(
        &mut self,
        filter: &ConsentEventFilter,
    ) -> Result<Vec<StoredConsentEvent>> {
        let mut q = Self::sql("SELECT e.* FROM consent_events e");
        if !filter.subject_pseudonyms.is_empty() {
            q.push(" JOIN consents c ON c.id = e.consent_id AND c.subject_pseudonym IN ")
                .list(filter.subject_pseudonyms.iter().map(String::as_str));
        }
        q.push(" WHERE 1 = 1");
        if let Some(id) = filter.consent_id {
            q.push(" AND e.consent_id = ").bind(id);
        }
        if let Some(org) = &filter.organization {
            q.push(" AND e.organization = ").bind(org.as_str());
        }
        if let Some(t) = filter.start_time {
            q.push(" AND e.time >= ").bind(DbTime(t));
        }
        if let Some(t) = filter.end_time {
            q.push(" AND e.time < ").bind(DbTime(t));
        }
        if let Some(id) = filter.after_id {
            q.push(" AND e.id > ").bind(id);
        }
        q.push(" ORDER BY e.id LIMIT ").bind(filter.limit);
        let rows: Vec<ConsentEventRow> = self.fetch_all(q).await?;
        rows.into_iter().map(ConsentEventRow::into_domain).collect()
    }
}

//! Referrals and their routes: who was referred, why, to whom, and where the referral stands.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::error::BoxDynError;
use uuid::Uuid;

use super::{
    DbTime, deadlines,
    dialect::{Bind, Dialect},
    rows::ReferralRow,
    sealed,
    sql::SqlTx,
    to_json,
};
use crate::{
    domain::{
        OrganizationId,
        referral::{Basis, Kind, Referral, State},
        statistics::Skeleton,
    },
    error::{Error, Result},
};

#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    /// A receiver sees only referrals ever routed to it.
    pub routed_to: Option<OrganizationId>,
    pub state: Option<State>,
    pub kind: Option<Kind>,
    /// The current recipient.
    pub recipient: Option<OrganizationId>,
    /// Any of these pseudonyms (one person under the current and previous keys); empty: anyone.
    pub subject_pseudonyms: Vec<String>,
    pub create_time_start: Option<DateTime<Utc>>,
    pub create_time_end: Option<DateTime<Utc>>,
    /// Only referrals with a deadline passed by this day without the state it requires.
    pub overdue_on: Option<NaiveDate>,
    /// Keyset cursor: strictly after this `(create_time, id)`.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

#[async_trait]
pub trait Referrals {
    async fn insert_referral(&mut self, referral: &Referral, subject_pseudonym: &str)
    -> Result<()>;
    async fn get_referral(&mut self, id: Uuid, lock: bool) -> Result<Option<Referral>>;
    /// Those of `ids` that exist, unlocked, in no particular order: one statement for a page of
    /// messages.
    async fn get_referrals(&mut self, ids: &[Uuid]) -> Result<Vec<Referral>>;
    /// Writes every field that can change after creation.
    async fn update_referral(&mut self, referral: &Referral) -> Result<()>;
    /// Records that `recipient` holds the referral from now on, for access and listing.
    async fn insert_route(
        &mut self,
        referral_id: Uuid,
        recipient: &OrganizationId,
        at: DateTime<Utc>,
    ) -> Result<()>;
    async fn list_referrals(&mut self, filter: &ReferralFilter) -> Result<Vec<Referral>>;
    async fn referrals_by_consent(&mut self, consent_id: Uuid) -> Result<Vec<Uuid>>;
}

/// Binds the coded skeleton statistics read (`create_month` … `assessment_started_within_deadline`,
/// `reason_bits`), computed from the referral each time it is written: it stays true to the
/// referral by construction. (`person_id` is the database's, from the pseudonym: migration 0010.)
fn bind_skeleton<A>(args: &mut A, s: Skeleton) -> std::result::Result<(), BoxDynError>
where
    A: Bind<String> + Bind<Option<i32>> + Bind<Option<bool>> + Bind<Option<DbTime>> + Bind<i32>,
{
    args.bind(s.create_month)?;
    args.bind(s.receipt_working_days)?;
    args.bind(s.received_within_deadline)?;
    args.bind(s.assessment_start_time.map(DbTime))?;
    args.bind(s.assessment_started_within_deadline)?;
    args.bind(s.reason_bits)
}

impl<D: Dialect> SqlTx<D> {
    /// The texts a state change may add, sealed: the rejection's and the cancellation's.
    fn seal_texts(&self, r: &Referral) -> Result<(Option<String>, Option<String>)> {
        let row = r.id.as_bytes();
        Ok((
            self.seal_opt(
                sealed::REFERRAL_REJECTION_TEXT,
                row,
                r.rejection_text.as_deref(),
            )?,
            self.seal_opt(
                sealed::REFERRAL_CANCELLATION_TEXT,
                row,
                r.cancellation_text.as_deref(),
            )?,
        ))
    }
}

#[async_trait]
impl<D: Dialect> Referrals for SqlTx<D> {
    async fn insert_referral(&mut self, r: &Referral, subject_pseudonym: &str) -> Result<()> {
        let (consent_id, ground) = match r.basis {
            Basis::Consent(id) => (Some(id), None),
            Basis::Statutory(g) => (None, Some(g.as_str())),
        };
        let reasons = to_json(&r.reasons)?;
        let history = to_json(&r.history)?;
        let skeleton = Skeleton::of(r);
        let row = r.id.as_bytes();
        let subject = r
            .subject
            .as_ref()
            .ok_or_else(|| Error::internal("a referral is created with its subject"))?;
        let subject_code = self.seal(
            sealed::REFERRAL_SUBJECT_CODE,
            row,
            subject.personal_identity_code.as_str(),
        )?;
        let name = self.seal_opt(sealed::REFERRAL_SUBJECT_NAME, row, subject.name.as_deref())?;
        let phone = self.seal_opt(
            sealed::REFERRAL_SUBJECT_PHONE,
            row,
            subject.contact_phone.as_deref(),
        )?;
        let language = subject.preferred_language.clone();
        let reason_text = self.seal(sealed::REFERRAL_REASON_TEXT, row, &r.reason_text)?;
        let application_reference = self.seal_opt(
            sealed::REFERRAL_APPLICATION_REFERENCE,
            row,
            r.application_reference.as_deref(),
        )?;
        let (rejection_text, cancellation_text) = self.seal_texts(r)?;
        self.write(
            "INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, subject_name, \
               subject_phone, subject_language, home_municipality_code, current_municipality_code, \
               recipient, reasons, reason_text, urgent, deadline_group, consent_id, \
               statutory_ground, personal_discussion_requested, application_reference, state, \
               state_reason, outcome, rejection_reason, rejection_text, cancellation_text, history, \
               create_time, update_time, receive_time, assessment_due_date, version, \
               completion_due_date, receive_due_date, create_month, receipt_working_days, \
               received_within_deadline, assessment_start_time, \
               assessment_started_within_deadline, reason_bits) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
               $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, \
               $34, $35, $36, $37, $38)",
            |args| {
                args.bind(r.id)?;
                args.bind(r.kind.as_str())?;
                args.bind(subject_code)?;
                args.bind(subject_pseudonym)?;
                args.bind(name)?;
                args.bind(phone)?;
                args.bind(language)?;
                args.bind(r.home_municipality_code.as_str())?;
                args.bind(&r.current_municipality_code)?;
                args.bind(r.recipient.as_str())?;
                args.bind(reasons)?;
                args.bind(reason_text)?;
                args.bind(r.urgent)?;
                args.bind(r.deadline_group.as_str())?;
                args.bind(consent_id)?;
                args.bind(ground)?;
                args.bind(r.personal_discussion_requested)?;
                args.bind(application_reference)?;
                args.bind(r.state.as_str())?;
                args.bind(r.state_reason.as_str())?;
                args.bind(r.outcome.map(|o| o.as_str()))?;
                args.bind(r.rejection_reason.map(|o| o.as_str()))?;
                args.bind(rejection_text)?;
                args.bind(cancellation_text)?;
                args.bind(history)?;
                args.bind(DbTime(r.create_time))?;
                args.bind(DbTime(r.update_time))?;
                args.bind(r.receive_time.map(DbTime))?;
                args.bind(r.assessment_due_date)?;
                args.bind(r.version)?;
                args.bind(r.completion_due_date)?;
                args.bind(r.receive_due_date)?;
                bind_skeleton(args, skeleton)
            },
        )
        .await
    }

    async fn get_referral(&mut self, id: Uuid, lock: bool) -> Result<Option<Referral>> {
        let row: Option<ReferralRow> = self.by_id("referrals", id, lock).await?;
        let keys = self.keys()?;
        row.map(|r| r.into_domain(keys)).transpose()
    }

    async fn get_referrals(&mut self, ids: &[Uuid]) -> Result<Vec<Referral>> {
        let rows: Vec<ReferralRow> = self.by_ids("referrals", ids).await?;
        let keys = self.keys()?;
        rows.into_iter().map(|r| r.into_domain(keys)).collect()
    }

    async fn update_referral(&mut self, r: &Referral) -> Result<()> {
        let history = to_json(&r.history)?;
        let skeleton = Skeleton::of(r);
        let (rejection_text, cancellation_text) = self.seal_texts(r)?;
        self.write(
            "UPDATE referrals SET recipient = $2, state = $3, state_reason = $4, outcome = $5, \
               rejection_reason = $6, rejection_text = $7, cancellation_text = $8, history = $9, \
               update_time = $10, receive_time = $11, assessment_due_date = $12, version = $13, \
               completion_due_date = $14, receive_due_date = $15, create_month = $16, \
               receipt_working_days = $17, received_within_deadline = $18, \
               assessment_start_time = $19, assessment_started_within_deadline = $20, \
               reason_bits = $21 \
             WHERE id = $1",
            |args| {
                args.bind(r.id)?;
                args.bind(r.recipient.as_str())?;
                args.bind(r.state.as_str())?;
                args.bind(r.state_reason.as_str())?;
                args.bind(r.outcome.map(|o| o.as_str()))?;
                args.bind(r.rejection_reason.map(|o| o.as_str()))?;
                args.bind(rejection_text)?;
                args.bind(cancellation_text)?;
                args.bind(history)?;
                args.bind(DbTime(r.update_time))?;
                args.bind(r.receive_time.map(DbTime))?;
                args.bind(r.assessment_due_date)?;
                args.bind(r.version)?;
                args.bind(r.completion_due_date)?;
                args.bind(r.receive_due_date)?;
                bind_skeleton(args, skeleton)
            },
        )
        .await
    }

    async fn insert_route(
        &mut self,
        referral_id: Uuid,
        recipient: &OrganizationId,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.write(
            "INSERT INTO referral_routes (referral_id, recipient, routed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (recipient, referral_id) DO NOTHING",
            |args| {
                args.bind(referral_id)?;
                args.bind(recipient.as_str())?;
                args.bind(DbTime(at))
            },
        )
        .await
    }

    async fn list_referrals(&mut self, filter: &ReferralFilter) -> Result<Vec<Referral>> {
        let mut q = Self::sql("SELECT r.* FROM referrals r");
        if let Some(org) = &filter.routed_to {
            q.push(" JOIN referral_routes rr ON rr.referral_id = r.id AND rr.recipient = ")
                .bind(org.as_str());
        }
        q.push(" WHERE 1 = 1");
        if let Some(state) = filter.state {
            q.push(" AND r.state = ").bind(state.as_str());
        }
        if let Some(kind) = filter.kind {
            q.push(" AND r.kind = ").bind(kind.as_str());
        }
        if let Some(recipient) = &filter.recipient {
            q.push(" AND r.recipient = ").bind(recipient.as_str());
        }
        if !filter.subject_pseudonyms.is_empty() {
            q.push(" AND r.subject_pseudonym IN ")
                .list(filter.subject_pseudonyms.iter().map(String::as_str));
        }
        if let Some(t) = filter.create_time_start {
            q.push(" AND r.create_time >= ").bind(DbTime(t));
        }
        if let Some(t) = filter.create_time_end {
            q.push(" AND r.create_time < ").bind(DbTime(t));
        }
        if let Some(today) = filter.overdue_on {
            q.push(" AND ");
            deadlines::push_overdue(&mut q, today, deadlines::Overdue::Any);
        }
        if let Some((t, id)) = filter.after {
            q.push(" AND (r.create_time, r.id) > (")
                .bind(DbTime(t))
                .push(", ")
                .bind(id)
                .push(")");
        }
        q.push(" ORDER BY r.create_time, r.id LIMIT ")
            .bind(filter.limit);
        let rows: Vec<ReferralRow> = self.fetch_all(q).await?;
        let keys = self.keys()?;
        rows.into_iter().map(|r| r.into_domain(keys)).collect()
    }

    async fn referrals_by_consent(&mut self, consent_id: Uuid) -> Result<Vec<Uuid>> {
        let select =
            Self::sql("SELECT id FROM referrals WHERE consent_id = $1 ORDER BY id").arg(consent_id);
        let ids: Vec<(Uuid,)> = self.fetch_all(select).await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }
}

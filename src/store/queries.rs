//! The SQL of every [`Tx`](super::Tx) operation, written once for both engines.
//!
//! Both SQLite and PostgreSQL accept `$n` placeholders, `RETURNING`, `ON CONFLICT`, partial indexes
//! and row-value comparisons, so one text serves both. What differs is spliced in by [`impl_tx!`]:
//! PostgreSQL locks the rows a transaction will change (`FOR NO KEY UPDATE`) and lets concurrent pullers skip
//! each other's rows (`SKIP LOCKED`); SQLite has one writer at a time (`BEGIN IMMEDIATE`), so it needs
//! neither. Rows decode through [`sqlx::FromRow`] structs that are generic over the engine.

use chrono::NaiveDate;
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

use super::{DbTime, StoredConsentEvent, corrupt};
use crate::{
    audit::{AuditRecord, StoredAuditEvent},
    domain::{
        OrganizationId, PersonalIdentityCode,
        consent::{Consent, ConsentEvent, ConsentEventType, ConsentState, Form, GivenBy, Purpose},
        referral::{
            Basis, DeadlineGroup, DeadlineKind, Kind, Outcome, Reason, Referral, RejectionReason,
            State, StatutoryGround, Subject,
        },
    },
    error::Result,
    mailbox::{MessageType, StoredMessage},
};

fn code<T>(value: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<T> {
    parse(value).ok_or_else(|| corrupt(what))
}

fn json<T: serde::de::DeserializeOwned>(value: &str, what: &str) -> Result<T> {
    serde_json::from_str(value).map_err(|_| corrupt(what))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(crate::error::Error::internal)
}

#[derive(sqlx::FromRow)]
pub(super) struct ConsentRow {
    id: Uuid,
    subject_code: String,
    purpose: String,
    recipients: String,
    form: String,
    given_by: String,
    valid_from: DbTime,
    expire_time: Option<DbTime>,
    state: String,
    evidence_reference: String,
    create_time: DbTime,
    update_time: DbTime,
    withdraw_time: Option<DbTime>,
    used_by: Option<Uuid>,
    version: i64,
}

impl ConsentRow {
    pub(super) fn into_domain(self) -> Result<Consent> {
        Ok(Consent {
            id: self.id,
            subject: PersonalIdentityCode::parse(&self.subject_code)
                .map_err(|_| corrupt("identity code"))?,
            purpose: code(&self.purpose, Purpose::from_code, "purpose")?,
            recipients: json(&self.recipients, "recipients")?,
            form: code(&self.form, Form::from_code, "form")?,
            given_by: code(&self.given_by, GivenBy::from_code, "given_by")?,
            valid_from: self.valid_from.0,
            expire_time: self.expire_time.map(|t| t.0),
            state: code(&self.state, ConsentState::from_code, "consent state")?,
            evidence_reference: self.evidence_reference,
            create_time: self.create_time.0,
            update_time: self.update_time.0,
            withdraw_time: self.withdraw_time.map(|t| t.0),
            used_by: self.used_by,
            version: self.version,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ConsentEventRow {
    id: i64,
    consent_id: Uuid,
    event_type: String,
    time: DbTime,
    organization: String,
    user_id: String,
    referral_id: Option<Uuid>,
    consent_state: String,
}

impl ConsentEventRow {
    pub(super) fn into_domain(self) -> Result<StoredConsentEvent> {
        Ok(StoredConsentEvent {
            id: self.id,
            event: ConsentEvent {
                consent_id: self.consent_id,
                event_type: code(
                    &self.event_type,
                    ConsentEventType::from_code,
                    "consent event type",
                )?,
                time: self.time.0,
                // Empty for events of the exchange itself (expiry by the clock).
                organization: if self.organization.is_empty() {
                    None
                } else {
                    Some(
                        OrganizationId::parse(&self.organization)
                            .map_err(|_| corrupt("organization"))?,
                    )
                },
                user_id: self.user_id,
                referral_id: self.referral_id,
                consent_state: code(
                    &self.consent_state,
                    ConsentState::from_code,
                    "consent state",
                )?,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ReferralRow {
    id: Uuid,
    kind: String,
    subject_code: String,
    subject_name: Option<String>,
    subject_phone: Option<String>,
    subject_language: Option<String>,
    home_municipality_code: String,
    current_municipality_code: Option<String>,
    recipient: String,
    reasons: String,
    reason_text: String,
    urgent: bool,
    deadline_group: String,
    consent_id: Option<Uuid>,
    statutory_ground: Option<String>,
    personal_discussion_requested: bool,
    application_reference: Option<String>,
    state: String,
    state_reason: String,
    outcome: Option<String>,
    rejection_reason: Option<String>,
    rejection_text: Option<String>,
    cancellation_text: Option<String>,
    history: String,
    create_time: DbTime,
    update_time: DbTime,
    receive_time: Option<DbTime>,
    assessment_due_date: Option<NaiveDate>,
    completion_due_date: Option<NaiveDate>,
    receive_due_date: Option<NaiveDate>,
    version: i64,
}

impl ReferralRow {
    pub(super) fn into_domain(self) -> Result<Referral> {
        let basis = match (self.consent_id, self.statutory_ground) {
            (Some(id), None) => Basis::Consent(id),
            (None, Some(ground)) => {
                Basis::Statutory(code(&ground, StatutoryGround::from_code, "ground")?)
            }
            _ => return Err(corrupt("referral basis")),
        };
        Ok(Referral {
            id: self.id,
            kind: code(&self.kind, Kind::from_code, "kind")?,
            subject: Subject {
                personal_identity_code: PersonalIdentityCode::parse(&self.subject_code)
                    .map_err(|_| corrupt("identity code"))?,
                name: self.subject_name,
                contact_phone: self.subject_phone,
                preferred_language: self.subject_language,
            },
            home_municipality_code: self.home_municipality_code,
            current_municipality_code: self.current_municipality_code,
            recipient: OrganizationId::parse(&self.recipient).map_err(|_| corrupt("recipient"))?,
            reasons: json::<Vec<Reason>>(&self.reasons, "reasons")?,
            reason_text: self.reason_text,
            urgent: self.urgent,
            deadline_group: code(
                &self.deadline_group,
                DeadlineGroup::from_code,
                "deadline group",
            )?,
            basis,
            personal_discussion_requested: self.personal_discussion_requested,
            application_reference: self.application_reference,
            state: code(&self.state, State::from_code, "state")?,
            state_reason: self.state_reason,
            outcome: self
                .outcome
                .map(|o| code(&o, Outcome::from_code, "outcome"))
                .transpose()?,
            rejection_reason: self
                .rejection_reason
                .map(|r| code(&r, RejectionReason::from_code, "rejection reason"))
                .transpose()?,
            rejection_text: self.rejection_text,
            cancellation_text: self.cancellation_text,
            history: json(&self.history, "history")?,
            create_time: self.create_time.0,
            update_time: self.update_time.0,
            receive_time: self.receive_time.map(|t| t.0),
            assessment_due_date: self.assessment_due_date,
            completion_due_date: self.completion_due_date,
            receive_due_date: self.receive_due_date,
            version: self.version,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    mailbox: String,
    /// Absent until the message is numbered (see `number_messages`).
    sequence: Option<i64>,
    message_type: String,
    referral_id: Option<Uuid>,
    consent_id: Option<Uuid>,
    state_change: Option<String>,
    publish_time: DbTime,
    delivery_attempt: i32,
    redrive_base: i32,
    lease_expire_time: Option<DbTime>,
    ack_time: Option<DbTime>,
    dead_letter_time: Option<DbTime>,
    dead_letter_reason: Option<String>,
    deadline_kind: Option<String>,
    deadline_date: Option<NaiveDate>,
    failed_message_id: Option<Uuid>,
    failed_mailbox: Option<String>,
}

impl MessageRow {
    pub(super) fn into_domain(self) -> Result<StoredMessage> {
        Ok(StoredMessage {
            id: self.id,
            mailbox: self.mailbox,
            sequence: self.sequence.unwrap_or_default(),
            message_type: code(&self.message_type, MessageType::from_code, "message type")?,
            referral_id: self.referral_id,
            consent_id: self.consent_id,
            state_change: self
                .state_change
                .map(|s| json(&s, "state change"))
                .transpose()?,
            deadline: match (self.deadline_kind, self.deadline_date) {
                (Some(kind), Some(date)) => {
                    Some((code(&kind, DeadlineKind::from_code, "deadline")?, date))
                }
                _ => None,
            },
            failed: self.failed_message_id.zip(self.failed_mailbox),
            publish_time: self.publish_time.0,
            delivery_attempt: self.delivery_attempt,
            redrive_base: self.redrive_base,
            lease_expire_time: self.lease_expire_time.map(|t| t.0),
            ack_time: self.ack_time.map(|t| t.0),
            dead_letter_time: self.dead_letter_time.map(|t| t.0),
            dead_letter_reason: self.dead_letter_reason,
        })
    }
}

/// The columns of a message, for every query that reads messages.
macro_rules! message_columns {
    () => {
        "id, mailbox, sequence, message_type, referral_id, consent_id, state_change, publish_time, \
         delivery_attempt, redrive_base, lease_expire_time, ack_time, dead_letter_time, dead_letter_reason, \
         deadline_kind, deadline_date, failed_message_id, failed_mailbox"
    };
}
pub(super) use message_columns;

/// Whether a statement with a list of `n` ids is worth a place in the connection's prepared-statement
/// cache. Its text differs with every list length, so only short lists, the common ones (a pull of one
/// or a few messages), are kept: a PostgreSQL statement that is not cached costs a second round trip
/// (parse, then execute), one that is cached takes one.
pub(crate) fn cacheable(n: usize) -> bool {
    n <= 8
}

/// Binds `values` as a comma-separated list and closes the parenthesis the caller opened.
pub(super) fn push_list<DB, T>(q: &mut QueryBuilder<DB>, values: impl IntoIterator<Item = T>)
where
    DB: Database,
    DB::Arguments: Default,
    T: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut list = q.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    q.push(")");
}

/// The rule of `Referral::overdue` as SQL over the referral `r`: some deadline passed by `today` without
/// the state it requires. With `unnoticed`, only deadlines whose passing has not been told yet.
pub(super) fn push_overdue<DB>(q: &mut QueryBuilder<DB>, today: NaiveDate, unnoticed: bool)
where
    DB: Database,
    DB::Arguments: Default,
    NaiveDate: for<'q> Encode<'q, DB> + Type<DB>,
{
    push_overdue_of(q, today, unnoticed, None)
}

/// [`push_overdue`] for the deadlines of one kind only.
pub(super) fn push_overdue_of<DB>(
    q: &mut QueryBuilder<DB>,
    today: NaiveDate,
    unnoticed: bool,
    only: Option<&str>,
) where
    DB: Database,
    DB::Arguments: Default,
    NaiveDate: for<'q> Encode<'q, DB> + Type<DB>,
{
    let clauses = [
        ("RECEIPT", "receive_due_date", "r.state = 'REQUESTED'"),
        (
            "ASSESSMENT_START",
            "assessment_due_date",
            "r.state IN ('RECEIVED', 'ACCEPTED')",
        ),
        // A transferred application is due decided, not just started.
        (
            "ASSESSMENT_START",
            "assessment_due_date",
            "r.state = 'IN_PROGRESS' AND r.kind = 'SUPPLEMENTARY_OR_PREVENTIVE_ASSISTANCE'",
        ),
        (
            "COMPLETION",
            "completion_due_date",
            "r.state IN ('RECEIVED', 'ACCEPTED', 'IN_PROGRESS')",
        ),
    ];
    q.push(" AND (");
    let clauses = clauses
        .iter()
        .filter(|(kind, _, _)| only.is_none_or(|only| only == *kind));
    for (i, (kind, column, states)) in clauses.enumerate() {
        if i > 0 {
            q.push(" OR ");
        }
        q.push(format_args!("({states} AND r.{column} < "))
            .push_bind(today);
        if unnoticed {
            q.push(format_args!(
                " AND NOT EXISTS (SELECT 1 FROM overdue_notices n WHERE n.referral_id = r.id \
                 AND n.deadline_kind = '{kind}' AND n.due_date = r.{column})"
            ));
        }
        q.push(")");
    }
    q.push(")");
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    sequence: i64,
    time: DbTime,
    organization: String,
    user_id: String,
    method: String,
    resources: String,
    subject_pseudonyms: String,
    status_code: i32,
    correlation_id: String,
    disclosures: String,
    leaf_index: Option<i64>,
}

impl AuditRow {
    pub(super) fn into_domain(self) -> Result<StoredAuditEvent> {
        Ok(StoredAuditEvent {
            sequence: self.sequence,
            record: AuditRecord {
                time: self.time.0,
                organization: self.organization,
                user_id: self.user_id,
                method: self.method,
                resources: json(&self.resources, "resources")?,
                subject_pseudonyms: json(&self.subject_pseudonyms, "subject pseudonyms")?,
                status_code: self.status_code,
                correlation_id: self.correlation_id,
                disclosures: json(&self.disclosures, "disclosures")?,
            },
            leaf_index: self.leaf_index,
        })
    }
}

/// A leaf joined with its event row, which may be gone.
#[derive(sqlx::FromRow)]
pub(super) struct LeafRow {
    leaf_index: i64,
    event_sequence: i64,
    leaf_hash: Vec<u8>,
    time: Option<DbTime>,
    organization: Option<String>,
    user_id: Option<String>,
    method: Option<String>,
    resources: Option<String>,
    subject_pseudonyms: Option<String>,
    status_code: Option<i32>,
    correlation_id: Option<String>,
    disclosures: Option<String>,
}

impl LeafRow {
    pub(super) fn into_domain(self) -> Result<super::ExportedLeaf> {
        let event = match (
            self.time,
            self.organization,
            self.user_id,
            self.method,
            self.resources,
            self.subject_pseudonyms,
            self.status_code,
            self.correlation_id,
            self.disclosures,
        ) {
            (
                Some(time),
                Some(organization),
                Some(user_id),
                Some(method),
                Some(resources),
                Some(subject_pseudonyms),
                Some(status_code),
                Some(correlation_id),
                Some(disclosures),
            ) => Some(AuditRecord {
                time: time.0,
                organization,
                user_id,
                method,
                resources: json(&resources, "resources")?,
                subject_pseudonyms: json(&subject_pseudonyms, "subject pseudonyms")?,
                status_code,
                correlation_id,
                disclosures: json(&disclosures, "disclosures")?,
            }),
            _ => None,
        };
        Ok(super::ExportedLeaf {
            leaf_index: self.leaf_index,
            event_sequence: self.event_sequence,
            leaf_hash: self.leaf_hash,
            event,
        })
    }
}

/// The most rows one multi-row statement writes: PostgreSQL takes at most 65535 parameters.
pub(super) const ROWS_PER_STATEMENT: usize = 5000;

pub(super) fn to_hash(bytes: Vec<u8>, what: &str) -> Result<crate::audit::merkle::Hash> {
    bytes.try_into().map_err(|_| corrupt(what))
}

/// Implements [`Tx`](super::Tx) for `$tx` (a struct with a `tx: sqlx::Transaction<'static, $db>`
/// field and a `held: Held<…>` of the engine's arguments) on engine `$db`. `$lock` is appended to
/// reads of rows the transaction will change; `$skip_locked` to the selection of messages to lease;
/// `$sending` says how held writes go ([`super::held`]).
macro_rules! impl_tx {
    (
        $tx:ident,
        $db:ty,
        lock = $lock:literal,
        skip_locked = $skip_locked:literal,
        position = $position:literal,
        notify = $notify:literal,
        sending = $sending:expr
    ) => {
        use sqlx::Arguments as _;

        impl $tx {
            /// Holds back a write whose result nobody reads: `sql` with `$n` placeholders, `bind`
            /// adding its arguments in order (see [`super::held`]).
            async fn write(
                &mut self,
                sql: &'static str,
                bind: impl FnOnce(
                    &mut <$db as sqlx::Database>::Arguments,
                ) -> std::result::Result<(), sqlx::error::BoxDynError>,
            ) -> $crate::error::Result<()> {
                if self.held.must_send_before(sql, $sending) {
                    self.conn().await?;
                }
                self.held.add(sql, bind)?;
                if self.held.is_full() {
                    self.conn().await?;
                }
                Ok(())
            }

            /// The connection, once the held writes have gone ahead: what follows reads their effects.
            async fn conn(&mut self) -> $crate::error::Result<&mut <$db as sqlx::Database>::Connection> {
                if let Some((sql, args)) = self.held.take($sending)? {
                    sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                        .execute(&mut *self.tx)
                        .await?;
                }
                Ok(&mut *self.tx)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Tx for $tx {
            async fn claim_request(
                &mut self,
                organization: &str,
                request_id: &str,
                fingerprint: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<$crate::store::Claim> {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (organization, request_id, fingerprint, response, create_time) \
                     VALUES ($1, $2, $3, '', $4) ON CONFLICT (organization, request_id) DO NOTHING",
                )
                .bind(organization)
                .bind(request_id)
                .bind(fingerprint)
                .bind($crate::store::DbTime(now))
                .execute(self.conn().await?)
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok($crate::store::Claim::New);
                }
                let (fingerprint, response): (String, String) = sqlx::query_as(
                    "SELECT fingerprint, response FROM idempotency_keys WHERE organization = $1 AND request_id = $2",
                )
                .bind(organization)
                .bind(request_id)
                .fetch_one(self.conn().await?)
                .await?;
                Ok($crate::store::Claim::Existing { fingerprint, response })
            }

            async fn complete_request(
                &mut self,
                organization: &str,
                request_id: &str,
                response: &str,
            ) -> $crate::error::Result<()> {
                self.write(
                    "UPDATE idempotency_keys SET response = $3 WHERE organization = $1 AND request_id = $2",
                    |args| {
                        args.add(organization)?;
                        args.add(request_id)?;
                        args.add(response)?;
                        Ok(())
                    },
                )
                .await
            }

            async fn insert_consent(
                &mut self,
                c: &$crate::domain::consent::Consent,
                subject_pseudonym: &str,
            ) -> $crate::error::Result<()> {
                use $crate::store::DbTime;
                sqlx::query(
                    "INSERT INTO consents (id, subject_code, subject_pseudonym, purpose, recipients, form, given_by, \
                     valid_from, expire_time, state, evidence_reference, create_time, update_time, withdraw_time, \
                     used_by, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .bind(c.id)
                .bind(c.subject.as_str())
                .bind(subject_pseudonym)
                .bind(c.purpose.as_str())
                .bind($crate::store::queries::to_json(&c.recipients)?)
                .bind(c.form.as_str())
                .bind(c.given_by.as_str())
                .bind(DbTime(c.valid_from))
                .bind(c.expire_time.map(DbTime))
                .bind(c.state.as_str())
                .bind(&c.evidence_reference)
                .bind(DbTime(c.create_time))
                .bind(DbTime(c.update_time))
                .bind(c.withdraw_time.map(DbTime))
                .bind(c.used_by)
                .bind(c.version)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn get_consent(
                &mut self,
                id: uuid::Uuid,
                lock: bool,
            ) -> $crate::error::Result<Option<$crate::domain::consent::Consent>> {
                let sql = if lock {
                    concat!("SELECT * FROM consents WHERE id = $1", $lock)
                } else {
                    "SELECT * FROM consents WHERE id = $1"
                };
                sqlx::query_as::<_, $crate::store::queries::ConsentRow>(sql)
                    .bind(id)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(|row| row.into_domain())
                    .transpose()
            }

            async fn get_consents(
                &mut self,
                ids: &[uuid::Uuid],
            ) -> $crate::error::Result<Vec<$crate::domain::consent::Consent>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM consents WHERE id IN (");
                $crate::store::queries::push_list(&mut q, ids.iter().copied());
                let rows: Vec<$crate::store::queries::ConsentRow> =
                    q.build_query_as().persistent($crate::store::queries::cacheable(ids.len())).fetch_all(self.conn().await?).await?;
                rows.into_iter().map(|row| row.into_domain()).collect()
            }

            async fn update_consent(&mut self, c: &$crate::domain::consent::Consent) -> $crate::error::Result<()> {
                use $crate::store::DbTime;
                self.write(
                    "UPDATE consents SET state = $2, update_time = $3, withdraw_time = $4, used_by = $5, version = $6 \
                     WHERE id = $1",
                    |args| {
                        args.add(c.id)?;
                        args.add(c.state.as_str())?;
                        args.add(DbTime(c.update_time))?;
                        args.add(c.withdraw_time.map(DbTime))?;
                        args.add(c.used_by)?;
                        args.add(c.version)?;
                        Ok(())
                    },
                )
                .await
            }

            async fn list_consents(
                &mut self,
                filter: &$crate::store::ConsentFilter,
            ) -> $crate::error::Result<Vec<$crate::domain::consent::Consent>> {
                use $crate::{domain::consent::ConsentState, store::DbTime};
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM consents WHERE 1 = 1");
                if !filter.subject_pseudonyms.is_empty() {
                    q.push(" AND subject_pseudonym IN (");
                    $crate::store::queries::push_list(&mut q, filter.subject_pseudonyms.iter().cloned());
                }
                let now = DbTime(filter.now.unwrap_or_else(chrono::Utc::now));
                match filter.state {
                    None => {}
                    Some(ConsentState::Active) => {
                        q.push(" AND state = 'ACTIVE' AND (expire_time IS NULL OR expire_time > ")
                            .push_bind(now)
                            .push(")");
                    }
                    Some(ConsentState::Expired) => {
                        q.push(" AND ((state = 'ACTIVE' AND expire_time <= ").push_bind(now).push(") OR state = 'EXPIRED')");
                    }
                    Some(state) => {
                        q.push(" AND state = ").push_bind(state.as_str());
                    }
                }
                if let Some((t, id)) = filter.after {
                    q.push(" AND (create_time, id) > (").push_bind(DbTime(t)).push(", ").push_bind(id).push(")");
                }
                q.push(" ORDER BY create_time, id LIMIT ").push_bind(filter.limit);
                q.build_query_as::<$crate::store::queries::ConsentRow>()
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|row| row.into_domain())
                    .collect()
            }

            async fn insert_consent_event(
                &mut self,
                e: &$crate::domain::consent::ConsentEvent,
            ) -> $crate::error::Result<()> {
                self.write(
                    "INSERT INTO consent_events (consent_id, event_type, time, organization, user_id, referral_id, \
                     consent_state) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    |args| {
                        args.add(e.consent_id)?;
                        args.add(e.event_type.as_str())?;
                        args.add($crate::store::DbTime(e.time))?;
                        args.add(e.organization.as_ref().map_or("", |o| o.as_str()))?;
                        args.add(&e.user_id)?;
                        args.add(e.referral_id)?;
                        args.add(e.consent_state.as_str())?;
                        Ok(())
                    },
                )
                .await
            }

            async fn list_consent_events(
                &mut self,
                filter: &$crate::store::ConsentEventFilter,
            ) -> $crate::error::Result<Vec<$crate::store::StoredConsentEvent>> {
                use $crate::store::DbTime;
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT e.* FROM consent_events e");
                if !filter.subject_pseudonyms.is_empty() {
                    q.push(" JOIN consents c ON c.id = e.consent_id AND c.subject_pseudonym IN (");
                    $crate::store::queries::push_list(&mut q, filter.subject_pseudonyms.iter().cloned());
                }
                q.push(" WHERE 1 = 1");
                if let Some(id) = filter.consent_id {
                    q.push(" AND e.consent_id = ").push_bind(id);
                }
                if let Some(org) = &filter.organization {
                    q.push(" AND e.organization = ").push_bind(org.clone());
                }
                if let Some(t) = filter.start_time {
                    q.push(" AND e.time >= ").push_bind(DbTime(t));
                }
                if let Some(t) = filter.end_time {
                    q.push(" AND e.time < ").push_bind(DbTime(t));
                }
                if let Some(id) = filter.after_id {
                    q.push(" AND e.id > ").push_bind(id);
                }
                q.push(" ORDER BY e.id LIMIT ").push_bind(filter.limit);
                q.build_query_as::<$crate::store::queries::ConsentEventRow>()
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|row| row.into_domain())
                    .collect()
            }

            async fn insert_referral(
                &mut self,
                r: &$crate::domain::referral::Referral,
                subject_pseudonym: &str,
            ) -> $crate::error::Result<()> {
                use $crate::{domain::referral::Basis, store::{DbTime, queries::to_json}};
                let (consent_id, ground) = match r.basis {
                    Basis::Consent(id) => (Some(id), None),
                    Basis::Statutory(g) => (None, Some(g.as_str())),
                };
                self.write(
                    "INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, subject_name, subject_phone, \
                     subject_language, home_municipality_code, current_municipality_code, recipient, reasons, \
                     reason_text, urgent, deadline_group, consent_id, statutory_ground, \
                     personal_discussion_requested, application_reference, state, state_reason, outcome, \
                     rejection_reason, rejection_text, cancellation_text, history, create_time, update_time, \
                     receive_time, assessment_due_date, version, completion_due_date, receive_due_date) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
                     $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
                    |args| {
                        args.add(r.id)?;
                        args.add(r.kind.as_str())?;
                        args.add(r.subject.personal_identity_code.as_str())?;
                        args.add(subject_pseudonym)?;
                        args.add(&r.subject.name)?;
                        args.add(&r.subject.contact_phone)?;
                        args.add(&r.subject.preferred_language)?;
                        args.add(&r.home_municipality_code)?;
                        args.add(&r.current_municipality_code)?;
                        args.add(r.recipient.as_str())?;
                        args.add(to_json(&r.reasons)?)?;
                        args.add(&r.reason_text)?;
                        args.add(r.urgent)?;
                        args.add(r.deadline_group.as_str())?;
                        args.add(consent_id)?;
                        args.add(ground)?;
                        args.add(r.personal_discussion_requested)?;
                        args.add(&r.application_reference)?;
                        args.add(r.state.as_str())?;
                        args.add(&r.state_reason)?;
                        args.add(r.outcome.map(|o| o.as_str()))?;
                        args.add(r.rejection_reason.map(|o| o.as_str()))?;
                        args.add(&r.rejection_text)?;
                        args.add(&r.cancellation_text)?;
                        args.add(to_json(&r.history)?)?;
                        args.add(DbTime(r.create_time))?;
                        args.add(DbTime(r.update_time))?;
                        args.add(r.receive_time.map(DbTime))?;
                        args.add(r.assessment_due_date)?;
                        args.add(r.version)?;
                        args.add(r.completion_due_date)?;
                        args.add(r.receive_due_date)?;
                        Ok(())
                    },
                )
                .await
            }

            async fn get_referral(
                &mut self,
                id: uuid::Uuid,
                lock: bool,
            ) -> $crate::error::Result<Option<$crate::domain::referral::Referral>> {
                let sql = if lock {
                    concat!("SELECT * FROM referrals WHERE id = $1", $lock)
                } else {
                    "SELECT * FROM referrals WHERE id = $1"
                };
                sqlx::query_as::<_, $crate::store::queries::ReferralRow>(sql)
                    .bind(id)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(|row| row.into_domain())
                    .transpose()
            }

            async fn get_referrals(
                &mut self,
                ids: &[uuid::Uuid],
            ) -> $crate::error::Result<Vec<$crate::domain::referral::Referral>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM referrals WHERE id IN (");
                $crate::store::queries::push_list(&mut q, ids.iter().copied());
                let rows: Vec<$crate::store::queries::ReferralRow> =
                    q.build_query_as().persistent($crate::store::queries::cacheable(ids.len())).fetch_all(self.conn().await?).await?;
                rows.into_iter().map(|row| row.into_domain()).collect()
            }

            async fn update_referral(&mut self, r: &$crate::domain::referral::Referral) -> $crate::error::Result<()> {
                use $crate::store::{DbTime, queries::to_json};
                self.write(
                    "UPDATE referrals SET recipient = $2, state = $3, state_reason = $4, outcome = $5, \
                     rejection_reason = $6, rejection_text = $7, cancellation_text = $8, history = $9, \
                     update_time = $10, receive_time = $11, assessment_due_date = $12, version = $13, \
                     completion_due_date = $14, receive_due_date = $15 WHERE id = $1",
                    |args| {
                        args.add(r.id)?;
                        args.add(r.recipient.as_str())?;
                        args.add(r.state.as_str())?;
                        args.add(&r.state_reason)?;
                        args.add(r.outcome.map(|o| o.as_str()))?;
                        args.add(r.rejection_reason.map(|o| o.as_str()))?;
                        args.add(&r.rejection_text)?;
                        args.add(&r.cancellation_text)?;
                        args.add(to_json(&r.history)?)?;
                        args.add(DbTime(r.update_time))?;
                        args.add(r.receive_time.map(DbTime))?;
                        args.add(r.assessment_due_date)?;
                        args.add(r.version)?;
                        args.add(r.completion_due_date)?;
                        args.add(r.receive_due_date)?;
                        Ok(())
                    },
                )
                .await
            }

            async fn insert_route(
                &mut self,
                referral_id: uuid::Uuid,
                recipient: &$crate::domain::OrganizationId,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<()> {
                self.write(
                    "INSERT INTO referral_routes (referral_id, recipient, routed_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (recipient, referral_id) DO NOTHING",
                    |args| {
                        args.add(referral_id)?;
                        args.add(recipient.as_str())?;
                        args.add($crate::store::DbTime(at))?;
                        Ok(())
                    },
                )
                .await
            }

            async fn list_referrals(
                &mut self,
                filter: &$crate::store::ReferralFilter,
            ) -> $crate::error::Result<Vec<$crate::domain::referral::Referral>> {
                use $crate::store::DbTime;
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT r.* FROM referrals r");
                if let Some(org) = &filter.routed_to {
                    q.push(" JOIN referral_routes rr ON rr.referral_id = r.id AND rr.recipient = ")
                        .push_bind(org.as_str().to_owned());
                }
                q.push(" WHERE 1 = 1");
                if let Some(state) = filter.state {
                    q.push(" AND r.state = ").push_bind(state.as_str());
                }
                if let Some(kind) = filter.kind {
                    q.push(" AND r.kind = ").push_bind(kind.as_str());
                }
                if let Some(recipient) = &filter.recipient {
                    q.push(" AND r.recipient = ").push_bind(recipient.as_str().to_owned());
                }
                if !filter.subject_pseudonyms.is_empty() {
                    q.push(" AND r.subject_pseudonym IN (");
                    $crate::store::queries::push_list(&mut q, filter.subject_pseudonyms.iter().cloned());
                }
                if let Some(t) = filter.create_time_start {
                    q.push(" AND r.create_time >= ").push_bind(DbTime(t));
                }
                if let Some(t) = filter.create_time_end {
                    q.push(" AND r.create_time < ").push_bind(DbTime(t));
                }
                if let Some(today) = filter.overdue_on {
                    $crate::store::queries::push_overdue(&mut q, today, false);
                }
                if let Some((t, id)) = filter.after {
                    q.push(" AND (r.create_time, r.id) > (").push_bind(DbTime(t)).push(", ").push_bind(id).push(")");
                }
                q.push(" ORDER BY r.create_time, r.id LIMIT ").push_bind(filter.limit);
                q.build_query_as::<$crate::store::queries::ReferralRow>()
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|row| row.into_domain())
                    .collect()
            }

            async fn referrals_by_consent(&mut self, consent_id: uuid::Uuid) -> $crate::error::Result<Vec<uuid::Uuid>> {
                Ok(sqlx::query_scalar("SELECT id FROM referrals WHERE consent_id = $1 ORDER BY id")
                    .bind(consent_id)
                    .fetch_all(self.conn().await?)
                    .await?)
            }

            async fn insert_message(&mut self, m: &$crate::mailbox::NewMessage) -> $crate::error::Result<()> {
                let state_change = m.state_change.as_ref().map($crate::store::queries::to_json).transpose()?;
                self.write(
                    "INSERT INTO messages (id, mailbox, message_type, referral_id, consent_id, state_change, \
                     publish_time, deadline_kind, deadline_date, failed_message_id, failed_mailbox) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    |args| {
                        args.add(m.id)?;
                        args.add(m.mailbox.as_str())?;
                        args.add(m.message_type.as_str())?;
                        args.add(m.referral_id)?;
                        args.add(m.consent_id)?;
                        args.add(state_change)?;
                        args.add($crate::store::DbTime(m.publish_time))?;
                        args.add(m.deadline.map(|(kind, _)| kind.as_str()))?;
                        args.add(m.deadline.map(|(_, date)| date))?;
                        args.add(m.failed.as_ref().map(|(id, _)| *id))?;
                        args.add(m.failed.as_ref().map(|(_, mailbox)| mailbox.clone()))?;
                        Ok(())
                    },
                )
                .await
            }

            async fn number_messages(&mut self, mailbox: &str) -> $crate::error::Result<u64> {
                // The counter, if this transaction can take it, and whether it exists at all: no row may
                // mean "locked" (skipped) or "missing", and only a missing one is created. Inserting over
                // a locked row would wait for its locker, which is what SKIP LOCKED is to avoid.
                const TAKE: &str = concat!(
                    "SELECT (SELECT last_sequence FROM mailboxes WHERE organization = $1", $skip_locked, "), \
                     EXISTS (SELECT 1 FROM mailboxes WHERE organization = $1)"
                );
                let (mut last, present): (Option<i64>, bool) =
                    sqlx::query_as(TAKE).bind(mailbox).fetch_one(self.conn().await?).await?;
                if !present {
                    sqlx::query(
                        "INSERT INTO mailboxes (organization, last_sequence) VALUES ($1, 0) \
                         ON CONFLICT (organization) DO NOTHING",
                    )
                    .bind(mailbox)
                    .execute(self.conn().await?)
                    .await?;
                    (last, _) = sqlx::query_as::<_, (Option<i64>, bool)>(TAKE)
                        .bind(mailbox)
                        .fetch_one(self.conn().await?)
                        .await?;
                }
                // Locked by a transaction that is numbering this mailbox now.
                let Some(last) = last else { return Ok(0) };
                // A statement of its own, so that it reads the messages as of after the counter was
                // taken: a transaction that numbered before us has committed by then, and what it
                // numbered is not numbered again.
                macro_rules! number {
                    () => {
                        concat!(
                            "UPDATE messages SET sequence = $2 + numbered.n FROM (SELECT id, row_number() OVER (ORDER BY ",
                            $position,
                            ") AS n FROM messages WHERE mailbox = $1 AND sequence IS NULL) numbered \
                             WHERE messages.id = numbered.id"
                        )
                    };
                }
                let numbered = if $sending == $crate::store::held::Sending::OneStatement {
                    // An engine that takes data-modifying WITH clauses (see `Sending`) numbers and
                    // advances the counter in one round trip.
                    const NUMBER_AND_ADVANCE: &str = concat!(
                        "WITH done AS (",
                        number!(),
                        " RETURNING 1), \
                         advanced AS (UPDATE mailboxes SET last_sequence = $2 + (SELECT count(*) FROM done) \
                           WHERE organization = $1 AND EXISTS (SELECT 1 FROM done)) \
                         SELECT count(*) FROM done"
                    );
                    let numbered: i64 = sqlx::query_scalar(NUMBER_AND_ADVANCE)
                        .bind(mailbox)
                        .bind(last)
                        .fetch_one(self.conn().await?)
                        .await?;
                    u64::try_from(numbered).unwrap_or(0)
                } else {
                    let numbered = sqlx::query(number!())
                        .bind(mailbox)
                        .bind(last)
                        .execute(self.conn().await?)
                        .await?
                        .rows_affected();
                    if numbered > 0 {
                        sqlx::query("UPDATE mailboxes SET last_sequence = $2 WHERE organization = $1")
                            .bind(mailbox)
                            .bind(last + numbered as i64)
                            .execute(self.conn().await?)
                            .await?;
                    }
                    numbered
                };
                Ok(numbered)
            }

            async fn ensure_mailboxes(&mut self, organizations: &[String]) -> $crate::error::Result<()> {
                if organizations.is_empty() {
                    return Ok(());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO mailboxes (organization, last_sequence) ");
                q.push_values(organizations, |mut row, organization| {
                    row.push_bind(organization.clone()).push_bind(0_i64);
                });
                q.push(" ON CONFLICT (organization) DO NOTHING");
                q.build().execute(self.conn().await?).await?;
                Ok(())
            }

            async fn mailboxes_to_number(
                &mut self,
                published_before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT DISTINCT mailbox FROM messages WHERE sequence IS NULL AND publish_time < $1 ORDER BY mailbox",
                )
                .bind($crate::store::DbTime(published_before))
                .fetch_all(self.conn().await?)
                .await?)
            }

            async fn lease_messages(
                &mut self,
                mailbox: &str,
                max: i64,
                max_attempts: i32,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Vec<$crate::mailbox::StoredMessage>> {
                use $crate::store::DbTime;
                let rows: Vec<$crate::store::queries::MessageRow> = sqlx::query_as(concat!(
                    "UPDATE messages SET delivery_attempt = delivery_attempt + 1, lease_expire_time = $3 \
                     WHERE id IN (SELECT id FROM messages WHERE mailbox = $1 AND ack_time IS NULL \
                     AND sequence IS NOT NULL AND dead_letter_time IS NULL AND delivery_attempt - redrive_base < $5 \
                     AND (lease_expire_time IS NULL OR lease_expire_time <= $2) ORDER BY sequence LIMIT $4",
                    $skip_locked,
                    ") RETURNING ",
                    $crate::store::queries::message_columns!()
                ))
                .bind(mailbox)
                .bind(DbTime(now))
                .bind(DbTime(lease_until))
                .bind(max)
                .bind(max_attempts)
                .fetch_all(self.conn().await?)
                .await?;
                let mut messages = rows.into_iter().map(|r| r.into_domain()).collect::<$crate::error::Result<Vec<_>>>()?;
                messages.sort_by_key(|m| m.sequence);
                Ok(messages)
            }

            async fn get_messages(
                &mut self,
                mailbox: &str,
                ids: &[uuid::Uuid],
            ) -> $crate::error::Result<Vec<$crate::mailbox::StoredMessage>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // By primary key alone, then the mailbox checked here: with `mailbox = …` in the
                // WHERE clause, PostgreSQL planning on young statistics walked the whole mailbox
                // through (mailbox, sequence) to find one id (0.8 ms an acknowledgement at 500
                // messages, growing with the mailbox). Rows come back and are locked in id order, the
                // order every other acknowledgement locks in.
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::store::queries::message_columns!(),
                    " FROM messages WHERE id IN ("
                ));
                $crate::store::queries::push_list(&mut q, ids.iter().copied());
                q.push(" ORDER BY id");
                q.push($lock);
                let rows: Vec<$crate::store::queries::MessageRow> =
                    q.build_query_as().persistent($crate::store::queries::cacheable(ids.len())).fetch_all(self.conn().await?).await?;
                let mut messages = Vec::with_capacity(rows.len());
                for row in rows {
                    let message = row.into_domain()?;
                    if message.mailbox == mailbox {
                        messages.push(message);
                    }
                }
                Ok(messages)
            }

            async fn acknowledge_messages(
                &mut self,
                ids: &[uuid::Uuid],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE messages SET ack_time = ");
                q.push_bind($crate::store::DbTime(now));
                q.push(", lease_expire_time = NULL WHERE id IN (");
                $crate::store::queries::push_list(&mut q, ids.iter().copied());
                q.build().persistent($crate::store::queries::cacheable(ids.len())).execute(self.conn().await?).await?;
                Ok(())
            }

            async fn set_message_leases(
                &mut self,
                ids: &[uuid::Uuid],
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE messages SET lease_expire_time = ");
                q.push_bind($crate::store::DbTime(lease_until));
                q.push(" WHERE id IN (");
                $crate::store::queries::push_list(&mut q, ids.iter().copied());
                q.build().persistent($crate::store::queries::cacheable(ids.len())).execute(self.conn().await?).await?;
                Ok(())
            }

            async fn insert_audit_event(&mut self, e: &$crate::audit::AuditRecord) -> $crate::error::Result<()> {
                use $crate::store::queries::to_json;
                let (resources, subjects, disclosures) =
                    (to_json(&e.resources)?, to_json(&e.subject_pseudonyms)?, to_json(&e.disclosures)?);
                // The subject and resource index rows are written by the database's trigger
                // (migration 0005) from the JSON columns, in this same statement.
                self.write(
                    "INSERT INTO audit_events (time, organization, user_id, method, resources, subject_pseudonyms, \
                     status_code, correlation_id, disclosures) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    |args| {
                        args.add($crate::store::DbTime(e.time))?;
                        args.add(&e.organization)?;
                        args.add(&e.user_id)?;
                        args.add(&e.method)?;
                        args.add(resources)?;
                        args.add(subjects)?;
                        args.add(e.status_code)?;
                        args.add(&e.correlation_id)?;
                        args.add(disclosures)?;
                        Ok(())
                    },
                )
                .await
            }

            async fn list_audit_events(
                &mut self,
                query: &$crate::audit::AuditQuery,
            ) -> $crate::error::Result<Vec<$crate::audit::StoredAuditEvent>> {
                use $crate::store::DbTime;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT e.*, l.leaf_index FROM audit_events e \
                     LEFT JOIN audit_leaves l ON l.event_sequence = e.sequence",
                );
                // One event records one person under one key, so a person's pseudonyms under several
                // keys never match the same event twice.
                if !query.subject_pseudonyms.is_empty() {
                    q.push(" JOIN audit_event_subjects s ON s.event_sequence = e.sequence AND s.subject_pseudonym IN (");
                    $crate::store::queries::push_list(&mut q, query.subject_pseudonyms.iter().cloned());
                }
                if let Some(r) = &query.resource {
                    q.push(" JOIN audit_event_resources r ON r.event_sequence = e.sequence AND r.resource = ")
                        .push_bind(r.clone());
                }
                q.push(" WHERE 1 = 1");
                if let Some(org) = &query.organization {
                    q.push(" AND e.organization = ").push_bind(org.clone());
                }
                if let Some(user) = &query.user_id {
                    q.push(" AND e.user_id = ").push_bind(user.clone());
                }
                if let Some(method) = &query.method {
                    if method.starts_with('/') {
                        q.push(" AND e.method = ").push_bind(method.clone());
                    } else {
                        q.push(" AND e.method LIKE ").push_bind(format!("%/{method}"));
                    }
                }
                if let Some(t) = query.start_time {
                    q.push(" AND e.time >= ").push_bind(DbTime(t));
                }
                if let Some(t) = query.end_time {
                    q.push(" AND e.time < ").push_bind(DbTime(t));
                }
                if let Some(after) = query.after_sequence {
                    q.push(" AND e.sequence > ").push_bind(after);
                }
                q.push(" ORDER BY e.sequence LIMIT ").push_bind(query.limit);
                q.build_query_as::<$crate::store::queries::AuditRow>()
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|row| row.into_domain())
                    .collect()
            }

            async fn dead_letter_exhausted(
                &mut self,
                mailbox: Option<&str>,
                max_attempts: i32,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Vec<$crate::mailbox::StoredMessage>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE messages SET dead_letter_time = ");
                q.push_bind($crate::store::DbTime(now))
                    .push(", dead_letter_reason = ")
                    .push_bind($crate::mailbox::MAX_DELIVERY_ATTEMPTS_EXCEEDED)
                    .push(", lease_expire_time = NULL WHERE ack_time IS NULL AND dead_letter_time IS NULL")
                    .push(" AND delivery_attempt - redrive_base >= ")
                    .push_bind(max_attempts)
                    .push(" AND lease_expire_time <= ")
                    .push_bind($crate::store::DbTime(now));
                if let Some(mailbox) = mailbox {
                    q.push(" AND mailbox = ").push_bind(mailbox.to_owned());
                }
                q.push(concat!(" RETURNING ", $crate::store::queries::message_columns!()));
                let mut dead = q
                    .build_query_as::<$crate::store::queries::MessageRow>()
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|row| row.into_domain())
                    .collect::<$crate::error::Result<Vec<_>>>()?;
                dead.sort_by(|a, b| (&a.mailbox, a.sequence).cmp(&(&b.mailbox, b.sequence)));
                Ok(dead)
            }

            async fn list_dead_letters(
                &mut self,
                mailbox: &str,
                after_sequence: i64,
                limit: i64,
            ) -> $crate::error::Result<Vec<$crate::mailbox::StoredMessage>> {
                sqlx::query_as::<_, $crate::store::queries::MessageRow>(concat!(
                    "SELECT ",
                    $crate::store::queries::message_columns!(),
                    " FROM messages WHERE mailbox = $1 AND dead_letter_time IS NOT NULL AND sequence > $2 \
                     ORDER BY sequence LIMIT $3"
                ))
                .bind(mailbox)
                .bind(after_sequence)
                .bind(limit)
                .fetch_all(self.conn().await?)
                .await?
                .into_iter()
                .map(|row| row.into_domain())
                .collect()
            }

            async fn redrive_dead_letters(
                &mut self,
                mailbox: &str,
                ids: Option<&[uuid::Uuid]>,
            ) -> $crate::error::Result<u64> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE messages SET dead_letter_time = NULL, dead_letter_reason = NULL, \
                     lease_expire_time = NULL, redrive_base = delivery_attempt WHERE dead_letter_time IS NOT NULL \
                     AND mailbox = ",
                );
                q.push_bind(mailbox.to_owned());
                if let Some(ids) = ids {
                    if ids.is_empty() {
                        return Ok(0);
                    }
                    q.push(" AND id IN (");
                    $crate::store::queries::push_list(&mut q, ids.iter().copied());
                }
                let redriven = q.build().execute(self.conn().await?).await?.rows_affected();
                if redriven > 0 {
                    $crate::store::Tx::signal_mailbox(self, mailbox).await?;
                }
                Ok(redriven)
            }

            async fn mailbox_history(
                &mut self,
                mailbox: &str,
                since: i64,
                limit: i64,
            ) -> $crate::error::Result<Vec<$crate::mailbox::StoredMessage>> {
                sqlx::query_as::<_, $crate::store::queries::MessageRow>(concat!(
                    "SELECT ",
                    $crate::store::queries::message_columns!(),
                    " FROM messages WHERE mailbox = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
                ))
                .bind(mailbox)
                .bind(since)
                .bind(limit)
                .fetch_all(self.conn().await?)
                .await?
                .into_iter()
                .map(|row| row.into_domain())
                .collect()
            }

            async fn mailbox_stats(
                &mut self,
                mailbox: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<$crate::store::MailboxCounts> {
                use $crate::store::DbTime;
                let (pending, leased, dead, oldest): (i64, i64, i64, Option<DbTime>) = sqlx::query_as(
                    "SELECT \
                       COALESCE(SUM(CASE WHEN ack_time IS NULL AND dead_letter_time IS NULL \
                         AND (lease_expire_time IS NULL OR lease_expire_time <= $2) THEN 1 ELSE 0 END), 0), \
                       COALESCE(SUM(CASE WHEN ack_time IS NULL AND dead_letter_time IS NULL \
                         AND lease_expire_time > $2 THEN 1 ELSE 0 END), 0), \
                       COALESCE(SUM(CASE WHEN dead_letter_time IS NOT NULL THEN 1 ELSE 0 END), 0), \
                       MIN(CASE WHEN ack_time IS NULL AND dead_letter_time IS NULL THEN publish_time END) \
                     FROM messages WHERE mailbox = $1 AND ack_time IS NULL",
                )
                .bind(mailbox)
                .bind(DbTime(now))
                .fetch_one(self.conn().await?)
                .await?;
                Ok($crate::store::MailboxCounts {
                    pending,
                    leased,
                    dead,
                    oldest_pending_publish_time: oldest.map(|t| t.0),
                })
            }

            async fn live_leases(
                &mut self,
                mailbox: &str,
                ids: &[(uuid::Uuid, i32)],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<Vec<uuid::Uuid>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id, delivery_attempt FROM messages WHERE mailbox = ");
                q.push_bind(mailbox.to_owned())
                    .push(" AND ack_time IS NULL AND dead_letter_time IS NULL AND lease_expire_time > ")
                    .push_bind($crate::store::DbTime(now))
                    .push(" AND id IN (");
                $crate::store::queries::push_list(&mut q, ids.iter().map(|(id, _)| *id));
                let rows: Vec<(uuid::Uuid, i32)> = q.build_query_as().fetch_all(self.conn().await?).await?;
                Ok(rows.into_iter().filter(|row| ids.contains(row)).map(|(id, _)| id).collect())
            }

            async fn delete_acknowledged_before(
                &mut self,
                cutoff: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<u64> {
                Ok(sqlx::query("DELETE FROM messages WHERE ack_time IS NOT NULL AND ack_time < $1")
                    .bind($crate::store::DbTime(cutoff))
                    .execute(self.conn().await?)
                    .await?
                    .rows_affected())
            }

            async fn unnoticed_overdue(
                &mut self,
                today: chrono::NaiveDate,
                limit: i64,
            ) -> $crate::error::Result<Vec<uuid::Uuid>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT r.id FROM referrals r WHERE 1 = 1");
                $crate::store::queries::push_overdue(&mut q, today, true);
                q.push(" ORDER BY r.id LIMIT ").push_bind(limit);
                Ok(q.build_query_scalar().fetch_all(self.conn().await?).await?)
            }

            async fn insert_overdue_notice(
                &mut self,
                referral_id: uuid::Uuid,
                kind: $crate::domain::referral::DeadlineKind,
                due: chrono::NaiveDate,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<bool> {
                let inserted = sqlx::query(
                    "INSERT INTO overdue_notices (referral_id, deadline_kind, due_date, notice_time) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (referral_id, deadline_kind, due_date) DO NOTHING",
                )
                .bind(referral_id)
                .bind(kind.as_str())
                .bind(due)
                .bind($crate::store::DbTime(now))
                .execute(self.conn().await?)
                .await?
                .rows_affected();
                Ok(inserted == 1)
            }

            async fn gauge_readings(
                &mut self,
                now: chrono::DateTime<chrono::Utc>,
                today: chrono::NaiveDate,
            ) -> $crate::error::Result<$crate::store::GaugeReadings> {
                use $crate::store::DbTime;
                let rows: Vec<(String, i64, i64, i64, Option<DbTime>)> = sqlx::query_as(
                    "SELECT mailbox, \
                       COALESCE(SUM(CASE WHEN dead_letter_time IS NULL \
                         AND (lease_expire_time IS NULL OR lease_expire_time <= $1) THEN 1 ELSE 0 END), 0), \
                       COALESCE(SUM(CASE WHEN dead_letter_time IS NULL AND lease_expire_time > $1 THEN 1 ELSE 0 END), 0), \
                       COALESCE(SUM(CASE WHEN dead_letter_time IS NOT NULL THEN 1 ELSE 0 END), 0), \
                       MIN(CASE WHEN dead_letter_time IS NULL THEN publish_time END) \
                     FROM messages WHERE ack_time IS NULL GROUP BY mailbox",
                )
                .bind(DbTime(now))
                .fetch_all(self.conn().await?)
                .await?;
                let mailboxes = rows
                    .into_iter()
                    .map(|(mailbox, pending, leased, dead, oldest)| {
                        let counts = $crate::store::MailboxCounts {
                            pending,
                            leased,
                            dead,
                            oldest_pending_publish_time: oldest.map(|t| t.0),
                        };
                        (mailbox, counts)
                    })
                    .collect();
                let mut overdue = Vec::new();
                for kind in $crate::domain::referral::DeadlineKind::ALL {
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM referrals r WHERE 1 = 1");
                    $crate::store::queries::push_overdue_of(&mut q, today, false, Some(kind.as_str()));
                    let count: i64 = q.build_query_scalar().fetch_one(self.conn().await?).await?;
                    overdue.push((*kind, count));
                }
                let (audit_pending, oldest_audit): (i64, Option<DbTime>) = sqlx::query_as(
                    "SELECT COUNT(*), MIN(e.time) FROM audit_pending p \
                     JOIN audit_events e ON e.sequence = p.event_sequence",
                )
                .fetch_one(self.conn().await?)
                .await?;
                Ok($crate::store::GaugeReadings {
                    mailboxes,
                    overdue,
                    audit_pending,
                    oldest_audit_pending: oldest_audit.map(|t| t.0),
                })
            }

            async fn signal_mailbox(&mut self, mailbox: &str) -> $crate::error::Result<()> {
                if !$notify.is_empty() {
                    sqlx::query($notify).bind(mailbox).execute(self.conn().await?).await?;
                }
                Ok(())
            }

            // Savepoint statements go by the simple protocol: one round trip, and their names (one
            // per member of a batch) do not crowd the prepared-statement cache.
            async fn savepoint(&mut self, n: u64) -> $crate::error::Result<()> {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SAVEPOINT sp{n}"))).execute(self.conn().await?).await?;
                Ok(())
            }

            async fn rollback_to_savepoint(&mut self, n: u64) -> $crate::error::Result<()> {
                // Writes held back since the savepoint are undone by not sending them.
                self.held = Default::default();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ROLLBACK TO SAVEPOINT sp{n}"))).execute(&mut *self.tx).await?;
                Ok(())
            }

            async fn flush(&mut self) -> $crate::error::Result<()> {
                self.conn().await.map(|_| ())
            }

            async fn commit(mut self: Box<Self>) -> $crate::error::Result<()> {
                self.conn().await?;
                self.tx.commit().await?;
                Ok(())
            }
            async fn lock_audit_sequencer(&mut self) -> $crate::error::Result<()> {
                sqlx::query(concat!("SELECT id FROM audit_sequencer WHERE id = 1", $lock))
                    .execute(self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn audit_tree_size(&mut self) -> $crate::error::Result<i64> {
                let max: Option<i64> = sqlx::query_scalar("SELECT MAX(leaf_index) FROM audit_leaves")
                    .fetch_one(self.conn().await?)
                    .await?;
                Ok(max.map_or(0, |m| m + 1))
            }

            async fn pending_audit_events(
                &mut self,
                limit: i64,
            ) -> $crate::error::Result<Vec<$crate::audit::StoredAuditEvent>> {
                sqlx::query_as::<_, $crate::store::queries::AuditRow>(
                    "SELECT e.*, CAST(NULL AS BIGINT) AS leaf_index FROM audit_pending p \
                     JOIN audit_events e ON e.sequence = p.event_sequence \
                     ORDER BY p.event_sequence LIMIT $1",
                )
                .bind(limit)
                .fetch_all(self.conn().await?)
                .await?
                .into_iter()
                .map(|row| row.into_domain())
                .collect()
            }

            async fn audit_tree_nodes(
                &mut self,
                nodes: &[$crate::audit::merkle::Node],
            ) -> $crate::error::Result<Vec<($crate::audit::merkle::Node, $crate::audit::merkle::Hash)>> {
                use $crate::{audit::merkle::Node, store::queries::{ROWS_PER_STATEMENT, to_hash}};
                let mut found = Vec::with_capacity(nodes.len());
                let (leaves, inner): (Vec<&Node>, Vec<&Node>) = nodes.iter().partition(|n| n.level == 0);
                for chunk in leaves.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT leaf_index, leaf_hash FROM audit_leaves WHERE leaf_index IN (",
                    );
                    let mut list = q.separated(", ");
                    for n in chunk {
                        list.push_bind(i64::try_from(n.index).map_err($crate::error::Error::internal)?);
                    }
                    q.push(")");
                    let rows: Vec<(i64, Vec<u8>)> = q.build_query_as().fetch_all(self.conn().await?).await?;
                    for (index, hash) in rows {
                        let index = u64::try_from(index).map_err($crate::error::Error::internal)?;
                        found.push((Node { level: 0, index }, to_hash(hash, "leaf hash")?));
                    }
                }
                for chunk in inner.chunks(ROWS_PER_STATEMENT / 2) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT level, node_index, hash FROM audit_tree_nodes WHERE ",
                    );
                    for (i, n) in chunk.iter().enumerate() {
                        if i > 0 {
                            q.push(" OR ");
                        }
                        q.push("(level = ")
                            .push_bind(i16::from(n.level))
                            .push(" AND node_index = ")
                            .push_bind(i64::try_from(n.index).map_err($crate::error::Error::internal)?)
                            .push(")");
                    }
                    let rows: Vec<(i16, i64, Vec<u8>)> = q.build_query_as().fetch_all(self.conn().await?).await?;
                    for (level, index, hash) in rows {
                        let node = Node {
                            level: u8::try_from(level).map_err($crate::error::Error::internal)?,
                            index: u64::try_from(index).map_err($crate::error::Error::internal)?,
                        };
                        found.push((node, to_hash(hash, "tree node")?));
                    }
                }
                Ok(found)
            }

            async fn append_audit_leaves(
                &mut self,
                leaves: &[$crate::store::AuditLeaf],
                nodes: &[($crate::audit::merkle::Node, $crate::audit::merkle::Hash)],
            ) -> $crate::error::Result<()> {
                use $crate::store::queries::ROWS_PER_STATEMENT;
                for chunk in leaves.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO audit_leaves (leaf_index, event_sequence, leaf_hash) ",
                    );
                    q.push_values(chunk, |mut row, leaf| {
                        row.push_bind(leaf.leaf_index)
                            .push_bind(leaf.event_sequence)
                            .push_bind(leaf.leaf_hash.to_vec());
                    });
                    q.build().execute(self.conn().await?).await?;

                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "DELETE FROM audit_pending WHERE event_sequence IN (",
                    );
                    $crate::store::queries::push_list(&mut q, chunk.iter().map(|leaf| leaf.event_sequence));
                    let deleted = q.build().execute(self.conn().await?).await?.rows_affected();
                    if deleted != chunk.len() as u64 {
                        // Another round took some of these events: give this one up.
                        return Err($crate::error::Error::internal(
                            "pending audit events changed during a sequencer round",
                        ));
                    }
                }
                for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO audit_tree_nodes (level, node_index, hash) ",
                    );
                    let mut rows = Vec::with_capacity(chunk.len());
                    for (node, hash) in chunk {
                        rows.push((
                            i16::from(node.level),
                            i64::try_from(node.index).map_err($crate::error::Error::internal)?,
                            hash.to_vec(),
                        ));
                    }
                    q.push_values(rows, |mut row, (level, index, hash)| {
                        row.push_bind(level).push_bind(index).push_bind(hash);
                    });
                    q.build().execute(self.conn().await?).await?;
                }
                Ok(())
            }

            async fn insert_audit_checkpoint(
                &mut self,
                c: &$crate::store::StoredCheckpoint,
            ) -> $crate::error::Result<()> {
                sqlx::query(
                    "INSERT INTO audit_checkpoints (tree_size, root_hash, time, note) VALUES ($1, $2, $3, $4)",
                )
                .bind(c.tree_size)
                .bind(c.root_hash.to_vec())
                .bind($crate::store::DbTime(c.time))
                .bind(&c.note)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn latest_audit_checkpoint(
                &mut self,
            ) -> $crate::error::Result<Option<$crate::store::StoredCheckpoint>> {
                let row: Option<(i64, Vec<u8>, $crate::store::DbTime, String)> = sqlx::query_as(
                    "SELECT tree_size, root_hash, time, note FROM audit_checkpoints \
                     ORDER BY tree_size DESC LIMIT 1",
                )
                .fetch_optional(self.conn().await?)
                .await?;
                row.map(|(tree_size, root, time, note)| {
                    Ok($crate::store::StoredCheckpoint {
                        tree_size,
                        root_hash: $crate::store::queries::to_hash(root, "checkpoint root")?,
                        time: time.0,
                        note,
                    })
                })
                .transpose()
            }

            async fn audit_leaf_range(
                &mut self,
                start: i64,
                end: i64,
            ) -> $crate::error::Result<Vec<$crate::store::ExportedLeaf>> {
                sqlx::query_as::<_, $crate::store::queries::LeafRow>(
                    "SELECT l.leaf_index, l.event_sequence, l.leaf_hash, e.time, e.organization, e.user_id, \
                     e.method, e.resources, e.subject_pseudonyms, e.status_code, e.correlation_id, e.disclosures \
                     FROM audit_leaves l LEFT JOIN audit_events e ON e.sequence = l.event_sequence \
                     WHERE l.leaf_index >= $1 AND l.leaf_index < $2 ORDER BY l.leaf_index",
                )
                .bind(start)
                .bind(end)
                .fetch_all(self.conn().await?)
                .await?
                .into_iter()
                .map(|row| row.into_domain())
                .collect()
            }

            async fn consents_to_expire(
                &mut self,
                now: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::error::Result<Vec<$crate::domain::consent::Consent>> {
                sqlx::query_as::<_, $crate::store::queries::ConsentRow>(concat!(
                    "SELECT * FROM consents WHERE state = 'ACTIVE' AND expire_time IS NOT NULL \
                     AND expire_time <= $1 ORDER BY expire_time, id LIMIT $2",
                    $lock
                ))
                .bind($crate::store::DbTime(now))
                .bind(limit)
                .fetch_all(self.conn().await?)
                .await?
                .into_iter()
                .map(|row| row.into_domain())
                .collect()
            }
        }
    };
}
pub(super) use impl_tx;

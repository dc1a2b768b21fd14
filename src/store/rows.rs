//! Each table's row as the store reads it, and how it decodes into the domain. A value that does
//! not decode was not written by this service ([`corrupt`]).

use chrono::NaiveDate;
use uuid::Uuid;

use super::{
    DbTime, ExportedLeaf, StoredConsentEvent, code, corrupt, json,
    sealed::{self, SealedColumn},
};
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
    error::{Error, Result},
    mailbox::{MessageType, StoredMessage},
    sealing::{DataKeys, Place},
};

/// A sealed column's plaintext; a value that does not open is an internal error that names the
/// column and why (an unknown key id tells the operator which key file is missing), never the value.
pub(super) fn open(
    keys: &DataKeys,
    column: SealedColumn,
    row: &[u8],
    stored: &str,
) -> Result<String> {
    keys.open(Place::new(column.place, row), stored)
        .map_err(|e| Error::internal(format!("stored {}: {e}", column.place)))
}

#[derive(sqlx::FromRow)]
pub(crate) struct ConsentRow {
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
    subject_pseudonym: String,
    content_erase_time: Option<DbTime>,
}

impl ConsentRow {
    pub(super) fn into_domain(self, keys: &DataKeys) -> Result<Consent> {
        let row = self.id.as_bytes();
        let erased = self.content_erase_time.is_some();
        let subject = if erased {
            None
        } else {
            let code = open(keys, sealed::CONSENT_SUBJECT_CODE, row, &self.subject_code)?;
            Some(PersonalIdentityCode::parse(&code).map_err(|_| corrupt("identity code"))?)
        };
        Ok(Consent {
            id: self.id,
            subject,
            purpose: code(&self.purpose, Purpose::from_code, "purpose")?,
            recipients: json(&self.recipients, "recipients")?,
            form: code(&self.form, Form::from_code, "form")?,
            given_by: code(&self.given_by, GivenBy::from_code, "given_by")?,
            valid_from: self.valid_from.0,
            expire_time: self.expire_time.map(|t| t.0),
            state: code(&self.state, ConsentState::from_code, "consent state")?,
            evidence_reference: open(
                keys,
                sealed::CONSENT_EVIDENCE_REFERENCE,
                row,
                &self.evidence_reference,
            )?,
            create_time: self.create_time.0,
            update_time: self.update_time.0,
            withdraw_time: self.withdraw_time.map(|t| t.0),
            used_by: self.used_by,
            version: self.version,
            content_erase_time: self.content_erase_time.map(|t| t.0),
            subject_pseudonym: self.subject_pseudonym,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ConsentEventRow {
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
pub(crate) struct ReferralRow {
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
    subject_pseudonym: String,
    content_erase_time: Option<DbTime>,
}

impl ReferralRow {
    pub(super) fn into_domain(self, keys: &DataKeys) -> Result<Referral> {
        let row = self.id.as_bytes();
        let text = |column, value: &str| open(keys, column, row, value);
        let optional =
            |column, value: Option<String>| value.map(|v| open(keys, column, row, &v)).transpose();
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
            subject: match self.content_erase_time {
                Some(_) => None,
                None => Some(Subject {
                    personal_identity_code: PersonalIdentityCode::parse(&text(
                        sealed::REFERRAL_SUBJECT_CODE,
                        &self.subject_code,
                    )?)
                    .map_err(|_| corrupt("identity code"))?,
                    name: optional(sealed::REFERRAL_SUBJECT_NAME, self.subject_name)?,
                    contact_phone: optional(sealed::REFERRAL_SUBJECT_PHONE, self.subject_phone)?,
                    preferred_language: self.subject_language,
                }),
            },
            home_municipality_code: self.home_municipality_code,
            current_municipality_code: self.current_municipality_code,
            recipient: OrganizationId::parse(&self.recipient).map_err(|_| corrupt("recipient"))?,
            reasons: json::<Vec<Reason>>(&self.reasons, "reasons")?,
            reason_text: text(sealed::REFERRAL_REASON_TEXT, &self.reason_text)?,
            urgent: self.urgent,
            deadline_group: code(
                &self.deadline_group,
                DeadlineGroup::from_code,
                "deadline group",
            )?,
            basis,
            personal_discussion_requested: self.personal_discussion_requested,
            application_reference: optional(
                sealed::REFERRAL_APPLICATION_REFERENCE,
                self.application_reference,
            )?,
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
            rejection_text: optional(sealed::REFERRAL_REJECTION_TEXT, self.rejection_text)?,
            cancellation_text: optional(
                sealed::REFERRAL_CANCELLATION_TEXT,
                self.cancellation_text,
            )?,
            history: json(&self.history, "history")?,
            create_time: self.create_time.0,
            update_time: self.update_time.0,
            receive_time: self.receive_time.map(|t| t.0),
            assessment_due_date: self.assessment_due_date,
            completion_due_date: self.completion_due_date,
            receive_due_date: self.receive_due_date,
            version: self.version,
            content_erase_time: self.content_erase_time.map(|t| t.0),
            subject_pseudonym: self.subject_pseudonym,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
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

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
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
pub(crate) struct LeafRow {
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
    pub(super) fn into_domain(self) -> Result<ExportedLeaf> {
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
        Ok(ExportedLeaf {
            leaf_index: self.leaf_index,
            event_sequence: self.event_sequence,
            leaf_hash: self.leaf_hash,
            event,
        })
    }
}

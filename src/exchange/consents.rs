//! Consent use cases: record, read, list, withdraw, the consent log, and expiry by the clock.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use std::sync::Arc;

use async_trait::async_trait;

use super::{Exchange, Outbox, Page, RequestKey};
use crate::{
    access::{Call, Caller},
    audit::AuditRecord,
    background::Job,
    domain::{
        OrganizationId, PersonalIdentityCode, Role,
        consent::{Consent, ConsentEvent, ConsentEventType, ConsentState, NewConsent},
        referral::{Action, State},
    },
    error::{Error, Reason, Result},
    mailbox::{MessageType, NewMessage},
    store::{ConsentEventFilter, ConsentFilter, StoredConsentEvent},
};

/// How many consents one expiry round expires at most.
const EXPIRY_BATCH: i64 = 500;

/// The acting "user" of what the exchange does by itself, in the audit and consent logs.
pub const CONSENT_EXPIRY_ACTOR: &str = "system:consent-expiry";
/// The "method" of the audit event of an expiry round.
pub const CONSENT_EXPIRY_METHOD: &str = "background/ExpireConsents";

#[derive(Debug, Clone, Default)]
pub struct ConsentQuery {
    pub subject: Option<PersonalIdentityCode>,
    pub state: Option<ConsentState>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub page_size: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ConsentEventQuery {
    pub subject: Option<PersonalIdentityCode>,
    pub consent_id: Option<Uuid>,
    pub organization: Option<OrganizationId>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub after_id: Option<i64>,
    pub page_size: i64,
}

impl Exchange {
    pub async fn record_consent(
        &self,
        call: &Call,
        new: NewConsent,
        key: Option<RequestKey>,
    ) -> Result<Consent> {
        let caller = call.authorize()?;
        let pseudonym = self.pseudonym(&new.subject);
        call.touch_subject(&pseudonym);
        let now = self.clock.now();
        let violations = new.validate(now, |org| self.registry.is_known_receiver(org));
        if !violations.is_empty() {
            return Err(Error::invalid(violations));
        }
        let mut tx = self.begin().await?;
        if let Some(done) = self
            .replay::<Consent>(tx.as_mut(), caller, key.as_ref())
            .await?
        {
            call.touch_resource(done.name());
            self.commit(call, tx, Outbox::default()).await?;
            return Ok(done);
        }
        let mut consent = Consent::record(crate::domain::new_id(now), new, now);
        consent.subject_pseudonym = pseudonym.clone();
        call.touch_resource(consent.name());
        tx.insert_consent(&consent, &pseudonym).await?;
        tx.insert_consent_event(&event(
            &consent,
            ConsentEventType::Granted,
            caller,
            now,
            None,
        ))
        .await?;
        self.remember(tx.as_mut(), caller, key.as_ref(), &consent)
            .await?;
        self.commit(call, tx, Outbox::default()).await?;
        Ok(consent)
    }

    /// Kela and auditors read any consent; a receiver one that names it.
    pub async fn get_consent(&self, call: &Call, id: Uuid) -> Result<Consent> {
        let caller = call.authorize()?;
        let name = format!("consents/{id}");
        call.touch_resource(&name);
        let mut tx = self.begin().await?;
        let consent = tx
            .get_consent(id, false)
            .await?
            .filter(|c| {
                caller.role() != Role::Receiver || c.recipients.contains(&caller.organization)
            })
            .ok_or_else(|| Error::not_found(&name))?;
        call.touch_subject(self.consent_pseudonym(&consent));
        if caller.role() == Role::Receiver {
            // The consent record (with the person's identity code) is delivered to the receiver.
            call.disclose(self.consent_disclosure(&caller.organization, &consent));
        }
        self.commit(call, tx, Outbox::default()).await?;
        Ok(self.as_of_now(consent))
    }

    pub async fn list_consents(&self, call: &Call, query: ConsentQuery) -> Result<Page<Consent>> {
        call.authorize()?;
        let subject_pseudonyms = self.lookup_pseudonyms(query.subject.as_ref(), call);
        let filter = ConsentFilter {
            subject_pseudonyms,
            state: query.state,
            now: Some(self.clock.now()),
            after: query.after,
            limit: query.page_size + 1,
        };
        let mut tx = self.begin().await?;
        let mut items = tx.list_consents(&filter).await?;
        let more = items.len() as i64 > query.page_size;
        items.truncate(query.page_size as usize);
        for consent in &items {
            call.touch_resource(consent.name());
            call.touch_subject(self.consent_pseudonym(consent));
        }
        self.commit(call, tx, Outbox::default()).await?;
        Ok(Page {
            items: items.into_iter().map(|c| self.as_of_now(c)).collect(),
            more,
        })
    }

    /// Withdrawal reaches every recipient: referrals not yet received are cancelled (their receiver
    /// is told), and every receiver that already took delivery of one gets CONSENT_WITHDRAWN. What
    /// was lawfully done before stays done.
    pub async fn withdraw_consent(
        &self,
        call: &Call,
        id: Uuid,
        etag: Option<String>,
        key: Option<RequestKey>,
    ) -> Result<Consent> {
        let caller = call.authorize()?;
        let name = format!("consents/{id}");
        call.touch_resource(&name);
        let mut tx = self.begin().await?;
        if let Some(done) = self
            .replay::<Consent>(tx.as_mut(), caller, key.as_ref())
            .await?
        {
            self.commit(call, tx, Outbox::default()).await?;
            return Ok(done);
        }
        let mut consent = tx
            .get_consent(id, true)
            .await?
            .ok_or_else(|| Error::not_found(&name))?;
        call.touch_subject(self.consent_pseudonym(&consent));
        if let Some(etag) = etag
            && etag != consent.etag()
        {
            return Err(Error::Aborted {
                reason: Reason::EtagMismatch,
                message: format!(
                    "{name} has changed since it was read (etag {})",
                    consent.etag()
                ),
            });
        }
        let now = self.clock.now();
        consent
            .withdraw(now)
            .map_err(|_| Error::FailedPrecondition {
                reason: Reason::ConsentAlreadyWithdrawn,
                message: format!("{name} is already withdrawn"),
                subject: Some(name.clone()),
            })?;
        tx.update_consent(&consent).await?;
        tx.insert_consent_event(&event(
            &consent,
            ConsentEventType::Withdrawn,
            caller,
            now,
            None,
        ))
        .await?;

        let mut outbox = Outbox::default();
        for referral_id in tx.referrals_by_consent(id).await? {
            let Some(mut referral) = tx.get_referral(referral_id, true).await? else {
                continue;
            };
            call.touch_resource(referral.name());
            if referral.state == State::Requested {
                let recipient = referral.recipient.clone();
                let change = referral
                    .apply(
                        Action::CancelForConsentWithdrawal,
                        &caller.organization,
                        now,
                        self.deadlines,
                    )
                    .map_err(Error::internal)?;
                tx.update_referral(&referral).await?;
                outbox.push(NewMessage::about_referral(
                    recipient,
                    MessageType::ReferralCancelled,
                    referral.id,
                    now,
                ));
                outbox.push(NewMessage::state_changed(referral.id, change, now));
            }
            for receiver in referral.receivers_that_received() {
                let mut message = NewMessage::about_referral(
                    receiver,
                    MessageType::ConsentWithdrawn,
                    referral.id,
                    now,
                );
                message.consent_id = Some(id);
                outbox.push(message);
            }
        }
        self.remember(tx.as_mut(), caller, key.as_ref(), &consent)
            .await?;
        self.commit(call, tx, outbox).await?;
        Ok(consent)
    }

    /// The consent log. Kela and auditors.
    pub async fn list_consent_events(
        &self,
        call: &Call,
        query: ConsentEventQuery,
    ) -> Result<Page<StoredConsentEvent>> {
        call.authorize()?;
        let subject_pseudonyms = self.lookup_pseudonyms(query.subject.as_ref(), call);
        if let Some(id) = query.consent_id {
            call.touch_resource(format!("consents/{id}"));
        }
        let filter = ConsentEventFilter {
            subject_pseudonyms,
            consent_id: query.consent_id,
            organization: query.organization.map(|o| o.to_string()),
            start_time: query.start_time,
            end_time: query.end_time,
            after_id: query.after_id,
            limit: query.page_size + 1,
        };
        let mut tx = self.begin().await?;
        let mut items = tx.list_consent_events(&filter).await?;
        let more = items.len() as i64 > query.page_size;
        items.truncate(query.page_size as usize);
        self.commit(call, tx, Outbox::default()).await?;
        Ok(Page { items, more })
    }

    /// A consent with its state as of now (an expired consent reads EXPIRED before anyone records it).
    fn as_of_now(&self, mut consent: Consent) -> Consent {
        consent.state = consent.state_at(self.clock.now());
        consent
    }
}

fn event(
    consent: &Consent,
    event_type: ConsentEventType,
    caller: &Caller,
    now: DateTime<Utc>,
    referral_id: Option<Uuid>,
) -> ConsentEvent {
    ConsentEvent {
        consent_id: consent.id,
        event_type,
        time: now,
        organization: Some(caller.organization.clone()),
        user_id: caller.user_id.clone(),
        referral_id,
        consent_state: consent.state_at(now),
    }
}

impl Exchange {
    /// One expiry round: every ACTIVE consent whose `expire_time` has passed on the clock becomes
    /// EXPIRED, with an EXPIRED consent event (at its `expire_time`, by no organisation) and one
    /// audit event for the round. Returns how many expired.
    pub async fn expire_consents(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut tx = self.begin_background().await?;
        let due = tx.consents_to_expire(now, EXPIRY_BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut record = AuditRecord {
            time: now,
            organization: String::new(),
            user_id: CONSENT_EXPIRY_ACTOR.to_owned(),
            method: CONSENT_EXPIRY_METHOD.to_owned(),
            resources: Vec::new(),
            subject_pseudonyms: Vec::new(),
            status_code: tonic::Code::Ok as i32,
            correlation_id: String::new(),
            disclosures: Vec::new(),
        };
        let mut expired = 0;
        for mut consent in due {
            let Some(expired_at) = consent.expire(now) else {
                continue;
            };
            tx.update_consent(&consent).await?;
            tx.insert_consent_event(&ConsentEvent {
                consent_id: consent.id,
                event_type: ConsentEventType::Expired,
                time: expired_at,
                organization: None,
                user_id: CONSENT_EXPIRY_ACTOR.to_owned(),
                referral_id: None,
                consent_state: consent.state,
            })
            .await?;
            record.resources.push(consent.name());
            let pseudonym = self.consent_pseudonym(&consent);
            if !record.subject_pseudonyms.contains(&pseudonym) {
                record.subject_pseudonyms.push(pseudonym);
            }
            expired += 1;
        }
        tx.insert_audit_event(&record).await?;
        tx.commit().await?;
        Ok(expired)
    }
}

/// Consent expiry as a deployment-wide task: EXPIRED events happen by the clock, without a call.
pub struct ConsentExpiry {
    pub exchange: Arc<Exchange>,
}

#[async_trait]
impl Job for ConsentExpiry {
    fn name(&self) -> &'static str {
        "consent-expiry"
    }

    async fn run_once(&self) -> Result<()> {
        while self.exchange.expire_consents().await? as i64 == EXPIRY_BATCH {}
        Ok(())
    }
}

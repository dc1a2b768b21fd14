//! Referral use cases: create and route, read, list, and every change of state.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{Exchange, Outbox, Page, RequestKey};
use crate::{
    access::{Call, Caller},
    domain::{
        OrganizationId, Role, calendar,
        consent::{ConsentEvent, ConsentEventType, Purpose},
        referral::{Action, Basis, DeadlineKind, NewReferral, Referral, State},
    },
    error::{Error, Reason, Result},
    mailbox::{MessageType, NewMessage},
    store::{ReferralFilter, Tx},
};

/// A referral as a use case returns it: what the caller may see of it (`Referral::view_for`), and
/// which of its deadlines had passed without the state they require on the day the use case ran
/// (Helsinki), by the same clock reading as the rest of the call.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferralView {
    pub referral: Referral,
    pub overdue: Vec<(DeadlineKind, NaiveDate)>,
    /// Whether the caller reads the person's identity code (`Referral::reads_content`): auditors
    /// get the coded skeleton only.
    pub identity_code_shown: bool,
}

impl ReferralView {
    /// `referral` (already as the caller may see it, `Referral::view_for`) on `today`, for a caller
    /// of `role`.
    pub fn on(referral: Referral, today: NaiveDate, role: Role) -> Self {
        let overdue = referral.overdue(today);
        Self {
            referral,
            overdue,
            identity_code_shown: Referral::reads_content(role),
        }
    }
}

/// A change a party asks for, with its concurrency and idempotency guards.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    pub referral_id: Uuid,
    pub action: Action,
    /// AIP-154: when set, must equal the referral's current etag.
    pub etag: Option<String>,
    pub key: Option<RequestKey>,
}

/// What `ListReferrals` asks for, in domain terms.
#[derive(Debug, Clone, Default)]
pub struct ReferralQuery {
    pub state: Option<State>,
    pub kind: Option<crate::domain::referral::Kind>,
    pub recipient: Option<OrganizationId>,
    pub subject: Option<crate::domain::PersonalIdentityCode>,
    pub create_time_start: Option<DateTime<Utc>>,
    pub create_time_end: Option<DateTime<Utc>>,
    /// Only referrals with a deadline passed without the state it requires.
    pub overdue: bool,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub page_size: i64,
}

impl Exchange {
    /// Routes a new referral to the organiser of the home municipality on today's code list and puts
    /// it in that organiser's mailbox. An ordinary referral needs a consent that covers it; an oral
    /// consent is used up by it. A statutory notification needs no consent and is never refused for
    /// lack of one.
    pub async fn create_referral(
        &self,
        call: &Call,
        new: NewReferral,
        key: Option<RequestKey>,
    ) -> Result<ReferralView> {
        let caller = call.authorize()?;
        let pseudonym = self.pseudonym(&new.subject.personal_identity_code);
        call.touch_subject(&pseudonym);
        let now = self.clock.now();
        let today = calendar::helsinki_date(now);
        let recipient = new.validate(self.registry, today).map_err(Error::invalid)?;

        let mut tx = self.begin().await?;
        if let Some(done) = self
            .replay::<Referral>(tx.as_mut(), caller, key.as_ref())
            .await?
        {
            call.touch_resource(done.name());
            self.commit(call, tx, Outbox::default()).await?;
            return Ok(ReferralView::on(done, today, caller.role()));
        }
        let subject_code = new.subject.personal_identity_code.clone();
        let mut referral = Referral::create(
            crate::domain::new_id(now),
            new,
            recipient.clone(),
            caller.organization.clone(),
            now,
            self.deadlines,
        );
        call.touch_resource(referral.name());
        if let Basis::Consent(consent_id) = referral.basis {
            let consent_name = format!("consents/{consent_id}");
            call.touch_resource(&consent_name);
            let mut consent = tx.get_consent(consent_id, true).await?.ok_or_else(|| {
                Error::FailedPrecondition {
                    reason: Reason::ConsentNotFound,
                    message: "the referral names a consent that does not exist".into(),
                    subject: Some(consent_name.clone()),
                }
            })?;
            consent
                .covers(
                    &subject_code,
                    &recipient,
                    Purpose::SocialWelfareReferral,
                    now,
                )
                .map_err(|refusal| Error::consent(refusal, consent_name))?;
            // A written consent is not rewritten for each referral: the event is its use.
            if consent.use_for(referral.id, now) {
                tx.update_consent(&consent).await?;
            }
            tx.insert_consent_event(&ConsentEvent {
                consent_id,
                event_type: ConsentEventType::Used,
                time: now,
                organization: Some(caller.organization.clone()),
                user_id: caller.user_id.clone(),
                referral_id: Some(referral.id),
                consent_state: consent.state_at(now),
            })
            .await?;
        }
        referral.subject_pseudonym = pseudonym.clone();
        tx.insert_referral(&referral, &pseudonym).await?;
        tx.insert_route(referral.id, &recipient, now).await?;
        let mut outbox = Outbox::default();
        outbox.push(NewMessage::about_referral(
            recipient,
            MessageType::ReferralRouted,
            referral.id,
            now,
        ));
        self.remember(tx.as_mut(), caller, key.as_ref(), &referral)
            .await?;
        self.commit(call, tx, outbox).await?;
        Ok(ReferralView::on(referral, today, caller.role()))
    }

    /// The referral as the caller may see it; NOT_FOUND when it may not know the referral exists.
    pub async fn get_referral(&self, call: &Call, id: Uuid) -> Result<ReferralView> {
        let caller = call.authorize()?;
        let today = self.today();
        call.touch_resource(format!("referrals/{id}"));
        let mut tx = self.begin().await?;
        let view = tx
            .get_referral(id, false)
            .await?
            .and_then(|r| r.view_for(&caller.organization))
            .ok_or_else(|| Error::not_found(format!("referrals/{id}")))?;
        call.touch_subject(self.referral_pseudonym(&view));
        if caller.role() != Role::Auditor {
            // What Kela or a receiver reads here is delivered to it: a disclosure with its basis.
            call.disclose(
                self.referral_disclosure(tx.as_mut(), &caller.organization, &view)
                    .await?,
            );
        }
        self.commit(call, tx, Outbox::default()).await?;
        Ok(ReferralView::on(view, today, caller.role()))
    }

    /// Kela and auditors see every referral; a receiver those ever routed to it.
    pub async fn list_referrals(
        &self,
        call: &Call,
        query: ReferralQuery,
    ) -> Result<Page<ReferralView>> {
        let caller = call.authorize()?;
        let today = self.today();
        let subject_pseudonyms = self.lookup_pseudonyms(query.subject.as_ref(), call);
        let filter = ReferralFilter {
            routed_to: (caller.role() == Role::Receiver).then(|| caller.organization.clone()),
            state: query.state,
            kind: query.kind,
            recipient: query.recipient,
            subject_pseudonyms,
            create_time_start: query.create_time_start,
            create_time_end: query.create_time_end,
            overdue_on: query.overdue.then_some(today),
            after: query.after,
            limit: query.page_size + 1,
        };
        let mut tx = self.begin().await?;
        let mut found = tx.list_referrals(&filter).await?;
        let more = found.len() as i64 > query.page_size;
        found.truncate(query.page_size as usize);
        let items: Vec<Referral> = found
            .iter()
            .filter_map(|r| r.view_for(&caller.organization))
            .collect();
        for referral in &items {
            call.touch_resource(referral.name());
            call.touch_subject(self.referral_pseudonym(referral));
            if caller.role() != Role::Auditor {
                call.disclose(
                    self.referral_disclosure(tx.as_mut(), &caller.organization, referral)
                        .await?,
                );
            }
        }
        self.commit(call, tx, Outbox::default()).await?;
        let items = items
            .into_iter()
            .map(|referral| ReferralView::on(referral, today, caller.role()))
            .collect();
        Ok(Page { items, more })
    }

    /// Accept, start, complete, reject, forward (the current recipient) or cancel (Kela).
    pub async fn change_referral(
        &self,
        call: &Call,
        request: ChangeRequest,
    ) -> Result<ReferralView> {
        let caller = call.authorize()?;
        let name = format!("referrals/{}", request.referral_id);
        call.touch_resource(&name);
        let now = self.clock.now();
        let today = calendar::helsinki_date(now);

        let mut tx = self.begin().await?;
        if let Some(done) = self
            .replay::<Referral>(tx.as_mut(), caller, request.key.as_ref())
            .await?
        {
            self.commit(call, tx, Outbox::default()).await?;
            return Ok(ReferralView::on(done, today, caller.role()));
        }
        let mut referral = tx
            .get_referral(request.referral_id, true)
            .await?
            .ok_or_else(|| Error::not_found(&name))?;
        call.touch_subject(self.referral_pseudonym(&referral));
        authorize_change(caller, &referral, &name)?;
        if let Some(etag) = &request.etag
            && etag != &referral.etag()
        {
            return Err(Error::Aborted {
                reason: Reason::EtagMismatch,
                message: format!(
                    "{name} has changed since it was read (etag {})",
                    referral.etag()
                ),
            });
        }
        let previous_recipient = referral.recipient.clone();
        if let Action::Forward { to } = &request.action {
            self.check_forward(tx.as_mut(), &referral, to).await?;
        }
        let change = referral
            .apply(request.action, &caller.organization, now, self.deadlines)
            .map_err(|e| Error::FailedPrecondition {
                reason: Reason::IllegalTransition,
                message: e.to_string(),
                subject: None,
            })?;
        tx.update_referral(&referral).await?;

        let mut outbox = Outbox::default();
        match referral.state {
            State::Requested => {
                // Forwarded: the new organiser receives it like a new referral. Passing it on is a
                // disclosure by the forwarding organiser, logged here with its basis; the new
                // organiser's pull logs the delivery itself.
                tx.insert_route(referral.id, &referral.recipient, now)
                    .await?;
                call.disclose(
                    self.referral_disclosure(tx.as_mut(), &referral.recipient, &referral)
                        .await?,
                );
                outbox.push(NewMessage::about_referral(
                    referral.recipient.clone(),
                    MessageType::ReferralRouted,
                    referral.id,
                    now,
                ));
            }
            State::Cancelled => outbox.push(NewMessage::about_referral(
                previous_recipient,
                MessageType::ReferralCancelled,
                referral.id,
                now,
            )),
            _ => {}
        }
        outbox.push(NewMessage::state_changed(referral.id, change, now));
        let view = referral
            .view_for(&caller.organization)
            .ok_or_else(|| Error::not_found(&name))?;
        self.remember(tx.as_mut(), caller, request.key.as_ref(), &view)
            .await?;
        self.commit(call, tx, outbox).await?;
        Ok(ReferralView::on(view, today, caller.role()))
    }

    /// A forward discloses the referral to another organiser: it must be a different one, exist on
    /// today's list, and, for a referral resting on consent, be covered by that consent.
    async fn check_forward(
        &self,
        tx: &mut dyn Tx,
        referral: &Referral,
        to: &OrganizationId,
    ) -> Result<()> {
        if to == &referral.recipient {
            return Err(Error::invalid_field(
                "home_municipality_code",
                "other_organiser",
                "the municipality belongs to the organiser that already has the referral",
            ));
        }
        if let Basis::Consent(consent_id) = referral.basis {
            let consent_name = format!("consents/{consent_id}");
            let consent = tx
                .get_consent(consent_id, false)
                .await?
                .ok_or_else(|| crate::store::corrupt("consent"))?;
            consent
                .covers_recipient(to)
                .map_err(|refusal| Error::consent(refusal, consent_name))?;
        }
        Ok(())
    }

    /// Resolves the organiser a forward goes to, as of today.
    pub fn forward_target(&self, municipality_code: &str) -> Result<OrganizationId> {
        let today = calendar::helsinki_date(self.clock.now());
        self.registry
            .lookup(municipality_code, today)
            .map(|m| m.organizer.clone())
            .map_err(|e| {
                Error::invalid(vec![crate::domain::referral::municipality_violation(
                    "home_municipality_code",
                    &e,
                )])
            })
    }
}

/// Kela may cancel any referral. Receivers act only on what is routed to them now; one that
/// forwarded a referral keeps reading it but may no longer change it. Others get NOT_FOUND.
fn authorize_change(caller: &Caller, referral: &Referral, name: &str) -> Result<()> {
    match caller.role() {
        Role::Referrer => Ok(()),
        Role::Receiver if caller.is(&referral.recipient) => Ok(()),
        Role::Receiver if referral.recipients_so_far().contains(&&caller.organization) => {
            Err(Error::FailedPrecondition {
                reason: Reason::ReferralForwardedAway,
                message: format!(
                    "{name} was forwarded to another organiser and can no longer be changed here"
                ),
                subject: None,
            })
        }
        _ => Err(Error::not_found(name)),
    }
}

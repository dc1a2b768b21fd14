//! Consent to contact social welfare (SHL §35) as Kela practises it: specific to a purpose and named
//! recipients, oral consent good for one referral only, written and electronic consent for a stated
//! period, withdrawable at any time without undoing what was lawfully done before.
//!
//! A consent is never edited in place as far as the law is concerned: each grant, use, withdrawal and
//! expiry is an event, so that one can prove later that consent existed at the moment of a disclosure
//! (GDPR Art. 7(1)). The row holds the current state for fast checks; the events hold the proof.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{OrganizationId, PersonalIdentityCode, Role, Violation, code_enum};

code_enum! {
    pub enum Purpose {
        /// Contact social welfare and disclose what the assessment of support needs requires.
        SocialWelfareReferral = "SOCIAL_WELFARE_REFERRAL",
    }
}

code_enum! {
    pub enum Form {
        Oral = "ORAL",
        Written = "WRITTEN",
        Electronic = "ELECTRONIC",
    }
}

code_enum! {
    pub enum GivenBy {
        Subject = "SUBJECT",
        LegalRepresentative = "LEGAL_REPRESENTATIVE",
    }
}

code_enum! {
    pub enum ConsentState {
        Active = "ACTIVE",
        Used = "USED",
        Withdrawn = "WITHDRAWN",
        Expired = "EXPIRED",
    }
}

code_enum! {
    pub enum ConsentEventType {
        Granted = "GRANTED",
        Used = "USED",
        Withdrawn = "WITHDRAWN",
        Expired = "EXPIRED",
    }
}

/// The longest validity a written or electronic consent may state. Consent is specific; an open-ended
/// one would not be.
pub const MAX_VALIDITY_DAYS: i64 = 5 * 366;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    pub subject: PersonalIdentityCode,
    pub purpose: Purpose,
    pub recipients: Vec<OrganizationId>,
    pub form: Form,
    pub given_by: GivenBy,
    pub valid_from: Option<DateTime<Utc>>,
    pub expire_time: Option<DateTime<Utc>>,
    pub evidence_reference: String,
}

impl NewConsent {
    /// Rules across fields; `is_receiver` says whether an organisation takes part as a receiver.
    pub fn validate(
        &self,
        now: DateTime<Utc>,
        is_receiver: impl Fn(&OrganizationId) -> bool,
    ) -> Vec<Violation> {
        let mut violations = Vec::new();
        if self.recipients.is_empty() {
            violations.push(Violation::new(
                "consent.recipients",
                "required",
                "a consent names the organisations it covers",
            ));
        }
        for (i, recipient) in self.recipients.iter().enumerate() {
            if recipient.role() != Role::Receiver {
                violations.push(Violation::new(
                    format!("consent.recipients[{i}]"),
                    "receiver",
                    "must name a receiving organisation, such as organizations/hva-15",
                ));
            } else if !is_receiver(recipient) {
                violations.push(super::organization::unknown_receiver_violation(format!(
                    "consent.recipients[{i}]"
                )));
            } else if self.recipients[..i].contains(recipient) {
                violations.push(Violation::new(
                    format!("consent.recipients[{i}]"),
                    "duplicate",
                    "each recipient may appear once",
                ));
            }
        }
        let valid_from = self.valid_from.unwrap_or(now);
        match (self.form, self.expire_time) {
            (Form::Written | Form::Electronic, None) => violations.push(Violation::new(
                "consent.expire_time",
                "required_for_form",
                "a written or electronic consent states how long it is valid",
            )),
            (_, Some(expire)) if expire <= valid_from => violations.push(Violation::new(
                "consent.expire_time",
                "after_valid_from",
                "must be later than valid_from",
            )),
            (_, Some(expire)) if (expire - valid_from).num_days() > MAX_VALIDITY_DAYS => violations
                .push(Violation::new(
                    "consent.expire_time",
                    "max_validity",
                    format!("a consent may be valid for at most {MAX_VALIDITY_DAYS} days"),
                )),
            (_, Some(expire)) if expire <= now => violations.push(Violation::new(
                "consent.expire_time",
                "in_future",
                "a consent that has already expired cannot be recorded",
            )),
            _ => {}
        }
        super::referral::check_length(
            &mut violations,
            "consent.evidence_reference",
            &self.evidence_reference,
            super::referral::MAX_SHORT_TEXT_CHARS,
        );
        violations
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub id: Uuid,
    /// `None` once the content is erased (see [`Consent::erase_content`]).
    pub subject: Option<PersonalIdentityCode>,
    pub purpose: Purpose,
    pub recipients: Vec<OrganizationId>,
    pub form: Form,
    pub given_by: GivenBy,
    pub valid_from: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    /// As recorded: ACTIVE, USED or WITHDRAWN. Expiry follows from the clock; see [`Consent::state_at`].
    pub state: ConsentState,
    pub evidence_reference: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub withdraw_time: Option<DateTime<Utc>>,
    pub used_by: Option<Uuid>,
    pub version: i64,
    /// When the personal content (identity code, evidence reference) was erased, if it was.
    #[serde(default)]
    pub content_erase_time: Option<DateTime<Utc>>,
    /// The subject's pseudonym as stored with the consent: who it was about once the identity code
    /// is erased. Empty on a consent not yet stored.
    #[serde(default)]
    pub subject_pseudonym: String,
}

/// Why a consent does not cover a referral. Each has a stable reason code for the error details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    #[error("the consent was withdrawn")]
    Withdrawn,
    #[error("the oral consent was already used for another referral; oral consent covers one")]
    AlreadyUsed,
    #[error("the consent has expired")]
    Expired,
    #[error("the consent is not yet valid")]
    NotYetValid,
    #[error("the consent was given by or for another person")]
    SubjectMismatch,
    #[error("the consent does not cover this purpose")]
    PurposeMismatch,
    #[error("the consent does not name the organisation the referral goes to")]
    RecipientNotCovered,
}

impl ConsentRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            ConsentRefusal::Withdrawn => "CONSENT_WITHDRAWN",
            ConsentRefusal::AlreadyUsed => "CONSENT_ALREADY_USED",
            ConsentRefusal::Expired => "CONSENT_EXPIRED",
            ConsentRefusal::NotYetValid => "CONSENT_NOT_YET_VALID",
            ConsentRefusal::SubjectMismatch => "CONSENT_SUBJECT_MISMATCH",
            ConsentRefusal::PurposeMismatch => "CONSENT_PURPOSE_MISMATCH",
            ConsentRefusal::RecipientNotCovered => "CONSENT_RECIPIENT_NOT_COVERED",
        }
    }
}

impl Consent {
    pub fn record(id: Uuid, new: NewConsent, now: DateTime<Utc>) -> Consent {
        Consent {
            id,
            subject: Some(new.subject),
            purpose: new.purpose,
            recipients: new.recipients,
            form: new.form,
            given_by: new.given_by,
            valid_from: new.valid_from.unwrap_or(now),
            expire_time: new.expire_time,
            state: ConsentState::Active,
            evidence_reference: new.evidence_reference,
            create_time: now,
            update_time: now,
            withdraw_time: None,
            used_by: None,
            version: 1,
            content_erase_time: None,
            subject_pseudonym: String::new(),
        }
    }

    /// Since when the consent has not been ACTIVE at `now`, or `None` while it is: its content is
    /// kept for a period after that (`--content-retention-days`), then erased.
    pub fn inactive_since(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.state_at(now), self.state) {
            (ConsentState::Active, _) => None,
            // Expired by the clock, not yet recorded.
            (_, ConsentState::Active) => self.expire_time,
            _ => Some(self.withdraw_time.unwrap_or(self.update_time)),
        }
    }

    /// Erases the personal content, keeping the coded skeleton (purpose, recipients, form, states
    /// and times) that the consent log and the audit trail need. `false`: nothing left to erase.
    pub fn erase_content(&mut self, now: DateTime<Utc>) -> bool {
        if self.content_erase_time.is_some() {
            return false;
        }
        self.subject = None;
        self.evidence_reference = String::new();
        self.content_erase_time = Some(now);
        self.version += 1;
        true
    }

    pub fn name(&self) -> String {
        format!("consents/{}", self.id)
    }

    pub fn etag(&self) -> String {
        format!("v{}", self.version)
    }

    /// The state at `now`: an unwithdrawn, unused consent whose `expire_time` has passed is EXPIRED
    /// whether or not anyone has recorded that yet.
    pub fn state_at(&self, now: DateTime<Utc>) -> ConsentState {
        match (self.state, self.expire_time) {
            (ConsentState::Active, Some(expire)) if expire <= now => ConsentState::Expired,
            (state, _) => state,
        }
    }

    /// Whether this consent lets Kela refer `subject` to `recipient` for `purpose` at `now`.
    pub fn covers(
        &self,
        subject: &PersonalIdentityCode,
        recipient: &OrganizationId,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<(), ConsentRefusal> {
        match self.state_at(now) {
            ConsentState::Withdrawn => return Err(ConsentRefusal::Withdrawn),
            ConsentState::Used => return Err(ConsentRefusal::AlreadyUsed),
            ConsentState::Expired => return Err(ConsentRefusal::Expired),
            ConsentState::Active => {}
        }
        if now < self.valid_from {
            return Err(ConsentRefusal::NotYetValid);
        }
        // The century sign is part of the identity: compare the codes exactly.
        if self.subject.as_ref() != Some(subject) {
            return Err(ConsentRefusal::SubjectMismatch);
        }
        if self.purpose != purpose {
            return Err(ConsentRefusal::PurposeMismatch);
        }
        self.covers_recipient(recipient)
    }

    /// Whether a disclosure to `recipient` stays within the consent, e.g. when a referral resting on it
    /// is forwarded. Unlike [`Consent::covers`] this ignores a USED state: the use was this referral.
    pub fn covers_recipient(&self, recipient: &OrganizationId) -> Result<(), ConsentRefusal> {
        if self.recipients.contains(recipient) {
            Ok(())
        } else {
            Err(ConsentRefusal::RecipientNotCovered)
        }
    }

    /// Records that `referral` relied on the consent. An oral consent covers one transaction only, so
    /// it becomes USED: true, the consent changed and is stored again. Written and electronic
    /// consent stays ACTIVE for its period, unchanged (false): its use is recorded as its event
    /// alone (`ConsentEventType::Used`), not as a new version of the consent on every referral.
    #[must_use]
    pub fn use_for(&mut self, referral: Uuid, now: DateTime<Utc>) -> bool {
        if self.form != Form::Oral {
            return false;
        }
        self.state = ConsentState::Used;
        self.used_by = Some(referral);
        self.update_time = now;
        self.version += 1;
        true
    }

    /// Withdrawal is as easy as giving. A consent already withdrawn cannot be withdrawn again.
    pub fn withdraw(&mut self, now: DateTime<Utc>) -> Result<(), ConsentState> {
        if self.state == ConsentState::Withdrawn {
            return Err(ConsentState::Withdrawn);
        }
        self.state = ConsentState::Withdrawn;
        self.withdraw_time = Some(now);
        self.update_time = now;
        self.version += 1;
        Ok(())
    }

    /// Records that the validity period ended: only an ACTIVE consent whose `expire_time` has
    /// passed at `now` expires. Returns the moment it expired.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let expire_time = self.expire_time?;
        if self.state != ConsentState::Active || expire_time > now {
            return None;
        }
        self.state = ConsentState::Expired;
        self.update_time = now;
        self.version += 1;
        Some(expire_time)
    }
}

/// One entry of the consent log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEvent {
    pub consent_id: Uuid,
    pub event_type: ConsentEventType,
    /// For EXPIRED: the consent's `expire_time`.
    pub time: DateTime<Utc>,
    /// The organisation that acted; `None` for what the exchange does by the clock (expiry).
    pub organization: Option<OrganizationId>,
    pub user_id: String,
    pub referral_id: Option<Uuid>,
    pub consent_state: ConsentState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0)
            .single()
            .expect("valid")
    }

    fn pic(s: &str) -> PersonalIdentityCode {
        PersonalIdentityCode::parse(s).expect("valid code")
    }

    fn hva15() -> OrganizationId {
        OrganizationId::parse("hva-15").expect("valid")
    }

    fn new_consent(form: Form) -> NewConsent {
        NewConsent {
            subject: pic("131052-308T"),
            purpose: Purpose::SocialWelfareReferral,
            recipients: vec![hva15()],
            form,
            given_by: GivenBy::Subject,
            valid_from: None,
            expire_time: match form {
                Form::Oral => None,
                _ => Some(now() + Duration::days(365)),
            },
            evidence_reference: String::new(),
        }
    }

    fn rules(v: Vec<Violation>) -> Vec<(String, &'static str)> {
        v.into_iter().map(|v| (v.field, v.rule)).collect()
    }

    #[test]
    fn written_consent_needs_a_validity_period() {
        let mut c = new_consent(Form::Written);
        assert!(c.validate(now(), |_| true).is_empty());
        c.expire_time = None;
        assert_eq!(
            rules(c.validate(now(), |_| true)),
            vec![("consent.expire_time".into(), "required_for_form")]
        );
        c.expire_time = Some(now() - Duration::days(1));
        assert_eq!(
            rules(c.validate(now(), |_| true)),
            vec![("consent.expire_time".into(), "after_valid_from")]
        );
        c.expire_time = Some(now() + Duration::days(MAX_VALIDITY_DAYS + 1));
        assert_eq!(
            rules(c.validate(now(), |_| true)),
            vec![("consent.expire_time".into(), "max_validity")]
        );
    }

    #[test]
    fn recipients_must_be_known_receivers_once_each() {
        let mut c = new_consent(Form::Oral);
        c.recipients = vec![hva15(), OrganizationId::kela(), hva15()];
        assert_eq!(
            rules(c.validate(now(), |_| true)),
            vec![
                ("consent.recipients[1]".into(), "receiver"),
                ("consent.recipients[2]".into(), "duplicate")
            ]
        );
        c.recipients = vec![];
        assert_eq!(
            rules(c.validate(now(), |_| true)),
            vec![("consent.recipients".into(), "required")]
        );
        c.recipients = vec![hva15()];
        assert_eq!(
            rules(c.validate(now(), |_| false)),
            vec![("consent.recipients[0]".into(), "unknown_organization")]
        );
    }

    #[test]
    fn content_is_kept_while_active_and_erased_once_leaving_the_skeleton() {
        let mut written = Consent::record(Uuid::nil(), new_consent(Form::Written), now());
        written.evidence_reference = "archive 12".into();
        assert_eq!(written.inactive_since(now()), None);
        let expiry = now() + Duration::days(365);
        assert_eq!(
            written.inactive_since(expiry + Duration::days(1)),
            Some(expiry),
            "expired by the clock, not yet recorded"
        );
        let mut oral = Consent::record(Uuid::nil(), new_consent(Form::Oral), now());
        assert!(oral.use_for(Uuid::from_u128(1), now() + Duration::hours(1)));
        assert_eq!(oral.inactive_since(now()), Some(now() + Duration::hours(1)));
        written
            .withdraw(now() + Duration::days(2))
            .expect("withdraw");
        assert_eq!(
            written.inactive_since(now()),
            Some(now() + Duration::days(2))
        );

        let version = written.version;
        assert!(written.erase_content(now() + Duration::days(100)));
        assert_eq!(
            (
                written.subject.as_ref(),
                written.evidence_reference.as_str()
            ),
            (None, "")
        );
        assert_eq!(
            written.content_erase_time,
            Some(now() + Duration::days(100))
        );
        assert_eq!(written.version, version + 1, "the etag changes");
        assert_eq!(
            (written.state, written.recipients.clone(), written.form),
            (ConsentState::Withdrawn, vec![hva15()], Form::Written),
            "the skeleton stays"
        );
        assert!(!written.erase_content(now() + Duration::days(101)), "once");
        assert_eq!(
            written.covers(
                &pic("131052-308T"),
                &hva15(),
                Purpose::SocialWelfareReferral,
                now()
            ),
            Err(ConsentRefusal::Withdrawn)
        );
    }

    #[test]
    fn oral_consent_covers_one_referral() {
        let mut c = Consent::record(Uuid::nil(), new_consent(Form::Oral), now());
        let subject = pic("131052-308T");
        assert_eq!(
            c.covers(&subject, &hva15(), Purpose::SocialWelfareReferral, now()),
            Ok(())
        );
        let version = c.version;
        assert!(
            c.use_for(Uuid::from_u128(1), now()),
            "changed: stored again"
        );
        assert_eq!((c.state, c.version), (ConsentState::Used, version + 1));
        assert_eq!(
            c.covers(&subject, &hva15(), Purpose::SocialWelfareReferral, now()),
            Err(ConsentRefusal::AlreadyUsed)
        );
        assert_eq!(c.covers_recipient(&hva15()), Ok(()));
    }

    #[test]
    fn written_consent_covers_many_referrals_until_it_expires() {
        let mut c = Consent::record(Uuid::nil(), new_consent(Form::Written), now());
        let subject = pic("131052-308T");
        let before = c.clone();
        assert!(
            !c.use_for(Uuid::from_u128(1), now()),
            "unchanged: nothing to store"
        );
        assert_eq!(c, before, "same version, same update time");
        assert_eq!(
            c.covers(&subject, &hva15(), Purpose::SocialWelfareReferral, now()),
            Ok(())
        );
        let later = now() + Duration::days(366);
        assert_eq!(c.state_at(later), ConsentState::Expired);
        assert_eq!(
            c.covers(&subject, &hva15(), Purpose::SocialWelfareReferral, later),
            Err(ConsentRefusal::Expired)
        );
    }

    #[test]
    fn consent_is_specific_to_person_recipient_and_time() {
        let mut new = new_consent(Form::Written);
        new.valid_from = Some(now() + Duration::days(1));
        let c = Consent::record(Uuid::nil(), new, now());
        let subject = pic("131052-308T");
        assert_eq!(
            c.covers(&subject, &hva15(), Purpose::SocialWelfareReferral, now()),
            Err(ConsentRefusal::NotYetValid)
        );
        let tomorrow = now() + Duration::days(2);
        // Same digits, other century sign: another person.
        let other = pic("131052A308T");
        assert_ne!(other, subject);
        assert_eq!(
            c.covers(&other, &hva15(), Purpose::SocialWelfareReferral, tomorrow),
            Err(ConsentRefusal::SubjectMismatch)
        );
        let helsinki = OrganizationId::helsinki();
        assert_eq!(
            c.covers(
                &subject,
                &helsinki,
                Purpose::SocialWelfareReferral,
                tomorrow
            ),
            Err(ConsentRefusal::RecipientNotCovered)
        );
    }

    #[test]
    fn only_an_active_consent_past_its_end_expires() {
        let mut c = Consent::record(Uuid::nil(), new_consent(Form::Written), now());
        let end = c.expire_time.expect("written consent has an end");
        assert_eq!(c.expire(end - Duration::seconds(1)), None);
        assert_eq!(c.expire(end), Some(end));
        assert_eq!((c.state, c.version), (ConsentState::Expired, 2));
        assert_eq!(c.expire(end), None, "expires once");
        let mut oral = Consent::record(Uuid::nil(), new_consent(Form::Oral), now());
        assert_eq!(
            oral.expire(now() + Duration::days(9999)),
            None,
            "no end, no expiry"
        );
        let mut used = Consent::record(Uuid::nil(), new_consent(Form::Written), now());
        used.state = ConsentState::Used;
        assert_eq!(used.expire(end), None);
    }

    #[test]
    fn withdrawn_consent_covers_nothing_and_cannot_be_withdrawn_twice() {
        let mut c = Consent::record(Uuid::nil(), new_consent(Form::Electronic), now());
        c.withdraw(now()).expect("first withdrawal");
        assert_eq!(c.withdraw(now()), Err(ConsentState::Withdrawn));
        assert_eq!(
            c.covers(
                &pic("131052-308T"),
                &hva15(),
                Purpose::SocialWelfareReferral,
                now()
            ),
            Err(ConsentRefusal::Withdrawn)
        );
    }
}

//! A referral (yhteydenotto / ilmoitus sosiaalihuollon tarpeesta) and its life after Kela sends it.
//!
//! The state machine follows FHIR Task status, which is what the field's systems already speak:
//!
//! ```text
//!  REQUESTED --receive--> RECEIVED --accept--> ACCEPTED --start--> IN_PROGRESS --complete--> COMPLETED
//!      ^                     |  \                 |  \                   |
//!      +------forward--------+   +--reject--------+   +--complete(no assessment needed)
//!                             \                    \
//!                              +--> REJECTED        +--> REJECTED
//!  any non-final state --cancel (Kela, or consent withdrawn before receipt)--> CANCELLED
//! ```
//!
//! Only coded facts travel back to Kela: what the organiser learns is confidential social welfare
//! data, so the history carries codes and organisation names, never the receiver's free text.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    OrganizationId, PersonalIdentityCode, Violation, calendar, code_enum,
    municipality::{MunicipalityError, MunicipalityRegistry},
};

code_enum! {
    /// The kinds of message Kela sends today (its eTotu notices) plus the consent-free duties.
    pub enum Kind {
        NeedForSocialWork = "NEED_FOR_SOCIAL_WORK",
        SupplementaryOrPreventiveAssistance = "SUPPLEMENTARY_OR_PREVENTIVE_ASSISTANCE",
        BasicAmountReduced = "BASIC_AMOUNT_REDUCED",
        UnemployedUnder25FourMonths = "UNEMPLOYED_UNDER_25_4_MONTHS",
        Unemployed25PlusTwelveMonths = "UNEMPLOYED_25_PLUS_12_MONTHS",
        ImmigrantTwoMonths = "IMMIGRANT_2_MONTHS",
        PersonalDiscussionRequest = "PERSONAL_DISCUSSION_REQUEST",
        NeedNotificationWithoutConsent = "NEED_NOTIFICATION_WITHOUT_CONSENT",
        ChildWelfareNotification = "CHILD_WELFARE_NOTIFICATION",
    }
}

code_enum! {
    /// Why a notification may go without consent (SHL §35 second paragraph, LSL §25).
    pub enum StatutoryGround {
        UnableToCareForSelf = "UNABLE_TO_CARE_FOR_SELF",
        ChildBestInterest = "CHILD_BEST_INTEREST",
        ChildWelfareActDuty = "CHILD_WELFARE_ACT_DUTY",
    }
}

code_enum! {
    pub enum Reason {
        LifeManagement = "LIFE_MANAGEMENT",
        Livelihood = "LIVELIHOOD",
        Housing = "HOUSING",
        Health = "HEALTH",
        SubstanceUse = "SUBSTANCE_USE",
        FamilyAndChildren = "FAMILY_AND_CHILDREN",
        Employment = "EMPLOYMENT",
        Debt = "DEBT",
        Other = "OTHER",
    }
}

code_enum! {
    /// Groups whose assessment must start by the 7th working day (SHL §36).
    pub enum DeadlineGroup {
        NoStatutoryGroup = "NO_STATUTORY_GROUP",
        ChildNeedingSpecialSupport = "CHILD_NEEDING_SPECIAL_SUPPORT",
        HighestCareAllowance = "HIGHEST_CARE_ALLOWANCE",
        Over75 = "OVER_75",
    }
}

code_enum! {
    pub enum State {
        Requested = "REQUESTED",
        Received = "RECEIVED",
        Accepted = "ACCEPTED",
        InProgress = "IN_PROGRESS",
        Completed = "COMPLETED",
        Rejected = "REJECTED",
        Cancelled = "CANCELLED",
    }
}

code_enum! {
    /// The deadlines a referral can miss. Each is told to Kela (and the receiver) once when it passes.
    pub enum DeadlineKind {
        /// The recipient's system should have taken delivery (acknowledged the routed message).
        Receipt = "RECEIPT",
        /// The assessment should have started (a transferred application: been decided).
        AssessmentStart = "ASSESSMENT_START",
        /// A child's assessment should have been completed.
        Completion = "COMPLETION",
    }
}

code_enum! {
    pub enum Outcome {
        ServicesStarted = "SERVICES_STARTED",
        NoNeedForServices = "NO_NEED_FOR_SERVICES",
        ClientDeclined = "CLIENT_DECLINED",
        ClientUnreachable = "CLIENT_UNREACHABLE",
        ApplicationDecided = "APPLICATION_DECIDED",
    }
}

code_enum! {
    pub enum RejectionReason {
        Duplicate = "DUPLICATE",
        InsufficientInformation = "INSUFFICIENT_INFORMATION",
        NotSocialWelfareMatter = "NOT_SOCIAL_WELFARE_MATTER",
    }
}

/// Codes of `state_reason` that are not an [`Outcome`] or [`RejectionReason`].
pub mod state_reason {
    pub const ROUTED: &str = "ROUTED";
    pub const FORWARDED: &str = "FORWARDED";
    pub const RECEIVED_BY_RECIPIENT: &str = "RECEIVED_BY_RECIPIENT";
    pub const ACCEPTED: &str = "ACCEPTED";
    pub const ASSESSMENT_STARTED: &str = "ASSESSMENT_STARTED";
    pub const CANCELLED_BY_REFERRER: &str = "CANCELLED_BY_REFERRER";
    pub const CONSENT_WITHDRAWN: &str = "CONSENT_WITHDRAWN";
}

impl State {
    /// Nothing happens to a referral after these.
    pub fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Rejected | State::Cancelled)
    }
}

impl Kind {
    /// The duties that must never be blocked for lack of consent; they name a ground instead.
    pub fn is_statutory_notification(self) -> bool {
        matches!(
            self,
            Kind::NeedNotificationWithoutConsent | Kind::ChildWelfareNotification
        )
    }

    /// Grounds that fit a statutory kind: SHL §35 notifications rest on the person's inability to
    /// look after themselves or a child's interest; a child welfare notification on the LSL §25 duty.
    pub fn allowed_grounds(self) -> &'static [StatutoryGround] {
        match self {
            Kind::NeedNotificationWithoutConsent => &[
                StatutoryGround::UnableToCareForSelf,
                StatutoryGround::ChildBestInterest,
            ],
            Kind::ChildWelfareNotification => &[
                StatutoryGround::ChildWelfareActDuty,
                StatutoryGround::ChildBestInterest,
            ],
            _ => &[],
        }
    }
}

/// The legal basis of a referral: exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Basis {
    Consent(Uuid),
    Statutory(StatutoryGround),
}

impl Basis {
    /// How the basis is named in the disclosure log: `consents/{uuid}` or the ground's code.
    pub fn name(&self) -> String {
        match self {
            Basis::Consent(id) => format!("consents/{id}"),
            Basis::Statutory(ground) => ground.as_str().to_owned(),
        }
    }

    /// The consent the referral rests on, if it rests on one.
    pub fn consent_id(&self) -> Option<Uuid> {
        match self {
            Basis::Consent(id) => Some(*id),
            Basis::Statutory(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub personal_identity_code: PersonalIdentityCode,
    pub name: Option<String>,
    pub contact_phone: Option<String>,
    pub preferred_language: Option<String>,
}

/// One change of state: coded, so it may flow back to Kela.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub state: State,
    pub time: DateTime<Utc>,
    pub organization: OrganizationId,
    pub reason: String,
    /// Where a routing or forward sent the referral.
    pub recipient: Option<OrganizationId>,
}

/// What Kela asks for; everything the server decides (recipient, state, times) is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReferral {
    pub kind: Kind,
    pub subject: Subject,
    pub home_municipality_code: String,
    pub current_municipality_code: Option<String>,
    pub reasons: Vec<Reason>,
    pub reason_text: String,
    pub urgent: bool,
    pub deadline_group: DeadlineGroup,
    pub basis: Basis,
    pub personal_discussion_requested: bool,
    pub application_reference: Option<String>,
}

pub const MAX_REASON_TEXT_CHARS: usize = 4000;
pub const MAX_SHORT_TEXT_CHARS: usize = 200;

impl NewReferral {
    /// Rules that span fields, checked once each field is well-formed. Returns the organiser
    /// responsible for the home municipality on `date` when every rule holds.
    pub fn validate(
        &self,
        registry: &MunicipalityRegistry,
        date: NaiveDate,
    ) -> Result<OrganizationId, Vec<Violation>> {
        let mut violations = Vec::new();
        let recipient = match registry.lookup(&self.home_municipality_code, date) {
            Ok(m) => Some(m.organizer.clone()),
            Err(e) => {
                violations.push(municipality_violation(
                    "referral.home_municipality_code",
                    &e,
                ));
                None
            }
        };
        if let Some(code) = &self.current_municipality_code
            && let Err(e) = registry.lookup(code, date)
        {
            violations.push(municipality_violation(
                "referral.current_municipality_code",
                &e,
            ));
        }
        match (self.kind.is_statutory_notification(), self.basis) {
            (true, Basis::Consent(_)) => violations.push(Violation::new(
                "referral.statutory_ground",
                "required_for_kind",
                "a statutory notification rests on a statutory ground, not on consent",
            )),
            (true, Basis::Statutory(ground)) if !self.kind.allowed_grounds().contains(&ground) => {
                violations.push(Violation::new(
                    "referral.statutory_ground",
                    "not_allowed_for_kind",
                    format!("{ground} is not a ground for a {} referral", self.kind),
                ))
            }
            (false, Basis::Statutory(_)) => violations.push(Violation::new(
                "referral.consent",
                "required_for_kind",
                "this kind of referral needs the client's consent; without consent use \
                 NEED_NOTIFICATION_WITHOUT_CONSENT or CHILD_WELFARE_NOTIFICATION",
            )),
            _ => {}
        }
        if matches!(self.basis, Basis::Statutory(_)) && self.reason_text.trim().is_empty() {
            violations.push(Violation::new(
                "referral.reason_text",
                "required_with_statutory_ground",
                "a notification without consent must state its reasons",
            ));
        }
        if self.kind == Kind::SupplementaryOrPreventiveAssistance
            && self
                .application_reference
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        {
            violations.push(Violation::new(
                "referral.application_reference",
                "required_for_kind",
                "an application transfer must name Kela's application",
            ));
        }
        if self.reasons.is_empty() {
            violations.push(Violation::new(
                "referral.reasons",
                "required",
                "name at least one reason",
            ));
        }
        let mut seen = Vec::new();
        for (i, reason) in self.reasons.iter().enumerate() {
            if seen.contains(reason) {
                violations.push(Violation::new(
                    format!("referral.reasons[{i}]"),
                    "duplicate",
                    "each reason may appear once",
                ));
            }
            seen.push(*reason);
        }
        check_length(
            &mut violations,
            "referral.reason_text",
            &self.reason_text,
            MAX_REASON_TEXT_CHARS,
        );
        for (field, value) in [
            ("referral.subject.name", &self.subject.name),
            (
                "referral.application_reference",
                &self.application_reference,
            ),
        ] {
            if let Some(value) = value {
                check_length(&mut violations, field, value, MAX_SHORT_TEXT_CHARS);
            }
        }
        if let Some(phone) = &self.subject.contact_phone
            && !is_phone_number(phone)
        {
            violations.push(Violation::new(
                "referral.subject.contact_phone",
                "phone_number",
                "digits, spaces and an optional leading +, 5 to 20 digits",
            ));
        }
        if let Some(lang) = &self.subject.preferred_language
            && !is_language_tag(lang)
        {
            violations.push(Violation::new(
                "referral.subject.preferred_language",
                "language_tag",
                "a BCP 47 language tag such as fi, sv or en",
            ));
        }
        match recipient {
            Some(recipient) if violations.is_empty() => Ok(recipient),
            _ => Err(violations),
        }
    }
}

pub fn municipality_violation(field: &str, error: &MunicipalityError) -> Violation {
    let rule = match error {
        MunicipalityError::Malformed => "three_digit_code",
        MunicipalityError::NoCodeListForDate => "no_code_list_for_date",
        MunicipalityError::Unknown { .. } => "unknown_on_date",
    };
    Violation::new(field, rule, error.to_string())
}

pub fn check_length(violations: &mut Vec<Violation>, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        violations.push(Violation::new(
            field,
            "max_length",
            format!("at most {max} characters"),
        ));
    }
}

fn is_phone_number(s: &str) -> bool {
    let body = s.strip_prefix('+').unwrap_or(s);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    body.chars().all(|c| c.is_ascii_digit() || c == ' ') && (5..=20).contains(&digits)
}

fn is_language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    primary_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub id: Uuid,
    pub kind: Kind,
    /// `None` once the personal content is erased (see [`Referral::erase_content`]).
    pub subject: Option<Subject>,
    pub home_municipality_code: String,
    pub current_municipality_code: Option<String>,
    pub recipient: OrganizationId,
    pub reasons: Vec<Reason>,
    pub reason_text: String,
    pub urgent: bool,
    pub deadline_group: DeadlineGroup,
    pub basis: Basis,
    pub personal_discussion_requested: bool,
    pub application_reference: Option<String>,
    pub state: State,
    pub state_reason: String,
    pub outcome: Option<Outcome>,
    pub rejection_reason: Option<RejectionReason>,
    pub rejection_text: Option<String>,
    pub cancellation_text: Option<String>,
    pub history: Vec<StateChange>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub receive_time: Option<DateTime<Utc>>,
    pub assessment_due_date: Option<NaiveDate>,
    /// A child's assessment must be completed within three months of receipt.
    pub completion_due_date: Option<NaiveDate>,
    /// By when the recipient's system should take delivery; see [`receive_due_date`].
    pub receive_due_date: Option<NaiveDate>,
    /// Increments with every change; the etag is derived from it.
    pub version: i64,
    /// When the personal content (identity code, name, phone, free texts) was erased, if it was.
    #[serde(default)]
    pub content_erase_time: Option<DateTime<Utc>>,
    /// The subject's pseudonym as stored with the referral: who it was about once the identity code
    /// is erased. Empty on a referral not yet stored.
    #[serde(default)]
    pub subject_pseudonym: String,
}

/// What someone does to a referral after it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The recipient's system acknowledged the routed message.
    Receive,
    Accept,
    StartAssessment,
    Complete(Outcome),
    Reject {
        reason: RejectionReason,
        text: Option<String>,
    },
    Forward {
        to: OrganizationId,
    },
    Cancel {
        text: Option<String>,
    },
    /// The consent the referral rests on was withdrawn before the recipient received it.
    CancelForConsentWithdrawal,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Receive => "receive",
            Action::Accept => "accept",
            Action::StartAssessment => "start the assessment of",
            Action::Complete(_) => "complete",
            Action::Reject { .. } => "reject",
            Action::Forward { .. } => "forward",
            Action::Cancel { .. } | Action::CancelForConsentWithdrawal => "cancel",
        }
    }

    /// The state an action leads to from `from`, or `None` when the state machine does not allow it.
    pub fn target(&self, from: State) -> Option<State> {
        use State::*;
        match (self, from) {
            (Action::Receive, Requested) => Some(Received),
            (Action::Accept, Received) => Some(Accepted),
            (Action::StartAssessment, Accepted) => Some(InProgress),
            // The organiser may judge an assessment unnecessary and close the matter at once.
            (Action::Complete(_), Accepted | InProgress) => Some(Completed),
            // Once an assessment has started the matter ends with an outcome, not a rejection.
            (Action::Reject { .. }, Received | Accepted) => Some(Rejected),
            (Action::Forward { .. }, Received | Accepted) => Some(Requested),
            (Action::Cancel { .. }, s) if !s.is_final() => Some(Cancelled),
            (Action::CancelForConsentWithdrawal, Requested) => Some(Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a referral that is {from}")]
pub struct IllegalTransition {
    pub action: &'static str,
    pub from: State,
}

impl Referral {
    /// A new referral, routed to `recipient`.
    pub fn create(
        id: Uuid,
        new: NewReferral,
        recipient: OrganizationId,
        creator: OrganizationId,
        now: DateTime<Utc>,
        policy: DeadlinePolicy,
    ) -> Referral {
        let receive_due = receive_due_date(
            new.urgent,
            calendar::helsinki_date(now),
            policy.receipt_working_days,
        );
        let deadline_group = applied_deadline_group(
            new.deadline_group,
            &new.subject.personal_identity_code,
            calendar::helsinki_date(now),
        );
        let routed = StateChange {
            state: State::Requested,
            time: now,
            organization: creator,
            reason: state_reason::ROUTED.to_owned(),
            recipient: Some(recipient.clone()),
        };
        Referral {
            id,
            kind: new.kind,
            subject: Some(new.subject),
            home_municipality_code: new.home_municipality_code,
            current_municipality_code: new.current_municipality_code,
            recipient,
            reasons: new.reasons,
            reason_text: new.reason_text,
            urgent: new.urgent,
            deadline_group,
            basis: new.basis,
            personal_discussion_requested: new.personal_discussion_requested
                || new.kind == Kind::PersonalDiscussionRequest,
            application_reference: new.application_reference,
            state: State::Requested,
            state_reason: state_reason::ROUTED.to_owned(),
            outcome: None,
            rejection_reason: None,
            rejection_text: None,
            cancellation_text: None,
            history: vec![routed],
            create_time: now,
            update_time: now,
            receive_time: None,
            assessment_due_date: None,
            completion_due_date: None,
            receive_due_date: Some(receive_due),
            version: 1,
            content_erase_time: None,
            subject_pseudonym: String::new(),
        }
    }

    /// Since when the referral has been closed (COMPLETED, REJECTED or CANCELLED), or `None` while it
    /// is open: its content is kept for a period after that (`--content-retention-days`), then erased.
    pub fn closed_since(&self) -> Option<DateTime<Utc>> {
        self.state.is_final().then_some(self.update_time)
    }

    /// Erases the personal content, keeping the coded skeleton (kind, reasons, municipalities,
    /// recipient, states with times and coded reasons, outcome, deadlines) that statistics and the
    /// audit trail need. `false`: nothing left to erase.
    pub fn erase_content(&mut self, now: DateTime<Utc>) -> bool {
        if self.content_erase_time.is_some() {
            return false;
        }
        self.subject = None;
        self.reason_text = String::new();
        self.application_reference = None;
        self.rejection_text = None;
        self.cancellation_text = None;
        self.content_erase_time = Some(now);
        self.version += 1;
        true
    }

    pub fn name(&self) -> String {
        format!("referrals/{}", self.id)
    }

    pub fn etag(&self) -> String {
        format!("v{}", self.version)
    }

    /// Applies `action` by `actor` at `now`, returning the history entry it added. Who may act is
    /// decided by the caller (see `access`); this only enforces the state machine.
    pub fn apply(
        &mut self,
        action: Action,
        actor: &OrganizationId,
        now: DateTime<Utc>,
        policy: DeadlinePolicy,
    ) -> Result<StateChange, IllegalTransition> {
        let target = action.target(self.state).ok_or(IllegalTransition {
            action: action.name(),
            from: self.state,
        })?;
        let mut recipient = None;
        let reason = match action {
            Action::Receive => {
                let received_on = calendar::helsinki_date(now);
                self.receive_time = Some(now);
                self.assessment_due_date =
                    assessment_due_date(self.kind, self.urgent, self.deadline_group, received_on);
                self.completion_due_date =
                    completion_due_date(self.kind, self.deadline_group, received_on);
                state_reason::RECEIVED_BY_RECIPIENT.to_owned()
            }
            Action::Accept => state_reason::ACCEPTED.to_owned(),
            Action::StartAssessment => state_reason::ASSESSMENT_STARTED.to_owned(),
            Action::Complete(outcome) => {
                self.outcome = Some(outcome);
                outcome.as_str().to_owned()
            }
            Action::Reject { reason, text } => {
                self.rejection_reason = Some(reason);
                self.rejection_text = text;
                reason.as_str().to_owned()
            }
            Action::Forward { to } => {
                self.recipient = to.clone();
                recipient = Some(to);
                // Deadlines run from receipt by the responsible organiser, which is now another.
                self.receive_time = None;
                self.assessment_due_date = None;
                self.completion_due_date = None;
                self.receive_due_date = Some(receive_due_date(
                    self.urgent,
                    calendar::helsinki_date(now),
                    policy.receipt_working_days,
                ));
                state_reason::FORWARDED.to_owned()
            }
            Action::Cancel { text } => {
                self.cancellation_text = text;
                state_reason::CANCELLED_BY_REFERRER.to_owned()
            }
            Action::CancelForConsentWithdrawal => state_reason::CONSENT_WITHDRAWN.to_owned(),
        };
        let change = StateChange {
            state: target,
            time: now,
            organization: actor.clone(),
            reason: reason.clone(),
            recipient,
        };
        self.state = target;
        self.state_reason = reason;
        self.update_time = now;
        self.version += 1;
        self.history.push(change.clone());
        Ok(change)
    }

    /// Every organisation the referral has been routed to, current one last.
    pub fn recipients_so_far(&self) -> Vec<&OrganizationId> {
        let mut out: Vec<&OrganizationId> = Vec::new();
        for change in &self.history {
            if let Some(r) = &change.recipient
                && !out.contains(&r)
            {
                out.push(r);
            }
        }
        out
    }

    /// Organisations whose systems acknowledged receipt: they hold the referral's data, so a consent
    /// withdrawal must reach them even after the referral moved on.
    pub fn receivers_that_received(&self) -> Vec<OrganizationId> {
        let mut out: Vec<OrganizationId> = Vec::new();
        for change in &self.history {
            if change.state == State::Received && !out.contains(&change.organization) {
                out.push(change.organization.clone());
            }
        }
        out
    }

    /// Whether `role` reads a referral's or consent's personal content (identity code, name, phone,
    /// free texts) or only its coded skeleton: auditors audit the processing, not the person.
    pub fn reads_content(role: super::Role) -> bool {
        role != super::Role::Auditor
    }

    /// The referral as `viewer` may see it, or `None` when it must not know the referral exists.
    ///
    /// - The referrer sees everything except the receiver's own free text.
    /// - Auditors see the coded skeleton: no name, phone or free text (and, see
    ///   [`Referral::reads_content`], no identity code).
    /// - The current recipient sees everything.
    /// - A receiver that forwarded the referral keeps what it had, up to its forward: what the next
    ///   organiser does is that organiser's confidential matter.
    pub fn view_for(&self, viewer: &OrganizationId) -> Option<Referral> {
        use super::Role;
        match viewer.role() {
            Role::Referrer => {
                let mut view = self.clone();
                view.rejection_text = None;
                Some(view)
            }
            // Auditing needs who did what and when, not what the person told anyone: the coded
            // skeleton. (The identity code is left out by the edges, see `reads_content`.)
            Role::Auditor => {
                let mut view = self.clone();
                if let Some(subject) = view.subject.as_mut() {
                    subject.name = None;
                    subject.contact_phone = None;
                    subject.preferred_language = None;
                }
                view.reason_text = String::new();
                view.application_reference = None;
                view.rejection_text = None;
                view.cancellation_text = None;
                Some(view)
            }
            Role::Receiver if &self.recipient == viewer => Some(self.clone()),
            Role::Receiver => {
                let forwarded_at = self.history.iter().rposition(|c| {
                    &c.organization == viewer && c.reason == state_reason::FORWARDED
                })?;
                let mut view = self.clone();
                view.history.truncate(forwarded_at + 1);
                let last = &view.history[forwarded_at];
                view.state = last.state;
                view.state_reason = last.reason.clone();
                view.update_time = last.time;
                view.outcome = None;
                view.rejection_reason = None;
                view.rejection_text = None;
                view.cancellation_text = None;
                view.receive_time = None;
                view.assessment_due_date = None;
                view.completion_due_date = None;
                view.receive_due_date = None;
                Some(view)
            }
        }
    }
}

/// The age from which a person is in the 7-working-day assessment group (SHL §36: a person who has
/// reached 75, i.e. aged 75 or more; `OVER_75` is the API's name for that group).
pub const OVER_75_AGE: u32 = 75;

/// The deadline group a referral applies: the handler's, unless the identity code shows a person aged
/// [`OVER_75_AGE`] or more on `referral_date` (the day the referral is made, in Helsinki) and the
/// handler ticked no group, in which case [`DeadlineGroup::Over75`].
///
/// The handler's choice can add a group, never remove this one. Every other group already gives
/// the same 7-working-day assessment deadline (and a child's group adds the completion deadline),
/// so a group the handler ticked is kept as it is: it is at least as strict as over-75.
pub fn applied_deadline_group(
    chosen: DeadlineGroup,
    subject: &PersonalIdentityCode,
    referral_date: NaiveDate,
) -> DeadlineGroup {
    match chosen {
        DeadlineGroup::NoStatutoryGroup if subject.age_on(referral_date) >= OVER_75_AGE => {
            DeadlineGroup::Over75
        }
        chosen => chosen,
    }
}

/// Deadline rules the law leaves to the exchange, set by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// Working days a recipient's system has to take delivery; see [`receive_due_date`].
    pub receipt_working_days: u32,
}

impl Default for DeadlinePolicy {
    fn default() -> Self {
        Self {
            receipt_working_days: 3,
        }
    }
}

/// By when the recipient's system should take delivery: `working_days` working days after the day
/// the referral was routed; an urgent one the same day. No statute sets this; it is the exchange's
/// promise that a referral nobody picks up does not go unnoticed, as on the old one-way channel.
pub fn receive_due_date(urgent: bool, routed_on: NaiveDate, working_days: u32) -> NaiveDate {
    if urgent {
        routed_on
    } else {
        calendar::add_working_days(routed_on, working_days)
    }
}

/// A child's assessment must be completed within three months (SHL §36; a child welfare notification
/// starts a child welfare investigation with the same limit, LSL §27).
pub fn completion_due_date(
    kind: Kind,
    group: DeadlineGroup,
    received_on: NaiveDate,
) -> Option<NaiveDate> {
    let child = group == DeadlineGroup::ChildNeedingSpecialSupport
        || kind == Kind::ChildWelfareNotification;
    if child {
        calendar::months_later_on_working_day(received_on, 3)
    } else {
        None
    }
}

impl Referral {
    /// The deadlines that have passed by `today` (Helsinki) without the state they require. A deadline
    /// passes at the end of its day.
    ///
    /// The SQL of the `overdue` list filter states the same rule; a test holds them together.
    pub fn overdue(&self, today: NaiveDate) -> Vec<(DeadlineKind, NaiveDate)> {
        use State::*;
        let passed = |due: Option<NaiveDate>| due.filter(|d| *d < today);
        let mut out = Vec::new();
        if let (Requested, Some(due)) = (self.state, passed(self.receive_due_date)) {
            out.push((DeadlineKind::Receipt, due));
        }
        // A transferred application is due decided; anything else due started.
        let assessment_open = match self.kind {
            Kind::SupplementaryOrPreventiveAssistance => {
                matches!(self.state, Received | Accepted | InProgress)
            }
            _ => matches!(self.state, Received | Accepted),
        };
        if let (true, Some(due)) = (assessment_open, passed(self.assessment_due_date)) {
            out.push((DeadlineKind::AssessmentStart, due));
        }
        if let (Received | Accepted | InProgress, Some(due)) =
            (self.state, passed(self.completion_due_date))
        {
            out.push((DeadlineKind::Completion, due));
        }
        out
    }
}

/// When the assessment must start (or a transferred application be decided), counted in Finnish
/// working days from the day of receipt, which itself is not counted.
///
/// - urgent need: the same day (a transferred application: by the next working day);
/// - a transferred social-assistance application: the 7th working day;
/// - a child needing special support, the highest care allowance, over 75: the 7th working day;
/// - otherwise no statutory day: "without undue delay".
pub fn assessment_due_date(
    kind: Kind,
    urgent: bool,
    group: DeadlineGroup,
    received_on: NaiveDate,
) -> Option<NaiveDate> {
    let transfer = kind == Kind::SupplementaryOrPreventiveAssistance;
    match (urgent, transfer, group) {
        (true, true, _) => Some(calendar::add_working_days(received_on, 1)),
        (true, false, _) => Some(received_on),
        (false, true, _) => Some(calendar::add_working_days(received_on, 7)),
        (false, false, DeadlineGroup::NoStatutoryGroup) => None,
        (false, false, _) => Some(calendar::add_working_days(received_on, 7)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::municipality;
    use chrono::TimeZone;

    fn kela() -> OrganizationId {
        OrganizationId::kela()
    }

    fn org(id: &str) -> OrganizationId {
        OrganizationId::parse(id).expect("valid org id")
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid time")
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn new_referral() -> NewReferral {
        NewReferral {
            kind: Kind::NeedForSocialWork,
            subject: Subject {
                personal_identity_code: PersonalIdentityCode::parse("131052-308T").expect("valid"),
                name: None,
                contact_phone: Some("+358 40 123 4567".into()),
                preferred_language: Some("fi".into()),
            },
            home_municipality_code: "091".into(),
            current_municipality_code: None,
            reasons: vec![Reason::Housing],
            reason_text: String::new(),
            urgent: false,
            deadline_group: DeadlineGroup::NoStatutoryGroup,
            basis: Basis::Consent(Uuid::nil()),
            personal_discussion_requested: false,
            application_reference: None,
        }
    }

    fn referral() -> Referral {
        Referral::create(
            Uuid::nil(),
            new_referral(),
            org("helsinki"),
            kela(),
            at(2025, 3, 3, 9),
            DeadlinePolicy::default(),
        )
    }

    #[test]
    fn content_is_kept_while_open_and_erased_once_closed_leaving_the_skeleton() {
        let mut r = referral();
        r.reason_text = "rent arrears".into();
        assert_eq!(r.closed_since(), None, "open");
        r.apply(
            Action::Cancel {
                text: Some("moved".into()),
            },
            &kela(),
            at(2025, 3, 4, 12),
            DeadlinePolicy::default(),
        )
        .expect("cancel");
        assert_eq!(r.closed_since(), Some(at(2025, 3, 4, 12)));
        let (history, version) = (r.history.clone(), r.version);
        assert!(r.erase_content(at(2025, 6, 3, 12)));
        assert_eq!(r.subject, None);
        assert_eq!(
            (r.reason_text.as_str(), r.cancellation_text.as_deref()),
            ("", None)
        );
        assert_eq!(r.content_erase_time, Some(at(2025, 6, 3, 12)));
        assert_eq!(r.version, version + 1, "the etag changes");
        assert_eq!(
            (r.state, r.history.clone(), r.reasons.clone(), r.kind),
            (
                State::Cancelled,
                history,
                vec![Reason::Housing],
                Kind::NeedForSocialWork
            ),
            "the skeleton stays"
        );
        assert!(!r.erase_content(at(2025, 6, 4, 12)), "once");
        assert_eq!(
            r.view_for(&OrganizationId::parse("auditor-dpo").expect("org"))
                .map(|v| v.subject),
            Some(None)
        );
    }

    fn rules(result: Result<OrganizationId, Vec<Violation>>) -> Vec<(String, &'static str)> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.field, v.rule))
            .collect()
    }

    #[test]
    fn valid_referral_routes_to_the_organiser_of_the_home_municipality() {
        let reg = municipality::embedded();
        assert_eq!(
            new_referral().validate(reg, date(2025, 3, 3)),
            Ok(org("helsinki"))
        );
        let mut r = new_referral();
        r.home_municipality_code = "478".into();
        assert_eq!(r.validate(reg, date(2025, 3, 3)), Ok(org("aland-478")));
    }

    #[test]
    fn pertunmaa_is_valid_in_2024_and_unknown_in_2025() {
        let reg = municipality::embedded();
        let mut r = new_referral();
        r.home_municipality_code = "588".into();
        assert!(r.validate(reg, date(2024, 12, 31)).is_ok());
        assert_eq!(
            rules(r.validate(reg, date(2025, 1, 1))),
            vec![("referral.home_municipality_code".into(), "unknown_on_date")]
        );
    }

    #[test]
    fn ordinary_kind_needs_consent_and_statutory_kind_needs_ground_and_text() {
        let reg = municipality::embedded();
        let mut r = new_referral();
        r.basis = Basis::Statutory(StatutoryGround::UnableToCareForSelf);
        assert_eq!(
            rules(r.validate(reg, date(2025, 3, 3))),
            vec![
                ("referral.consent".into(), "required_for_kind"),
                (
                    "referral.reason_text".into(),
                    "required_with_statutory_ground"
                )
            ]
        );
        r.kind = Kind::NeedNotificationWithoutConsent;
        r.reason_text = "Unable to look after own safety".into();
        assert!(r.validate(reg, date(2025, 3, 3)).is_ok());
        r.basis = Basis::Statutory(StatutoryGround::ChildWelfareActDuty);
        assert_eq!(
            rules(r.validate(reg, date(2025, 3, 3))),
            vec![("referral.statutory_ground".into(), "not_allowed_for_kind")]
        );
        r.kind = Kind::ChildWelfareNotification;
        assert!(r.validate(reg, date(2025, 3, 3)).is_ok());
        r.basis = Basis::Consent(Uuid::nil());
        assert_eq!(
            rules(r.validate(reg, date(2025, 3, 3))),
            vec![("referral.statutory_ground".into(), "required_for_kind")]
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let reg = municipality::embedded();
        let mut r = new_referral();
        r.kind = Kind::SupplementaryOrPreventiveAssistance;
        r.reasons = vec![Reason::Debt, Reason::Debt];
        r.home_municipality_code = "999".into();
        r.current_municipality_code = Some("12".into());
        r.subject.contact_phone = Some("call me".into());
        r.subject.preferred_language = Some("finnish!".into());
        r.reason_text = "x".repeat(MAX_REASON_TEXT_CHARS + 1);
        assert_eq!(
            rules(r.validate(reg, date(2025, 3, 3))),
            vec![
                ("referral.home_municipality_code".into(), "unknown_on_date"),
                (
                    "referral.current_municipality_code".into(),
                    "three_digit_code"
                ),
                ("referral.application_reference".into(), "required_for_kind"),
                ("referral.reasons[1]".into(), "duplicate"),
                ("referral.reason_text".into(), "max_length"),
                ("referral.subject.contact_phone".into(), "phone_number"),
                ("referral.subject.preferred_language".into(), "language_tag"),
            ]
        );
    }

    #[test]
    fn happy_path_through_every_state() {
        let mut r = referral();
        let helsinki = org("helsinki");
        r.apply(
            Action::Receive,
            &helsinki,
            at(2025, 3, 3, 10),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        assert_eq!(r.state, State::Received);
        r.apply(
            Action::Accept,
            &helsinki,
            at(2025, 3, 3, 11),
            DeadlinePolicy::default(),
        )
        .expect("accept");
        r.apply(
            Action::StartAssessment,
            &helsinki,
            at(2025, 3, 4, 9),
            DeadlinePolicy::default(),
        )
        .expect("start");
        let change = r
            .apply(
                Action::Complete(Outcome::ServicesStarted),
                &helsinki,
                at(2025, 3, 5, 9),
                DeadlinePolicy::default(),
            )
            .expect("complete");
        assert_eq!(r.state, State::Completed);
        assert_eq!(r.outcome, Some(Outcome::ServicesStarted));
        assert_eq!(change.reason, "SERVICES_STARTED");
        assert_eq!(r.version, 5);
        assert_eq!(r.history.len(), 5);
    }

    #[test]
    fn illegal_transitions_are_refused_without_change() {
        let mut r = referral();
        let helsinki = org("helsinki");
        let before = r.clone();
        for action in [
            Action::Accept,
            Action::StartAssessment,
            Action::Complete(Outcome::NoNeedForServices),
            Action::Reject {
                reason: RejectionReason::Duplicate,
                text: None,
            },
            Action::Forward { to: org("hva-15") },
        ] {
            let err = r
                .apply(
                    action,
                    &helsinki,
                    at(2025, 3, 3, 10),
                    DeadlinePolicy::default(),
                )
                .expect_err("illegal");
            assert_eq!(err.from, State::Requested);
        }
        assert_eq!(r, before);
        r.apply(
            Action::Receive,
            &helsinki,
            at(2025, 3, 3, 10),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        r.apply(
            Action::Accept,
            &helsinki,
            at(2025, 3, 3, 10),
            DeadlinePolicy::default(),
        )
        .expect("accept");
        r.apply(
            Action::StartAssessment,
            &helsinki,
            at(2025, 3, 3, 10),
            DeadlinePolicy::default(),
        )
        .expect("start");
        assert!(
            r.apply(
                Action::Reject {
                    reason: RejectionReason::Duplicate,
                    text: None
                },
                &helsinki,
                at(2025, 3, 3, 10),
                DeadlinePolicy::default()
            )
            .is_err(),
            "no rejection once the assessment has started"
        );
        r.apply(
            Action::Cancel { text: None },
            &kela(),
            at(2025, 3, 3, 12),
            DeadlinePolicy::default(),
        )
        .expect("cancel");
        assert!(
            r.apply(
                Action::Cancel { text: None },
                &kela(),
                at(2025, 3, 3, 12),
                DeadlinePolicy::default()
            )
            .is_err()
        );
    }

    #[test]
    fn consent_withdrawal_cancels_only_before_receipt() {
        let mut r = referral();
        assert_eq!(
            Action::CancelForConsentWithdrawal.target(State::Requested),
            Some(State::Cancelled)
        );
        r.apply(
            Action::Receive,
            &org("helsinki"),
            at(2025, 3, 3, 10),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        assert!(
            r.apply(
                Action::CancelForConsentWithdrawal,
                &kela(),
                at(2025, 3, 3, 11),
                DeadlinePolicy::default()
            )
            .is_err()
        );
    }

    #[test]
    fn forward_moves_the_referral_and_keeps_what_the_forwarder_saw() {
        let mut r = referral();
        let helsinki = org("helsinki");
        let hva15 = org("hva-15");
        r.apply(
            Action::Receive,
            &helsinki,
            at(2025, 3, 3, 10),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        r.apply(
            Action::Forward { to: hva15.clone() },
            &helsinki,
            at(2025, 3, 3, 11),
            DeadlinePolicy::default(),
        )
        .expect("forward");
        assert_eq!(r.state, State::Requested);
        assert_eq!(r.recipient, hva15);
        assert_eq!(r.receive_time, None);
        r.apply(
            Action::Receive,
            &hva15,
            at(2025, 3, 4, 10),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        r.apply(
            Action::Reject {
                reason: RejectionReason::Duplicate,
                text: Some("seen before".into()),
            },
            &hva15,
            at(2025, 3, 4, 11),
            DeadlinePolicy::default(),
        )
        .expect("reject");

        let forwarder = r.view_for(&helsinki).expect("forwarder keeps access");
        assert_eq!(forwarder.state, State::Requested);
        assert_eq!(forwarder.state_reason, "FORWARDED");
        assert_eq!(forwarder.history.len(), 3);
        assert_eq!(forwarder.rejection_reason, None);

        let kela_view = r.view_for(&kela()).expect("kela sees all");
        assert_eq!(kela_view.rejection_reason, Some(RejectionReason::Duplicate));
        assert_eq!(
            kela_view.rejection_text, None,
            "receiver's free text stays with receivers"
        );

        assert_eq!(
            r.view_for(&hva15).and_then(|v| v.rejection_text),
            Some("seen before".into())
        );
        assert_eq!(
            r.view_for(&org("hva-01")),
            None,
            "others do not learn it exists"
        );
        assert_eq!(r.receivers_that_received(), vec![helsinki, hva15]);
    }

    #[test]
    fn receipt_sets_deadline_in_working_days() {
        let mut r = referral();
        r.deadline_group = DeadlineGroup::Over75;
        // Thursday 17 April 2025, the day before Good Friday: the receipt day is not counted,
        // Good Friday and Easter Monday are not working days.
        r.apply(
            Action::Receive,
            &org("helsinki"),
            at(2025, 4, 17, 8),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        assert_eq!(r.assessment_due_date, Some(date(2025, 4, 30)));
    }

    /// A referral for `code`, asking for `group`, made at 09:00 UTC on `made_on`, received the
    /// same day: its applied group and assessment due date.
    fn applied(
        code: &str,
        group: DeadlineGroup,
        made_on: NaiveDate,
    ) -> (DeadlineGroup, Option<NaiveDate>) {
        let mut new = new_referral();
        new.subject.personal_identity_code = PersonalIdentityCode::parse(code).expect("valid");
        new.deadline_group = group;
        let now = made_on.and_hms_opt(9, 0, 0).expect("valid time").and_utc();
        let mut r = Referral::create(
            Uuid::nil(),
            new,
            org("helsinki"),
            kela(),
            now,
            DeadlinePolicy::default(),
        );
        r.apply(
            Action::Receive,
            &org("helsinki"),
            now,
            DeadlinePolicy::default(),
        )
        .expect("receive");
        (r.deadline_group, r.assessment_due_date)
    }

    #[test]
    fn a_person_aged_75_is_in_the_7_working_day_group_from_the_birthday() {
        use DeadlineGroup::*;
        // 131052-308T was born on 13 October 1952: 75 on Wednesday 13 October 2027.
        assert_eq!(
            applied("131052-308T", NoStatutoryGroup, date(2027, 10, 12)),
            (NoStatutoryGroup, None),
            "the day before the 75th birthday: no statutory day"
        );
        assert_eq!(
            applied("131052-308T", NoStatutoryGroup, date(2027, 10, 13)),
            (Over75, Some(date(2027, 10, 22))),
            "on the birthday: the 7th working day after receipt"
        );
        // A temporary code tells the birth date as well.
        assert_eq!(
            applied("131052-950H", NoStatutoryGroup, date(2027, 10, 13)).0,
            Over75
        );
        // A group the handler ticked stays: it is at least as strict.
        assert_eq!(
            applied(
                "131052-308T",
                ChildNeedingSpecialSupport,
                date(2027, 10, 13)
            )
            .0,
            ChildNeedingSpecialSupport
        );
        assert_eq!(
            applied("131052-308T", HighestCareAllowance, date(2030, 1, 2)).0,
            HighestCareAllowance
        );
        // The handler can add the group for a younger person; the code never removes it.
        assert_eq!(
            applied("131052-308T", Over75, date(2027, 10, 12)),
            (Over75, Some(date(2027, 10, 21)))
        );
    }

    #[test]
    fn a_person_born_on_29_february_turns_75_on_28_february_in_a_common_year() {
        use DeadlineGroup::*;
        // 290252-901 (temporary) was born on 29 February 1952; 2027 has no 29 February, and the
        // age is reached on 28 February (Act on reckoning age 649/1965).
        let code = "290252-901T";
        assert_eq!(
            applied(code, NoStatutoryGroup, date(2027, 2, 27)).0,
            NoStatutoryGroup,
            "27 February: still 74"
        );
        assert_eq!(
            applied(code, NoStatutoryGroup, date(2027, 2, 28)).0,
            Over75,
            "28 February: 75"
        );
        assert_eq!(applied(code, NoStatutoryGroup, date(2027, 3, 1)).0, Over75);
    }

    #[test]
    fn receipt_date_is_taken_in_helsinki_time() {
        let mut r = referral();
        r.urgent = true;
        // 22:30 UTC on 2 March is 00:30 on 3 March in Helsinki.
        let t = Utc
            .with_ymd_and_hms(2025, 3, 2, 22, 30, 0)
            .single()
            .expect("valid");
        r.apply(
            Action::Receive,
            &org("helsinki"),
            t,
            DeadlinePolicy::default(),
        )
        .expect("receive");
        assert_eq!(r.assessment_due_date, Some(date(2025, 3, 3)));
    }

    #[test]
    fn deadlines_by_kind_group_and_urgency() {
        let friday = date(2026, 12, 18);
        use DeadlineGroup::*;
        assert_eq!(
            assessment_due_date(Kind::NeedForSocialWork, false, NoStatutoryGroup, friday),
            None
        );
        assert_eq!(
            assessment_due_date(Kind::NeedForSocialWork, true, NoStatutoryGroup, friday),
            Some(friday)
        );
        // Christmas Eve, Christmas Day (Thu, Fri) and St Stephen's Day (Sat) are not working days.
        assert_eq!(
            assessment_due_date(
                Kind::NeedForSocialWork,
                false,
                ChildNeedingSpecialSupport,
                friday
            ),
            Some(date(2026, 12, 31))
        );
        assert_eq!(
            assessment_due_date(
                Kind::SupplementaryOrPreventiveAssistance,
                true,
                NoStatutoryGroup,
                friday
            ),
            Some(date(2026, 12, 21))
        );
        assert_eq!(
            assessment_due_date(
                Kind::SupplementaryOrPreventiveAssistance,
                false,
                NoStatutoryGroup,
                friday
            ),
            Some(date(2026, 12, 31))
        );
    }

    #[test]
    fn overdue_deadlines_follow_the_state_they_require() {
        let helsinki = org("helsinki");
        let mut r = referral();
        // Routed 3 March, due received by Thursday 6 March.
        assert!(
            r.overdue(date(2025, 3, 6)).is_empty(),
            "the due day itself is not late"
        );
        assert_eq!(
            r.overdue(date(2025, 3, 7)),
            vec![(DeadlineKind::Receipt, date(2025, 3, 6))]
        );

        r.deadline_group = DeadlineGroup::ChildNeedingSpecialSupport;
        r.apply(
            Action::Receive,
            &helsinki,
            at(2025, 3, 7, 9),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        // 7 working days after Fri 7 March: Tue 18 March. Three months: Mon 9 June (7 June is a Saturday).
        assert_eq!(r.assessment_due_date, Some(date(2025, 3, 18)));
        assert_eq!(r.completion_due_date, Some(date(2025, 6, 9)));
        assert!(
            r.overdue(date(2025, 3, 18)).is_empty(),
            "received: the receipt deadline is met"
        );
        assert_eq!(
            r.overdue(date(2025, 3, 19)),
            vec![(DeadlineKind::AssessmentStart, date(2025, 3, 18))]
        );
        r.apply(
            Action::Accept,
            &helsinki,
            at(2025, 3, 19, 9),
            DeadlinePolicy::default(),
        )
        .expect("accept");
        r.apply(
            Action::StartAssessment,
            &helsinki,
            at(2025, 3, 19, 10),
            DeadlinePolicy::default(),
        )
        .expect("start");
        assert!(
            r.overdue(date(2025, 3, 19)).is_empty(),
            "started late, but started"
        );
        assert_eq!(
            r.overdue(date(2025, 6, 10)),
            vec![(DeadlineKind::Completion, date(2025, 6, 9))]
        );
        r.apply(
            Action::Complete(Outcome::ServicesStarted),
            &helsinki,
            at(2025, 6, 10, 9),
            DeadlinePolicy::default(),
        )
        .expect("done");
        assert!(r.overdue(date(2025, 12, 31)).is_empty());
    }

    #[test]
    fn a_transferred_application_is_due_decided_not_just_started() {
        let helsinki = org("helsinki");
        let mut r = referral();
        r.kind = Kind::SupplementaryOrPreventiveAssistance;
        r.apply(
            Action::Receive,
            &helsinki,
            at(2025, 3, 3, 9),
            DeadlinePolicy::default(),
        )
        .expect("receive");
        r.apply(
            Action::Accept,
            &helsinki,
            at(2025, 3, 3, 9),
            DeadlinePolicy::default(),
        )
        .expect("accept");
        r.apply(
            Action::StartAssessment,
            &helsinki,
            at(2025, 3, 3, 9),
            DeadlinePolicy::default(),
        )
        .expect("start");
        let due = r.assessment_due_date.expect("a decision deadline");
        assert_eq!(due, date(2025, 3, 12));
        assert_eq!(
            r.overdue(date(2025, 3, 13)),
            vec![(DeadlineKind::AssessmentStart, due)]
        );
    }
}

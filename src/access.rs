//! Who is calling, what they may do, and what the call touched.
//!
//! The organisation comes from the client certificate (see [`crate::tls`]); its role follows from its
//! id. The person acting is named in `x-user-id` metadata and recorded in the audit trail, but is
//! never trusted for authorisation: the calling organisation's systems put it there.
//!
//! A [`Call`] lives for one RPC. Use cases record on it the resources and persons they touch, so that
//! the audit event written at the end (in the same transaction on success, alone on refusal) says
//! exactly what happened.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use chrono::{DateTime, Utc};

use crate::{
    audit::{AuditRecord, Disclosure},
    domain::{OrganizationId, PersonalIdentityCode, Role, municipality::MunicipalityRegistry},
    error::{Error, Reason, Result},
};

pub const USER_ID_HEADER: &str = "x-user-id";
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
pub const MAX_HEADER_CHARS: usize = 128;

/// Who may call each method of the API: the one table of it. Every edge's calls (gRPC, the HTTP
/// face, the console's pages) name one of these methods, and [`Call::authorize`] holds the caller
/// to it. A method missing here may be called by no one (and the generated authorisation matrix in
/// `tests/api/authorization.rs` fails until its expected outcome is written down there too).
///
/// Finer rules follow in the use cases: a receiver reads only what was routed to it, Kela only
/// cancels, auditors read no content.
pub fn roles_allowed(method: &str) -> &'static [Role] {
    use Role::{Auditor, Receiver, Referrer};
    const EVERYONE: &[Role] = &[Referrer, Receiver, Auditor];
    // Who has a mailbox: Kela (state changes and overdue notices) and each receiver.
    const MAILBOX_OWNERS: &[Role] = &[Referrer, Receiver];
    let Some(rest) = method.strip_prefix("/referral_exchange.v1.") else {
        return &[];
    };
    match rest {
        "ReferralService/CreateReferral" | "ReferralService/CancelReferral" => &[Referrer],
        "ReferralService/AcceptReferral"
        | "ReferralService/RejectReferral"
        | "ReferralService/ForwardReferral"
        | "ReferralService/StartAssessment"
        | "ReferralService/CompleteReferral" => &[Receiver],
        "ReferralService/GetReferral" | "ReferralService/ListReferrals" => EVERYONE,
        "ConsentService/RecordConsent" | "ConsentService/WithdrawConsent" => &[Referrer],
        "ConsentService/GetConsent" => EVERYONE,
        "ConsentService/ListConsents" | "ConsentService/ListConsentEvents" => &[Referrer, Auditor],
        "MailboxService/PullMessages"
        | "MailboxService/StreamMessages"
        | "MailboxService/AcknowledgeMessages"
        | "MailboxService/ModifyLeases"
        | "MailboxService/ListDeadLetters"
        | "MailboxService/RedriveDeadLetters"
        | "MailboxService/ListMailboxHistory"
        | "MailboxService/GetMailboxStats" => MAILBOX_OWNERS,
        "DirectoryService/ListOrganizations" | "DirectoryService/ResolveRecipient" => EVERYONE,
        "AuditService/ListAuditEvents"
        | "AuditService/GetCheckpoint"
        | "AuditService/GetInclusionProof"
        | "AuditService/GetConsistencyProof"
        | "AuditService/ExportAuditEvents"
        | "AuditService/GetSubjectAccessReport" => &[Auditor],
        "ReportingService/GetReferralStatistics" => EVERYONE,
        _ => &[],
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub organization: OrganizationId,
    /// Empty for an auditor that sent none.
    pub user_id: String,
}

impl Caller {
    pub fn role(&self) -> Role {
        self.organization.role()
    }

    pub fn is(&self, org: &OrganizationId) -> bool {
        &self.organization == org
    }
}

/// What a connection and its request say about the caller, before anything is checked: the same
/// whichever edge it came through. The gRPC edge reads it from the client certificate and metadata;
/// the HTTP edge from the client certificate and headers, or, behind an X-Road security server, from
/// the client map and the `X-Road-*` headers.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The organisation id, or why there is none.
    pub organization: std::result::Result<String, Unidentified>,
    /// The person a personal certificate names (`urn:referral-exchange:users/<id>`): then the acting
    /// user, whatever the request says.
    pub certified_user: Option<String>,
    /// `x-user-id` (or `X-Road-UserId`).
    pub user_id: Option<String>,
    /// `x-correlation-id` (or `X-Road-Id`).
    pub correlation_id: Option<String>,
    /// Resource names recorded in the call's audit event that say which way it came, e.g. the X-Road
    /// client subsystem and the represented party.
    pub via: Vec<String>,
}

/// Why a connection names no organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unidentified {
    /// The certificate names none (UNAUTHENTICATED).
    Certificate(String),
    /// An X-Road call that may not be honoured (PERMISSION_DENIED): a security server's certificate
    /// with an unmapped or malformed `X-Road-Client`, or `X-Road-*` headers from anyone else.
    XRoad {
        reason: String,
        /// The organisation an organisation's own certificate names when it sent `X-Road-*`
        /// headers: the refusal is recorded under it.
        sender: Option<String>,
    },
}

impl Claims {
    /// Claims that name no organisation, for `why`.
    pub fn unidentified(why: Unidentified) -> Self {
        Claims {
            organization: Err(why),
            certified_user: None,
            user_id: None,
            correlation_id: None,
            via: Vec::new(),
        }
    }

    /// Claims of a connection whose certificate says `organization`, with nothing else yet.
    pub fn certificate(organization: std::result::Result<String, String>) -> Self {
        Claims {
            organization: organization.map_err(Unidentified::Certificate),
            certified_user: None,
            user_id: None,
            correlation_id: None,
            via: Vec::new(),
        }
    }
}

/// Why a caller could not be identified. Kept as data (not an [`Error`]) because it is asked for
/// twice: once to refuse, once to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IdentityProblem {
    Certificate(String),
    XRoad(String),
    UserIdMismatch,
    UnknownOrganization,
    UserIdMissing,
    UserIdInvalid(&'static str),
    CorrelationIdInvalid(&'static str),
}

impl IdentityProblem {
    fn to_error(&self) -> Error {
        match self {
            IdentityProblem::Certificate(message) => Error::Unauthenticated {
                reason: Reason::CertificateWithoutOrganization,
                message: message.clone(),
            },
            IdentityProblem::XRoad(message) => Error::PermissionDenied {
                reason: Reason::XRoadRefused,
                message: message.clone(),
            },
            IdentityProblem::UserIdMismatch => Error::PermissionDenied {
                reason: Reason::UserIdMismatch,
                message: format!(
                    "the personal certificate names another person than {USER_ID_HEADER}; send \
                     none, or the certificate's"
                ),
            },
            IdentityProblem::UnknownOrganization => Error::Unauthenticated {
                reason: Reason::UnknownOrganization,
                message:
                    "the certificate names an organisation that does not take part in the exchange"
                        .into(),
            },
            IdentityProblem::UserIdMissing => Error::Unauthenticated {
                reason: Reason::UserIdMissing,
                message: format!("metadata {USER_ID_HEADER} must name the person acting"),
            },
            IdentityProblem::UserIdInvalid(rule) => Error::Unauthenticated {
                reason: Reason::UserIdInvalid,
                message: format!("metadata {USER_ID_HEADER}: {rule}"),
            },
            IdentityProblem::CorrelationIdInvalid(rule) => Error::invalid_field(
                CORRELATION_ID_HEADER,
                "metadata",
                format!("metadata {CORRELATION_ID_HEADER}: {rule}"),
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Touched {
    resources: Vec<String>,
    subjects: Vec<String>,
    disclosures: Vec<Disclosure>,
}

/// One RPC: its method, its caller (or why there is none), and what it touched.
#[derive(Debug)]
pub struct Call {
    method: &'static str,
    /// As the certificate stated it, for the audit trail even when refused.
    organization_claim: String,
    user_id: String,
    correlation_id: String,
    /// Recorded first among the resources of every audit event of this call (see [`Claims::via`]).
    via: Vec<String>,
    identity: std::result::Result<Caller, IdentityProblem>,
    touched: Mutex<Touched>,
    audited: AtomicBool,
}

impl Call {
    /// Identifies the caller of `method` from what the connection and request claim.
    pub fn identify(method: &'static str, claims: Claims, registry: &MunicipalityRegistry) -> Call {
        let identity = identify(&claims, registry);
        let Claims {
            organization,
            certified_user,
            user_id,
            correlation_id,
            via,
        } = claims;
        Call {
            method,
            // Never record a value that broke the rules: it might be an identity code.
            user_id: match &identity {
                Err(IdentityProblem::UserIdInvalid(_)) => String::new(),
                Ok(caller) => caller.user_id.clone(),
                Err(_) => certified_user.or(user_id).unwrap_or_default(),
            },
            correlation_id: match &identity {
                Err(IdentityProblem::CorrelationIdInvalid(_)) => String::new(),
                _ => correlation_id.unwrap_or_default(),
            },
            organization_claim: match organization {
                Ok(organization) => organization,
                Err(Unidentified::XRoad {
                    sender: Some(sender),
                    ..
                }) => sender,
                Err(_) => String::new(),
            },
            via,
            identity,
            touched: Mutex::default(),
            audited: AtomicBool::new(false),
        }
    }

    /// Work the service does on its own (background tasks), recorded in the audit trail like a call:
    /// no organisation, `method` naming the task, e.g. `background/deadline-watch`.
    pub fn system(method: &'static str) -> Call {
        Call {
            method,
            organization_claim: String::new(),
            user_id: String::new(),
            correlation_id: String::new(),
            via: Vec::new(),
            identity: Err(IdentityProblem::Certificate("the service itself".into())),
            touched: Mutex::default(),
            audited: AtomicBool::new(false),
        }
    }

    /// A new call by the same caller and method, with nothing touched yet: a stream audits each batch
    /// it delivers as a call of its own.
    pub fn sibling(&self) -> Call {
        Call {
            method: self.method,
            organization_claim: self.organization_claim.clone(),
            user_id: self.user_id.clone(),
            correlation_id: self.correlation_id.clone(),
            via: self.via.clone(),
            identity: self.identity.clone(),
            touched: Mutex::default(),
            audited: AtomicBool::new(false),
        }
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    pub fn caller(&self) -> Result<&Caller> {
        self.identity.as_ref().map_err(IdentityProblem::to_error)
    }

    /// The caller, if its role may call this call's method ([`roles_allowed`]); PERMISSION_DENIED
    /// otherwise. Checked once before anything else of the call is looked at (its request, its
    /// organisation's limits), and again by each use case, which may be reached without an edge.
    pub fn authorize(&self) -> Result<&Caller> {
        let caller = self.caller()?;
        if roles_allowed(self.method).contains(&caller.role()) {
            Ok(caller)
        } else {
            Err(Error::permission_denied(format!(
                "organizations/{} may not call {}",
                caller.organization, self.method
            )))
        }
    }

    pub fn touch_resource(&self, name: impl Into<String>) {
        let name = name.into();
        let mut t = self.lock();
        if !t.resources.contains(&name) {
            t.resources.push(name);
        }
    }

    pub fn touch_subject(&self, pseudonym: impl Into<String>) {
        let pseudonym = pseudonym.into();
        let mut t = self.lock();
        if !t.subjects.contains(&pseudonym) {
            t.subjects.push(pseudonym);
        }
    }

    pub fn disclose(&self, disclosure: Disclosure) {
        self.lock().disclosures.push(disclosure);
    }

    /// The audit event of this call, ending with `status`.
    pub fn record(&self, status: tonic::Code, time: DateTime<Utc>) -> AuditRecord {
        let t = self.lock();
        AuditRecord {
            time,
            organization: self.organization_claim.clone(),
            user_id: self.user_id.clone(),
            method: self.method.to_owned(),
            resources: self.via.iter().chain(&t.resources).cloned().collect(),
            subject_pseudonyms: t.subjects.clone(),
            status_code: status as i32,
            correlation_id: self.correlation_id.clone(),
            disclosures: t.disclosures.clone(),
        }
    }

    /// Whether the call touched a person: looked one up, read or changed their data (a subject
    /// pseudonym is recorded) or disclosed it to someone. Such a call is processing of personal data
    /// and is audited, whatever its use case declared.
    pub fn touched_someone(&self) -> bool {
        let t = self.lock();
        !t.subjects.is_empty() || !t.disclosures.is_empty()
    }

    /// The organisation that made the call, for metric labels: an organisation id, never anything the
    /// caller typed freely. Empty for the service's own work.
    pub fn organization(&self) -> &str {
        self.identity
            .as_ref()
            .map_or("", |caller| caller.organization.as_str())
    }

    pub fn mark_audited(&self) {
        self.audited.store(true, Ordering::SeqCst);
    }

    pub fn is_audited(&self) -> bool {
        self.audited.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Touched> {
        self.touched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn identify(
    claims: &Claims,
    registry: &MunicipalityRegistry,
) -> std::result::Result<Caller, IdentityProblem> {
    let claim = claims.organization.as_ref().map_err(|e| match e {
        Unidentified::Certificate(message) => IdentityProblem::Certificate(message.clone()),
        Unidentified::XRoad { reason, .. } => IdentityProblem::XRoad(reason.clone()),
    })?;
    let organization =
        OrganizationId::parse(claim).map_err(|_| IdentityProblem::UnknownOrganization)?;
    if organization.role() == Role::Receiver && !registry.is_known_receiver(&organization) {
        return Err(IdentityProblem::UnknownOrganization);
    }
    if let Some(correlation_id) = &claims.correlation_id {
        check_header(correlation_id).map_err(IdentityProblem::CorrelationIdInvalid)?;
    }
    if let Some(user) = &claims.certified_user {
        // The certificate was issued to this person: what the request says cannot change it.
        check_header(user).map_err(IdentityProblem::UserIdInvalid)?;
        if claims.user_id.as_ref().is_some_and(|u| u != user) {
            return Err(IdentityProblem::UserIdMismatch);
        }
        return Ok(Caller {
            organization,
            user_id: user.clone(),
        });
    }
    let user_id = claims.user_id.as_deref().unwrap_or_default();
    if user_id.is_empty() {
        if organization.role() != Role::Auditor {
            return Err(IdentityProblem::UserIdMissing);
        }
    } else {
        check_header(user_id).map_err(IdentityProblem::UserIdInvalid)?;
    }
    Ok(Caller {
        organization,
        user_id: user_id.to_owned(),
    })
}

/// Metadata that is written to the audit trail and logs: short, printable, and never an identity
/// code (a handler who types the client's code into the wrong box must not put it in the log).
fn check_header(value: &str) -> std::result::Result<(), &'static str> {
    if value.chars().count() > MAX_HEADER_CHARS {
        return Err("at most 128 characters");
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err("printable ASCII without spaces only");
    }
    let bytes = value.as_bytes();
    if bytes.len() >= 11
        && (0..=bytes.len() - 11).any(|i| {
            std::str::from_utf8(&bytes[i..i + 11])
                .is_ok_and(|w| PersonalIdentityCode::parse(w).is_ok())
        })
    {
        return Err("must not contain a personal identity code");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::municipality;

    fn call(org: Result<&str, &str>, user: Option<&str>) -> Call {
        let mut claims = Claims::certificate(org.map(str::to_owned).map_err(str::to_owned));
        claims.user_id = user.map(str::to_owned);
        Call::identify("/test/Method", claims, municipality::embedded())
    }

    #[test]
    fn a_personal_certificate_names_the_user_and_a_different_header_is_denied() {
        let personal = |header: Option<&str>| {
            let mut claims = Claims::certificate(Ok("hva-15".to_owned()));
            claims.certified_user = Some("w-anna".to_owned());
            claims.user_id = header.map(str::to_owned);
            Call::identify("/test/Method", claims, municipality::embedded())
        };
        for header in [None, Some("w-anna")] {
            let c = personal(header);
            assert_eq!(c.caller().map(|c| c.user_id.as_str()).ok(), Some("w-anna"));
            assert_eq!(c.record(tonic::Code::Ok, Utc::now()).user_id, "w-anna");
        }
        let c = personal(Some("w-other"));
        assert_eq!(
            c.caller().map_err(|e| (e.code(), e.reason())),
            Err((tonic::Code::PermissionDenied, Reason::UserIdMismatch))
        );
        // The audit event names the person the certificate names, not the claim.
        assert_eq!(
            c.record(tonic::Code::PermissionDenied, Utc::now()).user_id,
            "w-anna"
        );
    }

    #[test]
    fn a_call_touched_someone_once_it_names_a_person_or_discloses() {
        let c = call(Ok("hva-15"), Some("worker-1"));
        assert!(!c.touched_someone(), "nothing yet");
        assert_eq!(c.organization(), "hva-15");
        c.touch_resource("messages/1");
        assert!(!c.touched_someone(), "a message id alone names no one");
        c.touch_subject("pseudonym-1");
        assert!(c.touched_someone());

        let c = call(Ok("kela"), Some("handler-1"));
        c.disclose(Disclosure {
            recipient: "organizations/hva-15".into(),
            resource: "referrals/1".into(),
            subject_pseudonym: String::new(),
            basis: "UNABLE_TO_CARE_FOR_SELF".into(),
            consent_state: None,
            consent_version: None,
        });
        assert!(c.touched_someone(), "a disclosure is processing");
        assert_eq!(
            call(Err("no certificate"), None).organization(),
            "",
            "no organisation to count under"
        );
    }

    #[test]
    fn x_road_refusals_are_permission_denied_and_the_way_is_recorded() {
        let claims = Claims::unidentified(Unidentified::XRoad {
            reason: "unmapped X-Road-Client".into(),
            sender: None,
        });
        let c = Call::identify("/test/Method", claims, municipality::embedded());
        assert_eq!(
            c.caller().map_err(|e| (e.code(), e.reason())),
            Err((tonic::Code::PermissionDenied, Reason::XRoadRefused))
        );
        let mut claims = Claims::certificate(Ok("kela".to_owned()));
        claims.user_id = Some("h1".into());
        claims.via = vec!["xroad-clients/FI/GOV/0245437-2/referrals".into()];
        let c = Call::identify("/test/Method", claims, municipality::embedded());
        c.touch_resource("referrals/1");
        assert_eq!(
            c.record(tonic::Code::Ok, Utc::now()).resources,
            ["xroad-clients/FI/GOV/0245437-2/referrals", "referrals/1"]
        );
    }

    #[test]
    fn roles_follow_from_the_certificate() {
        let role = |c: Call| c.caller().map(Caller::role).ok();
        assert_eq!(role(call(Ok("kela"), Some("h1"))), Some(Role::Referrer));
        assert_eq!(role(call(Ok("hva-15"), Some("w1"))), Some(Role::Receiver));
        assert_eq!(
            role(call(Ok("aland-478"), Some("w1"))),
            Some(Role::Receiver)
        );
        assert_eq!(role(call(Ok("auditor-dpo"), None)), Some(Role::Auditor));
    }

    #[test]
    fn unknown_organisations_and_missing_users_are_unauthenticated() {
        for c in [
            call(Ok("hva-22"), Some("w1")),
            call(Ok("aland-091"), Some("w1")),
            call(Ok("kela"), None),
            call(Err("no organisation SAN"), Some("h1")),
        ] {
            assert_eq!(
                c.caller().map_err(|e| e.code()),
                Err(tonic::Code::Unauthenticated)
            );
        }
    }

    #[test]
    fn identity_codes_in_user_ids_are_refused_and_not_recorded() {
        let c = call(Ok("kela"), Some("user-131052-308T"));
        assert_eq!(
            c.caller().map_err(|e| e.reason()),
            Err(Reason::UserIdInvalid)
        );
        let record = c.record(tonic::Code::Unauthenticated, Utc::now());
        assert_eq!(record.user_id, "");
        assert_eq!(record.organization, "kela");
    }

    #[test]
    fn role_checks_are_permission_denied() {
        let method = "/referral_exchange.v1.ReferralService/CreateReferral";
        let claims = |org: &str| Claims {
            organization: Ok(org.to_owned()),
            certified_user: None,
            user_id: Some("u1".into()),
            correlation_id: None,
            via: Vec::new(),
        };
        let receiver = Call::identify(method, claims("hva-15"), municipality::embedded());
        assert_eq!(
            receiver.authorize().map_err(|e| e.reason()),
            Err(Reason::RoleNotAllowed)
        );
        let kela = Call::identify(method, claims("kela"), municipality::embedded());
        assert!(kela.authorize().is_ok());
        let unknown = Call::identify(
            "/referral_exchange.v1.X/Y",
            claims("kela"),
            municipality::embedded(),
        );
        assert!(
            unknown.authorize().is_err(),
            "a method not in the table: no one"
        );
    }
}

//! `ReferralService`.

use std::sync::Arc;

use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use super::{
    Paging, check, enums, from_timestamp, handle, identity_code, method, none_if_empty,
    opt_timestamp, optional_identity_code, optional_organization, request_key, resource_id,
    timestamp,
};
use crate::{
    domain::{
        OrganizationId, Violation,
        referral::{
            Action, Basis, DeadlineGroup, DeadlineKind, Kind, MAX_REASON_TEXT_CHARS, NewReferral,
            Outcome, Reason, RejectionReason, State, StateChange, StatutoryGround, Subject,
            check_length,
        },
    },
    error::{Error, Result},
    exchange::{
        Exchange,
        referrals::{ChangeRequest, ReferralQuery, ReferralView},
    },
    proto::v1 as pb,
};

pub struct ReferralApi {
    exchange: Arc<Exchange>,
}

impl ReferralApi {
    /// The service itself, without the gRPC server around it: what the HTTP edge calls.
    pub fn handler(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }

    pub fn new(
        exchange: Arc<Exchange>,
    ) -> pb::referral_service_server::ReferralServiceServer<Self> {
        pb::referral_service_server::ReferralServiceServer::new(Self { exchange })
    }
}

/// The referral as sent, with the deadlines the use case found overdue.
pub(crate) fn to_proto(view: &ReferralView) -> pb::Referral {
    let r = &view.referral;
    pb::Referral {
        name: r.name(),
        kind: enums::to_proto(r.kind),
        subject: r
            .subject
            .as_ref()
            .filter(|_| view.identity_code_shown)
            .map(|subject| pb::Subject {
                personal_identity_code: subject.personal_identity_code.as_str().to_owned(),
                name: subject.name.clone().unwrap_or_default(),
                contact_phone: subject.contact_phone.clone().unwrap_or_default(),
                preferred_language: subject.preferred_language.clone().unwrap_or_default(),
            }),
        home_municipality_code: r.home_municipality_code.clone(),
        current_municipality_code: r.current_municipality_code.clone().unwrap_or_default(),
        recipient: r.recipient.resource_name(),
        reasons: r
            .reasons
            .iter()
            .map(|reason| enums::to_proto(*reason))
            .collect(),
        reason_text: r.reason_text.clone(),
        urgent: r.urgent,
        deadline_group: enums::to_proto(r.deadline_group),
        basis: Some(match r.basis {
            Basis::Consent(id) => pb::referral::Basis::Consent(format!("consents/{id}")),
            Basis::Statutory(ground) => {
                pb::referral::Basis::StatutoryGround(enums::to_proto(ground))
            }
        }),
        personal_discussion_requested: r.personal_discussion_requested,
        application_reference: r.application_reference.clone().unwrap_or_default(),
        state: enums::to_proto(r.state),
        state_reason: r.state_reason.clone(),
        outcome: r.outcome.map_or(0, enums::to_proto),
        rejection_reason: r.rejection_reason.map_or(0, enums::to_proto),
        rejection_text: r.rejection_text.clone().unwrap_or_default(),
        cancellation_text: r.cancellation_text.clone().unwrap_or_default(),
        history: r.history.iter().map(state_change_to_proto).collect(),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        receive_time: opt_timestamp(r.receive_time),
        assessment_due_date: iso_date(r.assessment_due_date),
        etag: r.etag(),
        completion_due_date: iso_date(r.completion_due_date),
        receive_due_date: iso_date(r.receive_due_date),
        overdue: view
            .overdue
            .iter()
            .map(|(kind, due)| deadline_to_proto(*kind, *due))
            .collect(),
        content_erase_time: opt_timestamp(r.content_erase_time),
    }
}

fn iso_date(d: Option<NaiveDate>) -> String {
    d.map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

pub(crate) fn deadline_to_proto(kind: DeadlineKind, due: NaiveDate) -> pb::Deadline {
    pb::Deadline {
        kind: enums::to_proto(kind),
        due_date: iso_date(Some(due)),
    }
}

pub(crate) fn state_change_to_proto(c: &StateChange) -> pb::StateChange {
    pb::StateChange {
        state: enums::to_proto(c.state),
        time: Some(timestamp(c.time)),
        organization: c.organization.resource_name(),
        reason: c.reason.clone(),
        recipient: c
            .recipient
            .as_ref()
            .map(OrganizationId::resource_name)
            .unwrap_or_default(),
    }
}

/// What Kela sent, as a domain request; every broken field rule at once.
fn new_referral(referral: Option<pb::Referral>) -> Result<NewReferral> {
    let Some(r) = referral else {
        return Err(Error::invalid(vec![Violation::required("referral")]));
    };
    let mut v = Vec::new();
    let kind = enums::required::<Kind>(r.kind, "referral.kind", &mut v);
    let code = match &r.subject {
        Some(s) if !s.personal_identity_code.is_empty() => identity_code(
            &s.personal_identity_code,
            "referral.subject.personal_identity_code",
            &mut v,
        ),
        _ => {
            v.push(Violation::required(
                "referral.subject.personal_identity_code",
            ));
            None
        }
    };
    if r.home_municipality_code.is_empty() {
        v.push(Violation::required("referral.home_municipality_code"));
    }
    let reasons: Vec<Option<Reason>> = r
        .reasons
        .iter()
        .enumerate()
        .map(|(i, &reason)| {
            enums::required::<Reason>(reason, &format!("referral.reasons[{i}]"), &mut v)
        })
        .collect();
    let deadline_group =
        enums::required::<DeadlineGroup>(r.deadline_group, "referral.deadline_group", &mut v);
    let basis = match &r.basis {
        Some(pb::referral::Basis::Consent(name)) => {
            resource_id(name, "consents", "referral.consent", &mut v).map(Basis::Consent)
        }
        Some(pb::referral::Basis::StatutoryGround(ground)) => {
            enums::required::<StatutoryGround>(*ground, "referral.statutory_ground", &mut v)
                .map(Basis::Statutory)
        }
        None => {
            v.push(Violation::new(
                "referral.consent",
                "required",
                "set exactly one of consent or statutory_ground",
            ));
            None
        }
    };
    check(v)?;
    let (Some(kind), Some(code), Some(deadline_group), Some(basis)) =
        (kind, code, deadline_group, basis)
    else {
        return Err(Error::internal("a checked referral field is missing"));
    };
    let subject = r.subject.unwrap_or_default();
    Ok(NewReferral {
        kind,
        subject: Subject {
            personal_identity_code: code,
            name: none_if_empty(subject.name),
            contact_phone: none_if_empty(subject.contact_phone),
            preferred_language: none_if_empty(subject.preferred_language),
        },
        home_municipality_code: r.home_municipality_code,
        current_municipality_code: none_if_empty(r.current_municipality_code),
        reasons: reasons.into_iter().flatten().collect(),
        reason_text: r.reason_text,
        urgent: r.urgent,
        deadline_group,
        basis,
        personal_discussion_requested: r.personal_discussion_requested,
        application_reference: none_if_empty(r.application_reference),
    })
}

/// The parts every change request has.
fn change(
    method: &str,
    name: &str,
    etag: &str,
    request_id: &str,
    request: &impl prost::Message,
    action: impl FnOnce(&mut Vec<Violation>) -> Option<Action>,
) -> Result<ChangeRequest> {
    let mut v = Vec::new();
    let id = resource_id(name, "referrals", "name", &mut v);
    let action = action(&mut v);
    check(v)?;
    let key = request_key(method, request_id, request, false)?;
    match (id, action) {
        (Some(referral_id), Some(action)) => Ok(ChangeRequest {
            referral_id,
            action,
            etag: none_if_empty(etag.to_owned()),
            key,
        }),
        _ => Err(Error::internal("a checked change field is missing")),
    }
}

impl ReferralApi {
    /// Runs a change method: `fields` picks the name, etag and request id every change request has;
    /// `action` turns the rest into an [`Action`], reporting broken rules.
    async fn change<R, F>(
        &self,
        request: Request<R>,
        method: &'static str,
        fields: fn(&R) -> (&str, &str, &str),
        action: F,
    ) -> std::result::Result<Response<pb::Referral>, Status>
    where
        R: prost::Message + serde::Serialize + Send + 'static,
        F: FnOnce(&R, &Exchange, &mut Vec<Violation>) -> Option<Action> + Send,
    {
        handle(
            &self.exchange,
            request,
            method,
            |exchange, call, req| async move {
                let (name, etag, request_id) = fields(&req);
                let change_request = change(method, name, etag, request_id, &req, |v| {
                    action(&req, &exchange, v)
                })?;
                exchange
                    .change_referral(&call, change_request)
                    .await
                    .map(|r| to_proto(&r))
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl pb::referral_service_server::ReferralService for ReferralApi {
    async fn create_referral(
        &self,
        request: Request<pb::CreateReferralRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        const METHOD: &str = method!("ReferralService", "CreateReferral");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let key = request_key(METHOD, &req.request_id, &req, true);
                let new = new_referral(req.referral)?;
                exchange
                    .create_referral(&call, new, key?)
                    .await
                    .map(|r| to_proto(&r))
            },
        )
        .await
    }

    async fn get_referral(
        &self,
        request: Request<pb::GetReferralRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        handle(
            &self.exchange,
            request,
            method!("ReferralService", "GetReferral"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let id = resource_id(&req.name, "referrals", "name", &mut v);
                check(v)?;
                let id = id.ok_or_else(|| Error::internal("checked name missing"))?;
                exchange.get_referral(&call, id).await.map(|r| to_proto(&r))
            },
        )
        .await
    }

    async fn list_referrals(
        &self,
        request: Request<pb::ListReferralsRequest>,
    ) -> std::result::Result<Response<pb::ListReferralsResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("ReferralService", "ListReferrals"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let paging: Paging<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> = Paging::of(
                    &pb::ListReferralsRequest {
                        page_size: 0,
                        page_token: String::new(),
                        ..req.clone()
                    },
                    req.page_size,
                    &req.page_token,
                )?;
                let query = ReferralQuery {
                    state: enums::optional::<State>(req.state, "state", &mut v),
                    kind: enums::optional::<Kind>(req.kind, "kind", &mut v),
                    recipient: optional_organization(&req.recipient, "recipient", &mut v),
                    subject: optional_identity_code(
                        &req.personal_identity_code,
                        "personal_identity_code",
                        &mut v,
                    ),
                    create_time_start: from_timestamp(
                        req.create_time_start.as_ref(),
                        "create_time_start",
                        &mut v,
                    ),
                    overdue: req.overdue,
                    create_time_end: from_timestamp(
                        req.create_time_end.as_ref(),
                        "create_time_end",
                        &mut v,
                    ),
                    after: paging.after,
                    page_size: paging.size,
                };
                check(v)?;
                let page = exchange.list_referrals(&call, query).await?;
                let next_page_token =
                    paging.next_token(&page, |v| (v.referral.create_time, v.referral.id));
                Ok(pb::ListReferralsResponse {
                    referrals: page.items.iter().map(to_proto).collect(),
                    next_page_token,
                })
            },
        )
        .await
    }

    async fn cancel_referral(
        &self,
        request: Request<pb::CancelReferralRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        let method = method!("ReferralService", "CancelReferral");
        self.change(
            request,
            method,
            |r| (&r.name, &r.etag, &r.request_id),
            |req, _, v| {
                check_length(v, "reason_text", &req.reason_text, MAX_REASON_TEXT_CHARS);
                Some(Action::Cancel {
                    text: none_if_empty(req.reason_text.clone()),
                })
            },
        )
        .await
    }

    async fn accept_referral(
        &self,
        request: Request<pb::AcceptReferralRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        let method = method!("ReferralService", "AcceptReferral");
        self.change(
            request,
            method,
            |r| (&r.name, &r.etag, &r.request_id),
            |_, _, _| Some(Action::Accept),
        )
        .await
    }

    async fn start_assessment(
        &self,
        request: Request<pb::StartAssessmentRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        let method = method!("ReferralService", "StartAssessment");
        self.change(
            request,
            method,
            |r| (&r.name, &r.etag, &r.request_id),
            |_, _, _| Some(Action::StartAssessment),
        )
        .await
    }

    async fn complete_referral(
        &self,
        request: Request<pb::CompleteReferralRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        let method = method!("ReferralService", "CompleteReferral");
        self.change(
            request,
            method,
            |r| (&r.name, &r.etag, &r.request_id),
            |req, _, v| enums::required::<Outcome>(req.outcome, "outcome", v).map(Action::Complete),
        )
        .await
    }

    async fn reject_referral(
        &self,
        request: Request<pb::RejectReferralRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        let method = method!("ReferralService", "RejectReferral");
        self.change(
            request,
            method,
            |r| (&r.name, &r.etag, &r.request_id),
            |req, _, v| {
                check_length(v, "reason_text", &req.reason_text, MAX_REASON_TEXT_CHARS);
                enums::required::<RejectionReason>(req.reason, "reason", v).map(|reason| {
                    Action::Reject {
                        reason,
                        text: none_if_empty(req.reason_text.clone()),
                    }
                })
            },
        )
        .await
    }

    async fn forward_referral(
        &self,
        request: Request<pb::ForwardReferralRequest>,
    ) -> std::result::Result<Response<pb::Referral>, Status> {
        let method = method!("ReferralService", "ForwardReferral");
        self.change(
            request,
            method,
            |r| (&r.name, &r.etag, &r.request_id),
            |req, exchange, v| {
                if req.home_municipality_code.is_empty() {
                    v.push(Violation::required("home_municipality_code"));
                    return None;
                }
                match exchange.forward_target(&req.home_municipality_code) {
                    Ok(to) => Some(Action::Forward { to }),
                    Err(Error::InvalidArgument { violations, .. }) => {
                        v.extend(violations);
                        None
                    }
                    Err(_) => None,
                }
            },
        )
        .await
    }
}

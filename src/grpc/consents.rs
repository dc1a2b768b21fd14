//! `ConsentService`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    Paging, check, enums, from_timestamp, handle, identity_code, method, opt_timestamp,
    optional_identity_code, optional_organization, request_key, resource_id, timestamp,
};
use crate::{
    domain::{
        OrganizationId, Violation,
        consent::{Consent, ConsentState, Form, GivenBy, NewConsent, Purpose},
        organization::organization_name_violation,
    },
    error::{Error, Result},
    exchange::{
        Exchange,
        consents::{ConsentEventQuery, ConsentQuery},
    },
    proto::v1 as pb,
    store::StoredConsentEvent,
};

pub struct ConsentApi {
    exchange: Arc<Exchange>,
}

impl ConsentApi {
    /// The service itself, without the gRPC server around it: what the HTTP edge calls.
    pub fn handler(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }

    pub fn new(exchange: Arc<Exchange>) -> pb::consent_service_server::ConsentServiceServer<Self> {
        pb::consent_service_server::ConsentServiceServer::new(Self { exchange })
    }
}

/// Whether the caller reads the person's identity code and the consent's evidence reference
/// (`Referral::reads_content`): auditors get the coded skeleton.
fn reads_content(call: &crate::access::Call) -> bool {
    call.caller()
        .is_ok_and(|c| crate::domain::referral::Referral::reads_content(c.role()))
}

/// `consent`, without the person and the evidence reference unless `shown`.
fn skeleton_unless(shown: bool, mut consent: pb::Consent) -> pb::Consent {
    if !shown {
        consent.subject = None;
        consent.evidence_reference = String::new();
    }
    consent
}

pub(crate) fn to_proto(c: &Consent) -> pb::Consent {
    pb::Consent {
        name: c.name(),
        subject: c.subject.as_ref().map(|code| pb::Subject {
            personal_identity_code: code.as_str().to_owned(),
            ..Default::default()
        }),
        purpose: enums::to_proto(c.purpose),
        recipients: c
            .recipients
            .iter()
            .map(OrganizationId::resource_name)
            .collect(),
        form: enums::to_proto(c.form),
        given_by: enums::to_proto(c.given_by),
        valid_from: Some(timestamp(c.valid_from)),
        expire_time: opt_timestamp(c.expire_time),
        state: enums::to_proto(c.state),
        evidence_reference: c.evidence_reference.clone(),
        create_time: Some(timestamp(c.create_time)),
        update_time: Some(timestamp(c.update_time)),
        withdraw_time: opt_timestamp(c.withdraw_time),
        content_erase_time: opt_timestamp(c.content_erase_time),
        used_by: c
            .used_by
            .map(|id| format!("referrals/{id}"))
            .unwrap_or_default(),
        etag: c.etag(),
    }
}

pub(crate) fn event_to_proto(e: &StoredConsentEvent) -> pb::ConsentEvent {
    let e = &e.event;
    pb::ConsentEvent {
        consent: format!("consents/{}", e.consent_id),
        r#type: enums::to_proto(e.event_type),
        time: Some(timestamp(e.time)),
        organization: e
            .organization
            .as_ref()
            .map(OrganizationId::resource_name)
            .unwrap_or_default(),
        user_id: e.user_id.clone(),
        referral: e
            .referral_id
            .map(|id| format!("referrals/{id}"))
            .unwrap_or_default(),
        consent_state: enums::to_proto(e.consent_state),
    }
}

fn new_consent(consent: Option<pb::Consent>) -> Result<NewConsent> {
    let Some(c) = consent else {
        return Err(Error::invalid(vec![Violation::required("consent")]));
    };
    let mut v = Vec::new();
    let subject = match &c.subject {
        Some(s) if !s.personal_identity_code.is_empty() => identity_code(
            &s.personal_identity_code,
            "consent.subject.personal_identity_code",
            &mut v,
        ),
        _ => {
            v.push(Violation::required(
                "consent.subject.personal_identity_code",
            ));
            None
        }
    };
    let purpose = enums::required::<Purpose>(c.purpose, "consent.purpose", &mut v);
    let form = enums::required::<Form>(c.form, "consent.form", &mut v);
    let given_by = enums::required::<GivenBy>(c.given_by, "consent.given_by", &mut v);
    let mut recipients = Vec::new();
    for (i, name) in c.recipients.iter().enumerate() {
        match OrganizationId::from_resource_name(name) {
            Ok(org) => recipients.push(org),
            Err(_) => v.push(organization_name_violation(
                format!("consent.recipients[{i}]"),
                name,
            )),
        }
    }
    let valid_from = from_timestamp(c.valid_from.as_ref(), "consent.valid_from", &mut v);
    let expire_time = from_timestamp(c.expire_time.as_ref(), "consent.expire_time", &mut v);
    check(v)?;
    let (Some(subject), Some(purpose), Some(form), Some(given_by)) =
        (subject, purpose, form, given_by)
    else {
        return Err(Error::internal("a checked consent field is missing"));
    };
    Ok(NewConsent {
        subject,
        purpose,
        recipients,
        form,
        given_by,
        valid_from,
        expire_time,
        evidence_reference: c.evidence_reference,
    })
}

fn consent_id(name: &str) -> Result<Uuid> {
    let mut v = Vec::new();
    let id = resource_id(name, "consents", "name", &mut v);
    check(v)?;
    id.ok_or_else(|| Error::internal("checked name missing"))
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentApi {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> std::result::Result<Response<pb::Consent>, Status> {
        const METHOD: &str = method!("ConsentService", "RecordConsent");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let key = request_key(METHOD, &req.request_id, &req, true);
                let new = new_consent(req.consent)?;
                exchange
                    .record_consent(&call, new, key?)
                    .await
                    .map(|c| to_proto(&c))
            },
        )
        .await
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> std::result::Result<Response<pb::Consent>, Status> {
        handle(
            &self.exchange,
            request,
            method!("ConsentService", "GetConsent"),
            |exchange, call, req| async move {
                let id = consent_id(&req.name)?;
                let shown = reads_content(&call);
                exchange
                    .get_consent(&call, id)
                    .await
                    .map(|c| skeleton_unless(shown, to_proto(&c)))
            },
        )
        .await
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> std::result::Result<Response<pb::ListConsentsResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("ConsentService", "ListConsents"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let paging: Paging<(DateTime<Utc>, Uuid)> = Paging::of(
                    &pb::ListConsentsRequest {
                        page_size: 0,
                        page_token: String::new(),
                        ..req.clone()
                    },
                    req.page_size,
                    &req.page_token,
                )?;
                let query = ConsentQuery {
                    subject: optional_identity_code(
                        &req.personal_identity_code,
                        "personal_identity_code",
                        &mut v,
                    ),
                    state: enums::optional::<ConsentState>(req.state, "state", &mut v),
                    after: paging.after,
                    page_size: paging.size,
                };
                check(v)?;
                let page = exchange.list_consents(&call, query).await?;
                let next_page_token = paging.next_token(&page, |c| (c.create_time, c.id));
                Ok(pb::ListConsentsResponse {
                    consents: page
                        .items
                        .iter()
                        .map(|c| skeleton_unless(reads_content(&call), to_proto(c)))
                        .collect(),
                    next_page_token,
                })
            },
        )
        .await
    }

    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> std::result::Result<Response<pb::Consent>, Status> {
        const METHOD: &str = method!("ConsentService", "WithdrawConsent");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let id = consent_id(&req.name)?;
                let key = request_key(METHOD, &req.request_id, &req, false)?;
                let etag = (!req.etag.is_empty()).then(|| req.etag.clone());
                exchange
                    .withdraw_consent(&call, id, etag, key)
                    .await
                    .map(|c| to_proto(&c))
            },
        )
        .await
    }

    async fn list_consent_events(
        &self,
        request: Request<pb::ListConsentEventsRequest>,
    ) -> std::result::Result<Response<pb::ListConsentEventsResponse>, Status> {
        const METHOD: &str = method!("ConsentService", "ListConsentEvents");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let paging: Paging<i64> = Paging::of(
                    &pb::ListConsentEventsRequest {
                        page_size: 0,
                        page_token: String::new(),
                        ..req.clone()
                    },
                    req.page_size,
                    &req.page_token,
                )?;
                let consent_id = if req.consent.is_empty() {
                    None
                } else {
                    resource_id(&req.consent, "consents", "consent", &mut v)
                };
                let organization = optional_organization(&req.organization, "organization", &mut v);
                let query = ConsentEventQuery {
                    subject: optional_identity_code(
                        &req.personal_identity_code,
                        "personal_identity_code",
                        &mut v,
                    ),
                    consent_id,
                    organization,
                    start_time: from_timestamp(req.start_time.as_ref(), "start_time", &mut v),
                    end_time: from_timestamp(req.end_time.as_ref(), "end_time", &mut v),
                    after_id: paging.after,
                    page_size: paging.size,
                };
                check(v)?;
                let page = exchange.list_consent_events(&call, query).await?;
                let next_page_token = paging.next_token(&page, |e| e.id);
                Ok(pb::ListConsentEventsResponse {
                    consent_events: page.items.iter().map(event_to_proto).collect(),
                    next_page_token,
                })
            },
        )
        .await
    }
}

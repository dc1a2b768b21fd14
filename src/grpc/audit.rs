//! `AuditService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Paging, check, from_timestamp, handle, method, optional_identity_code, timestamp};
use crate::{
    audit::{AuditQuery, StoredAuditEvent},
    domain::{OrganizationId, Violation},
    exchange::Exchange,
    proto::v1 as pb,
};

pub struct AuditApi {
    exchange: Arc<Exchange>,
}

impl AuditApi {
    pub fn new(exchange: Arc<Exchange>) -> pb::audit_service_server::AuditServiceServer<Self> {
        pb::audit_service_server::AuditServiceServer::new(Self { exchange })
    }
}

fn to_proto(e: &StoredAuditEvent) -> pb::AuditEvent {
    let r = &e.record;
    pb::AuditEvent {
        sequence: e.sequence,
        time: Some(timestamp(r.time)),
        organization: if r.organization.is_empty() {
            String::new()
        } else {
            format!("organizations/{}", r.organization)
        },
        user_id: r.user_id.clone(),
        method: r.method.clone(),
        resources: r.resources.clone(),
        subject_pseudonym: r.subject_pseudonyms.first().cloned().unwrap_or_default(),
        status_code: r.status_code,
        status: status_name(r.status_code),
        correlation_id: r.correlation_id.clone(),
        subject_pseudonyms: r.subject_pseudonyms.clone(),
        disclosures: r
            .disclosures
            .iter()
            .map(|d| pb::Disclosure {
                recipient: d.recipient.clone(),
                resource: d.resource.clone(),
                subject_pseudonym: d.subject_pseudonym.clone(),
                basis: d.basis.clone(),
                consent_state: d.consent_state.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// The canonical name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, …).
fn status_name(code: i32) -> String {
    let name = format!("{:?}", tonic::Code::from_i32(code));
    // `InvalidArgument` -> `INVALID_ARGUMENT`
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Method filters are method names or full paths: letters, digits, `.`, `/` and `_`.
fn method_filter(value: &str, v: &mut Vec<Violation>) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_'))
    {
        v.push(Violation::new(
            "method",
            "method_name",
            "a method name such as GetReferral, or its full path",
        ));
        return None;
    }
    Some(value.to_owned())
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> std::result::Result<Response<pb::ListAuditEventsResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("AuditService", "ListAuditEvents"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let paging: Paging<i64> = Paging::of(
                    &pb::ListAuditEventsRequest {
                        page_size: 0,
                        page_token: String::new(),
                        ..req.clone()
                    },
                    req.page_size,
                    &req.page_token,
                )?;
                let subject = optional_identity_code(
                    &req.personal_identity_code,
                    "personal_identity_code",
                    &mut v,
                );
                let organization = if req.organization.is_empty() {
                    None
                } else {
                    // Accept `organizations/kela` or `kela`; stored as the bare id.
                    let id = req
                        .organization
                        .strip_prefix("organizations/")
                        .unwrap_or(&req.organization);
                    let org = OrganizationId::parse(id).ok().map(|o| o.to_string());
                    if org.is_none() {
                        v.push(Violation::new(
                            "organization",
                            "organization",
                            "must be organizations/{id}",
                        ));
                    }
                    org
                };
                let query = AuditQuery {
                    subject_pseudonym: None,
                    organization,
                    user_id: (!req.user_id.is_empty()).then(|| req.user_id.clone()),
                    method: method_filter(&req.method, &mut v),
                    resource: (!req.resource.is_empty()).then(|| req.resource.clone()),
                    start_time: from_timestamp(req.start_time.as_ref(), "start_time", &mut v),
                    end_time: from_timestamp(req.end_time.as_ref(), "end_time", &mut v),
                    after_sequence: paging.after,
                    limit: paging.size,
                };
                check(v)?;
                let page = exchange.list_audit_events(&call, subject, query).await?;
                let next_page_token = paging.next_token(&page, |e| e.sequence);
                Ok(pb::ListAuditEventsResponse {
                    audit_events: page.items.iter().map(to_proto).collect(),
                    next_page_token,
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_names_are_the_canonical_ones() {
        assert_eq!(super::status_name(0), "OK");
        assert_eq!(super::status_name(3), "INVALID_ARGUMENT");
        assert_eq!(super::status_name(9), "FAILED_PRECONDITION");
        assert_eq!(super::status_name(16), "UNAUTHENTICATED");
    }
}

//! `AuditService`.

use std::sync::Arc;

use std::pin::Pin;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    Paging, check, from_timestamp, handle, identity_code, method, optional_identity_code, timestamp,
};
use crate::{
    audit::{AuditQuery, AuditRecord, StoredAuditEvent},
    domain::{OrganizationId, Violation},
    exchange::{
        Exchange,
        audit_log::{ExportLeaf, SubjectAccessReport},
    },
    proto::v1 as pb,
};

pub struct AuditApi {
    exchange: Arc<Exchange>,
}

impl AuditApi {
    /// The service itself, without the gRPC server around it: what the HTTP edge calls.
    pub fn handler(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }

    pub fn new(exchange: Arc<Exchange>) -> pb::audit_service_server::AuditServiceServer<Self> {
        pb::audit_service_server::AuditServiceServer::new(Self { exchange })
    }
}

fn to_proto(e: &StoredAuditEvent) -> pb::AuditEvent {
    record_to_proto(e.sequence, &e.record, e.leaf_index)
}

fn organization_name(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!("organizations/{id}")
    }
}

/// An audit event as the API shows it (without leaf data).
pub(crate) fn record_to_proto(
    sequence: i64,
    r: &AuditRecord,
    leaf_index: Option<i64>,
) -> pb::AuditEvent {
    pb::AuditEvent {
        sequence,
        time: Some(timestamp(r.time)),
        organization: organization_name(&r.organization),
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
                consent_version: d.consent_version.unwrap_or_default(),
            })
            .collect(),
        leaf_index,
        leaf_data: Vec::new(),
        leaf_hash: Vec::new(),
    }
}

/// An exported leaf: its event as stored now (or only its position when the row is gone), the
/// exact leaf data and the stored leaf hash.
fn export_to_proto(leaf: ExportLeaf) -> pb::AuditEvent {
    let mut event = match &leaf.event {
        Some(record) => record_to_proto(leaf.event_sequence, record, Some(leaf.leaf_index)),
        None => pb::AuditEvent {
            sequence: leaf.event_sequence,
            leaf_index: Some(leaf.leaf_index),
            ..Default::default()
        },
    };
    event.leaf_data = leaf.leaf_data;
    event.leaf_hash = leaf.leaf_hash;
    event
}

fn report_to_proto(report: &SubjectAccessReport) -> pb::GetSubjectAccessReportResponse {
    pb::GetSubjectAccessReportResponse {
        processing: report
            .processing
            .iter()
            .map(|e| pb::ProcessingEntry {
                time: Some(timestamp(e.record.time)),
                organization: organization_name(&e.record.organization),
                user_id: e.record.user_id.clone(),
                method: e.record.method.clone(),
                resources: e.record.resources.clone(),
                status: status_name(e.record.status_code),
                correlation_id: e.record.correlation_id.clone(),
                sequence: e.sequence,
                leaf_index: e.leaf_index,
            })
            .collect(),
        disclosures: report
            .disclosures()
            .map(|(e, d)| pb::DisclosureEntry {
                time: Some(timestamp(e.record.time)),
                recipient: d.recipient.clone(),
                resource: d.resource.clone(),
                basis: d.basis.clone(),
                consent_state: d.consent_state.clone().unwrap_or_default(),
                consent_version: d.consent_version.unwrap_or_default(),
                organization: organization_name(&e.record.organization),
                user_id: e.record.user_id.clone(),
                method: e.record.method.clone(),
                sequence: e.sequence,
                leaf_index: e.leaf_index,
            })
            .collect(),
        consent_events: report
            .consent_events
            .iter()
            .map(super::consents::event_to_proto)
            .collect(),
        start_time: Some(timestamp(report.start_time)),
        end_time: Some(timestamp(report.end_time)),
        subject_pseudonym: report.subject_pseudonym.clone(),
    }
}

fn non_negative(value: i64, field: &str, v: &mut Vec<Violation>) {
    if value < 0 {
        v.push(Violation::new(
            field,
            "non_negative",
            "must not be negative",
        ));
    }
}

/// 0 means "the latest checkpoint's".
fn optional_size(value: i64) -> Option<i64> {
    (value != 0).then_some(value)
}

/// The stream of an export.
pub type ExportStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::AuditEvent, Status>> + Send + 'static>>;

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
                        v.push(crate::domain::organization::organization_name_violation(
                            "organization",
                            &format!("organizations/{id}"),
                        ));
                    }
                    org
                };
                let query = AuditQuery {
                    subject_pseudonyms: Vec::new(),
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

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> std::result::Result<Response<pb::GetCheckpointResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("AuditService", "GetCheckpoint"),
            |exchange, call, _req| async move {
                let signed = exchange.get_checkpoint(&call).await?;
                Ok(pb::GetCheckpointResponse {
                    checkpoint: signed.checkpoint.note,
                    tree_size: signed.checkpoint.tree_size,
                    root_hash: signed.checkpoint.root_hash.to_vec(),
                    verifier_key: signed.verifier_key,
                    origin: signed.origin,
                    time: Some(timestamp(signed.checkpoint.time)),
                })
            },
        )
        .await
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> std::result::Result<Response<pb::GetInclusionProofResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("AuditService", "GetInclusionProof"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                non_negative(req.leaf_index, "leaf_index", &mut v);
                non_negative(req.tree_size, "tree_size", &mut v);
                check(v)?;
                let proof = exchange
                    .inclusion_proof(&call, req.leaf_index, optional_size(req.tree_size))
                    .await?;
                Ok(pb::GetInclusionProofResponse {
                    leaf_index: proof.leaf_index,
                    tree_size: proof.tree_size,
                    hashes: proof.hashes.iter().map(|h| h.to_vec()).collect(),
                })
            },
        )
        .await
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> std::result::Result<Response<pb::GetConsistencyProofResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("AuditService", "GetConsistencyProof"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                if req.first_tree_size < 1 {
                    v.push(Violation::new(
                        "first_tree_size",
                        "positive",
                        "must be at least 1: every tree is consistent with the empty one",
                    ));
                }
                non_negative(req.second_tree_size, "second_tree_size", &mut v);
                check(v)?;
                let proof = exchange
                    .consistency_proof(
                        &call,
                        req.first_tree_size,
                        optional_size(req.second_tree_size),
                    )
                    .await?;
                Ok(pb::GetConsistencyProofResponse {
                    hashes: proof.hashes.iter().map(|h| h.to_vec()).collect(),
                    first_tree_size: proof.first_tree_size,
                    second_tree_size: proof.tree_size,
                })
            },
        )
        .await
    }

    type ExportAuditEventsStream = ExportStream;

    async fn export_audit_events(
        &self,
        request: Request<pb::ExportAuditEventsRequest>,
    ) -> std::result::Result<Response<Self::ExportAuditEventsStream>, Status> {
        let range = handle(
            &self.exchange,
            request,
            method!("AuditService", "ExportAuditEvents"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                non_negative(req.start_index, "start_index", &mut v);
                non_negative(req.end_index, "end_index", &mut v);
                check(v)?;
                exchange
                    .begin_export(&call, req.start_index, optional_size(req.end_index))
                    .await
            },
        )
        .await?;
        let (start, end) = range.into_inner();
        let exchange = self.exchange.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        // The export was authorised and recorded above; the leaves follow page by page, each page
        // read in a short transaction of its own, at the pace the client reads them.
        tokio::spawn(async move {
            let mut at = start;
            while at < end {
                match exchange.export_page(at, end).await {
                    Ok(page) => {
                        for leaf in page {
                            if sender.send(Ok(export_to_proto(leaf))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = sender.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                at = at.saturating_add(exchange.export_page_size());
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_subject_access_report(
        &self,
        request: Request<pb::GetSubjectAccessReportRequest>,
    ) -> std::result::Result<Response<pb::GetSubjectAccessReportResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("AuditService", "GetSubjectAccessReport"),
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let subject = if req.personal_identity_code.is_empty() {
                    v.push(Violation::required("personal_identity_code"));
                    None
                } else {
                    identity_code(
                        &req.personal_identity_code,
                        "personal_identity_code",
                        &mut v,
                    )
                };
                let start = from_timestamp(req.start_time.as_ref(), "start_time", &mut v);
                let end = from_timestamp(req.end_time.as_ref(), "end_time", &mut v);
                check(v)?;
                let Some(subject) = subject else {
                    return Err(crate::error::Error::internal("a checked field is missing"));
                };
                let report = exchange
                    .subject_access_report(&call, &subject, start, end)
                    .await?;
                Ok(report_to_proto(&report))
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

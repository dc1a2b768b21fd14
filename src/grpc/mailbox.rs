//! `MailboxService`.

use std::sync::Arc;

use chrono::Duration;
use tonic::{Request, Response, Status};

use super::{check, from_duration, handle, method, opt_timestamp, proto_enum, timestamp};
use crate::{
    domain::Violation,
    error::Result,
    exchange::Exchange,
    mailbox::{AckOutcome, AckResult, Delivery, LeaseLimits},
    proto::v1 as pb,
};

pub struct MailboxApi {
    exchange: Arc<Exchange>,
}

impl MailboxApi {
    pub fn new(exchange: Arc<Exchange>) -> pb::mailbox_service_server::MailboxServiceServer<Self> {
        pb::mailbox_service_server::MailboxServiceServer::new(Self { exchange })
    }
}

pub(crate) const DEFAULT_MAX_MESSAGES: i64 = 10;
pub(crate) const DEFAULT_LEASE_SECONDS: i64 = 60;
pub(crate) const MAX_ACK_IDS: usize = 1000;

fn to_proto(delivery: &Delivery) -> pb::Message {
    let m = &delivery.message;
    pb::Message {
        message_id: m.id.to_string(),
        ack_id: m.ack_id(),
        r#type: proto_enum!(pb::message::Type, m.message_type),
        referral: delivery.referral.as_ref().map(super::referrals::to_proto),
        sequence: m.sequence,
        delivery_attempt: m.delivery_attempt,
        publish_time: Some(timestamp(m.publish_time)),
        state_change: m
            .state_change
            .as_ref()
            .map(super::referrals::state_change_to_proto),
        consent: m
            .consent_id
            .map(|id| format!("consents/{id}"))
            .unwrap_or_default(),
        lease_expire_time: opt_timestamp(m.lease_expire_time),
    }
}

fn results_to_proto(results: Vec<AckResult>) -> Vec<pb::AckResult> {
    results
        .into_iter()
        .map(|r| {
            let reason = match r.outcome {
                AckOutcome::Applied => pb::ack_result::Reason::Unspecified,
                AckOutcome::LeaseExpired => pb::ack_result::Reason::LeaseExpired,
                AckOutcome::UnknownAckId => pb::ack_result::Reason::UnknownAckId,
                AckOutcome::LeaseSuperseded => pb::ack_result::Reason::LeaseSuperseded,
                AckOutcome::AlreadyAcknowledged => pb::ack_result::Reason::AlreadyAcknowledged,
            };
            pb::AckResult {
                ack_id: r.ack_id,
                applied: r.outcome == AckOutcome::Applied,
                reason: reason as i32,
            }
        })
        .collect()
}

fn in_range(
    d: Duration,
    min: Duration,
    max: Duration,
    field: &str,
    v: &mut Vec<Violation>,
) -> Duration {
    if d < min || d > max {
        v.push(Violation::new(
            field,
            "range",
            format!(
                "must be between {} s and {} s",
                min.num_seconds(),
                max.num_seconds()
            ),
        ));
    }
    d
}

fn check_ack_ids(ack_ids: &[String], v: &mut Vec<Violation>) {
    if ack_ids.is_empty() {
        v.push(Violation::required("ack_ids"));
    } else if ack_ids.len() > MAX_ACK_IDS {
        v.push(Violation::new(
            "ack_ids",
            "max_items",
            format!("at most {MAX_ACK_IDS} per request"),
        ));
    }
}

#[tonic::async_trait]
impl pb::mailbox_service_server::MailboxService for MailboxApi {
    async fn pull_messages(
        &self,
        request: Request<pb::PullMessagesRequest>,
    ) -> std::result::Result<Response<pb::PullMessagesResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("MailboxService", "PullMessages"),
            |exchange, call, req| async move {
                let limits: LeaseLimits = exchange.leases;
                let mut v = Vec::new();
                let max = match i64::from(req.max_messages) {
                    0 => DEFAULT_MAX_MESSAGES,
                    n if (1..=limits.max_messages).contains(&n) => n,
                    _ => {
                        v.push(Violation::new(
                            "max_messages",
                            "range",
                            format!("must be between 1 and {}", limits.max_messages),
                        ));
                        0
                    }
                };
                let lease =
                    match from_duration(req.lease_duration.as_ref(), "lease_duration", &mut v) {
                        Some(d) => in_range(
                            d,
                            limits.min_lease,
                            limits.max_lease,
                            "lease_duration",
                            &mut v,
                        ),
                        None => Duration::seconds(DEFAULT_LEASE_SECONDS),
                    };
                let wait = match from_duration(req.wait_duration.as_ref(), "wait_duration", &mut v)
                {
                    Some(d) => in_range(
                        d,
                        Duration::zero(),
                        limits.max_wait,
                        "wait_duration",
                        &mut v,
                    ),
                    None => Duration::zero(),
                };
                check(v)?;
                let deliveries = exchange.pull_messages(&call, max, lease, wait).await?;
                Ok(pb::PullMessagesResponse {
                    messages: deliveries.iter().map(to_proto).collect(),
                })
            },
        )
        .await
    }

    async fn acknowledge_messages(
        &self,
        request: Request<pb::AcknowledgeMessagesRequest>,
    ) -> std::result::Result<Response<pb::AcknowledgeMessagesResponse>, Status> {
        const METHOD: &str = method!("MailboxService", "AcknowledgeMessages");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let mut v = Vec::new();
                check_ack_ids(&req.ack_ids, &mut v);
                check(v)?;
                let results = exchange.acknowledge_messages(&call, req.ack_ids).await?;
                Ok(pb::AcknowledgeMessagesResponse {
                    results: results_to_proto(results),
                })
            },
        )
        .await
    }

    async fn modify_leases(
        &self,
        request: Request<pb::ModifyLeasesRequest>,
    ) -> std::result::Result<Response<pb::ModifyLeasesResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("MailboxService", "ModifyLeases"),
            |exchange, call, req| async move {
                let limits = exchange.leases;
                let mut v = Vec::new();
                check_ack_ids(&req.ack_ids, &mut v);
                let lease =
                    match from_duration(req.lease_duration.as_ref(), "lease_duration", &mut v) {
                        Some(d) if d.is_zero() => d,
                        Some(d) => in_range(
                            d,
                            limits.min_lease,
                            limits.max_lease,
                            "lease_duration",
                            &mut v,
                        ),
                        None => {
                            if req.lease_duration.is_none() {
                                v.push(Violation::required("lease_duration"));
                            }
                            Duration::zero()
                        }
                    };
                check(v)?;
                let results: Result<_> = exchange.modify_leases(&call, req.ack_ids, lease).await;
                Ok(pb::ModifyLeasesResponse {
                    results: results_to_proto(results?),
                })
            },
        )
        .await
    }
}

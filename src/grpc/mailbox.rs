//! `MailboxService`.

use std::{pin::Pin, sync::Arc};

use chrono::Duration;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    Paging, check, enums, from_duration, handle, method, opt_timestamp, request_key, timestamp,
};
use crate::{
    domain::Violation,
    exchange::{Exchange, mailbox::Delivery},
    mailbox::{AckOutcome, AckResult, DeliveryPolicy},
    proto::v1 as pb,
};

pub struct MailboxApi {
    exchange: Arc<Exchange>,
}

impl MailboxApi {
    /// The service itself, without the gRPC server around it: what the HTTP edge calls.
    pub fn handler(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }

    pub fn new(exchange: Arc<Exchange>) -> pb::mailbox_service_server::MailboxServiceServer<Self> {
        pb::mailbox_service_server::MailboxServiceServer::new(Self { exchange })
    }
}

pub(crate) const DEFAULT_MAX_MESSAGES: i64 = 10;
pub(crate) const DEFAULT_LEASE_SECONDS: i64 = 60;
pub(crate) const MAX_ACK_IDS: usize = 1000;
pub(crate) const DEFAULT_MAX_OUTSTANDING: usize = 10;
pub(crate) const MAX_OUTSTANDING: usize = 1000;

pub(crate) fn to_proto(delivery: &Delivery) -> pb::Message {
    let m = &delivery.message;
    pb::Message {
        message_id: m.id.to_string(),
        ack_id: if delivery.leased {
            m.ack_id()
        } else {
            String::new()
        },
        r#type: enums::to_proto(m.message_type),
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
        lease_expire_time: if delivery.leased {
            opt_timestamp(m.lease_expire_time)
        } else {
            None
        },
        deadline: m
            .deadline
            .map(|(kind, due)| super::referrals::deadline_to_proto(kind, due)),
        dead_letter_reason: m.dead_letter_reason.clone().unwrap_or_default(),
        failed_message_id: m
            .failed
            .as_ref()
            .map(|(id, _)| id.to_string())
            .unwrap_or_default(),
        failed_mailbox: m
            .failed
            .as_ref()
            .map(|(_, mailbox)| format!("organizations/{mailbox}"))
            .unwrap_or_default(),
        acknowledge_time: opt_timestamp(m.ack_time),
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

/// A lease duration: absent means the default; otherwise within the policy's bounds.
fn lease(
    d: Option<&pbjson_types::Duration>,
    policy: &DeliveryPolicy,
    v: &mut Vec<Violation>,
) -> Duration {
    match from_duration(d, "lease_duration", v) {
        Some(d) => in_range(d, policy.min_lease, policy.max_lease, "lease_duration", v),
        None => Duration::seconds(DEFAULT_LEASE_SECONDS),
    }
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

type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::Message, Status>> + Send>>;

#[tonic::async_trait]
impl pb::mailbox_service_server::MailboxService for MailboxApi {
    async fn pull_messages(
        &self,
        request: Request<pb::PullMessagesRequest>,
    ) -> Result<Response<pb::PullMessagesResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("MailboxService", "PullMessages"),
            |exchange, call, req| async move {
                let policy = exchange.delivery;
                let mut v = Vec::new();
                let max = match i64::from(req.max_messages) {
                    0 => DEFAULT_MAX_MESSAGES,
                    n if (1..=policy.max_messages).contains(&n) => n,
                    _ => {
                        let rule = format!("must be between 1 and {}", policy.max_messages);
                        v.push(Violation::new("max_messages", "range", rule));
                        0
                    }
                };
                let lease = lease(req.lease_duration.as_ref(), &policy, &mut v);
                let wait = match from_duration(req.wait_duration.as_ref(), "wait_duration", &mut v)
                {
                    Some(d) => in_range(
                        d,
                        Duration::zero(),
                        policy.max_wait,
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
    ) -> Result<Response<pb::AcknowledgeMessagesResponse>, Status> {
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
    ) -> Result<Response<pb::ModifyLeasesResponse>, Status> {
        handle(
            &self.exchange,
            request,
            method!("MailboxService", "ModifyLeases"),
            |exchange, call, req| async move {
                let policy = exchange.delivery;
                let mut v = Vec::new();
                check_ack_ids(&req.ack_ids, &mut v);
                let lease =
                    match from_duration(req.lease_duration.as_ref(), "lease_duration", &mut v) {
                        Some(d) if d.is_zero() => d,
                        Some(d) => in_range(
                            d,
                            policy.min_lease,
                            policy.max_lease,
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
                let results = exchange.modify_leases(&call, req.ack_ids, lease).await?;
                Ok(pb::ModifyLeasesResponse {
                    results: results_to_proto(results),
                })
            },
        )
        .await
    }

    type StreamMessagesStream = MessageStream;

    async fn stream_messages(
        &self,
        request: Request<pb::StreamMessagesRequest>,
    ) -> Result<Response<Self::StreamMessagesStream>, Status> {
        const METHOD: &str = method!("MailboxService", "StreamMessages");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let policy = exchange.delivery;
                let mut v = Vec::new();
                let lease = lease(req.lease_duration.as_ref(), &policy, &mut v);
                let max_outstanding = match req.max_outstanding_messages {
                    0 => DEFAULT_MAX_OUTSTANDING,
                    n if n > 0 && (n as usize) <= MAX_OUTSTANDING => n as usize,
                    _ => {
                        let rule = format!("must be between 1 and {MAX_OUTSTANDING}");
                        v.push(Violation::new("max_outstanding_messages", "range", rule));
                        0
                    }
                };
                check(v)?;
                let deliveries = exchange
                    .stream_messages(call, lease, max_outstanding)
                    .await?;
                let stream = ReceiverStream::new(deliveries).map(move |delivery| match delivery {
                    Ok(delivery) => Ok(to_proto(&delivery)),
                    Err(e) => Err(Status::from(e)),
                });
                Ok(Box::pin(stream) as MessageStream)
            },
        )
        .await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        const METHOD: &str = method!("MailboxService", "ListDeadLetters");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let paging: Paging<i64> = Paging::of(
                    &pb::ListDeadLettersRequest {
                        page_size: 0,
                        page_token: String::new(),
                    },
                    req.page_size,
                    &req.page_token,
                )?;
                let page = exchange
                    .list_dead_letters(&call, paging.after.unwrap_or(0), paging.size)
                    .await?;
                let next_page_token = paging.next_token(&page, |d| d.message.sequence);
                Ok(pb::ListDeadLettersResponse {
                    messages: page.items.iter().map(to_proto).collect(),
                    next_page_token,
                })
            },
        )
        .await
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<pb::RedriveDeadLettersRequest>,
    ) -> Result<Response<pb::RedriveDeadLettersResponse>, Status> {
        const METHOD: &str = method!("MailboxService", "RedriveDeadLetters");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let mut ids = Vec::with_capacity(req.message_ids.len());
                for (i, id) in req.message_ids.iter().enumerate() {
                    match uuid::Uuid::parse_str(id) {
                        Ok(id) => ids.push(id),
                        Err(_) => v.push(Violation::new(
                            format!("message_ids[{i}]"),
                            "uuid",
                            "a message_id",
                        )),
                    }
                }
                if ids.len() > MAX_ACK_IDS {
                    v.push(Violation::new(
                        "message_ids",
                        "max_items",
                        format!("at most {MAX_ACK_IDS} per request"),
                    ));
                }
                check(v)?;
                let key = request_key(METHOD, &req.request_id, &req, false)?;
                let ids = (!ids.is_empty()).then_some(ids);
                let redriven_count = exchange.redrive_dead_letters(&call, ids, key).await? as i64;
                Ok(pb::RedriveDeadLettersResponse { redriven_count })
            },
        )
        .await
    }

    async fn list_mailbox_history(
        &self,
        request: Request<pb::ListMailboxHistoryRequest>,
    ) -> Result<Response<pb::ListMailboxHistoryResponse>, Status> {
        const METHOD: &str = method!("MailboxService", "ListMailboxHistory");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let mut v = Vec::new();
                if req.since_sequence < 0 {
                    v.push(Violation::new(
                        "since_sequence",
                        "non_negative",
                        "must not be negative",
                    ));
                }
                let size = super::page_size(req.page_size)?;
                check(v)?;
                let (messages, next_sequence) = exchange
                    .mailbox_history(&call, req.since_sequence, size)
                    .await?;
                Ok(pb::ListMailboxHistoryResponse {
                    messages: messages.iter().map(to_proto).collect(),
                    next_sequence,
                })
            },
        )
        .await
    }

    async fn get_mailbox_stats(
        &self,
        request: Request<pb::GetMailboxStatsRequest>,
    ) -> Result<Response<pb::GetMailboxStatsResponse>, Status> {
        const METHOD: &str = method!("MailboxService", "GetMailboxStats");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, _req| async move {
                let stats = exchange.mailbox_stats(&call).await?;
                let age = stats.oldest_pending_age;
                Ok(pb::GetMailboxStatsResponse {
                    pending_count: stats.counts.pending,
                    leased_count: stats.counts.leased,
                    dead_letter_count: stats.counts.dead,
                    oldest_pending_age: Some(pbjson_types::Duration {
                        seconds: age.num_seconds(),
                        nanos: age.subsec_nanos(),
                    }),
                })
            },
        )
        .await
    }
}
